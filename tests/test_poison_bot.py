"""Poison updates end to end: real bots under the real supervisor and monitor, against the emulator.

A handler that blocks the event loop (/freeze) or ends the process (/die) is struck by each bot it
brings down and skipped by the next one after QUARANTINE_AFTER strikes; everybody else is answered
exactly once, and one alert (webhook on loopback) names the chat and the handler.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from botfixtures import *  # noqa: F401,F403  (emulator, ask, heartbeat_of, secret_forms, wait_for)
from conftest import FAKE_TOKEN, ROOT, component, write_components
from test_alerts import Receiver

POISON = ROOT / "tests" / "poison_handlers.py"


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def start_bundle(supervised, home, emulator, receiver, **env):
    write_components(home, web={"enabled": False})
    sup = supervised(TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, HANDLERS=str(POISON),
                     KILL_TIMEOUT="1", ALERTS="on", MONITORING_WEBHOOK=receiver.url, **env)
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


@pytest.mark.parametrize("command, handler", [("/freeze", "freeze"), ("/die", "die")])
def test_a_poison_update_is_quarantined_and_everybody_else_answered_once(supervised, home, emulator, receiver,
                                                                          command, handler):
    start_bundle(supervised, home, emulator, receiver, BLOCKED_WARN="0.5")
    ask(emulator, "/ping", "pong", 10, chat_id=101)  # before the poison
    poisoned = emulator.inject_message(command, chat_id=202)
    emulator.inject_message("/ping", chat_id=303)  # after it: waits behind it
    wait_for(lambda: pongs(emulator, 303), 60, message="the user after the poison answered")

    [record] = quarantined(home)
    assert record["update_id"] == poisoned["update_id"]
    assert (record["chat"], record["kind"], record["handler"], record["strikes"]) == (202, command, handler, 2)
    assert component(home, "bot")["restarts"] == 2  # QUARANTINE_AFTER restarts, no more
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


def test_a_hang_with_nothing_in_flight_restarts_as_before_and_strikes_nothing(supervised, home, emulator, receiver):
    start_bundle(supervised, home, emulator, receiver)
    pid = component(home, "bot")["pid"]
    import os
    import signal
    os.kill(pid, signal.SIGSTOP)  # the whole process stops: no update in flight
    wait_for(lambda: component(home, "bot").get("restarts") == 1 and component(home, "bot")["pid"] != pid, 30,
             message="the hung bot restarted")
    assert component(home, "bot")["cause"] == "stale-heartbeat"
    ask(emulator, "/ping", "pong", 15, chat_id=505)
    assert quarantined(home) == []
    book = json.loads((home / "data" / "poison.json").read_text()) if (home / "data" / "poison.json").exists() else {}
    assert not book.get("struck")
