"""Every message answered, once (docs/bot.md, "The guarantee"): real bots (main.py) against the
emulator, one test per fault of issue 22's table: a stop during a long handler, ids restarting
lower, the emulator's ids across its restarts, outbox messages of a re-run handler, one chat's 429,
5xx and dropped replies, a token revoked mid-handler."""

from __future__ import annotations

import time

from botfixtures import *  # noqa: F401,F403  (emulator, bot, ask, heartbeat_of, wait_for)
from conftest import ROOT

from botkeeper.emulator import Emulator

HANDLERS = str(ROOT / "tests" / "ledger_handlers.py")


def texts(emulator, chat_id: int, contains: str) -> list[str]:
    return [m["text"] for m in emulator.sent_messages(chat_id=chat_id, contains=contains)]


def in_flight(proc, update_id: int) -> bool:
    return any(e.get("update_id") == update_id for e in proc.heartbeat().get("in_flight") or [])


def test_a_stop_during_a_long_handler_leaves_its_update_to_the_next_bot(bot, emulator):
    first = bot(HANDLERS=HANDLERS, SLOW_SECONDS="60")
    first.wait_polled()
    slow = emulator.inject_message("/slow", chat_id=11)
    wait_for(lambda: in_flight(first, slow["update_id"]), 10, message="/slow in flight")
    started = time.monotonic()
    assert first.stop(grace=15) == 0
    assert time.monotonic() - started < 10  # SHUTDOWN_LIMIT (5 s), not the handler's 60
    assert f"left for the next bot: update {slow['update_id']} (chat 11, /slow, handler slow)" in first.stderr
    assert first.heartbeat()["left"] == [slow["update_id"]]

    second = bot(HANDLERS=HANDLERS, SLOW_SECONDS="0.1")
    wait_for(lambda: texts(emulator, 11, "slow done"), 15, message="the left /slow answered by the next bot")
    ask(emulator, "/ping", "pong", 10, chat_id=11)  # and in order after it
    assert texts(emulator, 11, "slow done") == [f"slow done {slow['update_id']}"]
    assert second.alive()


def test_ids_restarting_lower_after_a_restart_are_handled(bot, emulator):
    emulator.set_next_update_id(1000)
    first = bot(HANDLERS=HANDLERS)
    ask(emulator, "high", "got high", 10, chat_id=12)
    wait_for(lambda: first.heartbeat().get("done") == [1000], 10, message="update 1000 done")
    first.kill()  # its last beat says 1000 is done; Telegram heard so with the next poll already
    emulator.set_next_update_id(999)  # Telegram: after a week without updates, the next id is random
    second = bot(HANDLERS=HANDLERS)
    ask(emulator, "low", "got low", 15, chat_id=12)  # 999
    ask(emulator, "the same id again", "got the same id again", 10, chat_id=12)  # 1000 once more: a new update
    assert second.stop() == 0
    emulator.set_next_update_id(5)  # and lower still, after a graceful stop
    bot(HANDLERS=HANDLERS)
    ask(emulator, "lower still", "got lower still", 15, chat_id=12)
    assert texts(emulator, 12, "got") == ["got high", "got low", "got the same id again", "got lower still"]


def test_the_emulator_keeps_ids_growing_across_its_restarts(tmp_path):
    ids = tmp_path / "emulator-ids.json"
    first = Emulator(id_file=ids)
    used = [first.inject_message("hi")["update_id"] for _ in range(3)]
    second = Emulator(id_file=ids)  # a restart (or a SIGKILL: the file is written before ids are used)
    assert second.inject_message("hi")["update_id"] > max(used)


def test_outbox_messages_of_a_handler_run_again_are_sent_once(bot, emulator, home):
    first = bot(HANDLERS=HANDLERS)
    first.wait_polled()
    update = emulator.inject_message("/queue3", chat_id=13)
    assert first.wait_exit(15) == 1  # died after its messages went out, before the update was done
    assert len(texts(emulator, 13, "queued")) == 3
    second = bot(HANDLERS=HANDLERS)  # gets the update again and runs the handler again
    wait_for(lambda: update["update_id"] in (second.heartbeat().get("done") or []), 15, message="run again")
    ask(emulator, "after", "got after", 10, chat_id=13)  # the outbox worker had its chance
    assert sorted(texts(emulator, 13, "queued")) == [f"queued {n} of update {update['update_id']}" for n in (1, 2, 3)]


def test_one_chats_429_does_not_stall_another_chat(bot, emulator):
    proc = bot(HANDLERS=HANDLERS)
    proc.wait_polled()
    emulator.add_fault("sendMessage", status=429, retry_after=4, count=1)
    emulator.inject_message("first", chat_id=14)
    wait_for(lambda: ("sendMessage", 429) in [(c["method"], c["status"]) for c in emulator.calls()["recent"]], 10,
             message="chat 14's reply told to wait 4 s")
    started = time.monotonic()
    ask(emulator, "second", "got second", 3, chat_id=15)  # not behind chat 14's wait
    assert time.monotonic() - started < 3
    assert not texts(emulator, 14, "got first")
    wait_for(lambda: texts(emulator, 14, "got first"), 10, message="chat 14 answered after its wait")
    assert len(texts(emulator, 14, "got first")) == 1


def test_5xx_and_dropped_connections_on_a_reply_are_retried(bot, emulator):
    proc = bot(HANDLERS=HANDLERS, SEND_RETRY_FOR="4")
    proc.wait_polled()
    emulator.add_fault("sendMessage", status=502, count=2)
    emulator.add_fault("sendMessage", kind="drop", count=1)
    ask(emulator, "retry me", "got retry me", 15, chat_id=16)
    emulator.add_fault("sendMessage", status=500, count=None)
    emulator.inject_message("never", chat_id=17)
    wait_for(lambda: "sendMessage to chat 17 failed after" in proc.stderr, 20, message="the send given up")
    emulator.clear_faults()
    assert texts(emulator, 16, "got") == ["got retry me"] and not texts(emulator, 17, "got")
    assert "never" not in proc.stderr.split("failed after")[1].split("\n")[0]  # the chat, never the text


def test_a_token_revoked_mid_handler_leaves_the_update_to_the_bot_after_the_fix(bot, emulator):
    first = bot(HANDLERS=HANDLERS, SLOW_SECONDS="1.5")
    first.wait_polled()
    slow = emulator.inject_message("/slow", chat_id=18)
    wait_for(lambda: in_flight(first, slow["update_id"]), 10, message="/slow in flight")
    emulator.set_tokens(["987654321:AAH-another-token-0123456789abcdefghij"])  # revoked
    assert first.wait_exit(20) == 78
    assert first.heartbeat()["left"] == [slow["update_id"]]
    emulator.set_tokens(None)  # the owner put the right token back
    bot(HANDLERS=HANDLERS, SLOW_SECONDS="0")
    wait_for(lambda: texts(emulator, 18, "slow done"), 15, message="the /slow answered after the fix")
    ask(emulator, "/ping", "pong", 10, chat_id=18)
    assert texts(emulator, 18, "slow done") == [f"slow done {slow['update_id']}"]
