"""Fixtures for the bot and emulator tests: an in-thread emulator and the bot as a real child process.

Import with `from botfixtures import *` (conftest.py is shared; these stay out of it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAKE_TOKEN, ROOT, bk_env, wait_for

from botkeeper.emulator import Emulator

__all__ = ["FAKE_TOKEN", "BotProcess", "emulator", "bot", "ask", "heartbeat_of", "secret_forms", "wait_for"]


def secret_forms(token: str = FAKE_TOKEN) -> list[str]:
    """What must never appear anywhere: the token and its secret half."""
    return [token, token.split(":", 1)[1]]


def heartbeat_of(home: Path) -> dict:
    try:
        return json.loads((home / "bot_health.txt").read_text())
    except (OSError, ValueError):
        return {}


class BotProcess:
    """`python main.py` against an emulator, in its own session, stderr captured to a file."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home, self.env = home, env
        self.stderr_path = home / "bot.stderr"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "BotProcess":
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "main.py")], cwd=self.home, env=self.env,
                                         stdout=err, stderr=err, start_new_session=True)
        return self

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def heartbeat(self) -> dict:
        return heartbeat_of(self.home)

    def wait_state(self, state: str, timeout: float = 15.0) -> dict:
        return wait_for(lambda: (hb := self.heartbeat()).get("state") == state and hb, timeout,
                        message=f"heartbeat state {state!r}; stderr:\n{self.stderr[-2000:]}")

    def wait_polled(self, timeout: float = 15.0) -> dict:
        """Polling, with at least one getUpdates answered."""
        self.wait_state("polling", timeout)
        return wait_for(lambda: (hb := self.heartbeat()).get("last_poll_at") and hb, timeout,
                        message="a successful getUpdates")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stop(self, grace: float = 8.0) -> int | None:
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(5)


@pytest.fixture
def emulator(telegram_emulator: Emulator) -> Emulator:
    """The in-thread emulator of botkeeper's pytest plugin (botkeeper.testing), by its short name."""
    return telegram_emulator


@pytest.fixture
def bot(home: Path, emulator: Emulator):
    """Factory: bot(**env) starts main.py against the emulator; stopped (or killed) after the test."""
    started: list[BotProcess] = []

    def make(**extra: str) -> BotProcess:
        env = bk_env(home, TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, **extra)
        proc = BotProcess(home, env).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


def ask(emulator: Emulator, text: str, contains: str, timeout: float = 10.0, chat_id: int = 4242) -> dict:
    """A user sends `text`; returns the bot's answer containing `contains` (waits until the deadline)."""
    sent = emulator.inject_message(text, chat_id=chat_id)
    found = emulator.sent_messages(chat_id=chat_id, after=sent["message_id"], contains=contains, wait=timeout)
    assert found, f"no answer containing {contains!r} to {text!r} within {timeout} s"
    return found[0]
