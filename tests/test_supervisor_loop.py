"""The supervisor's restart, backoff and timer behaviour under a fake clock, with the OS replaced.

process.OS is the one seam between the supervisor and the operating system (honcho's Env is the
model): here a FakeOS records what the supervisor asked for, hands out pids and reports exits when
the test says so, and the clocks are plain numbers. No real child process exists in these tests;
tests/test_supervisor.py runs the same supervisor with real ones.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from botkeeper.supervise import process
from botkeeper import runfiles
from botkeeper.causes import Cause
from botkeeper.config import Settings
from botkeeper.states import State
from botkeeper.store import Store
from botkeeper.supervise.supervisor import BOOKKEEPING_DELAY, STATE_CHECK_INTERVAL, Supervisor
from conftest import bk_env, write_components


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeProc:
    """What process.spawn returns, without a process: a pid and a pipe standing for its output."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None
        read, self._write = os.pipe()
        self.stdout = os.fdopen(read, "rb", buffering=0)

    def close(self) -> None:
        os.close(self._write)


class FakeOS(process.OS):
    def __init__(self):
        self.next_pid = 400_000
        self.procs: dict[int, FakeProc] = {}
        self.spawned: list[tuple[int, str]] = []  # (pid, component)
        self.signals: list[tuple[int, int]] = []
        self.exits: list[tuple[int, int]] = []

    def spawn(self, command, env, cwd):
        self.next_pid += 1
        proc = self.procs[self.next_pid] = FakeProc(self.next_pid)
        self.spawned.append((self.next_pid, env["BOTKEEPER_COMPONENT"]))
        return proc

    def spawn_detached(self, command, env, cwd, log_path):
        self.next_pid += 1
        return self.next_pid

    def signal_group(self, pgid, sig):
        self.signals.append((pgid, sig))
        return True

    def terminate_group(self, pgid):
        return self.signal_group(pgid, signal.SIGTERM)

    def reap(self):
        out, self.exits = self.exits, []
        return out

    def create_time(self, pid):
        return 123.0

    def stop_all(self, targets):
        return []

    def exit(self, pid: int, code: int | None = None, sig: int | None = None) -> None:
        """The process ends: its output pipe closes and its wait status is there to reap."""
        self.procs[pid].close()
        self.exits.append((pid, (code << 8) if code is not None else sig))


@pytest.fixture
def loop(home):
    write_components(home, web={"enabled": False}, monitor={"enabled": False})
    settings = Settings.from_env(bk_env(home), home=home)
    for d in (settings.run_dir, settings.logs_dir, settings.data_dir):
        d.mkdir(parents=True, exist_ok=True)
    mono, wall, fake = Clock(), Clock(1_800_000_000.0), FakeOS()
    sup = Supervisor(settings, clock=mono, wall=wall, os_=fake)
    bot = sup.components["bot"]
    sup.start(bot, Cause.INITIAL_START, "initial start", "supervisor")

    def advance(seconds: float) -> None:
        mono.now += seconds
        wall.now += seconds
        sup.on_timers()

    yield sup, bot, fake, advance, settings
    for proc in fake.procs.values():
        proc.stdout.close()
    sup.store.close()


def bot_pid(sup) -> int:
    return sup.components["bot"].pid


def test_starting_becomes_running_after_start_seconds(loop):
    sup, bot, _, advance, settings = loop
    assert bot.state == State.STARTING
    advance(settings.start_seconds / 2)
    assert bot.state == State.STARTING
    advance(settings.start_seconds)
    assert bot.state == State.RUNNING


def test_a_long_run_restarts_at_once_with_cause_crash(loop):
    sup, bot, fake, advance, settings = loop
    advance(settings.min_uptime + 1)
    first = bot_pid(sup)
    fake.exit(first, code=1)
    sup.reap()
    assert bot.state == State.STARTING and bot_pid(sup) != first  # respawned in the same step
    assert (bot.cause, bot.restarts) == (Cause.CRASH, 1)
    assert sup.recent_restarts[-1]["cause"] == "crash"
    assert "exited with code 1" in sup.recent_restarts[-1]["detail"]


