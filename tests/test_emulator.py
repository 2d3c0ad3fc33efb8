"""The Bot API emulator over real HTTP: the Bot API side, the control side, faults, the CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from botfixtures import FAKE_TOKEN, emulator, wait_for  # noqa: F401 - fixture
from botkeeper.config import Settings
from botkeeper.emulator import Emulator
from conftest import ROOT, bk_env, free_port

OTHER_TOKEN = "987654321:BBH-another-token-for-tests-0123456"


def api(emu, method: str, token: str = FAKE_TOKEN, http_timeout: float = 10, **params):
    return requests.post(f"{emu.url}/bot{token}/{method}", data=params, timeout=http_timeout)


def test_get_me_and_unknown_method(emulator):
    res = api(emulator, "getMe").json()
    assert res["ok"] and res["result"]["id"] == 123456789 and res["result"]["is_bot"]
    bad = api(emulator, "noSuchMethod")
    assert bad.status_code == 404 and bad.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
    # GET with a query string works too, like api.telegram.org
    assert requests.get(f"{emulator.url}/bot{FAKE_TOKEN}/getMe", timeout=5).json()["ok"]


def test_tokens_restricted_like_telegram(emulator):
    emulator.set_tokens([OTHER_TOKEN])
    rejected = api(emulator, "getMe")
    assert rejected.status_code == 401 and rejected.json()["description"] == "Unauthorized"
    assert api(emulator, "getMe", token="not-a-token").status_code == 404
    assert api(emulator, "getMe", token=OTHER_TOKEN).json()["ok"]
    emulator.set_tokens(None)
    assert api(emulator, "getMe").json()["ok"]


def test_long_polling_offset_and_drop_pending(emulator):
    started = time.monotonic()
    assert api(emulator, "getUpdates", http_timeout=5, timeout=1).json()["result"] == []
    assert time.monotonic() - started >= 0.9  # really waited

    threading.Timer(0.3, emulator.inject_message, args=("/start",)).start()
    started = time.monotonic()
    updates = api(emulator, "getUpdates", timeout=5).json()["result"]
    assert time.monotonic() - started < 2.0  # answered as soon as the message arrived
    assert updates[0]["message"]["text"] == "/start"
    assert updates[0]["message"]["entities"][0]["type"] == "bot_command"

    second = emulator.inject_message("hello")
    again = api(emulator, "getUpdates").json()["result"]
    assert [u["update_id"] for u in again] == [updates[0]["update_id"], second["update_id"]]  # not confirmed yet
    confirmed = api(emulator, "getUpdates", offset=second["update_id"]).json()["result"]
    assert [u["update_id"] for u in confirmed] == [second["update_id"]]
    assert api(emulator, "getUpdates", offset=second["update_id"] + 1).json()["result"] == []

    emulator.inject_message("old news")
    assert api(emulator, "deleteWebhook", drop_pending_updates="true").json()["result"] is True
    assert api(emulator, "getUpdates").json()["result"] == []
    assert api(emulator, "getWebhookInfo").json()["result"]["url"] == ""


def test_newer_poll_ends_older_one_with_409(emulator):
    results = {}

    def older():
        results["older"] = api(emulator, "getUpdates", timeout=5)

    thread = threading.Thread(target=older)
    thread.start()
    wait_for(lambda: emulator.calls()["counts"].get("getUpdates") == 1, 5, message="first poll")
    time.sleep(0.1)  # let the first poll start waiting
    newer = api(emulator, "getUpdates", timeout=0)
    thread.join(5)
    assert newer.json()["ok"]
    assert results["older"].status_code == 409
    assert "only one bot instance" in results["older"].json()["description"]


def test_send_edit_and_read_back(emulator):
    chat = 777
    sent = requests.post(f"{emulator.url}/bot{FAKE_TOKEN}/sendMessage", json={"chat_id": chat, "text": "hi"},
                         timeout=5).json()["result"]
    assert sent["chat"]["id"] == chat and sent["text"] == "hi"
    edited = api(emulator, "editMessageText", chat_id=chat, message_id=sent["message_id"], text="hi again").json()
    assert edited["result"]["text"] == "hi again"
    got = requests.get(f"{emulator.url}/_emulator/sent", params={"chat_id": chat}, timeout=5,
                       headers=emulator.control_headers).json()["messages"]
    assert [m["text"] for m in got] == ["hi again"]
    for method in ("setMyCommands", "sendChatAction", "answerCallbackQuery", "close", "logOut"):
        assert api(emulator, method, chat_id=chat, action="typing", callback_query_id="1").json()["result"] is True
    assert api(emulator, "sendMessage", chat_id=chat, text="").status_code == 400


def test_control_inject_and_wait_for_answer(emulator):
    injected = requests.post(f"{emulator.url}/_emulator/messages", json={"text": "/ping", "chat_id": 5}, timeout=5,
                             headers=emulator.control_headers).json()
    assert injected["update_id"] >= 1 and injected["message_id"] >= 1
    threading.Timer(0.3, api, args=(emulator, "sendMessage"), kwargs={"chat_id": 5, "text": "pong"}).start()
    started = time.monotonic()
    got = requests.get(f"{emulator.url}/_emulator/sent",
                       params={"chat_id": 5, "after": injected["message_id"], "wait": 5}, timeout=10,
                       headers=emulator.control_headers).json()
    assert [m["text"] for m in got["messages"]] == ["pong"]
    assert time.monotonic() - started < 3
    assert requests.get(f"{emulator.url}/_emulator/nope", timeout=5, headers=emulator.control_headers).status_code == 404


def test_faults_errors_for_next_n_calls(emulator):
    r = requests.post(f"{emulator.url}/_emulator/faults",
                      json={"method": "sendMessage", "status": 429, "retry_after": 3, "count": 2}, timeout=5,
                      headers=emulator.control_headers)
    assert r.json()["fault"]["count"] == 2
    for _ in range(2):
        res = api(emulator, "sendMessage", chat_id=1, text="x")
        assert res.status_code == 429
        assert res.json() == {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
                              "parameters": {"retry_after": 3}}
    assert api(emulator, "sendMessage", chat_id=1, text="x").json()["ok"]
    assert api(emulator, "getMe").json()["ok"]  # other methods were never affected

    emulator.add_fault("*", status=502, count=None)
    assert api(emulator, "getMe").status_code == 502 and api(emulator, "getUpdates").status_code == 502
    requests.delete(f"{emulator.url}/_emulator/faults", timeout=5, headers=emulator.control_headers)
    assert api(emulator, "getMe").json()["ok"]
    for status, word in ((401, "Unauthorized"), (409, "Conflict"), (500, "Internal")):
        emulator.add_fault("getMe", status=status)
        res = api(emulator, "getMe")
        assert res.status_code == status and word in res.json()["description"]


def test_faults_drop_hang_delay(emulator):
    emulator.add_fault("getMe", kind="drop")
    with pytest.raises(requests.ConnectionError):
        api(emulator, "getMe")
    emulator.add_fault("getMe", kind="delay", seconds=0.5)
    started = time.monotonic()
    assert api(emulator, "getMe").json()["ok"] and time.monotonic() - started >= 0.45
    emulator.add_fault("getMe", kind="hang")
    with pytest.raises(requests.Timeout):
        api(emulator, "getMe", http_timeout=0.5)
    emulator.clear_faults()  # also ends the hang in progress
    assert api(emulator, "getMe").json()["ok"]
    bad = requests.post(f"{emulator.url}/_emulator/faults", json={"kind": "explode"}, timeout=5,
                        headers=emulator.control_headers)
    assert bad.status_code == 400


def test_stop_refuses_connections_and_start_keeps_state(emulator):
    session = requests.Session()  # a keep-alive connection, like python-telegram-bot's pool
    assert session.post(f"{emulator.url}/bot{FAKE_TOKEN}/getMe", timeout=5).json()["ok"]
    pending = emulator.inject_message("while you were away")
    emulator.stop()
    with pytest.raises(requests.ConnectionError):
        session.post(f"{emulator.url}/bot{FAKE_TOKEN}/getMe", timeout=2)
    emulator.start()
    updates = session.post(f"{emulator.url}/bot{FAKE_TOKEN}/getUpdates", timeout=5).json()["result"]
    assert updates[-1]["update_id"] == pending["update_id"]


def test_cli_demo_user_and_sigterm(home):
    port = free_port()
    env = bk_env(home, DEMO_INTERVAL="0.3", DEMO="auto")
    # The demo component's command line: by file path, from the bundle home (not the repo).
    command = next(c.command for c in Settings.from_env(env).components if c.name == "emulator")
    assert command[1].endswith("emulator.py") and command[2:] == ("--demo",)
    proc = subprocess.Popen([*command, "--port", str(port)], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def texts():
            try:
                res = requests.post(f"{url}/bot{FAKE_TOKEN}/getUpdates", timeout=2).json()["result"]
            except requests.RequestException:
                return None
            got = [u["message"]["text"] for u in res]
            return got if "/ping" in got and len(got) >= 2 else None

        got = wait_for(texts, 10, 0.1, "demo user messages")
        assert got[0] == "/ping" and not got[1].startswith("/")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - started < 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read().decode()
    assert "DEMO" in out and "listening" in out


def test_cli_dispatch_help(home):
    res = subprocess.run([sys.executable, "-m", "botkeeper", "emulator", "--help"], cwd=ROOT, env=bk_env(home),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "--demo" in res.stdout and "--token" in res.stdout


def test_the_control_side_needs_the_per_run_token(emulator):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": emulator.control_token}):
        r = requests.post(f"{emulator.url}/_emulator/faults", json={"method": "*", "kind": "hang"}, timeout=5,
                          headers=headers)
        assert r.status_code == 401 and "run/emulator.token" in r.json()["error"]
        assert requests.get(f"{emulator.url}/_emulator/sent", timeout=5, headers=headers).status_code == 401
    assert api(emulator, "getMe").status_code == 200  # no fault was injected
    other = Emulator(port=0)
    assert other.control_token != emulator.control_token  # one per run
