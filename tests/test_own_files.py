"""The bundle's own files in odd states (issue 25), one test per row of bench/disk_faults.py: the bot
is never taken down, no false down alert is raised, the operator is never blocked, and each case
ends healthy or with a named cause. Real supervisors, bots and CLI runs; read-only bind mounts and
tmpfs mounts where a row needs them (skipped with the reason without root)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from contextlib import contextmanager

import pytest

from botfixtures import ask, bot, emulator  # noqa: F401 (fixtures)
from conftest import ROOT, bk_env, py_command, read_state, wait_for
from mounts import fill, tmpfs

from botkeeper import logs
from botkeeper.alerting.incidents import Observation, Rules, Tracker, decide, observe
from botkeeper.bot import poison
from botkeeper.bot.outbox import Outbox
from botkeeper.causes import Cause
from botkeeper.config import Settings
from botkeeper.health.snapshot import Heartbeat, Snapshot
from botkeeper.health.verdict import Limits, judge, read_and_judge
from botkeeper.ops.doctor import OK, WARN, check_set_aside
from botkeeper.store import Store

BEATING_BOT = py_command(f"""
    import sys, time
    sys.path.insert(0, {str(ROOT)!r})
    from botkeeper import heartbeat
    while True:
        heartbeat.beat(state="polling", last_poll_at=time.time())
        time.sleep(0.1)
