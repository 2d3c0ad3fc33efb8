"""The supervisor with real child processes, real signals and its real control socket."""

import json
import os
import signal
import subprocess
import sys
import time

from botkeeper.supervise import control
from botkeeper.config import Settings
from conftest import (ROOT, SLEEPER, bk_env, component, pid_alive, py_command, read_state, wait_for,
                      write_components)

CRASHER = py_command("""
    import sys
    print("crashing", flush=True)
    sys.exit(3)
""")
NEEDS_TOKEN = py_command("""
    import sys
    from botkeeper.causes import Cause
    from botkeeper.runfiles import write_exit_note
    why = "TELEGRAM_BOT_TOKEN is not set: add it in Replit Secrets or .env"
    print(why, file=sys.stderr, flush=True)
    write_exit_note(Cause.NEEDS_CONFIG, why)  # the component says why; nobody parses its log
    print("a later line that is not the reason", file=sys.stderr, flush=True)
    sys.exit(78)
""")
SILENT_78 = py_command("""
    import sys
    print("some last line", flush=True)
    sys.exit(78)
""")
ONLY = {"web": {"enabled": False}, "monitor": {"enabled": False}}


def running_pid(home, name, other_than=None):
    c = component(home, name)
    if c.get("state") == "running" and c.get("pid") and c["pid"] != other_than:
        return c["pid"]
    return None


def test_a_crash_and_a_sigkill_are_restarted_with_reasons(home, supervised):
    supervised({"bot": {"command": SLEEPER, "heartbeat": False}, **ONLY})
    first = wait_for(lambda: running_pid(home, "bot"), message="bot running")
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: running_pid(home, "bot", other_than=first), message="bot restarted")
    bot = component(home, "bot")
    assert bot["restarts"] == 1 and "killed by SIGKILL" in bot["last_restart_reason"]
    assert bot["last_exit_signal"] == signal.SIGKILL and not pid_alive(first)
    restarts = read_state(home)["recent_restarts"]
    assert restarts[-1]["component"] == "bot" and restarts[-1]["by"] == "supervisor"
    # Log lines of every incarnation land in logs/bot.log.
    assert (home / "logs" / "bot.log").read_text().count("up") >= 2
    assert second


def test_crash_loop_backs_off_reaches_errored_and_retries_slowly(home, supervised):
    supervised({"bot": {"command": CRASHER, "heartbeat": False, "restart_delay": 0.1, "max_restart_delay": 0.8,
                        "max_restarts": 5, "errored_retry": 1.5}, **ONLY})
    settings = Settings.from_env(bk_env(home))
    wait_for(lambda: component(home, "bot").get("state") == "errored", 15, message="errored")
    from botkeeper.store import Store

    starts = [e["at"] for e in reversed(Store(settings.history_db).events(kinds=("start", "restart"), component="bot"))]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) == 5 and all(b > a * 1.5 for a, b in zip(gaps, gaps[1:])), gaps  # delays grow
    errored_at = time.time()
    errored = Store(settings.history_db).events(kinds=("errored",), component="bot")
    assert "5 quick failures in a row" in errored[0]["detail"] and "code 3" in errored[0]["detail"]
    # Retried at the slow rate, not hammered, and not abandoned.
    wait_for(lambda: component(home, "bot")["restarts"] >= 5, 10, message="slow retry")
    retried_at = time.time()
    assert retried_at - errored_at >= 1.0
    assert component(home, "bot")["state"] in ("errored", "starting")


def test_exit_78_means_needs_config_with_the_reason_and_no_restart(home, supervised):
    supervised({"bot": {"command": NEEDS_TOKEN, "heartbeat": False}, **ONLY}, PYTHONPATH=str(ROOT))
    wait_for(lambda: component(home, "bot").get("state") == "needs-config", message="needs-config")
    bot = component(home, "bot")
    assert bot["last_restart_reason"].startswith("TELEGRAM_BOT_TOKEN is not set")
    assert bot["cause"] == "needs-config"
    assert bot["next_start_at"] is None and bot["restarts"] == 0  # nothing scheduled: no restart loop


