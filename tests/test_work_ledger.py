"""The bookkeeping behind "every message answered, once" (botkeeper/bot/work.py), on plain data: what
is done, what a successor inherits (explicit ids, never "every id up to N"), what the journal keeps.
The real processes are in tests/test_guarantee.py."""

from __future__ import annotations

from telegram.ext import ApplicationBuilder

from conftest import FAKE_TOKEN

from botkeeper.bot.work import Work

BOT_ID = int(FAKE_TOKEN.split(":")[0])


def work(tmp_path=None) -> Work:
    w = Work(ApplicationBuilder().token(FAKE_TOKEN).build(), beat=lambda: None, clock=lambda: 1000.0)
    if tmp_path is not None:
        w.journal = tmp_path / "unfinished_updates.json"
    return w


def raw(update_id: int) -> dict:
    return {"update_id": update_id, "message": {"message_id": update_id, "date": 1, "chat": {"id": 5, "type": "private"},
                                                "text": f"m{update_id}"}}


def test_a_successor_skips_exactly_the_inherited_ids_and_runs_lower_ones():
    w = work()
    w.after_predecessor({"bot_id": str(BOT_ID), "pid": 1, "done": [500, 501]})
    assert w.duplicate(500) == "inherited" and w.duplicate(501) == "inherited"
    assert w.duplicate(499) is None and w.duplicate(3) is None  # no inequality
    w.after_predecessor({"bot_id": "999", "pid": 1, "done": [7]})  # another bot's: ignored
    assert w.duplicate(7) is None


def test_the_first_poll_forgets_inherited_ids_telegram_no_longer_holds():
    w = work()
    w.after_predecessor({"bot_id": str(BOT_ID), "pid": 1, "done": [500, 501]})
    w.polled(0, [raw(501)])  # Telegram still holds 501 only: 500 was confirmed
    assert w.duplicate(500) is None and w.duplicate(501) == "inherited"
    w.polled(502, [])  # an offset past it confirms 501
    assert w.duplicate(501) is None


def test_the_journal_keeps_what_a_poll_confirms_before_it_is_done(tmp_path):
    w = work(tmp_path)
    w.polled(0, [raw(10), raw(11)])
    w.write_journal(0)  # this poll confirms nothing: no write
    assert not w.journal.exists()
    w.write_journal(12)  # the next poll confirms 10 and 11, still being handled
    successor = work(tmp_path)
    assert [u["update_id"] for u in successor.replay()] == [10, 11]
    successor2 = work(tmp_path)
    successor2.after_predecessor({"bot_id": str(BOT_ID), "pid": 1, "done": [10]})
    assert [u["update_id"] for u in successor2.replay()] == [11]  # 10 was finished: not again


def test_a_finished_update_leaves_the_journal_and_a_cancelled_one_stays(tmp_path):
    from telegram import Update

    w = work(tmp_path)
    w.polled(0, [raw(20), raw(21)])
    w.write_journal(22)
    for update_id in (20, 21):
        w.claim(update_id)
    w.end(Update.de_json(raw(20), w.application.bot))  # its handlers returned: done
    w.end(Update.de_json(raw(21), w.application.bot), cancelled=True)  # cut at a stop: left
    w.write_journal(22)
    assert [u["update_id"] for u in work(tmp_path).replay()] == [21]
    assert w.duplicate(20) == "done" and list(w.left) == [21]


def test_a_replayed_update_is_forgotten_once_done_when_telegram_no_longer_holds_it(tmp_path):
    """ids restarting lower later reach a replayed update's id: a new update, to be run (the ledger
    bench lost one this way: 'update 436 delivered again: handled by the previous bot')."""
    from telegram import Update

    w = work(tmp_path)
    w.polled(0, [raw(436)])
    w.write_journal(437)  # confirmed to Telegram while still being handled, then the bot is stopped
    successor = work(tmp_path)
    [replayed] = successor.replay()
    successor.claim(436)
    successor.end(Update.de_json(replayed, successor.application.bot))  # the successor finishes it
    successor.polled(0, [raw(40)])  # the first poll: Telegram holds 40 (ids restarted lower), not 436
    successor.write_journal(41)  # the journal no longer lists 436
    successor.polled(41, [])
    assert successor.duplicate(436) is None  # a new update 436 runs


def test_a_replayed_update_telegram_still_holds_is_not_run_twice(tmp_path):
    from telegram import Update

    w = work(tmp_path)
    w.polled(0, [raw(436)])
    w.write_journal(437)
    successor = work(tmp_path)
    [replayed] = successor.replay()
    successor.claim(436)
    successor.end(Update.de_json(replayed, successor.application.bot))
    successor.polled(0, [raw(436)])  # the confirming poll never reached Telegram: it comes again
    assert successor.duplicate(436) == "done"
