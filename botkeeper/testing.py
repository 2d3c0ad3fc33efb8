"""pytest plugin: test your own bot offline, against botkeeper's Telegram Bot API emulator.

Installed with botkeeper (entry point `pytest11`), or `pytest_plugins = ["botkeeper.testing"]`.

    def test_price(chat):
        chat.send("/price")
        assert "2.50" in chat.expect_reply("EUR")

Fixtures:
- `chat`: a private chat with your bot; `send(text)`, `expect_reply(contains=None, timeout=10)`,
  `press(button_text)` (an inline-keyboard button of the bot's newest message that has it).
- `telegram_bot`: your bot as a real child process, polling the emulator (started by `chat`).
- `telegram_emulator`: the emulator (`botkeeper.emulator.Emulator`): inject updates, add faults.
- `botkeeper_bot_command`: what runs your bot. Default: the `botkeeper_bot` ini option (a command
  line, run from the rootdir), else BOT_COMMAND from your settings, else `python main.py`.
  Override the fixture in a conftest.py to choose per directory.

Your bot gets what the supervisor gives it (TELEGRAM_BOT_TOKEN, BOTKEEPER_API_BASE_URL,
BOTKEEPER_HEARTBEAT_FILE) pointed at the emulator and a temporary directory, plus
TELEGRAM_API_BASE_URL/DEMO=off for botkeeper's own main.py; the real token is never used.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pytest

from .config import bot_argv, importable_env
from .emulator import Emulator

TEST_TOKEN = "123456789:TEST-botkeeper-pytest-plugin-token0"  # token-shaped, accepted only by the emulator
START_TIMEOUT = 30.0
_chat_ids = itertools.count(5001)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("botkeeper_bot", "command line that runs the bot under test (default: BOT_COMMAND or main.py)")


class BotUnderTest:
    """The user's bot as a child process in its own session, polling the emulator."""

    def __init__(self, command: Sequence[str], cwd: Path, env: dict[str, str], workdir: Path):
        self.command, self.cwd, self.env = list(command), cwd, env
        self.heartbeat_file = Path(env["BOTKEEPER_HEARTBEAT_FILE"])
        self.output_path = workdir / "bot.out"
        self.proc: subprocess.Popen | None = None

    @property
    def output(self) -> str:
        """What the bot printed (stdout and stderr)."""
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def start(self, emulator: Emulator) -> "BotUnderTest":
        with open(self.output_path, "wb") as out:
            self.proc = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=out, stderr=out,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:  # ready: it has asked the emulator for updates
            if self.proc.poll() is not None:
                pytest.fail(f"the bot {shlex.join(self.command)} exited with code {self.proc.returncode}"
                            f" before polling:\n{self.output[-3000:]}", pytrace=False)
            if emulator.calls()["counts"].get("getUpdates"):
                return self
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"the bot {shlex.join(self.command)} did not poll the emulator within {START_TIMEOUT:g} s:\n"
                    f"{self.output[-3000:]}", pytrace=False)

    def stop(self, grace: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)


