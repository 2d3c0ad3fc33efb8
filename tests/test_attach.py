"""botkeeper.attach() on a standalone python-telegram-bot bot (examples/ptb_bot/bot.py, unmodified
run_polling()) against the emulator: heartbeat states from PTB's own hooks, a clean last beat."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT, wait_for

from botkeeper.health.snapshot import read_heartbeat


@pytest.fixture
def botkeeper_bot_command():
    return [sys.executable, str(ROOT / "examples" / "ptb_bot" / "bot.py")]


def beat(bot) -> dict:
    return read_heartbeat(bot.heartbeat_file).data or {}


def test_attached_bot_reports_conflict_and_stops_cleanly(chat, telegram_bot, telegram_emulator):
    chat.send("/price")
    assert chat.expect_reply("coffee")
    first = wait_for(lambda: (hb := beat(telegram_bot)).get("state") == "polling" and hb.get("updates_handled")
                     and hb, 10, message="polling, the /price counted")
    assert first["pid"] == telegram_bot.proc.pid
    telegram_emulator.add_fault("getUpdates", status=409, count=None)  # another copy polls elsewhere
    hb = wait_for(lambda: (hb := beat(telegram_bot)).get("state") == "conflict" and hb, 15, 0.05, "state conflict")
    assert "409" in hb["detail"] and telegram_bot.proc.poll() is None  # reported, not a crash
    assert telegram_bot.output.count("another program is polling Telegram with this bot token") == 1
    assert "Traceback" not in telegram_bot.output  # one explanation, no traceback per retry
    telegram_emulator.clear_faults()
    assert telegram_bot.stop() == 0  # SIGTERM: run_polling() ends, post_stop writes the last beat
    assert beat(telegram_bot)["state"] == "stopping"
