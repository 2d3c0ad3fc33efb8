"""The persistent outbox: the store on its own, then the real bot (python main.py) delivering it
against the emulator with Telegram's limits switched on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from botfixtures import ask, bot, emulator, wait_for  # noqa: F401
from conftest import ROOT, bk_env

from botkeeper.config import Settings
from botkeeper.emulator import Limits
from botkeeper.bot.outbox import Outbox, enqueue_sync, outbox_summary, status

RETRY_AFTER = int(os.environ.get("BOTKEEPER_TEST_RETRY_AFTER", "3"))  # 20 for the full case
REAL = {"OUTBOX_CHAT_INTERVAL": "1",  # Telegram's real per-chat limit (the test profile shortens it)
        "HANDLERS": "handlers.py"}  # the tests that write one use it (the test env says none)

QUEUE_HANDLERS = textwrap.dedent("""
    from telegram.ext import CommandHandler
    from botkeeper import outbox

    async def queue(update, context):
        n = int(context.args[0])
        for i in range(n):
            await outbox.send(update.effective_chat.id, f"queued {i}", priority="high")
        await outbox.broadcast([9001, 9002, 9003], "announcement")

    def register(application):
        application.add_handler(CommandHandler("queue", queue))
""")


def settings_of(home: Path) -> Settings:
    return Settings.from_env(bk_env(home))


def texts(emulator, chat_id=None) -> list[str]:
    return [m["text"] for m in emulator.sent_messages(chat_id=chat_id)]


# --- the store ------------------------------------------------------------------------------------
def test_store_keeps_order_keys_and_counts(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    low = box.enqueue([(1, "low a"), (2, "low b")], "low", now=100.0)
    high = box.enqueue([(1, "high a")], "high", {"parse_mode": "HTML"}, keys=["alert-7"], now=101.0)
    assert high == ["alert-7"] and box.enqueue([(1, "again")], "high", keys=["alert-7"]) == ["alert-7"]
    due = box.due(200.0)
    assert [(m.chat_id, m.text) for m in due] == [(1, "high a"), (2, "low b")]  # first per chat, high first
    assert due[0].options == {"parse_mode": "HTML"}
    assert [m.text for m in box.due(200.0, busy={1})] == ["low b"]

    box.retry(due[0], at=300.0, error="NetworkError: boom")
    assert [m.text for m in box.due(200.0)] == ["low b"]  # chat 1 waits as a whole: order kept
    assert [m.text for m in box.due(300.0)] == ["high a", "low b"]
    box.mark_sent(box.due(300.0)[0], 55)
    box.bury(box.due(300.0)[1], "forbidden: bot was blocked by the user")
    assert status(type("S", (), {"outbox_db": box.path})(), "alert-7") == "sent"
    assert box.status_of(low[1]) == "dead" and box.status_of("nope") is None

    s = box.summary(now=400.0)
    assert s["pending"] == {"high": 0, "normal": 0, "low": 1} and s["oldest_pending_age"] == 300.0
    # three queued: the repeated key was queued once
    assert (s["queued"], s["sent"], s["retried"], s["dead"], s["dead_letters"]) == (3, 1, 1, 1, 1)
    dead_id = box.dead()[0]["id"]
    assert box.requeue([dead_id]) == 1 and box.status_of(low[1]) == "pending"
    with pytest.raises(ValueError, match="priority 'urgent' is not valid: expected high, normal or low"):
        box.enqueue([(1, "x")], "urgent")
    box.close()


def test_summary_of_a_missing_file_is_zeros(home):
    s = outbox_summary(settings_of(home))
    assert s["pending_total"] == 0 and s["sent"] == 0 and not (home / "data" / "outbox.db").exists()


# --- the bot delivering it ------------------------------------------------------------------------
def test_queued_then_sigkilled_is_delivered_after_restart(bot, emulator, home):
    (home / "handlers.py").write_text(QUEUE_HANDLERS)
    emulator.add_fault("sendMessage", kind="hang", count=None)  # Telegram takes messages but never answers
    first = bot(**REAL)
    first.wait_polled()
    emulator.inject_message("/queue 5", chat_id=4242)
    settings = settings_of(home)
    wait_for(lambda: outbox_summary(settings)["pending_total"] == 8, 10, message="8 messages stored")
    wait_for(lambda: emulator.calls()["counts"].get("sendMessage", 0) >= 1, 10, message="a send on the wire")
    first.kill()  # SIGKILL: nothing in memory survives

    emulator.clear_faults()
    second = bot(**REAL)
    expected = [f"queued {i}" for i in range(5)]
    got = wait_for(lambda: len(t := texts(emulator, 4242)) >= 5 and t, 20, message="the five queued messages")
    assert got == expected  # in order, each once (the hung send was never taken by Telegram)
    for chat in (9001, 9002, 9003):
        assert emulator.sent_messages(chat_id=chat, wait=10), f"announcement to {chat}"
    wait_for(lambda: outbox_summary(settings)["sent"] == 8, 5, message="all 8 recorded as sent")
    assert outbox_summary(settings)["pending_total"] == 0 and second.alive()


def test_a_429_pauses_that_chat_for_retry_after_and_loses_nothing(bot, emulator, home):
    proc = bot(**REAL)
    proc.wait_polled()
    emulator.add_fault("sendMessage", status=429, retry_after=RETRY_AFTER, count=1)
    settings = settings_of(home)
    for i in range(3):  # from another process (like the alert sender): the worker polls the file
        enqueue_sync(settings, 501, f"to 501 #{i}", priority="normal")
    refused_at = wait_for(lambda: next((c["at"] for c in emulator.calls()["recent"] if c["status"] == 429), None),
                          10, message="the 429")
    for i in range(3):
        enqueue_sync(settings, 502, f"to 502 #{i}", priority="normal")
    got = wait_for(lambda: len(m := emulator.sent_messages(chat_id=501)) == 3 and m, RETRY_AFTER + 15,
                   message="all three to the paused chat")
    assert [m["text"] for m in got] == [f"to 501 #{i}" for i in range(3)]
    assert got[0]["sent_at"] >= refused_at + RETRY_AFTER  # waited as long as Telegram said
    other = wait_for(lambda: len(m := emulator.sent_messages(chat_id=502)) == 3 and m, 10, message="the other chat")
    assert other[0]["sent_at"] < got[0]["sent_at"]  # only chat 501 was paused
    s = wait_for(lambda: (s := outbox_summary(settings))["sent"] == 6 and s, 5, message="six recorded as sent")
    assert (s["retried"], s["dead"], s["pending_total"]) == (1, 0, 0)
    assert proc.stderr.count("rate limit (429) on sendMessage") == 1


def test_blocked_chat_is_dead_lettered_once_and_can_be_requeued(bot, emulator, home):
    emulator.set_blocked([666])
    proc = bot(**REAL)
    proc.wait_polled()
    settings = settings_of(home)
    key = enqueue_sync(settings, 666, "you blocked me")
    enqueue_sync(settings, 667, "you did not")
    wait_for(lambda: status(settings, key) == "dead", 10, message="dead letter")
    assert emulator.sent_messages(chat_id=667, wait=10)
    assert emulator.calls()["counts"]["sendMessage"] == 2  # one try for the blocked chat, never again
    assert "dead-lettered after 1 attempt(s): forbidden: Forbidden: bot was blocked by the user" in proc.stderr
    assert "you blocked me" not in proc.stderr  # message text stays out of the logs

    env = bk_env(home)
    listed = subprocess.run([sys.executable, "-m", "botkeeper", "outbox", "--dead"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert "0 waiting" in listed.stdout and "dead 1" in listed.stdout and "bot was blocked" in listed.stdout
    dead_id = Outbox(settings.outbox_db, readonly=True).dead()[0]["id"]

    emulator.set_blocked([])  # the user unblocked the bot
    requeued = subprocess.run([sys.executable, "-m", "botkeeper", "outbox", "--requeue", str(dead_id)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=30)
    assert requeued.returncode == 0 and "requeued 1" in requeued.stdout
    assert emulator.sent_messages(chat_id=666, wait=10)[0]["text"] == "you blocked me"
    wait_for(lambda: status(settings, key) == "sent", 5, message="recorded as sent")


def test_5xx_is_retried_with_backoff_and_too_old_is_never_sent(bot, emulator, home):
    settings = settings_of(home)
    box = Outbox(settings.outbox_db)
    box.enqueue([(700, "yesterday's news")], now=time.time() - 120)
    box.close()
    emulator.add_fault("sendMessage", status=502, count=2)
    proc = bot(OUTBOX_MAX_AGE="60", **REAL)
    proc.wait_polled()
    key = enqueue_sync(settings, 701, "fresh")
    got = emulator.sent_messages(chat_id=701, wait=15)
    assert [m["text"] for m in got] == ["fresh"]
    s = wait_for(lambda: (s := outbox_summary(settings))["sent"] == 1 and s, 5, message="recorded as sent")
    assert (s["retried"], s["dead"]) == (2, 1) and status(settings, key) == "sent"
    assert emulator.sent_messages(chat_id=700) == []
    assert "dead-lettered after 1 attempt(s): too old: queued 12" in proc.stderr  # 120 s ago


def test_rates_stay_within_limits_and_replies_go_first(bot, emulator, home):
    emulator.set_limits(Limits())  # Telegram's: 30/s, 1/s per private chat, 20/min per group
    proc = bot(**REAL)
    proc.wait_polled()
    settings = settings_of(home)
    box = Outbox(settings.outbox_db)
    box.enqueue([(1000 + i % 60, f"news {i}") for i in range(120)], "low")  # 60 chats, two each
    box.close()
    wait_for(lambda: emulator.rates()["accepted"] >= 10, 10, message="the broadcast under way")
    reply = ask(emulator, "/start", "Hello", timeout=10)  # a reply overtakes the low-priority queue
    left = outbox_summary(settings)["pending_total"]
    assert left > 0, "the reply only came after the whole broadcast"
    wait_for(lambda: outbox_summary(settings)["sent"] == 120, 30, message="the broadcast delivered")
    rates = emulator.rates()
    assert rates["rejected"] == 0 and rates["accepted"] == 121
    assert rates["max_per_second"] <= 30 and rates["min_chat_gap"] >= 1.0
    assert rates["sustained_per_second"] >= 20  # 121 messages in about 4 s, limited by the global rate
    assert reply["text"].startswith("Hello")


def test_page_api_and_metrics_show_the_outbox(home):
    from botkeeper.web import create_app

    settings = Settings.from_env({"BOTKEEPER_ENV": "test", "DEMO": "off"}, home=home)
    box = Outbox(settings.outbox_db)
    box.enqueue([(1, "a"), (2, "b")], "low")
    box.enqueue([(3, "c")], "high")
    box.bury(box.due(time.time())[0], "forbidden: bot was blocked by the user")
    box.close()
    client = create_app(settings, cache_ttl=0.0).test_client()
    data = client.get("/api/status").get_json()["data"]["outbox"]
    assert data["pending"] == {"high": 0, "normal": 0, "low": 2} and data["dead"] == 1
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'botkeeper_outbox_pending{priority="low"} 2.0' in metrics and "botkeeper_outbox_dead_total 1.0" in metrics
    page = client.get("/").get_data(as_text=True)
    assert "2 waiting" in page and "dead 1" in page and "blocked" not in page  # counts only, no texts or reasons
