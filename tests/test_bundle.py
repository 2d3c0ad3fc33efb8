"""The bundle as a user drives it: start (detached and foreground), start over a running copy,
racing starts, status, stop. Processes are counted by the environment our supervisor gives them."""

import json
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from conftest import ROOT, SLEEPER, bk_env, py_command, read_state, wait_for, write_components

FAKE_BOT = py_command(f"""
    import sys, time
    sys.path.insert(0, {str(ROOT)!r})
    from botkeeper import heartbeat
    print("fake bot polling", flush=True)
    while True:
        heartbeat.beat(state="polling")
        time.sleep(0.1)
""")


def bundle_processes(home):
    """Every live process that belongs to the bundle in `home` (test-side census, by environment)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            if env.get("BOTKEEPER_HOME") == str(home) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append((proc.pid, env.get("BOTKEEPER_COMPONENT", "root"), " ".join(proc.cmdline())[:80]))
        except psutil.Error:
            continue
    return found


def _heads(procs):
    """Drop processes whose parent is in the list: a child between fork and exec still shows its
    parent's command line and environment, and is not a second copy."""
    pids = {p[0] for p in procs}
    out = []
    for p in procs:
        try:
            if psutil.Process(p[0]).ppid() not in pids:
                out.append(p)
        except psutil.Error:
            continue
    return out


def bots(home):
    return _heads([p for p in bundle_processes(home) if p[1] == "bot"])


def supervisors(home):
    return _heads([p for p in bundle_processes(home) if p[1] == "root" and "supervise" in p[2]])


def botkeeper(home, *args, timeout=60, **env):
    return subprocess.run([sys.executable, "-m", "botkeeper", *args], cwd=ROOT, env=bk_env(home, **env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def bundle_home(home):
    write_components(home, bot={"command": FAKE_BOT}, web={"command": SLEEPER}, monitor={"command": SLEEPER})
    yield home
    botkeeper(home, "stop")
    assert bundle_processes(home) == []


def test_detach_start_status_restart_stop(bundle_home):
    home = bundle_home
    assert botkeeper(home, "status").returncode == 3
    start = botkeeper(home, "start", "--detach")
    assert start.returncode == 0, start.stdout + start.stderr
    assert "status page" in start.stdout and "healthy: every component is running" in start.stdout
    status = botkeeper(home, "status", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["healthy"] is True and isinstance(doc["supervisor"]["pid"], int) and doc["runner"]["running"]
    names = [c["name"] for c in doc["components"]]
    assert names == ["bot", "web", "monitor"]
    for c in doc["components"]:
        assert set(c) >= {"name", "pid", "state", "restarts", "uptime_seconds", "memory_bytes", "cpu_percent",
                          "last_exit_code", "last_restart_reason"}
        assert c["state"] == "running" and c["memory_bytes"] > 0
    table = botkeeper(home, "status").stdout
    assert "bot" in table and "run_24_7.sh" in table and "overall: HEALTHY" in table
    old_bot = doc["components"][0]["pid"]
    assert botkeeper(home, "restart", "bot").returncode == 0
    wait_for(lambda: bots(home) and bots(home)[0][0] != old_bot, message="bot restarted")
    logs = botkeeper(home, "logs", "supervisor", "-n", "50").stdout
    assert "requested from the command line" in logs
    stop = botkeeper(home, "stop")
    assert stop.returncode == 0 and bundle_processes(home) == []
    assert botkeeper(home, "status").returncode == 3


def test_start_over_a_running_copy_replaces_it_and_racing_starts_give_one_bundle(bundle_home):
    home = bundle_home
    assert botkeeper(home, "start", "--detach").returncode == 0
    first_sup = supervisors(home)
    results = []
    threads = [threading.Thread(target=lambda: results.append(botkeeper(home, "start", "--detach", timeout=120)))
               for _ in range(2)]
    seen_two = []
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if len(bots(home)) > 1 or len(supervisors(home)) > 1:
            seen_two.append(bundle_processes(home))
        time.sleep(0.05)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert seen_two == []
    assert len(bots(home)) == 1 and len(supervisors(home)) == 1
    assert supervisors(home) != first_sup  # the earlier copy was replaced, not joined
    assert "stopping the copy that is already running" in results[1].stdout


def test_foreground_start_streams_logs_and_sigterm_stops_everything(bundle_home):
    home = bundle_home
    proc = subprocess.Popen([sys.executable, "-m", "botkeeper", "start"], cwd=ROOT, env=bk_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []

    def read():
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: any("healthy" in l for l in lines), 30, message="healthy banner")
    wait_for(lambda: any("fake bot polling" in l for l in lines), 10, message="streamed child line")
    assert any("status page" in l for l in lines)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert bundle_processes(home) == []


def test_detach_names_the_component_that_did_not_come_up(home):
    write_components(home, bot={"command": SLEEPER}, web={"command": SLEEPER}, monitor={"command": SLEEPER})
    try:
        result = botkeeper(home, "start", "--detach", START_TIMEOUT="1.5", HEARTBEAT_GRACE="0.5")
        assert result.returncode == 1
        assert "heartbeat" in result.stderr and "logs/bot.log" in result.stderr and "up" in result.stderr
    finally:
        botkeeper(home, "stop")
    assert bundle_processes(home) == []


def test_stop_cleans_up_after_a_killed_runner_and_supervisor(bundle_home):
    home = bundle_home
    assert botkeeper(home, "start", "--detach").returncode == 0
    state = read_state(home)
    runner = json.loads((home / "run" / "runner.pid").read_text())
    psutil.Process(runner).kill()
    psutil.Process(state["supervisor"]["pid"]).kill()
    assert botkeeper(home, "stop").returncode == 0
    wait_for(lambda: bundle_processes(home) == [], 10, message="nothing left")
