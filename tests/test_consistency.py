"""Every surface says the same thing: a real bundle driven through healthy, starting, conflict, a
Telegram outage, a hung bot, a corrupt state.json, a token rejected mid-run and a killed supervisor.

At each step /health (code and body), /api/status, /metrics, the page and `status --json` (with its
exit code) must report the same overall and the same cause. The page and APIs are served by a real
keep_alive.py outside the supervisor, so they stay up when the supervisor is killed; the bot is the
real python-telegram-bot against the project's emulator.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from botfixtures import FAKE_TOKEN, emulator  # noqa: F401 - fixture
from conftest import ROOT, bk_env, component, free_port, read_state, wait_for, write_components

OTHER_TOKEN = "987654321:BBH-another-fake-token-0123456789abc"


def surfaces(home, env, base):
    """(overall, cause) per surface, plus the exit code of `status`."""
    seen = {}
    health = requests.get(f"{base}/health", timeout=5)
    body = health.json()
    assert (health.status_code == 200) == (body["status"] == "healthy"), body
    seen["/health"] = (body["status"], body["cause"])
    data = requests.get(f"{base}/api/status", timeout=5).json()["data"]
    seen["/api/status"] = (data["status"], data["cause"])
    families = {f.name: f for f in text_string_to_metric_families(requests.get(f"{base}/metrics", timeout=5).text)}
    status = [s.labels["status"] for s in families["botkeeper_status"].samples if s.value == 1]
    cause = [s.labels["cause"] for s in families["botkeeper_cause"].samples if s.value == 1]
    seen["/metrics"] = (status[0] if status else None, cause[0] if cause else None)
    page = requests.get(f"{base}/", timeout=5).text
    word = re.search(r'<body data-refresh="[^"]*" data-state="([^"]+)"', page).group(1)
    shown_cause = re.search(r'<p class="cause" id="cause"(?: hidden)?>(?:\s*<b>([^<]*)</b>)?', page).group(1)
    seen["page"] = (word, shown_cause)
    cli = subprocess.run([sys.executable, "-m", "botkeeper", "status", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    if cli.returncode == 3:
        seen["status"] = ("not running", None)
    else:
        doc = json.loads(cli.stdout)
        assert cli.returncode == (0 if doc["healthy"] else 1), (cli.returncode, doc["overall"])
        seen["status"] = (doc["overall"], doc["cause"])
    seen["status exit"] = cli.returncode
    return seen


def agree(seen, overall, cause):
    from botkeeper.causes import Cause

    label = Cause(cause).label if cause else None
    want = {"/health": (overall, cause), "/api/status": (overall, cause), "/metrics": (overall, cause),
            "page": (overall, label)}
    if overall == "down" and cause == "supervisor-down":
        want["status"], code = ("not running", None), 3
    else:
        want["status"], code = (overall, cause), (0 if overall == "healthy" else 1)
    return all(seen[k] == v for k, v in want.items()) and seen["status exit"] == code


def all_say(home, env, base, overall, cause, timeout=20.0):
    last = {}

    def check():
        last["seen"] = surfaces(home, env, base)
        return agree(last["seen"], overall, cause)

    try:
        wait_for(check, timeout, 0.2, f"every surface to say {overall}/{cause}")
    except AssertionError:
        raise AssertionError(f"surfaces disagree or are not {overall}/{cause}: {last.get('seen')}") from None
    return last["seen"]


def answers(url):
    try:
        return requests.get(url, timeout=1).ok
    except requests.ConnectionError:
        return False


@pytest.fixture
def external_web(home):
    """keep_alive.py as its own process (not supervised), serving this home's files."""
    procs = []

    def start(env):
        proc = subprocess.Popen([sys.executable, str(ROOT / "keep_alive.py")], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        base = f"http://127.0.0.1:{env['PORT']}"
        wait_for(lambda: answers(f"{base}/ping"), 20, 0.1, "the page to answer")
        return base

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_every_surface_reports_the_same_overall_and_cause(home, emulator, supervised, external_web):  # noqa: F811
    write_components(home, web={"enabled": False}, monitor={"enabled": False})
    env = bk_env(home, TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, HOST="127.0.0.1",
                 PORT=str(free_port()), STALE_AFTER="1.5", OUTAGE_RESTART_INTERVAL="3600")
    sup = supervised(**{k: env[k] for k in ("TELEGRAM_API_BASE_URL", "TELEGRAM_BOT_TOKEN", "HOST", "PORT",
                                             "STALE_AFTER", "OUTAGE_RESTART_INTERVAL")})
    base = external_web(env)
    all_say(home, env, base, "healthy", None)

    # starting: Telegram is slow to answer getMe, so the new bot is not polling yet
    emulator.add_fault("getMe", "delay", count=None, seconds=30)
    from botkeeper.supervise import control
    from botkeeper.config import Settings

    settings = Settings.from_env(env, home=home)
    control.call(settings, "restart", name="bot", cause="operator", reason="consistency test", by="test")
    all_say(home, env, base, "starting", "starting")
    emulator.clear_faults()
    all_say(home, env, base, "healthy", None)

    # another poller with this token: 409 Conflict
    emulator.add_fault("getUpdates", "error", count=None, status=409,
                       description="Conflict: terminated by other getUpdates request")
    all_say(home, env, base, "down", "conflict")
    emulator.clear_faults()
    all_say(home, env, base, "healthy", None)

    # Telegram unreachable: degraded, never restarted for it here (OUTAGE_RESTART_INTERVAL)
    emulator.add_fault("getUpdates", "error", count=None, status=502)
    all_say(home, env, base, "degraded", "telegram-outage")
    emulator.clear_faults()
    all_say(home, env, base, "healthy", None)

    # hung: alive but silent (no monitor in this bundle, so it stays hung for us to look at)
    bot_pid = component(home, "bot")["pid"]
    os.kill(bot_pid, signal.SIGSTOP)
    all_say(home, env, base, "down", "stale-heartbeat")
    os.kill(bot_pid, signal.SIGCONT)
    all_say(home, env, base, "healthy", None)

    # a corrupt state.json under a living supervisor: never "supervisor not running"; repaired
    state_file = home / "run" / "state.json"
    state_file.write_text("[1,2,3]")
    said = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        body = requests.get(f"{base}/health", timeout=5).json()
        said.add((body["status"], body["cause"]))
        state = read_state(home)
        if isinstance(state, dict) and isinstance(state.get("components"), list) and body["status"] == "healthy":
            break
        time.sleep(0.05)
    assert said <= {("healthy", None), ("degraded", "state-unknown")}, said
    assert isinstance(json.loads(state_file.read_text()), dict)  # the supervisor wrote its own again
    all_say(home, env, base, "healthy", None)

    # the token is revoked mid-run: the bot says why and exits 78; nobody guesses from a log line
    emulator.set_tokens([OTHER_TOKEN])
    seen = all_say(home, env, base, "needs-config", "token-rejected")
    assert seen["status exit"] == 1
    detail = requests.get(f"{base}/health", timeout=5).json()["detail"]
    assert detail.startswith("Telegram rejected the bot token 123456789:***")
    emulator.set_tokens(None)

    # the supervisor is killed (its children follow it): down, and `status` says not running (3)
    os.kill(sup.proc.pid, signal.SIGKILL)
    sup.proc.wait(5)
    all_say(home, env, base, "down", "supervisor-down")


def test_start_detach_exits_78_with_the_bots_own_reason_when_the_token_is_rejected(home, emulator):  # noqa: F811
    emulator.set_tokens([OTHER_TOKEN])
    env = bk_env(home, TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, HOST="127.0.0.1")
    write_components(home, monitor={"enabled": False})
    try:
        start = subprocess.run([sys.executable, "-m", "botkeeper", "start", "--detach"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=90)
        assert start.returncode == 78, start.stdout + start.stderr
        assert "needs configuration (token-rejected): Telegram rejected the bot token 123456789:***" in start.stderr
        assert "healthy" not in start.stdout
        status = subprocess.run([sys.executable, "-m", "botkeeper", "status", "--json"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=30)
        doc = json.loads(status.stdout)
        assert (status.returncode, doc["overall"], doc["cause"]) == (1, "needs-config", "token-rejected")
        assert FAKE_TOKEN.split(":")[1] not in start.stdout + start.stderr + status.stdout
    finally:
        subprocess.run([sys.executable, "-m", "botkeeper", "stop"], cwd=ROOT, env=env, capture_output=True,
                       timeout=60)