""")


def cli(home, *argv, timeout=60, **env):
    return subprocess.run([sys.executable, "-m", "botkeeper", *argv], cwd=ROOT, env=bk_env(home, **env),
                          capture_output=True, text=True, timeout=timeout)


@contextmanager
def read_only(path):
    """`path` read-only from now on (a read-only bind mount over itself); open files stay writable."""
    if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount (needs root with CAP_SYS_ADMIN)")
    try:
        # EBUSY while a writer (the supervisor replacing state.json) has a file open through the
        # new mount: tried again until that write is done.
        wait_for(lambda: subprocess.run(["mount", "-o", "remount,bind,ro", str(path)],
                                        capture_output=True).returncode == 0, 5, 0.02, f"{path} read-only")
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def settings_of(home, **env):
    return Settings.from_env(bk_env(home, **env), home=home)


def bot_running(home):
    comp = next((c for c in read_state(home).get("components", []) if c["name"] == "bot"), {})
    return comp.get("state") == "running" and comp.get("pid")


def lines_with(path, needle):
    return sum(needle in line for line in path.read_text(errors="replace").splitlines())


# --- data/outbox.db corrupt ---------------------------------------------------------------------------
def test_a_corrupt_outbox_is_set_aside_and_the_bot_answers(home, bot, emulator):  # noqa: F811
    data = home / "data"
    data.mkdir()
    (data / "outbox.db").write_bytes(os.urandom(64 * 1024))
    proc = bot()
    proc.wait_polled()
    ask(emulator, "/ping", "pong")
    assert proc.alive()
    kept = [p.name for p in data.glob("outbox.db.corrupt-*")]
    assert kept and (data / "outbox.db").is_file()
    events = Store(data / "history.db").events(kinds=("corrupt-file",))
    assert len(events) == 1 and events[0]["component"] == "outbox"
    assert "outbox.db was corrupt" in events[0]["detail"] and kept[0] in events[0]["detail"]
    assert "queued messages could not be read" in events[0]["detail"]  # what was lost, said once
    result = check_set_aside(settings_of(home))
    assert result.status == WARN and "data/outbox.db.corrupt-" in result.message


def test_the_readable_messages_of_a_corrupt_outbox_are_queued_again(tmp_path):
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    keys = box.enqueue([(1, "one"), (2, "two")])
    box.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    with sqlite3.connect(path) as db:  # the table is fine, an index is garbage: quick_check fails
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'messages_pending'").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * size + 8)
        fh.write(b"\xff" * 64)
    box = Outbox(path)
    assert sorted(m.key for m in box.due(now=1e12)) == sorted(keys)
    event = Store(tmp_path / "history.db").events(kinds=("corrupt-file",))[0]
    assert "2 queued message(s) could be read and were queued again" in event["detail"]


# --- run/ not writable / the disk full, and the bot restarts once -------------------------------------
def test_an_unwritable_run_dir_is_degraded_never_down_and_logged_once(home, supervised):
    supervised({"bot": {"command": BEATING_BOT}, "web": {"enabled": False}})
    settings = settings_of(home)
    wait_for(lambda: bot_running(home), 15, message="the bot running")
    with read_only(home / "run"):
        old = bot_running(home)
        os.kill(old, signal.SIGKILL)
        beat = lambda: json.loads((home / "bot_health.txt").read_text() or "{}")  # noqa: E731
        wait_for(lambda: beat().get("pid") not in (None, old), 15, message="the new bot beating")
        snap, verdict = read_and_judge(settings)
        assert snap.answered, "the state came from the supervisor's answer, not the stale file"
        assert (verdict.overall, verdict.cause) == ("degraded", Cause.STATE_UNWRITABLE), verdict.checks
        assert read_state(home)["components"][0]["pid"] == old  # the file is behind, the answer is not
        wait_for(lambda: read_and_judge(settings)[1].heartbeat.own, 5, message="the new beat judged as own")
    assert lines_with(home / "logs" / "supervisor.log", "state.json cannot be written") == 1
    wait_for(lambda: read_state(home)["components"][0]["pid"] != old and "faults" not in read_state(home), 10,
             message="state.json written again, without the fault")
    assert read_and_judge(settings)[1].overall == "healthy"
    assert lines_with(home / "logs" / "supervisor.log", "run/state.json can be written again") == 1


def test_a_full_disk_and_a_restart_is_degraded_with_its_cause(home, supervised):
    with tmpfs(home, "size=8m"):
        sup = supervised({"bot": {"command": BEATING_BOT}, "web": {"enabled": False}})
        settings = settings_of(home)
        try:
            wait_for(lambda: bot_running(home), 15, message="the bot running")
            filler = fill(home)
            old = bot_running(home)
            os.kill(old, signal.SIGKILL)
            beat = lambda: json.loads((home / "bot_health.txt").read_text() or "{}")  # noqa: E731
            wait_for(lambda: beat().get("pid") not in (None, old), 15, message="the new bot beating")
            verdict = wait_for(lambda: (v := read_and_judge(settings)[1]).heartbeat.own and v, 5,
                               message="the new bot's beat judged as its own")
            assert verdict.overall == "degraded" and verdict.cause == Cause.DISK_FULL, verdict.checks
            assert any(c.cause == Cause.DISK_FULL and c.name == "file:run/state.json" for c in verdict.checks)
            filler.unlink()
            wait_for(lambda: read_and_judge(settings)[1].overall == "healthy", 10, message="healthy again")
        finally:
            sup.stop()


def test_space_returning_gives_no_alert_pair():
    rules = Rules(confirm_after=3.0, stable_after=1.0, flap_window=30.0)
    tracker = Tracker()
    from botkeeper.health.verdict import Check, HeartbeatView, Verdict

    def verdict(overall, cause):
        return Verdict(overall, cause, "x", (Check("disk", overall, "x", cause, 0.0),), HeartbeatView(True, "fresh"), True)

    sent = []
    for now, v in [(0.0, verdict("degraded", Cause.DISK_FULL)), (5.0, verdict("degraded", Cause.DISK_FULL)),
                   (5.5, verdict("degraded", Cause.STATE_UNWRITABLE)), (6.0, verdict("healthy", None)),
                   (7.5, verdict("healthy", None))]:
        tracker, acts = decide(tracker, observe(v, now, 2.0), [], now, rules)
        sent += [a for a in acts if type(a).__name__ in ("Alert", "Open")]
    assert sent == [] and tracker.incident is None


# --- run/state.json replaced by a directory -----------------------------------------------------------
def test_a_state_json_that_is_a_directory_is_moved_aside_and_noticed(home, supervised):
    supervised({"bot": {"command": BEATING_BOT}, "web": {"enabled": False}})
    settings = settings_of(home)
    wait_for(lambda: bot_running(home), 15, message="the bot running")
    state = home / "run" / "state.json"

    def replace_with_directory() -> bool:  # the supervisor may write a new state.json in between
        try:
            state.unlink(missing_ok=True)
            state.mkdir()
        except FileExistsError:
            return False
        (state / "inside").write_text("x")
        return True

    wait_for(replace_with_directory, 5, message="state.json replaced by a directory")
    wait_for(lambda: state.is_file() and read_state(home), 5, message="state.json a file again")
    kept = list((home / "run").glob("state.json.not-a-file-*"))
    assert len(kept) == 1 and (kept[0] / "inside").exists()
    events = Store(home / "data" / "history.db").events(kinds=("corrupt-file",))
    assert len(events) == 1 and "state.json was not a file" in events[0]["detail"]
    assert read_and_judge(settings)[1].overall == "healthy"
    assert "run/state.json.not-a-file-" in check_set_aside(settings).message


# --- logs/ not writable: rotation fails ---------------------------------------------------------------
def test_a_log_that_cannot_rotate_is_capped_and_reported_once(tmp_path, monkeypatch):
    told = []
    monkeypatch.setattr(logs, "on_rotation", lambda path, exc: told.append((os.path.basename(path), exc)))
    monkeypatch.setattr(logs, "ROTATE_RETRY", 0.0)
    path = tmp_path / "bot.log"
    (tmp_path / "bot.log.1").mkdir()  # a directory where the backup goes: every rotation fails
    (tmp_path / "bot.log.1" / "x").write_text("x")
    handler = logs.rotating_handler(path, 10_000, 1, "%(message)s")  # one backup: its name is taken
    log = logging.getLogger("test.capped")
    log.propagate, log.level = False, logging.INFO
    log.addHandler(handler)
    try:
        for _ in range(500):
            log.info("x" * 100)
        size = path.stat().st_size
        assert 10_000 <= size < 10_000 + 300, size  # capped: one marker line past the limit
        assert "cannot rotate this log" in path.read_text()
        assert [name for name, exc in told] == ["bot.log"] and told[0][1] is not None
        (tmp_path / "bot.log.1" / "x").unlink()
        (tmp_path / "bot.log.1").rmdir()
        log.info("after")
        assert told[-1] == ("bot.log", None) and path.read_text() == "after\n"
    finally:
        log.removeHandler(handler)
        handler.close()


def test_a_read_only_logs_dir_is_a_typed_fault_and_the_supervisor_lives(home, supervised):
    chatter = py_command("""
        import time
        while True:
            print("x" * 200, flush=True)
            time.sleep(0.005)
    """)
    sup = supervised({"bot": {"command": BEATING_BOT}, "web": {"enabled": False}, "chatter": {"command": chatter}},
                     LOG_MAX_BYTES="20000")
    settings = settings_of(home, LOG_MAX_BYTES="20000")
    wait_for(lambda: bot_running(home), 15, message="the bot running")
    with read_only(home / "logs"):
        verdict = wait_for(lambda: (v := read_and_judge(settings)[1]).cause == Cause.LOG_ROTATION and v, 15,
                           message="the log-rotation fault")
        assert verdict.overall == "degraded" and "capped at LOG_MAX_BYTES=20000" in verdict.detail
        assert (home / "logs" / "chatter.log").stat().st_size < 20_000 + 1000
    assert sup.proc.poll() is None
    events = Store(home / "data" / "history.db").events(kinds=("log-rotation",))
    assert len({e["detail"].split(" ")[0] for e in events}) == len(events)  # once per log and episode


# --- a broken .env while the bundle runs ----------------------------------------------------------------
def test_stop_and_status_work_with_broken_settings(home):
    (home / "botkeeper.toml").write_text(f'[components.bot]\ncommand = {json.dumps(BEATING_BOT)}\n'
                                         '[components.web]\nenabled = false\n')
    try:
        assert cli(home, "start", "--detach").returncode == 0
        (home / ".env").write_text('TELEGRAM_BOT_TOKEN="unterminated\n')
        status = cli(home, "status", "--json")
        assert status.returncode == 0, status
        assert "the settings are broken" in status.stderr and json.loads(status.stdout)["settings_error"]
        start = cli(home, "start", "--detach")
        assert start.returncode == 78 and "keeps running" in start.stderr, start
        assert (home / "run" / "supervisor.pid").exists()  # start did not take the running bot down
        stop = cli(home, "stop")
        assert stop.returncode == 0 and "stopped" in stop.stdout, stop
        assert "the settings are broken" in stop.stderr and ".env line 1" in stop.stderr
        assert not (home / "run" / "supervisor.pid").exists() and not (home / "run" / "runner.pid").exists()
    finally:
        (home / ".env").unlink(missing_ok=True)
        cli(home, "stop")


# --- start on a full disk -------------------------------------------------------------------------------
def test_start_on_a_full_disk_exits_73_naming_the_disk_and_starts_nothing(home):
    with tmpfs(home, "size=4m"):
        for d in ("run", "logs", "data"):
            (home / d).mkdir()
        filler = fill(home)
        done = cli(home, "start", "--detach")
        filler.unlink()
        assert done.returncode == 73, done
        assert "the disk is full" in done.stderr and f"mounted at {home}" in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not (home / "run" / "runner.pid").exists() and not (home / "run" / "supervisor.pid").exists()


# --- ports and HOST, checked together -------------------------------------------------------------------
def test_every_port_and_host_is_checked_before_anything_starts(home):
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    port = str(holder.getsockname()[1])
    try:
        env = bk_env(home)
        cases = [
            ({"DEMO": "auto", "EMULATOR_PORT": env["PORT"]}, "EMULATOR_PORT=", "PORT is the same port"),
            ({"HOST": "192.0.2.1"}, "HOST=192.0.2.1 is not valid", "not an address of this machine"),
            ({"TELEGRAM_MODE": "webhook", "WEBHOOK_URL": "https://example.org/telegram",
              "WEBHOOK_SECRET": "s3cret-s3cret", "TELEGRAM_BOT_TOKEN": "123456789:AAH-fake-token-for-tests-0123456789",
              "WEBHOOK_PORT": port}, f"port {port} (webhook, WEBHOOK_PORT) is already in use", "set WEBHOOK_PORT"),
            ({"TELEGRAM_MODE": "webhook", "WEBHOOK_URL": "https://example.org/telegram",
              "WEBHOOK_SECRET": "s3cret-s3cret", "TELEGRAM_BOT_TOKEN": "123456789:AAH-fake-token-for-tests-0123456789",
              "WEBHOOK_PORT": env["PORT"]}, "WEBHOOK_PORT=", "PORT is the same port"),
        ]
        for extra, named, why in cases:
            done = subprocess.run([sys.executable, "-m", "botkeeper", "start", "--detach"], cwd=ROOT,
                                  env=env | extra, capture_output=True, text=True, timeout=60)
            assert done.returncode == 78, (extra, done)
            assert named in done.stderr and why in done.stderr, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
            assert not (home / "run" / "runner.pid").exists() and not (home / "run" / "supervisor.pid").exists()
    finally:
        holder.close()


# --- a corrupt heartbeat of a running bot ----------------------------------------------------------------
NOW = 1_000_000.0
LIMITS = Limits(heartbeat_interval=10.0, stale_after=60.0, heartbeat_grace=30.0)


def snapshot(started, hb):
    bot = {"name": "bot", "state": "running", "pid": 42, "started_at": started, "heartbeat": True}
    state = {"supervisor": {"pid": 1}, "components": [bot], "recent_restarts": []}
    return Snapshot(NOW, state, None, True, 1, False, hb)


def test_a_corrupt_heartbeat_of_a_running_bot_is_degraded_not_starting():
    garbled = Heartbeat(None, "bot_health.txt is corrupt: not JSON", "corrupt", mtime=NOW - 1)
    verdict = judge(snapshot(NOW - 600, garbled), LIMITS)
    assert (verdict.overall, verdict.cause) == ("degraded", Cause.HEARTBEAT_INVALID), verdict.checks
    assert "heartbeat unreadable" in verdict.detail and "first heartbeat" not in verdict.detail
    assert judge(snapshot(NOW - 5, garbled), LIMITS).overall == "starting"  # a bot within its start grace
    stale = Heartbeat(None, "bot_health.txt is corrupt: not JSON", "corrupt", mtime=NOW - 90)
    assert judge(snapshot(NOW - 600, stale), LIMITS).overall == "down"  # silent past STALE_AFTER: hung


# --- the quarantine counter never goes backwards ----------------------------------------------------------
def test_a_strike_never_resets_the_quarantine_count(tmp_path):
    book, _ = poison.quarantine({}, 1, {}, 1.0)
    book = poison.strike(book, {"pid": 7, "written_at": 2.0, "in_flight": [{"update_id": 2}]}, "crash", 3.0)
    assert book["quarantined_total"] == 1
    book, _ = poison.quarantine(book, 2, {}, 4.0)
    path = tmp_path / "poison.json"
    path.write_text(json.dumps(book))
    summary = poison.quarantine_summary(path)
    assert summary["total"] == 2 and len(summary["latest"]) == 2
    legacy = {"quarantined": book["quarantined"]}  # a book from before the count was kept
    assert poison.quarantine(legacy, 3, {}, 5.0)[0]["quarantined_total"] == 3


def test_doctor_is_quiet_without_set_aside_files(home):
    assert check_set_aside(settings_of(home)).status == OK