def test_exit_78_without_a_note_names_the_log_and_never_guesses_from_it(home, supervised):
    supervised({"bot": {"command": SILENT_78, "heartbeat": False}, **ONLY})
    wait_for(lambda: component(home, "bot").get("state") == "needs-config", message="needs-config")
    bot = component(home, "bot")
    assert bot["last_restart_reason"] == "exited with code 78 (EX_CONFIG): see logs/bot.log"
    assert bot["next_start_at"] is None and bot["restarts"] == 0


def test_stop_and_restart_through_the_control_channel_leave_no_process(home, supervised):
    # A component with a grandchild in its group, and one that ignores SIGTERM.
    parent = py_command("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        print("grandchild", child.pid, flush=True)
        time.sleep(3600)
    """)
    stubborn = py_command("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("up", flush=True)
        time.sleep(3600)
    """)
    supervised({"bot": {"command": parent, "heartbeat": False}, "web": {"command": stubborn, "kill_timeout": 0.5},
                "monitor": {"enabled": False}})
    bot_pid = wait_for(lambda: running_pid(home, "bot"))
    web_pid = wait_for(lambda: running_pid(home, "web"))
    grandchild = int(wait_for(lambda: [l for l in (home / "logs" / "bot.log").read_text().split("\n") if "grandchild" in l],
                              message="grandchild pid")[0].split()[1])
    settings = Settings.from_env(bk_env(home))
    control.call(settings, "stop", name="bot", reason="test stop", by="test")
    wait_for(lambda: component(home, "bot")["state"] == "stopped", message="bot stopped")
    wait_for(lambda: not pid_alive(bot_pid) and not pid_alive(grandchild), message="group gone")
    control.call(settings, "restart", name="web", cause="operator", reason="test restart", by="test")
    new_web = wait_for(lambda: running_pid(home, "web", other_than=web_pid), 10, message="web restarted")
    assert not pid_alive(web_pid)  # SIGKILLed after kill_timeout
    web = component(home, "web")
    assert web["last_restart_reason"] == "test restart" and web["restarts"] == 1
    last = read_state(home)["recent_restarts"][-1]
    assert (last["component"], last["cause"], last["detail"], last["by"]) == ("web", "operator", "test restart", "test")
    assert new_web


def test_sigstopped_child_is_stopped_with_sigcont(home, supervised):
    supervised({"bot": {"command": SLEEPER, "heartbeat": False, "kill_timeout": 5}, **ONLY})
    pid = wait_for(lambda: running_pid(home, "bot"))
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    control.call(Settings.from_env(bk_env(home)), "stop", name="bot", reason="t", by="test")
    wait_for(lambda: not pid_alive(pid), 4, message="stopped child ended by SIGTERM+SIGCONT")
    assert time.monotonic() - t0 < 4  # well before the 5 s SIGKILL deadline


def test_control_channel_rejects_unknown_things_clearly(home, supervised):
    supervised({"bot": {"command": SLEEPER, "heartbeat": False}, **ONLY})
    settings = Settings.from_env(bk_env(home))
    import pytest

    with pytest.raises(control.ControlError, match="unknown component 'nope'"):
        control.call(settings, "restart", name="nope")
    with pytest.raises(control.ControlError, match="unknown command"):
        control.call(settings, "explode")
    assert control.call(settings, "event", component="bot", kind="telegram-unreachable", by="test")["recorded"]


def test_killed_supervisor_leaves_nothing_running_twice_after_next_start(home, supervised):
    first = supervised({"bot": {"command": SLEEPER, "heartbeat": False}, "web": {"command": SLEEPER},
                        "monitor": {"enabled": False}})
    bot1 = wait_for(lambda: running_pid(home, "bot"))
    web1 = wait_for(lambda: running_pid(home, "web"))
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(5)
    # PR_SET_PDEATHSIG: the children end with their supervisor.
    wait_for(lambda: not pid_alive(bot1) and not pid_alive(web1), 5, message="children die with supervisor")
    supervised()
    bot2 = wait_for(lambda: running_pid(home, "bot", other_than=bot1), message="new bot")
    assert bot2 != bot1