class Chat:
    """A private chat between a test user and the bot, through the emulator."""

    def __init__(self, emulator: Emulator, bot: BotUnderTest, chat_id: int, first_name: str = "Tess"):
        self.emulator, self.bot, self.chat_id, self.first_name = emulator, bot, chat_id, first_name
        self._after = 0

    def send(self, text: str) -> dict[str, Any]:
        """The user sends `text` (a /command or plain text); replies are looked for after it."""
        message = self.emulator.inject_message(text, chat_id=self.chat_id, first_name=self.first_name)
        self._after = message["message_id"]
        return message

    def expect_reply(self, contains: str | None = None, timeout: float = 10.0) -> str:
        """The text of the bot's first message since the last send() (containing `contains`);
        fails the test with the bot's output when none arrives before the deadline."""
        found = self.emulator.sent_messages(chat_id=self.chat_id, after=self._after, contains=contains, wait=timeout)
        if not found:
            what = f"containing {contains!r}" if contains else "at all"
            got = [m.get("text") for m in self.emulator.sent_messages(chat_id=self.chat_id, after=self._after)]
            pytest.fail(f"no reply {what} within {timeout:g} s (replies: {got});"
                        f" bot output:\n{self.bot.output[-3000:]}", pytrace=False)
        return found[0].get("text", "")

    def press(self, button: str, timeout: float = 10.0) -> dict[str, Any]:
        """The user presses the inline-keyboard button labelled `button` on the bot's newest message
        that has one (waiting up to `timeout` for it); replies are looked for after it. Returns
        the message the button belongs to."""
        deadline = time.monotonic() + timeout
        while True:
            for message in reversed(self.emulator.sent_messages(chat_id=self.chat_id)):
                rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
                found = next((b for row in rows for b in row if b.get("text") == button), None)
                if found is not None:
                    if "callback_data" not in found:
                        pytest.fail(f"the button {button!r} has no callback_data (a URL button?)", pytrace=False)
                    sent = self.emulator.sent_messages(chat_id=self.chat_id)
                    self._after = max([self._after] + [m["message_id"] for m in sent])
                    self.emulator.inject_callback(found["callback_data"], chat_id=self.chat_id,
                                                  message_id=message["message_id"])
                    return message
            if time.monotonic() >= deadline:
                labels = [b.get("text") for m in self.emulator.sent_messages(chat_id=self.chat_id)
                          for row in (m.get("reply_markup") or {}).get("inline_keyboard") or [] for b in row]
                pytest.fail(f"no button {button!r} within {timeout:g} s (buttons: {labels});"
                            f" bot output:\n{self.bot.output[-3000:]}", pytrace=False)
            time.sleep(0.05)

    def replies(self) -> list[str]:
        """Every reply since the last send(), so far."""
        return [m.get("text", "") for m in self.emulator.sent_messages(chat_id=self.chat_id, after=self._after)]


@pytest.fixture
def telegram_emulator():
    emulator = Emulator(port=0)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def botkeeper_bot_command(pytestconfig: pytest.Config) -> list[str]:
    line = pytestconfig.getini("botkeeper_bot")
    if line:
        return shlex.split(line)
    from .config import ConfigError, Settings

    try:
        settings = Settings.from_env(home=_home(pytestconfig))
    except ConfigError as exc:
        pytest.fail(f"botkeeper settings: {exc}", pytrace=False)
    return list(settings.bot_command or (sys.executable, "main.py"))


@pytest.fixture
def telegram_bot(telegram_emulator: Emulator, botkeeper_bot_command: list[str], pytestconfig: pytest.Config,
                 tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("botkeeper-bot")
    home = _home(pytestconfig)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
    env.update({
        "TELEGRAM_BOT_TOKEN": TEST_TOKEN,
        "BOTKEEPER_API_BASE_URL": f"{telegram_emulator.url}/bot",
        "BOTKEEPER_HEARTBEAT_FILE": str(workdir / "bot_health.txt"),
        "BOTKEEPER_HEARTBEAT_INTERVAL": "0.2",
        "BOTKEEPER_HOME": str(home),
        "BOTKEEPER_ENV": "test",
        "TELEGRAM_API_BASE_URL": telegram_emulator.url,  # for botkeeper's own main.py
        "DEMO": "off",
        "ALERTS": "off",
        "PYTHONUNBUFFERED": "1",
    } | importable_env())
    # `python bot.py` as the supervisor runs it: this interpreter, an unchanged python-telegram-bot bot
    # through the launcher (pointed at the emulator, attached).
    command = bot_argv(tuple(botkeeper_bot_command), home) if botkeeper_bot_command else botkeeper_bot_command
    bot = BotUnderTest(command, home, env, workdir).start(telegram_emulator)
    yield bot
    bot.stop()


@pytest.fixture
def chat(telegram_emulator: Emulator, telegram_bot: BotUnderTest) -> Chat:
    return Chat(telegram_emulator, telegram_bot, next(_chat_ids))


def _home(config: pytest.Config) -> Path:
    from .config import discover_home

    return Path(os.environ.get("BOTKEEPER_HOME") or discover_home(Path(config.rootpath)))
