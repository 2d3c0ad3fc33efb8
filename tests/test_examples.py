"""The examples/ bots under the real supervisor in the offline demo (BOT_COMMAND, the emulator as a
component): each gets token, API URL and heartbeat file from its environment, answers, and beats."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.parse
import urllib.request

from conftest import ROOT, component, free_port, supervised, wait_for  # noqa: F401

from botkeeper.health.snapshot import read_heartbeat


CONTROL_TOKENS: dict[int, str] = {}  # port -> the demo emulator's run/emulator.token


def emulator_call(port: int, action: str, method: str = "GET", timeout: float = 15, **params) -> dict:
    """The demo emulator's control API (`/_emulator/<action>`), as the bundle's owner poking the demo
    would: with the token from run/emulator.token."""
    url = f"http://127.0.0.1:{port}/_emulator/{action}"
    data = None
    if method == "POST":
        data = json.dumps(params).encode()
    elif params:
        url += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(url, data, {"Content-Type": "application/json",
                                                 "Authorization": f"Bearer {CONTROL_TOKENS[port]}"}, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def ask(port: int, text: str, contains: str, chat_id: int = 777) -> str:
    sent = emulator_call(port, "messages", "POST", text=text, chat_id=chat_id)
    found = emulator_call(port, "sent", chat_id=chat_id, after=sent["message_id"], contains=contains, wait=15)
    assert found["messages"], f"no answer containing {contains!r} to {text!r}"
    return found["messages"][0]["text"]


def start_demo(supervised, home, command: str) -> int:
    port = free_port()
    supervised(components={"web": {"enabled": False}, "monitor": {"enabled": False}},
               DEMO="on", EMULATOR_PORT=str(port), BOT_COMMAND=command, DEMO_INTERVAL="3600")
    wait_for(lambda: component(home, "emulator").get("state") == "running", 15, message="the demo emulator")
    return control_ready(home, port)


def control_ready(home, port: int) -> int:
    """The demo emulator's per-run control token, read as its owner would, and the control API answering."""
    token_file = home / "run" / "emulator.token"
    CONTROL_TOKENS[port] = wait_for(lambda: token_file.exists() and token_file.read_text(), 15,
                                    message="run/emulator.token")
    assert token_file.stat().st_mode & 0o077 == 0
    wait_for(lambda: answers(port), 15, 0.05, "the demo emulator answering")
    return port


def answers(port: int) -> bool:
    try:
        return isinstance(emulator_call(port, "state", timeout=2), dict)
    except OSError:
        return False


def fresh_beat(home, pid: int) -> dict:
    """A heartbeat from this pid, rewritten after we started looking: live, not a leftover."""
    since = time.time()
    return wait_for(lambda: (hb := read_heartbeat(home / "bot_health.txt").data) and hb.get("pid") == pid
                    and hb["written_at"] > since and hb, 10, 0.05, f"a fresh heartbeat from pid {pid}")


def test_standalone_ptb_bot_with_attach_in_the_demo(supervised, home):
    port = start_demo(supervised, home, f"{sys.executable} {ROOT / 'examples' / 'ptb_bot' / 'bot.py'}")
    assert "2.50 EUR" in ask(port, "/price", "coffee")
    assert "coffee bot" in ask(port, "/start", "Hi")  # its own /start, not the built-in
    assert "pong" in ask(port, "/ping", "pong")  # a built-in attach() added where the bot had none
    pid = component(home, "bot")["pid"]
    hb = fresh_beat(home, pid)
    assert hb["state"] == "polling" and hb["updates_handled"] >= 3
    logs = (home / "logs" / "bot.log").read_text()
    assert "built-in commands added: /help /ping /status /uptime (yours kept: /start)" in logs
    assert "DEMO-botkeeper" not in logs  # the token never reaches a log


UNCHANGED_BOT = ROOT / "examples" / "unchanged_bot" / "bot.py"


def test_unchanged_ptb_bot_from_one_line_gets_demo_url_heartbeat_builtins_and_redaction(supervised, home):
    """README's three steps: BOT_COMMAND="python bot.py" for a bot that knows nothing of botkeeper."""
    source = UNCHANGED_BOT.read_text()
    assert "botkeeper" not in source.split('"""', 2)[2] and "BOTKEEPER" not in source  # code: not a word of us
    port = start_demo(supervised, home, f"python {UNCHANGED_BOT}")  # `python`: whatever PATH has, or none
    assert "Sunny" in ask(port, "/weather", "Sunny")  # the emulator's URL: the demo reached it
    assert "weather bot" in ask(port, "/start", "Hi")  # its own /start kept
    assert "pong" in ask(port, "/ping", "pong")  # built-ins where it has none
    bot = component(home, "bot")
    hb = fresh_beat(home, bot["pid"])
    assert hb["state"] == "polling" and hb["updates_handled"] >= 3
    logs = (home / "logs" / "bot.log").read_text()
    assert "built-in commands added: /help /ping /status /uptime (yours kept: /start)" in logs
    assert "DEMO-botkeeper" not in logs  # the token never reaches a log, not even in httpx's URLs


def test_unchanged_bot_is_warm_started_with_either_python_spelling(supervised, home):
    port = free_port()
    supervised(components={"web": {"enabled": False}, "monitor": {"enabled": False}}, DEMO="on",
               EMULATOR_PORT=str(port), BOT_COMMAND=f"python3 {UNCHANGED_BOT}", DEMO_INTERVAL="3600",
               WARM_STANDBY="auto")
    wait_for(lambda: component(home, "forkserver").get("state") == "running", 30, message="the fork server")
    control_ready(home, port)
    assert "Sunny" in ask(port, "/weather", "Sunny")
    first = component(home, "bot")["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: (c := component(home, "bot")).get("state") == "running" and c["pid"] != first, 15,
             message="the bot restarted")
    assert "Sunny" in ask(port, "/weather", "Sunny")
    assert "bot: warm start from the fork server" in (home / "logs" / "supervisor.log").read_text()


def test_plain_bot_supervised_with_heartbeat_contract(supervised, home):
    port = start_demo(supervised, home, f"{sys.executable} {ROOT / 'examples' / 'plain_bot' / 'bot.py'}")
    assert "plain bot" in ask(port, "/price", "coffee")
    first = component(home, "bot")["pid"]
    assert fresh_beat(home, first)["state"] == "polling"
    os.kill(first, signal.SIGKILL)  # supervised like any bot: restarted, and beating again
    second = wait_for(lambda: (c := component(home, "bot")).get("state") == "running" and c["pid"] != first
                      and c["pid"], 15, message="the plain bot restarted")
    assert fresh_beat(home, second)["state"] == "polling"
    assert "plain bot" in ask(port, "/price", "coffee")


def test_beat_command_writes_the_contract(home, tmp_path):
    """`python -m botkeeper beat`: the one line a shell or any-language bot calls."""
    import subprocess

    from conftest import bk_env

    target = tmp_path / "hb.json"
    env = bk_env(home, BOTKEEPER_HEARTBEAT_FILE=str(target))
    before = time.time()
    res = subprocess.run([sys.executable, "-m", "botkeeper", "beat", "--detail", "queue empty"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    hb = read_heartbeat(target).data
    assert hb["state"] == "alive" and hb["detail"] == "queue empty" and hb["written_at"] >= before
    assert hb["pid"] == os.getpid()  # the caller (the bot) owns the beat, not the short-lived command
