"""Live reload against a real supervisor: `reload` and SIGHUP re-read botkeeper.toml; thresholds reach
the monitor (restarted) while the bot keeps its PID; a bad file is refused and the running settings kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import ROOT, SLEEPER, bk_env, component, wait_for

COMPONENTS = ('[components.bot]\ncommand = ' + json.dumps(SLEEPER) + '\nheartbeat = false\n'
              '[components.web]\nenabled = false\n')


def write_toml(home, settings: str = "") -> None:
    (home / "botkeeper.toml").write_text(f"[settings]\n{settings}\n" + COMPONENTS)


def cli(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "botkeeper", *args], cwd=ROOT, env=bk_env(home),
                          capture_output=True, text=True, timeout=30)


def monitor_says(home, text: str) -> bool:
    try:
        return text in (home / "logs" / "monitor.log").read_text()
    except OSError:
        return False


def test_reload_changes_stale_after_without_restarting_the_bot_and_refuses_a_bad_file(home, supervised):
    write_toml(home)
    sup = supervised()
    bot = wait_for(lambda: component(home, "bot").get("pid"), 10, message="the bot")
    monitor = wait_for(lambda: component(home, "monitor").get("state") == "running" and component(home, "monitor")["pid"],
                       15, message="the monitor running")
    wait_for(lambda: monitor_says(home, "stale after 2 s"), 15, message="the monitor's start line (test profile)")

    write_toml(home, "stale_after = 7")
    res = cli(home, "reload")
    assert res.returncode == 0 and "STALE_AFTER" in res.stdout and "monitor" in res.stdout, res.stdout + res.stderr
    wait_for(lambda: monitor_says(home, "stale after 7 s"), 15, message="the monitor started with STALE_AFTER=7")
    new_monitor = component(home, "monitor")
    assert new_monitor["pid"] != monitor and new_monitor["cause"] == "reload"
    assert component(home, "bot")["pid"] == bot  # the bot was not restarted

    write_toml(home, 'stale_after = "soon"')
    res = cli(home, "reload")
    err = res.stderr.strip().splitlines()
    assert res.returncode == 78 and len(err) == 1 and "stale_after" in err[0] and "kept" in err[0], res.stderr
    assert component(home, "monitor")["pid"] == new_monitor["pid"] and component(home, "bot")["pid"] == bot
    # The supervisor refuses it too (SIGHUP: nobody checked the file before it did).
    os.kill(sup.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload refused" in (home / "logs" / "supervisor.log").read_text(), 10,
             message="the supervisor refusing the bad file")
    assert component(home, "monitor")["pid"] == new_monitor["pid"] and component(home, "bot")["pid"] == bot

    # SIGHUP with a good file does what `reload` does.
    write_toml(home, "stale_after = 9")
    os.kill(sup.proc.pid, signal.SIGHUP)
    wait_for(lambda: monitor_says(home, "stale after 9 s"), 15, message="the monitor started with STALE_AFTER=9")
    assert component(home, "bot")["pid"] == bot and sup.proc.poll() is None
