"""bot_monitor.py with real processes: a SIGSTOPped bot, a blocked event loop, a memory leak and a
corrupt heartbeat file, each under a real supervisor with the real monitor component."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SLEEPER, bk_env, component, read_state, wait_for
from watchers import fake_bot_command

from botkeeper.supervise import control
from botkeeper.causes import Cause
from botkeeper.config import Settings
from botkeeper.alerting.monitor import Monitor
from botkeeper.store import Store


def events(home, kind):
    return Store(home / "data" / "history.db").events(kinds=(kind,))


def running_bot(home, old_pid=None):
    """The bot's pid once it runs (a new pid if old_pid is given) and has written its own heartbeat."""
    def ready():
        bot = component(home, "bot")
        try:
            hb = json.loads((home / "bot_health.txt").read_text())
        except (OSError, ValueError):
            return None
        if bot.get("state") == "running" and bot.get("pid") != old_pid and hb.get("pid") == bot.get("pid"):
            return bot["pid"]
        return None
    return wait_for(ready, 15, message="bot running with its own heartbeat")


def restarted_by_monitor(home, old_pid, within):
    began = time.monotonic()
    bot = wait_for(lambda: (c := component(home, "bot")).get("pid") not in (None, old_pid) and c, within + 3,
                   message="bot restarted")
    took = time.monotonic() - began
    return bot, took


@pytest.mark.parametrize("how", ["sigstop", "blocked-loop"])
def test_hung_bot_is_restarted_within_stale_after_plus_2s(supervised, home, how):
    stale = 1.5
    supervised({"bot": {"command": fake_bot_command(home)}, "web": {"enabled": False}}, STALE_AFTER=str(stale))
    pid = running_bot(home)
    if how == "sigstop":
        os.kill(pid, signal.SIGSTOP)
    else:
        (home / "block").write_text("")
    bot, took = restarted_by_monitor(home, pid, stale + 2)
    assert took <= stale + 2, f"restarted after {took:.1f} s"
    assert re.fullmatch(r"heartbeat stale for \d+ s \(STALE_AFTER=1.5\)", bot["last_restart_reason"])
    last = read_state(home)["recent_restarts"][-1]
    assert (last["component"], last["by"], last["cause"]) == ("bot", "monitor", "stale-heartbeat")
    assert "heartbeat stale" in last["detail"]
    assert any(e["by"] == "monitor" and e["cause"] == "stale-heartbeat" for e in events(home, "restart"))
    running_bot(home, pid)  # the new bot works; the monitor did not restart it again meanwhile
    assert component(home, "bot")["restarts"] == 1
    if how == "blocked-loop":
        assert (home / "block.done").exists()


def test_growing_memory_restarts_the_bot_with_the_figure(supervised, home):
    supervised({"bot": {"command": fake_bot_command(home, "grow")}, "web": {"enabled": False}},
               MAX_MEMORY_MB="60", HEARTBEAT_GRACE="30")
    pid = running_bot(home)
    bot, _ = restarted_by_monitor(home, pid, 15)
    assert re.fullmatch(r"memory \d+\.\d MB above MAX_MEMORY_MB=60 for 3 checks in a row", bot["last_restart_reason"])
    figure = float(bot["last_restart_reason"].split()[1])
    assert figure > 60