def test_a_fast_restarts_history_and_state_follow_in_the_next_step_within_the_bookkeeping_delay(loop):
    sup, bot, fake, advance, settings = loop
    advance(settings.min_uptime + 1)
    first = bot_pid(sup)
    fake.exit(first, code=1)
    sup.reap()
    new = bot_pid(sup)
    assert new != first and Store(settings.history_db).events(kinds=("restart", "exit")) == []  # not yet
    assert sup.next_timeout() <= BOOKKEEPING_DELAY
    sup.step()  # the new child's output, or the delay: then the books
    rows = Store(settings.history_db).events(kinds=("restart", "exit"))
    assert sorted(r["kind"] for r in rows) == ["exit", "restart"] and all(r["cause"] == "crash" for r in rows)
    assert next(c for c in json.loads(settings.state_file.read_text())["components"] if c["name"] == "bot")["pid"] == new


def test_quick_crashes_back_off_doubling_then_errored_then_a_slow_retry(loop):
    sup, bot, fake, advance, settings = loop
    delays = []
    for _ in range(settings.max_restarts - 1):
        advance(0.05)  # a quick failure: well under MIN_UPTIME
        fake.exit(bot_pid(sup), code=1)
        sup.reap()
        assert bot.state == State.BACKOFF and bot.pid is None
        delay = bot.next_start_at - sup.clock()
        delays.append(round(delay, 3))
        advance(delay - 0.005)
        assert bot.state == State.BACKOFF  # not a moment early
        advance(0.01)  # the timer, not a sleep, brings it back
        assert bot.state == State.STARTING
    assert delays == [0.1, 0.2, 0.4, 0.8]  # RESTART_DELAY doubling (test profile), capped at 1.0
    assert bot.cause == Cause.CRASH_LOOP
    advance(0.05)
    fake.exit(bot_pid(sup), code=1)
    sup.reap()
    assert bot.state == State.ERRORED and bot.cause == Cause.CRASH_LOOP
    spawned = len(fake.spawned)
    advance(settings.errored_retry - 0.1)
    assert len(fake.spawned) == spawned and bot.state == State.ERRORED  # never hammered
    advance(0.2)
    assert len(fake.spawned) == spawned + 1 and bot.state == State.STARTING  # retried slowly, not abandoned


def test_stop_sends_sigterm_then_sigkill_at_the_deadline(loop):
    sup, bot, fake, advance, settings = loop
    pid = bot_pid(sup)
    sup.handle({"cmd": "stop", "name": "bot", "cause": "operator", "reason": "test", "by": "cli"})
    assert bot.state == State.STOPPING and fake.signals == [(pid, signal.SIGTERM)]
    advance(bot.spec.kill_timeout - 0.1)
    assert fake.signals == [(pid, signal.SIGTERM)]
    advance(0.2)
    assert fake.signals[-1] == (pid, signal.SIGKILL)
    fake.exit(pid, sig=signal.SIGKILL)
    sup.reap()
    assert (bot.state, bot.cause) == (State.STOPPED, Cause.OPERATOR)
    snap = bot.snapshot(sup.clock(), sup.wall())
    assert snap["stopped_at"] == sup.wall() and snap["cause"] == "operator"
    assert not any(c.state == State.STARTING for c in sup.components.values())


def test_a_restart_asked_with_a_typed_cause_carries_it_to_state_and_history(loop):
    sup, bot, fake, advance, settings = loop
    advance(5)
    pid = bot_pid(sup)
    sup.handle({"cmd": "restart", "name": "bot", "cause": "stale-heartbeat", "reason": "heartbeat stale for 63 s",
                "by": "monitor"})
    snap = bot.snapshot(sup.clock(), sup.wall())
    assert (snap["state"], snap["stop_cause"]) == ("stopping", "stale-heartbeat")
    fake.exit(pid, sig=signal.SIGTERM)
    sup.reap()
    assert bot.state == State.STARTING and bot.cause == Cause.STALE_HEARTBEAT
    entry = sup.recent_restarts[-1]
    assert (entry["cause"], entry["detail"], entry["by"]) == ("stale-heartbeat", "heartbeat stale for 63 s", "monitor")
    state = json.loads(settings.state_file.read_text())
    assert state["recent_restarts"][-1]["cause"] == "stale-heartbeat"
    rows = Store(settings.history_db).events(kinds=("restart",))
    assert rows[0]["cause"] == "stale-heartbeat" and rows[0]["detail"] == "heartbeat stale for 63 s"


