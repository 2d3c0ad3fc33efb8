"""The pure poison-update decisions (botkeeper.bot.poison): strikes, quarantine, bounds; fake clock."""

from __future__ import annotations

from botkeeper.bot import poison
from botkeeper.causes import Cause


def beat(*entries, pid=10, at=100.0):
    return {"pid": pid, "written_at": at, "in_flight": list(entries)}


FREEZE = {"update_id": 7, "chat": 202, "user": 9, "kind": "/freeze", "handler": "freeze", "since": 99.0,
          "frame": "/h.py:3 freeze"}


def test_a_failure_strikes_each_update_in_flight_and_a_planned_restart_does_not():
    for cause in (Cause.CRASH, Cause.STALE_HEARTBEAT, Cause.MEMORY, Cause.HEARTBEAT_INVALID):
        book = poison.strike({}, beat(FREEZE), cause, 1000.0)
        assert book["struck"]["7"]["strikes"] == 1 and book["struck"]["7"]["cause"] == cause.value
    for cause in (Cause.OPERATOR, Cause.DEPLOY, Cause.MAX_UPTIME, Cause.SHUTDOWN, Cause.TELEGRAM_OUTAGE, None):
        assert poison.strike({}, beat(FREEZE), cause, 1000.0)["struck"] == {}


def test_two_strikes_quarantine_one_strike_retries_none_runs():
    book = poison.strike({}, beat(FREEZE, pid=10), Cause.STALE_HEARTBEAT, 1000.0)
    assert poison.decide(book, 7, 2) == poison.Decision("retry", 1)
    assert poison.decide(book, 8, 2) == poison.Decision("run", 0)
    book = poison.strike(book, beat(FREEZE, pid=11, at=200.0), Cause.CRASH, 1010.0)
    assert poison.decide(book, 7, 2) == poison.Decision("quarantine", 2)
    assert poison.decide(book, 7, 3) == poison.Decision("retry", 2)
    book, record = poison.quarantine(book, 7, {"chat": 202, "kind": "/freeze"}, 1020.0)
    assert "7" not in book["struck"] and book["quarantined_total"] == 1
    assert record["strikes"] == 2 and record["quarantined_at"] == 1020.0 and record["handler"] == "freeze"
    line = poison.describe(record)
    assert "chat 202" in line and "handler freeze" in line and "/h.py:3 freeze" in line


def test_the_same_heartbeat_is_counted_once():
    once = poison.strike({}, beat(FREEZE), Cause.CRASH, 1000.0)
    assert poison.strike(once, beat(FREEZE), Cause.CRASH, 1001.0) == once


def test_no_message_text_is_kept_and_bare_ids_from_any_bot_count():
    book = poison.strike({}, beat(FREEZE | {"text": "my password is x"}, 12), Cause.CRASH, 1000.0)
    assert "text" not in book["struck"]["7"] and book["struck"]["12"]["strikes"] == 1
    assert poison.in_flight_of({"in_flight": ["x", True, {"update_id": "1"}]}) == []


def test_strikes_expire_and_stay_bounded():
    book = poison.strike({}, beat(FREEZE), Cause.CRASH, 1000.0)
    later = 1000.0 + poison.STRIKE_TTL + 1
    book = poison.strike(book, beat({"update_id": 8}, pid=11), Cause.CRASH, later)
    assert list(book["struck"]) == ["8"]
    for n in range(3):  # 300 distinct updates struck: the oldest are dropped
        many = beat(*({"update_id": 100 * n + i} for i in range(100)), pid=20 + n)
        book = poison.strike(book, many, Cause.CRASH, later + n)
    assert len(book["struck"]) == poison.KEEP_STRUCK and "299" in book["struck"] and "8" not in book["struck"]


def test_the_first_strike_quarantines_only_the_update_on_the_blocked_stack():
    blocked = {"since": 99.0, "handler": "freeze", "frame": "/h.py:3 freeze", "update_id": 7, "in_flight": 1}
    book = poison.strike({}, beat(FREEZE) | {"blocked": blocked}, Cause.LOOP_BLOCKED, 1000.0)
    assert book["struck"]["7"]["certain"] and poison.decide(book, 7, 2) == poison.Decision("quarantine", 1)
    # two in flight (chats run at once) while 7's handler blocked the loop: 8 was only awaiting
    other = {"update_id": 8, "chat": 303, "kind": "/ping", "handler": "ping"}
    book = poison.strike({}, beat(FREEZE, other) | {"blocked": blocked | {"in_flight": 2}}, Cause.LOOP_BLOCKED, 1000.0)
    assert poison.decide(book, 7, 2) == poison.Decision("quarantine", 1)
    assert poison.decide(book, 8, 2) == poison.Decision("retry", 1)
    # one in flight, but not the update on the blocked stack (a job blocked), or a crash, or a silent process
    for beat_, cause in ((beat(FREEZE) | {"blocked": blocked | {"update_id": None}}, Cause.LOOP_BLOCKED),
                         (beat(FREEZE), Cause.CRASH), (beat(FREEZE), Cause.STALE_HEARTBEAT)):
        assert poison.decide(poison.strike({}, beat_, cause, 1000.0), 7, 2) == poison.Decision("retry", 1)
    # a planned restart strikes nothing, certain or not
    assert poison.strike({}, beat(FREEZE) | {"blocked": blocked}, Cause.OPERATOR, 1000.0)["struck"] == {}
