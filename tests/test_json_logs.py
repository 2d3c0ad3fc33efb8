"""LOG_FORMAT=json under the real supervisor: every line of logs/bot.log and logs/supervisor.log is a
JSON object with the named fields, the bot's own records and its plain output alike, and no form of
the token (which the bot's handler logs, prints and raises) reaches any log; combined.log stays text."""

from __future__ import annotations

import json

from botfixtures import FAKE_TOKEN, ask, emulator, secret_forms  # noqa: F401 - fixtures
from conftest import supervised, wait_for, write_components  # noqa: F401 - fixtures

HANDLERS = f"""
import logging
from telegram.ext import CommandHandler

TOKEN = {FAKE_TOKEN!r}

async def leak(update, context):
    print("plain output with", TOKEN, flush=True)
    logging.getLogger("userbot").warning("user logger line with %s", TOKEN)
    raise ValueError("failed for " + TOKEN)

def register(application):
    application.add_handler(CommandHandler("leak", leak))
"""


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_log_lines_parse_and_hold_no_secret(supervised, emulator, home):
    write_components(home, web={"enabled": False}, monitor={"enabled": False})
    (home / "leak_handlers.py").write_text(HANDLERS)
    supervised(TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, LOG_FORMAT="json",
               HANDLERS="leak_handlers.py")
    ask(emulator, "/ping", "pong")
    sent = emulator.inject_message("/leak", chat_id=4242)
    bot_log = home / "logs" / "bot.log"
    wait_for(lambda: "handler failed on update" in bot_log.read_text(), 20, 0.05, "the handler's error in bot.log")

    bot = records(bot_log)  # every line parses
    assert all({"time", "level", "component", "logger", "message"} <= set(r) for r in bot)
    assert {r["component"] for r in bot} == {"bot"}
    failed = next(r for r in bot if r["message"].startswith("handler failed on update"))
    assert failed["level"] == "ERROR" and failed["logger"] == "botkeeper.bot"
    assert failed["update_id"] == sent["update_id"]
    assert len(failed["fingerprint"]) == 10 and "Traceback" in failed["message"]
    assert any(r["logger"] == "output" and r["message"].startswith("plain output with") for r in bot)
    assert any(r["logger"] == "userbot" and r["level"] == "WARNING" for r in bot)
    supervisor = records(home / "logs" / "supervisor.log")
    assert any(r["component"] == "supervisor" and "bot started" in r["message"] for r in supervisor)

    combined = (home / "logs" / "combined.log").read_text()
    assert "ERROR   botkeeper.bot: handler failed on update" in combined
    assert not any(line.split("| ", 1)[-1].startswith("{") for line in combined.splitlines())
    for path in (home / "logs").glob("*.log"):
        text = path.read_text()
        assert not any(form in text for form in secret_forms()), path.name
