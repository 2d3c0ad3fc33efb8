"""botkeeper's pytest plugin (botkeeper/testing.py), used as a user would, and the guarantee that
the project's own tests never depend on the handlers.py a user is told to replace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLE_HANDLERS


@pytest.fixture
def botkeeper_bot_command(monkeypatch):
    """This module's bot: botkeeper's own main.py with the tests' sample handlers."""
    monkeypatch.setenv("HANDLERS", str(SAMPLE_HANDLERS))
    return [sys.executable, str(ROOT / "main.py")]


def test_chat_with_main_py_through_the_plugin(chat, telegram_emulator):
    chat.send("/start")
    assert "the user's own /start" in chat.expect_reply("Welcome")
    chat.send("/hello")
    assert chat.expect_reply("Hello, Tess")
    chat.send("/uptime")
    assert "since" in chat.expect_reply()
    assert {c["command"] for c in telegram_emulator.my_commands()} >= {"start", "hello", "ping"}


def test_example_plugin_test_passes_as_a_user_runs_it(tmp_path):
    """examples/ptb_bot/test_bot.py with the plugin loaded the way its entry point loads it."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "botkeeper.testing", "-p", "no:cacheprovider",
                          f"--basetemp={tmp_path / 'bt'}", "examples/ptb_bot"],
                         cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "3 passed" in res.stdout


def test_unchanged_bot_example_with_a_button_pressed_by_its_text(tmp_path):
    """examples/unchanged_bot: no line of botkeeper in the bot; `python` in its command; chat.press()."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "botkeeper.testing", "-p", "no:cacheprovider",
                          f"--basetemp={tmp_path / 'bt'}", "examples/unchanged_bot"],
                         cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "3 passed" in res.stdout


THEIR_HANDLERS = '''
    """A user's handlers.py: different commands, and a marker proving whether anything imported it."""
    from pathlib import Path
    from telegram.ext import CommandHandler

    Path(__file__).with_name("handlers-were-imported").write_text("yes")


    async def start(update, context):
        await update.effective_message.reply_text("Bonjour from my own bot")


    async def price(update, context):
        await update.effective_message.reply_text("42")


    def register(application):
        application.add_handler(CommandHandler("start", start))
        application.add_handler(CommandHandler("price", price))
'''


@pytest.mark.skipif(os.environ.get("BOTKEEPER_NESTED_RUN") == "1", reason="already inside the copy")
def test_project_tests_pass_after_handlers_py_is_replaced(tmp_path):
    """A copy of the project with a user's own handlers.py: the tests that start the bot (the README
    test command's bot, example and plugin tests) pass, and none of them imported handlers.py."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "__pycache__", ".pytest_cache", "run", "data", "logs_archive", "build", "*.egg-info",
        "bot_health.txt", "handlers.py", "handlers", ".env", "botkeeper.toml"))
    (copy / "handlers.py").write_text(textwrap.dedent(THEIR_HANDLERS))
    env = _clean_env() | {"BOTKEEPER_NESTED_RUN": "1", "BOTKEEPER_TEST_OUTAGE": "1"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                          f"--basetemp={tmp_path / 'bt'}", "tests/test_bot.py", "tests/test_examples.py",
                          "tests/test_testing_plugin.py"],
                         cwd=copy, env=env, capture_output=True, text=True, timeout=170)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "failed" not in res.stdout
    assert not (copy / "handlers-were-imported").exists(), "a project test loaded the user's handlers.py"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO", "HANDLERS"))}