@pytest.mark.parametrize("cause", ["loop-blocked", "stale-heartbeat"])
def test_a_restart_of_a_known_hung_bot_kills_its_group_at_once_without_the_sigterm_grace(loop, cause):
    sup, bot, fake, advance, settings = loop
    advance(5)
    pid = bot_pid(sup)
    sup.handle({"cmd": "restart", "name": "bot", "cause": cause, "reason": "hung", "by": "monitor"})
    assert fake.signals == [(pid, signal.SIGKILL)] and bot.stop_deadline is None  # no SIGTERM, no wait
    fake.exit(pid, sig=signal.SIGKILL)
    sup.reap()
    assert bot.state == State.STARTING and bot.cause == Cause(cause) and bot_pid(sup) != pid
    # a planned restart still gets its grace
    pid = bot_pid(sup)
    sup.handle({"cmd": "restart", "name": "bot", "cause": "operator", "reason": "asked", "by": "cli"})
    assert fake.signals[-1] == (pid, signal.SIGTERM) and bot.stop_deadline is not None


def test_a_sentence_is_never_taken_for_a_cause(loop):
    sup, bot, *_ = loop
    sup.handle({"cmd": "restart", "name": "bot", "reason": "memory 900 MB above the limit", "by": "test"})
    assert bot.stop_cause == Cause.UNKNOWN  # no cause given, not a person: unknown, not "memory"
    sup.handle({"cmd": "restart", "name": "bot", "cause": "not-a-cause", "reason": "x", "by": "cli"})
    assert bot.stop_cause == Cause.OPERATOR  # an unknown value falls back to what `by` implies


def test_exit_78_takes_the_components_own_note(loop):
    sup, bot, fake, advance, settings = loop
    pid = bot_pid(sup)
    note = runfiles.exit_note_path(settings, "bot")
    note.write_text(json.dumps({"cause": "token-rejected", "detail": "Telegram rejected the bot token 1:***",
                                "pid": pid}))
    fake.exit(pid, code=78)
    sup.reap()
    assert (bot.state, bot.cause) == (State.NEEDS_CONFIG, Cause.TOKEN_REJECTED)
    assert bot.last_restart_reason == "Telegram rejected the bot token 1:***" and bot.next_start_at is None
    assert not note.exists()


def test_a_note_from_another_pid_is_not_believed(loop):
    sup, bot, fake, advance, settings = loop
    runfiles.exit_note_path(settings, "bot").write_text(json.dumps({"cause": "token-rejected", "detail": "old",
                                                                    "pid": 1}))
    fake.exit(bot_pid(sup), code=78)
    sup.reap()
    assert (bot.cause, bot.last_restart_reason) == (Cause.NEEDS_CONFIG, "exited with code 78 (EX_CONFIG): see logs/bot.log")


def test_a_state_file_that_is_not_ours_is_rewritten_within_a_second(loop):
    sup, bot, fake, advance, settings = loop
    sup.write_state()
    settings.state_file.write_text("[1,2,3]")
    advance(STATE_CHECK_INTERVAL + 0.01)
    state = json.loads(settings.state_file.read_text())
    assert state["components"][0]["name"] == "bot" and state["supervisor"]["pid"] == os.getpid()


@pytest.fixture
def own_logging():
    """OutputFanout.setup takes over the root logger (it is the supervisor process's); give it back."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_output_goes_to_the_components_log_and_the_combined_stream(loop, home, own_logging):
    sup, bot, fake, advance, settings = loop
    sup.output.setup(sup.components)
    proc = fake.procs[bot_pid(sup)]
    os.write(proc._write, b"hello from the bot\npartial line without a newline")
    sup._on_pipe(proc.stdout, bot)
    fake.exit(bot_pid(sup), code=0)
    sup.reap()  # drains, and the last partial line is still a line
    text = (settings.logs_dir / "bot.log").read_text()
    assert "hello from the bot" in text and "partial line without a newline" in text
    combined = (settings.logs_dir / "combined.log").read_text()
    assert "bot       | hello from the bot" in combined