def test_new_supervisor_ends_leftovers_that_survived_the_old_one(home, supervised):
    # A child that ignores SIGTERM survives its supervisor's death (PDEATHSIG is SIGTERM):
    # the next supervisor must end it before starting a second copy.
    stubborn = py_command("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("up", flush=True)
        time.sleep(3600)
    """)
    first = supervised({"bot": {"command": stubborn, "heartbeat": False, "kill_timeout": 0.5}, **ONLY})
    bot1 = wait_for(lambda: running_pid(home, "bot"))
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(5)
    assert pid_alive(bot1)
    supervised()
    bot2 = wait_for(lambda: running_pid(home, "bot", other_than=bot1), message="new bot")
    assert not pid_alive(bot1) and bot2 != bot1
    assert "left behind by a previous supervisor" in (home / "logs" / "supervisor.log").read_text()


def test_second_supervisor_refuses_to_start(home, supervised):
    supervised({"bot": {"command": SLEEPER, "heartbeat": False}, **ONLY})
    proc = subprocess.run([sys.executable, "-m", "botkeeper", "supervise"], cwd=ROOT, env=bk_env(home),
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 75 and "already owns" in proc.stderr


def test_a_missing_program_is_needs_config_not_a_loop(home, supervised):
    supervised({"bot": {"command": ["/nonexistent/bot-binary"], "heartbeat": False}, **ONLY})
    wait_for(lambda: component(home, "bot").get("state") == "needs-config")
    assert "cannot run" in component(home, "bot")["last_restart_reason"]


def test_sigterm_stops_every_child_within_kill_timeout(home, supervised):
    sup = supervised({"bot": {"command": SLEEPER, "heartbeat": False}, "web": {"command": SLEEPER},
                      "monitor": {"command": SLEEPER}})
    pids = [wait_for(lambda n=n: running_pid(home, n)) for n in ("bot", "web", "monitor")]
    t0 = time.monotonic()
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(10) == 0
    assert time.monotonic() - t0 < 3.5
    assert not any(pid_alive(p) for p in pids)
    assert all(c["state"] == "stopped" for c in read_state(home)["components"])
    assert not (home / "run" / "control.sock").exists()


def test_child_logs_rotate_by_size_and_keep_the_configured_number(home, supervised):
    chatty = py_command("""
        import sys
        for i in range(3000):
            print(f"line {i:05d} " + "x" * 60)
        sys.stdout.flush()
        import time; time.sleep(3600)
    """)
    supervised({"bot": {"command": chatty, "heartbeat": False}, **ONLY}, LOG_MAX_BYTES="20000", LOG_BACKUPS="2")
    logs = home / "logs"
    def written():
        try:
            return "line 02999" in (logs / "bot.log").read_text()
        except FileNotFoundError:  # between rename and reopen during a rotation
            return False

    wait_for(written, message="all lines written")
    files = sorted(p.name for p in logs.glob("bot.log*"))
    assert files == ["bot.log", "bot.log.1", "bot.log.2"]
    assert all((logs / f).stat().st_size <= 20000 + 200 for f in files)
    assert "line 00000" not in "".join((logs / f).read_text() for f in files)  # oldest rotated away


def test_readme_documents_every_setting():
    from botkeeper.config import KNOBS

    readme = (ROOT / "README.md").read_text()
    missing = [k.env for k in KNOBS.values() if f"`{k.env}`" not in readme]
    assert missing == [], f"README.md settings table lacks {missing}: regenerate with python -m botkeeper config --markdown"


def test_a_deep_bundle_home_still_gets_its_control_socket(tmp_path):
    """sun_path holds 107 bytes: a home deeper than that (a long project path) must still work."""
    from conftest import Supervised

    deep = tmp_path / ("d" * 60) / ("e" * 60) / "bk"
    deep.mkdir(parents=True)
    write_components(deep, bot={"command": SLEEPER, "heartbeat": False}, **ONLY)
    assert len(str(deep / "run" / "control.sock")) > 108
    sup = Supervised(deep, bk_env(deep)).start()
    try:
        state = control.call(deep / "run" / "control.sock", "status")
        assert state["components"][0]["name"] == "bot"
        status = subprocess.run([sys.executable, "-m", "botkeeper", "status", "--json"], cwd=ROOT, env=bk_env(deep),
                                capture_output=True, text=True, timeout=30)
        assert status.returncode in (0, 1) and json.loads(status.stdout)["components"][0]["name"] == "bot"
    finally:
        sup.stop()
