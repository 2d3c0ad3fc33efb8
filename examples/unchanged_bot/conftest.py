"""Which bot the tests in this directory talk to (botkeeper's pytest plugin runs it, as BOT_COMMAND would)."""

from pathlib import Path

import pytest


@pytest.fixture
def botkeeper_bot_command():
    return ["python", str(Path(__file__).with_name("bot.py"))]
