"""Built-in commands never override the user's (pure checks on real python-telegram-bot objects,
no network), the BUILTIN_COMMANDS and HANDLERS settings, and the heartbeat state of an attached
Application (fake clock)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from telegram.error import Conflict, NetworkError
from telegram.ext import ApplicationBuilder, CommandHandler, ConversationHandler, MessageHandler, filters

from conftest import FAKE_TOKEN, ROOT, bk_env

from botkeeper.bot import commands
from botkeeper.bot.health import QUIET_AFTER_ERRORS, Health
from botkeeper.config import ConfigError, Settings


async def mine(update, context):
    """my very own text"""


def app():
    return ApplicationBuilder().token(FAKE_TOKEN).build()


def test_user_commands_in_any_group_or_conversation_are_kept():
    application = app()
    conversation = ConversationHandler(entry_points=[CommandHandler("start", mine)],
                                       states={1: [MessageHandler(filters.TEXT, mine)]},
                                       fallbacks=[CommandHandler("cancel", mine)])
    application.add_handler(conversation)
    application.add_handler(CommandHandler(["status", "stats"], mine), group=5)
    added, kept = commands.install(application, ("start", "help", "ping", "status", "uptime"))
    assert added == ["help", "ping", "uptime"] and kept == ["start", "status"]
    assert commands.command_callbacks(application)["start"] is mine  # still the user's
    rows = dict(commands.describe(application, {"cancel": "stop the conversation"}))
    assert rows["start"] == "my very own text" and rows["cancel"] == "stop the conversation"
    assert rows["ping"].startswith("answer pong") and rows["stats"] == "my very own text"


def test_builtin_commands_setting():
    def parse(value):
        return Settings.from_env(bk_env(ROOT, BUILTIN_COMMANDS=value)).builtin_commands

    assert parse("all") == ("start", "help", "ping", "status", "uptime")
    assert parse("none") == () and parse("/ping, status") == ("ping", "status")
    with pytest.raises(ConfigError, match=r"BUILTIN_COMMANDS='pong' is not valid: expected all, none, or a comma"):
        parse("pong")


def test_missing_handlers_file_is_one_line_and_exit_78(tmp_path):
    env = bk_env(tmp_path, HANDLERS="mybot/handlers.py", TELEGRAM_BOT_TOKEN=FAKE_TOKEN,
                 TELEGRAM_API_BASE_URL="http://127.0.0.1:9")
    res = subprocess.run([sys.executable, str(ROOT / "main.py")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 78, res.stderr
    assert "HANDLERS='mybot/handlers.py' is not valid" in res.stderr and "Traceback" not in res.stderr


def test_default_handlers_py_is_created_from_the_example(tmp_path):
    from botkeeper.bot import userhandlers

    settings = Settings.from_env(bk_env(tmp_path, HANDLERS="handlers.py"))
    assert userhandlers.find(settings) == tmp_path / "handlers.py"
    assert (tmp_path / "handlers.py").read_text() == userhandlers.EXAMPLE.read_text()
    (tmp_path / "handlers.py").write_text("# mine\n")
    assert userhandlers.find(settings) == tmp_path / "handlers.py"
    assert (tmp_path / "handlers.py").read_text() == "# mine\n"  # never overwritten


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_attached_health_follows_polling_errors_and_their_end():
    clock = Clock()
    health = Health(lambda text: text, clock)
    health.polling_seen(running=True)
    assert health.state == "polling"
    health.polling_failed(Conflict("terminated by other getUpdates request"))
    assert health.state == "conflict"
    clock.now += QUIET_AFTER_ERRORS - 1
    health.polling_seen(running=True)
    assert health.state == "conflict"  # python-telegram-bot may still be backing off
    clock.now += 2
    health.polling_seen(running=True)
    assert health.state == "polling"
    health.polling_failed(NetworkError("connection refused"))
    assert health.state == "telegram-unreachable" and health.unreachable_since == clock.now
    health.reporters.append(lambda: {"updates_in_flight": 2})
    assert health.fields()["updates_in_flight"] == 2  # the place where the bot reports its work
