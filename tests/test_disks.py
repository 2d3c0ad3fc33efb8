"""Disks and files: a directory of the bundle that is a file, read-only or out of inodes gives one
line naming it and exit 78 (73 when the disk is full), never a traceback, from every entry point."""

import os
import subprocess
import sys
import time

import pytest

from botkeeper.health import heartbeat
from botkeeper.health.snapshot import read_heartbeat
from conftest import ROOT, bk_env, py_command, read_state, wait_for
from mounts import fill, tmpfs


def run(home, *argv, timeout=30):
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=bk_env(home), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("argv, blocked", [
    (["-m", "botkeeper", "start", "--detach"], "logs"),
    (["-m", "botkeeper", "start", "--detach"], "run"),
    (["-m", "botkeeper", "supervise"], "data"),
    (["-m", "botkeeper", "stop"], "run"),
    (["bot_monitor.py"], "data"),
    (["auto_recovery.py"], "logs"),
])
def test_a_directory_that_is_a_file_is_one_line_and_exit_78(home, argv, blocked):
    (home / blocked).write_text("not a directory\n")
    done = run(home, *argv)
    assert done.returncode == 78, done
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(home / blocked) in lines[0] and "move or delete" in lines[0], lines
    assert not (home / "run" / "supervisor.pid").exists()  # nothing was started


def test_a_read_only_logs_directory_is_named_and_nothing_starts(home):
    with tmpfs(home / "logs", "size=1m,ro"):
        done = run(home, "-m", "botkeeper", "start", "--detach")
    assert done.returncode == 78, done
    assert "Traceback" not in done.stderr
    assert f"{home / 'logs'} is not writable (Read-only file system)" in done.stderr
    assert not (home / "run" / "runner.pid").exists()


def test_a_data_directory_out_of_inodes_exits_73(home):
    with tmpfs(home / "data", "size=1m,nr_inodes=4") as data:
        n = 0
        try:
            while True:
                (data / f"f{n}").write_text("")
                n += 1
        except OSError:
            pass
        done = run(home, "-m", "botkeeper", "supervise")
    assert done.returncode == 73, done
    assert "Traceback" not in done.stderr
    assert f"{home / 'data'} is not writable: the disk is full" in done.stderr


# --- a full disk ------------------------------------------------------------------------------------
def read_beat(path):
    return read_heartbeat(path).data or {}


def test_a_heartbeat_on_a_full_disk_is_written_in_place_and_says_so(tmp_path):
    with tmpfs(tmp_path / "disk", "size=1m") as disk:
        path = disk / "bot_health.txt"
        heartbeat.write(path, state="polling")
        assert path.stat().st_size == heartbeat.SLOT  # padded: the blocks a beat needs are owned
        filler = fill(disk)
        before = os.statvfs(disk).f_bfree
        data = heartbeat.write(path, state="polling", detail="still here")
        assert data["disk_full"] is True
        read = read_beat(path)
        assert read["disk_full"] is True and read["detail"] == "still here" and read["pid"] == os.getpid()
        assert os.statvfs(disk).f_bfree == before and not [p for p in disk.iterdir() if p.name.startswith(".")]
        filler.unlink()
        assert "disk_full" not in heartbeat.write(path, state="polling")
        assert "disk_full" not in read_beat(path)


BEATING_BOT = py_command(f"""
    import sys, time
    sys.path.insert(0, {str(ROOT)!r})
    from botkeeper import heartbeat
    while True:
        heartbeat.beat(state="polling", last_poll_at=time.time())
        time.sleep(0.1)
""")


def test_a_bot_that_still_beats_on_a_full_disk_is_not_restarted(home, supervised):
    """Real supervisor, monitor and bot in a home on a 8 MB tmpfs that is then filled up."""
    with tmpfs(home, "size=8m"):
        sup = supervised({"bot": {"command": BEATING_BOT}, "web": {"enabled": False}})
        hb_path = home / "bot_health.txt"
        try:
            wait_for(lambda: read_state(home) and all(c["state"] == "running" for c in read_state(home)["components"]),
                     15, message="bot and monitor running")
            pid = read_beat(hb_path)["pid"]
            filler = fill(home)
            full_since = time.time()
            stale_after = 2.0  # the test profile's STALE_AFTER: without the fallback the monitor restarts here
            beat = wait_for(lambda: (lambda hb: hb.get("disk_full") and hb["written_at"] > full_since + stale_after + 1.0
                                     and hb)(read_beat(hb_path)), 15,
                            message="the bot beating with disk_full for longer than STALE_AFTER")
            assert beat["pid"] == pid, "the bot was restarted although it kept beating"
            filler.unlink()
            back = wait_for(lambda: (lambda hb: "disk_full" not in hb and hb)(read_beat(hb_path)), 10,
                            message="a normal beat once space is back")
            assert back["pid"] == pid
        finally:
            sup.stop()


def test_a_full_disk_prunes_old_logs_oldest_first_records_and_alerts_once(home):
    """auto_recovery's disk pass on a real full tmpfs: old logs go (oldest first) until
    MIN_FREE_DISK_MB is free, one disk-full event is recorded and one alert is delivered."""
    from botkeeper.supervise import control
    from botkeeper.alerting.alerts import Alerter
    from botkeeper.config import Settings
    from botkeeper.supervise.recovery import Recovery
    from botkeeper.store import Store
    from test_alerts import Receiver

    receiver = Receiver().start()
    with tmpfs(home, "size=6m"):
        logs, archive = home / "logs", home / "logs_archive"
        logs.mkdir()
        archive.mkdir()
        now = time.time()
        for path, age in ((archive / "logs_20260101.tar.gz", 9000), (logs / "bot.log.2", 5000),
                          (logs / "bot.log.1", 100)):
            path.write_bytes(os.urandom(1024 * 1024))
            os.utime(path, (now - age, now - age))
        (logs / "bot.log").write_text("active\n")
        settings = Settings.from_env(bk_env(home, MIN_FREE_DISK_MB="1", ALERTS="on",
                                            MONITORING_WEBHOOK=receiver.url), home=home)
        Store(settings.history_db).record("start", "bot")
        filler = fill(home)
        try:
            gone = lambda *a, **k: (_ for _ in ()).throw(control.SupervisorUnavailable("down"))
            rec = Recovery(settings, spawn_runner=lambda s: 0, call=gone)
            assert rec.check_disk() == ["prune-logs"]
            left = sorted(p.name for p in [*logs.iterdir(), *archive.iterdir()])
            assert left == ["bot.log", "bot.log.1", "bot.log.2"], left  # the oldest (1 MB) was enough
            assert os.statvfs(home).f_bavail * os.statvfs(home).f_frsize > 512 * 1024  # (the record took a few blocks)
            rec.check_disk()  # the same spell: nothing more to record
            store = Store(settings.history_db)
            events = store.events(kinds=("disk-full",))
            assert len(events) == 1 and "MIN_FREE_DISK_MB=1" in events[0]["detail"]
            alerter = Alerter(settings)
            wait_for(lambda: alerter.step() is not None and receiver.bodies, 10, message="the disk-full alert")
            store.record("disk-full", "bot", "the bot beats but cannot write files", "monitor")  # seen twice
            for _ in range(3):
                alerter.step()
            assert [b["event"] for b in receiver.bodies] == ["disk-full"]
            assert receiver.bodies[0]["cause"] == "disk-full" and "disk full" in receiver.bodies[0]["text"]
            alerter.close()
            store.close()
        finally:
            filler.unlink()
            receiver.stop()
