"""Poison updates end to end: real bots under the real supervisor and monitor, against the emulator.

A handler that blocks the event loop (/freeze) is told on by the bot's own watchdog, restarted after
BLOCK_LIMIT (no STALE_AFTER, no SIGTERM grace) and, alone on the blocked stack, skipped on its first
strike; one that ends the process (/die) is struck by each bot it brings down and skipped after
QUARANTINE_AFTER strikes. Everybody else is answered exactly once, and one alert (webhook on
loopback) names the chat and the handler.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from botfixtures import *  # noqa: F401,F403  (emulator, ask, heartbeat_of, secret_forms, wait_for)
from conftest import FAKE_TOKEN, ROOT, component, write_components
from botkeeper.config import Settings
from botkeeper.health.verdict import read_and_judge
from test_alerts import Receiver

POISON = ROOT / "tests" / "poison_handlers.py"


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def start_bundle(supervised, home, emulator, receiver, web=False, **env):
    write_components(home, web={"enabled": web})
    sup = supervised(**{"TELEGRAM_API_BASE_URL": emulator.url, "TELEGRAM_BOT_TOKEN": FAKE_TOKEN, "HANDLERS": str(POISON),
                        "KILL_TIMEOUT": "1", "ALERTS": "on", "MONITORING_WEBHOOK": receiver.url} | env)
    wait_for(lambda: heartbeat_of(home).get("last_poll_at"), 20, message="bot polling")
    return sup


def pongs(emulator, chat_id: int) -> list[dict]:
    return emulator.sent_messages(chat_id=chat_id, contains="pong")


def quarantined(home: Path) -> list[dict]:
    try:
        return json.loads((home / "data" / "poison.json").read_text()).get("quarantined", [])
    except (OSError, ValueError):
        return []


def poison_alerts(receiver) -> list[dict]:
    return [b for b in receiver.bodies if b.get("event") == "poison-update"]


@pytest.mark.parametrize("command, handler, strikes", [("/freeze", "freeze", 1), ("/die", "die", 2)])
def test_a_poison_update_is_quarantined_and_everybody_else_answered_once(supervised, home, emulator, receiver,
                                                                          command, handler, strikes):
    # A blocked loop is restarted on BLOCK_LIMIT (2 s in the test profile): neither STALE_AFTER nor KILL_TIMEOUT
    # (30 s each) is waited for, or the other user's answer would miss its deadline below.
    slow = {"STALE_AFTER": "30", "KILL_TIMEOUT": "30"} if command == "/freeze" else {}
    sup = start_bundle(supervised, home, emulator, receiver, web=command == "/die", BLOCKED_WARN="0.5", **slow)
    ask(emulator, "/ping", "pong", 10, chat_id=101)  # before the poison
    # ...and done: an update whose reply went out but whose handler had not returned yet when a
    # concurrent one froze or killed the bot is answered again (the documented duplicate window).
    wait_for(lambda: heartbeat_of(home).get("done"), 10, message="the /ping done")
    poisoned = emulator.inject_message(command, chat_id=202)
    emulator.inject_message("/ping", chat_id=303)  # after it: waits behind it
    wait_for(lambda: pongs(emulator, 303), 15, message="the user after the poison answered")

    [record] = quarantined(home)
    assert record["update_id"] == poisoned["update_id"]
    assert (record["chat"], record["kind"], record["handler"], record["strikes"]) == (202, command, handler, strikes)
    assert component(home, "bot")["restarts"] == strikes  # certain: one; else QUARANTINE_AFTER, no more
    if command == "/freeze":
        assert component(home, "bot")["cause"] == record["cause"] == "loop-blocked" and record["certain"]
    assert len(pongs(emulator, 101)) == 1 and len(pongs(emulator, 303)) == 1
    ask(emulator, "/ping", "pong", 10, chat_id=404)  # and the bot carries on

    alert = wait_for(lambda: poison_alerts(receiver), 20, message="the poison-update alert")[0]
    assert "chat 202" in alert["text"] and f"handler {handler}" in alert["text"], alert["text"]
    log = (home / "logs" / "bot.log").read_text(errors="replace")
    assert "poison update skipped" in log
    if command == "/freeze":  # the blocked loop's stack, with the user's frame, and no secret
        assert "event loop blocked" in log and "poison_handlers.py" in log and "in freeze" in log
        assert f"{POISON}:" in record["frame"] and record["frame"].endswith(" freeze")
        assert handler in alert["text"] and "poison_handlers.py" in alert["text"]
    for secret in secret_forms():
        assert secret not in log and secret not in json.dumps(receiver.bodies)
    assert len(poison_alerts(receiver)) == 1
    history = subprocess.run([sys.executable, "-m", "botkeeper", "history"], env=sup.env, cwd=ROOT,
                             capture_output=True, text=True, timeout=30).stdout
    assert "quarantined updates" in history and f"({command}) in chat 202, handler {handler}" in history
    if command == "/die":  # the page, /api/status and /metrics list it (real HTTP on loopback)
        base = f"http://127.0.0.1:{sup.env['PORT']}"
        status = wait_for(lambda: _get(base + "/api/status"), 20, message="/api/status").json()["data"]
        assert status["quarantined_updates"]["total"] == 1
        assert status["quarantined_updates"]["latest"][0]["handler"] == "die"
        assert "botkeeper_quarantined_updates_total 1.0" in _get(base + "/metrics").text
        page = _get(base + "/").text
        assert 'id="quarantined"' in page and "handler die" in page


def _get(url: str):
    try:
        resp = requests.get(url, timeout=5)
    except requests.RequestException:
        return None
    return resp if resp.status_code in (200, 503) else None


def test_handler_exceptions_are_counted_per_handler_and_the_bot_carries_on(bot, emulator, home):
    proc = bot(HANDLERS=str(POISON))
    proc.wait_polled()
    for _ in range(2):
        emulator.inject_message("/boom", chat_id=606)
    ask(emulator, "/ping", "pong", 10, chat_id=606)
    beat = wait_for(lambda: (hb := proc.heartbeat()).get("handler_errors") == {"boom": 2} and hb["in_flight"] == []
                    and hb, 10, message="two errors of handler boom in the heartbeat, nothing in flight")
    assert isinstance(beat["loop_lag"], float) and beat["updates_handled"] == 3
    assert proc.alive()


def test_a_hang_with_nothing_in_flight_restarts_as_before_and_strikes_nothing(supervised, home, emulator, receiver):
    start_bundle(supervised, home, emulator, receiver)
    pid = component(home, "bot")["pid"]
    os.kill(pid, signal.SIGSTOP)  # the whole process stops: no update in flight
    wait_for(lambda: component(home, "bot").get("restarts") == 1 and component(home, "bot")["pid"] != pid, 30,
             message="the hung bot restarted")
    assert component(home, "bot")["cause"] == "stale-heartbeat"
    ask(emulator, "/ping", "pong", 15, chat_id=505)
    assert quarantined(home) == []
    book = json.loads((home / "data" / "poison.json").read_text()) if (home / "data" / "poison.json").exists() else {}
    assert not book.get("struck")


def test_a_sigstopped_bot_is_restarted_on_stale_after_its_update_retried_and_starting_until_a_poll_is_done(
        supervised, home, emulator, receiver):
    sup = start_bundle(supervised, home, emulator, receiver, KILL_TIMEOUT="30")
    settings = Settings.from_env(sup.env, home=home)
    sent = emulator.inject_message("/slow", chat_id=707)
    wait_for(lambda: [e for e in heartbeat_of(home).get("in_flight", []) if e["update_id"] == sent["update_id"]], 10,
             message="/slow in flight")
    pid = component(home, "bot")["pid"]
    os.kill(pid, signal.SIGSTOP)  # the whole process, its watchdog too: STALE_AFTER (2 s) decides
    wait_for(lambda: component(home, "bot").get("pid") not in (None, pid), 10, message="the stopped bot replaced")
    assert component(home, "bot")["cause"] == "stale-heartbeat"
    # The new bot retries /slow (one strike, not certain: nobody saw it block the loop) and is
    # `starting` until that first batch is done with, not healthy.
    verdict = wait_for(lambda: (v := read_and_judge(settings)[1]).overall == "starting" and v.detail.startswith(
        "restarted: waiting for its first completed poll") and v, 10, message="starting after the restart")
    assert not verdict.healthy
    record = json.loads((home / "data" / "poison.json").read_text())["struck"][str(sent["update_id"])]
    assert record["strikes"] == 1 and "certain" not in record and quarantined(home) == []
    wait_for(lambda: emulator.sent_messages(chat_id=707, contains="slow done"), 15, message="the retried /slow done")
    wait_for(lambda: read_and_judge(settings)[1].healthy, 10, message="healthy after its first completed poll")
    assert component(home, "bot")["restarts"] == 1 and len(emulator.sent_messages(chat_id=707)) == 1