def test_corrupt_heartbeat_is_reported_and_the_monitor_keeps_running(supervised, home):
    supervised({"bot": {"command": fake_bot_command(home, "silent")}, "web": {"enabled": False}},
               HEARTBEAT_GRACE="60")
    monitor = wait_for(lambda: (c := component(home, "monitor")).get("state") == "running" and c, 10)
    hb = home / "bot_health.txt"
    hb.write_bytes(b"\x00\xff\xfe junk \x89PNG")
    wait_for(lambda: any("not JSON" in e["detail"] for e in events(home, "heartbeat-unreadable")), 10,
             message="junk reported")
    hb.unlink()
    hb.mkdir()
    wait_for(lambda: any("directory" in e["detail"] for e in events(home, "heartbeat-unreadable")), 10,
             message="directory reported")
    hb.rmdir()
    log = home / "logs" / "monitor.log"
    ups = log.read_text().count("bot: up")
    hb.write_bytes(b"")  # an empty file is a touch (non-Python bots): fine, not an error
    wait_for(lambda: log.read_text().count("bot: up") > ups, 10, message="the touch judged up")
    assert len(events(home, "heartbeat-unreadable")) == 2
    now = component(home, "monitor")
    assert now["pid"] == monitor["pid"] and now["restarts"] == 0 and now["state"] == "running"
    assert component(home, "bot")["restarts"] == 0
    # SIGTERM (a stop through the supervisor) ends the monitor cleanly.
    control.call(home / "run" / "control.sock", "stop", name="monitor", reason="test", by="test")
    wait_for(lambda: component(home, "monitor").get("state") == "stopped", 10)
    assert component(home, "monitor")["last_exit_code"] == 0
    log = (home / "logs" / "monitor.log").read_text()
    assert "heartbeat-unreadable" in log and "Traceback" not in log


def test_bot_without_heartbeat_is_supervised_on_liveness_alone(supervised, home):
    supervised({"bot": {"command": SLEEPER, "heartbeat": False}, "web": {"enabled": False}},
               HEARTBEAT_GRACE="0.3", STALE_AFTER="0.5", HEARTBEAT_INTERVAL="0.1")
    wait_for(lambda: component(home, "monitor").get("state") == "running", 10)
    # Positive signal: the monitor judged this bot, past its grace and STALE_AFTER, and found it up.
    wait_for(lambda: "bot: up" in (home / "logs" / "monitor.log").read_text(), 10, message="judged up")
    assert component(home, "bot")["restarts"] == 0 and component(home, "bot")["state"] == "running"


# --- in-process: step() with a fake supervisor ----------------------------------------------------
@pytest.fixture
def sleeper():
    proc = subprocess.Popen(SLEEPER, start_new_session=True, stdout=subprocess.DEVNULL)
    yield proc
    proc.kill()
    proc.wait()


def write_state(home, pid, started_at, heartbeat=True):
    """A state.json and supervisor PID file as a living supervisor writes them (this test process
    plays the supervisor; its control socket does not answer)."""
    from botkeeper.fsutil import atomic_write_json, create_time, write_pidfile

    write_pidfile(home / "run" / "supervisor.pid")
    atomic_write_json(home / "run" / "state.json", {"supervisor": {"pid": os.getpid()}, "components": [{
        "name": "bot", "state": "running", "pid": pid, "create_time": create_time(pid),
        "started_at": started_at, "heartbeat": heartbeat}]})


def test_step_asks_for_restart_and_survives_a_missing_supervisor(home, sleeper, caplog):
    settings = Settings.from_env(bk_env(home), home=home)
    calls = []

    def call(settings, cmd, **args):
        calls.append((cmd, args))
        raise control.SupervisorUnavailable("the supervisor does not answer on control.sock")

    write_state(home, sleeper.pid, time.time() - 100)
    (home / "bot_health.txt").write_text(json.dumps({"pid": sleeper.pid, "written_at": time.time() - 50}))
    mon = Monitor(settings, call=call)
    decision = mon.step()
    assert decision.restart[0] == Cause.STALE_HEARTBEAT and decision.restart[1].startswith("heartbeat stale for 50 s")
    assert calls[0][0] == "restart" and calls[0][1]["name"] == "bot" and calls[0][1]["by"] == "monitor"
    assert calls[0][1]["cause"] == "stale-heartbeat"  # typed, through the control channel
    assert "auto_recovery" in caplog.text
    assert mon.step().verdict == "cooldown" and len(calls) == 1
    # A resource sample went into the history for the page's chart.
    rows = Store(settings.history_db).samples(0, "bot")
    assert len(rows) == 1 and rows[0]["rss_bytes"] > 1_000_000


def test_entry_point_exits_0_on_sigterm(home):
    env = bk_env(home, BOTKEEPER_COMPONENT="monitor")
    (home / "run").mkdir()
    err = home / "monitor.stderr"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bot_monitor.py")], env=env, stderr=fh)
    wait_for(lambda: "checking the bot" in err.read_text() or proc.poll() is not None, 10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "monitor stopping" in err.read_text()
