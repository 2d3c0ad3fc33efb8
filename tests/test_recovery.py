"""auto_recovery.py: passes in-process with fakes (disk, logs, stuck components, /health), then the
whole bundle under SIGKILLs with a census of its processes sampled all along."""

import fcntl
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from conftest import ROOT, bk_env, read_state, wait_for, write_components
from watchers import bots, bundle_processes, fake_bot_command, supervisors, web_stub_command

from botkeeper.supervise import bundle, control
from botkeeper.config import Settings
from botkeeper.fsutil import read_json, verified_process
from botkeeper.supervise.recovery import Recovery
from botkeeper.store import Store
from botkeeper.health.watch_policy import MIB

DAY = 86400


def settings_for(home, **env):
    return Settings.from_env(bk_env(home, **env), home=home)


def hold(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


class FakeSupervisor:
    """Answers control calls in-process; holds the runner and supervisor locks like live ones."""

    def __init__(self, home, components):
        self.fds = [hold(home / "run" / "runner.lock"), hold(home / "run" / "supervisor.lock")]
        self.components, self.calls = components, []

    def __call__(self, settings, cmd, **args):
        self.calls.append((cmd, args))
        if cmd == "status":
            return {"supervisor": {"pid": 1}, "components": self.components}
        return {}

    def asked(self, cmd):
        return [a for c, a in self.calls if c == cmd]

    def close(self):
        for fd in self.fds:
            os.close(fd)


def test_stuck_component_is_started_but_stopped_and_needs_config_ones_are_left_alone(home):
    now = time.time()
    comps = [{"name": "bot", "state": "errored", "next_start_at": now - 5},
             {"name": "monitor", "state": "stopped"}, {"name": "x", "state": "needs-config"}]
    sup = FakeSupervisor(home, comps)
    try:
        rec = Recovery(settings_for(home, HEALTH_GRACE="1"), call=sup, spawn_runner=pytest.fail)
        assert rec.check() == ["start-bot"]
        ask = sup.asked("start")[0]
        assert ask["name"] == "bot" and ask["by"] == "auto_recovery" and "past its restart time" in ask["reason"]
    finally:
        sup.close()


def test_web_restarted_after_three_connection_failures_never_for_a_503(home):
    web = {"name": "web", "state": "running", "pid": 99, "started_at": time.time() - 100}
    sup = FakeSupervisor(home, [web])
    answers = []
    try:
        rec = Recovery(settings_for(home), call=sup, spawn_runner=pytest.fail,
                       probe_web=lambda host, port, timeout: answers.pop(0))
        answers[:] = [(False, "ConnectionRefusedError"), (False, "timed out"), (True, "503")] * 3
        for _ in range(9):
            rec.check()
        assert sup.asked("restart") == []
        answers[:] = [(False, "ConnectionRefusedError")] * 3
        assert rec.check() == [] and rec.check() == []
        assert rec.check() == ["restart-web"]
        reason = sup.asked("restart")[0]["reason"]
        assert "not answering" in reason and "ConnectionRefusedError" in reason
    finally:
        sup.close()


def test_low_disk_prunes_rotated_logs_oldest_first_and_records_it(home):
    logs = home / "logs"
    logs.mkdir()
    for i, (name, age) in enumerate([("bot.log.1", 100), ("bot.log.2", 200), ("web.log.1", 300)]):
        (logs / name).write_bytes(b"x" * MIB)
        os.utime(logs / name, (time.time() - age, time.time() - age))
    (logs / "bot.log").write_text("active")
    free = [50 * MIB]
    s = settings_for(home, MIN_FREE_DISK_MB="51")  # 1 MB short: the oldest file is enough... almost
    rec = Recovery(s, disk_free=lambda: free[0], spawn_runner=lambda settings: 0,
                   call=lambda *a, **k: (_ for _ in ()).throw(control.SupervisorUnavailable("down")))
    assert "prune-logs" in rec.check()
    assert sorted(p.name for p in logs.iterdir()) == ["bot.log", "bot.log.1", "bot.log.2"]
    event = Store(s.history_db).events(kinds=("logs-pruned",))[0]
    assert event["by"] == "auto_recovery" and "web.log.1" in event["detail"] and "MIN_FREE_DISK_MB=51" in event["detail"]
    free[0] = 10 * MIB  # far below: everything rotated goes, the active log stays
    rec.check()
    assert [p.name for p in logs.iterdir()] == ["bot.log"]


def test_daily_archives_old_rotated_logs_and_deletes_expired_archives(home):
    logs, archive = home / "logs", home / "logs_archive"
    logs.mkdir()
    archive.mkdir()
    now = time.time()
    for name, age in [("bot.log.1", 2 * DAY), ("bot.log.2", 3 * DAY), ("web.log.1", 3600), ("bot.log", 5 * DAY)]:
        (logs / name).write_text(name)
        os.utime(logs / name, (now - age, now - age))
    for name, age in [("logs_20200101.tar.gz", 8 * DAY), ("logs_20200105.tar.gz", 6 * DAY)]:
        (archive / name).write_bytes(b"")
        os.utime(archive / name, (now - age, now - age))
    s = settings_for(home, LOG_RETENTION_DAYS="7")
    rec = Recovery(s, call=lambda *a, **k: (_ for _ in ()).throw(control.SupervisorUnavailable("down")))
    assert rec.daily() == ["archive", "delete-archives"]
    assert sorted(p.name for p in logs.iterdir()) == ["bot.log", "web.log.1"]
    made = archive / ("logs_" + time.strftime("%Y%m%d") + ".tar.gz")
    with tarfile.open(made) as tar:
        assert sorted(tar.getnames()) == ["bot.log.1", "bot.log.2"]
    assert sorted(p.name for p in archive.iterdir()) == sorted(["logs_20200105.tar.gz", made.name])
    kinds = {e["kind"] for e in Store(s.history_db).events()}
    assert {"logs-archived", "archives-deleted"} <= kinds


def test_single_instance_and_stopping_file(home):
    env = bk_env(home, AUTO_RECOVERY="on")
    fd = hold(home / "run" / "recovery.lock")
    began = time.monotonic()
    second = subprocess.run([sys.executable, str(ROOT / "auto_recovery.py")], env=env, timeout=20)
    assert second.returncode == 0 and time.monotonic() - began < 5
    os.close(fd)
    (home / "run" / "stopping").write_text("")
    proc = subprocess.run([sys.executable, str(ROOT / "auto_recovery.py")], env=env, timeout=20)
    assert proc.returncode == 0
    assert not (home / "run" / "runner.pid").exists() and not (home / "run" / "recovery.pid").exists()
    assert "stop requested" in (home / "logs" / "auto_recovery.log").read_text()


# --- the whole bundle under SIGKILLs ---------------------------------------------------------------
PIECES = ("bot", "web", "monitor", "supervisor", "runner", "recovery")


class Bundle:
    def __init__(self, home):
        self.home = home
        self.env = bk_env(home, AUTO_RECOVERY="on", HEALTH_GRACE="1")
        self.settings = Settings.from_env(self.env, home=home)

    def cli(self, *args, timeout=60):
        return subprocess.run([sys.executable, "-m", "botkeeper", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def pid(self, piece):
        """The verified live pid of a piece, or None."""
        if piece in bundle.ROOTS:
            proc = bundle.root_process(self.settings, piece)
            return proc.pid if proc else None
        comp = next((c for c in read_state(self.home).get("components", []) if c["name"] == piece), {})
        if comp.get("state") != "running":
            return None
        proc = verified_process(comp.get("pid"), comp.get("create_time"))
        return proc.pid if proc else None

    def everything_back(self, killed=()):
        pids = {p: self.pid(p) for p in PIECES}
        if any(pid is None or pid in killed for pid in pids.values()):
            return False
        hb = read_json(self.home / "bot_health.txt") or {}
        return hb.get("pid") == pids["bot"] and time.time() - hb.get("written_at", 0) < 1.0 and pids


class Census(threading.Thread):
    """Samples the bundle's processes every ~30 ms; remembers every moment with two bots/supervisors."""

    def __init__(self, home):
        super().__init__(daemon=True)
        self.home, self.stop_flag, self.bad, self.samples = home, threading.Event(), [], 0

    def run(self):
        while not self.stop_flag.is_set():
            procs = bundle_processes(self.home)
            self.samples += 1
            if len(bots(procs)) > 1 or len(supervisors(procs)) > 1:
                self.bad.append(procs)
            time.sleep(0.03)


def test_sigkill_each_piece_then_pairs_everything_comes_back_never_two(home):
    write_components(home, bot={"command": fake_bot_command(home)}, web={"command": web_stub_command(home)})
    b = Bundle(home)
    start = b.cli("start", "--detach")
    assert start.returncode == 0, start.stdout + start.stderr
    census = Census(home)
    census.start()
    took = {}
    try:
        wait_for(b.everything_back, 15, message="everything up")
        rounds = [(p,) for p in PIECES] + [("supervisor", "runner"), ("runner", "recovery"),
                                            ("supervisor", "recovery"), ("bot", "supervisor"),
                                            ("web", "monitor"), ("recovery", "bot")]
        for pieces in rounds:
            pids = [b.pid(p) for p in pieces]
            began = time.monotonic()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: b.everything_back(pids), 20, interval=0.05,
                     message=f"everything back after SIGKILL of {pieces}")
            took[pieces] = round(time.monotonic() - began, 2)
    finally:
        census.stop_flag.set()
        census.join(5)
        stop = b.cli("stop")
    print("seconds back to running:", took)
    assert stop.returncode == 0, stop.stderr
    assert census.bad == [], "\n".join(map(str, census.bad[:3]))
    assert census.samples > 50
    assert bundle_processes(home) == []
    history = Store(home / "data" / "history.db").events(limit=10_000)
    relaunched = {e["component"] for e in history if e["kind"] == "relaunch"}
    assert {"run_24_7.sh", "auto_recovery"} <= relaunched
    assert any(e["kind"] == "exit" and e["component"] == "bot" for e in history)


def test_a_stopped_supervisor_is_replaced(home):
    write_components(home, bot={"command": fake_bot_command(home)}, web={"enabled": False})
    b = Bundle(home)
    b.env["KILL_TIMEOUT"] = "0.5"  # the hung limit is max(HEALTH_GRACE, 4 x KILL_TIMEOUT)
    b.settings = Settings.from_env(b.env, home=home)
    assert b.cli("start", "--detach").returncode == 0
    try:
        sup = b.pid("supervisor")
        os.kill(sup, signal.SIGSTOP)
        wait_for(lambda: b.pid("supervisor") not in (None, sup) and b.pid("bot"), 20, message="a fresh supervisor")
        hung = Store(home / "data" / "history.db").events(kinds=("hung",))
        assert hung and f"pid {sup}" in hung[0]["detail"]
    finally:
        assert b.cli("stop").returncode == 0
    assert bundle_processes(home) == []


def test_plain_logs_of_the_runner_are_kept_within_log_max_bytes(tmp_path):
    from botkeeper.config import Settings
    from botkeeper.supervise.recovery import Recovery

    home = tmp_path / "bk"
    (home / "logs").mkdir(parents=True)
    runner_log = home / "logs" / "runner.log"
    runner_log.write_text("x" * 30_000)
    settings = Settings.from_env({"BOTKEEPER_ENV": "test", "DEMO": "off", "LOG_MAX_BYTES": "20000"}, home=home)
    assert Recovery(settings).trim_plain_logs() == ["trim-runner.log"]
    assert runner_log.stat().st_size == 0 and (home / "logs" / "runner.log.1").stat().st_size == 30_000
    assert Recovery(settings).trim_plain_logs() == []
