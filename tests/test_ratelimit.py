"""The pure sending-limit decisions (botkeeper/bot/ratelimit.py) on a fake clock."""

from __future__ import annotations

import pytest

from botkeeper.bot import ratelimit as rl

LIMITS = rl.Limits(per_second=3, chat_interval=1.0, group_per_minute=2)


def send(w: rl.Windows, chat: int, at: float) -> None:
    rl.dispatched(w, chat)
    rl.answered(w, chat, at)


def test_private_chat_waits_a_second_after_the_last_answer():
    w = rl.Windows()
    assert rl.choose([(1, 0, 7)], w, LIMITS, 10.0) == (0, None)
    rl.dispatched(w, 7)
    assert rl.choose([(1, 1, 7)], w, LIMITS, 10.0) == (None, None)  # in flight: wait for the answer
    rl.answered(w, 7, 10.3)
    assert rl.choose([(1, 1, 7)], w, LIMITS, 10.5) == (None, pytest.approx(11.3))  # from the answer, not the start
    assert rl.choose([(1, 1, 7)], w, LIMITS, 11.3) == (0, None)


def test_group_gets_its_per_minute_budget():
    w = rl.Windows()
    send(w, -5, 0.0)
    assert rl.choose([(1, 0, -5)], w, LIMITS, 0.1) == (0, None)  # groups have no per-second gap
    send(w, -5, 0.1)
    assert rl.choose([(1, 0, -5)], w, LIMITS, 1.0) == (None, pytest.approx(60.0))
    assert rl.choose([(1, 0, -5)], w, LIMITS, 60.0) == (0, None)


def test_global_window_counts_answers_and_sends_in_flight():
    w = rl.Windows()
    send(w, 1, 0.0)
    send(w, 2, 0.2)
    rl.dispatched(w, 3)  # in flight
    assert rl.choose([(1, 0, 4)], w, LIMITS, 0.5) == (None, pytest.approx(1.0))  # the first answer leaves at 1.0
    assert rl.choose([(1, 0, 4)], w, LIMITS, 1.0) == (0, None)
    rl.dispatched(w, 4)
    assert rl.global_ready_at(w, LIMITS, 1.1) == pytest.approx(1.2)  # the answer at 0.2 leaves
    rl.dispatched(w, 5)
    assert rl.choose([(1, 0, 9)], w, LIMITS, 1.3) == (None, None)  # three in flight: wait for an answer


def test_priority_then_arrival_one_at_a_time_per_chat():
    w = rl.Windows()
    waiting = [(2, 0, 10), (0, 1, 11), (1, 2, 12)]
    assert rl.choose(waiting, w, LIMITS, 0.0) == (1, None)  # high priority first
    send(w, 11, 0.0)
    assert rl.choose([(2, 0, 10), (2, 3, 10), (1, 2, 12)], w, LIMITS, 0.0) == (2, None)  # normal before low
    assert rl.choose([(2, 0, 10), (2, 3, 10)], w, LIMITS, 0.0) == (0, None)  # then arrival
    rl.dispatched(w, 12)
    assert rl.choose([(0, 4, 12), (2, 0, 10)], w, LIMITS, 0.0) == (1, None)  # 12 is busy; 10 may go
    fresh = rl.Windows()
    send(fresh, 10, 0.0)
    assert rl.choose([(0, 4, 10), (2, 5, 13)], fresh, LIMITS, 0.5) == (1, None)  # 10 just had one; 13 goes


def test_pauses_from_429():
    w = rl.Windows()
    rl.pause(w, 7, 20.0)
    assert rl.choose([(0, 0, 7), (2, 1, 8)], w, LIMITS, 1.0) == (1, None)  # only chat 7 waits
    rl.pause(w, None, 5.0)
    assert rl.choose([(0, 0, 7), (2, 1, 8)], w, LIMITS, 1.0) == (None, 5.0)
    assert rl.choose([(0, 0, 7)], w, LIMITS, 6.0) == (None, 20.0)


def test_pause_scope():
    assert rl.pause_scope([(10.0, 7)], 10.0) == "chat"
    assert rl.pause_scope([(10.0, None)], 10.0) == "global"
    assert rl.pause_scope([(9.5, 1), (9.8, 2), (10.0, 3)], 10.0) == "global"
    assert rl.pause_scope([(5.0, 1), (9.8, 2), (10.0, 3)], 10.0) == "chat"  # the first is too old


def test_backoff_doubles_to_the_cap():
    assert [rl.backoff(n, 1.0, 10.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 10.0]


def test_no_window_ever_exceeds_the_limits_over_a_long_simulation():
    """Drive the decisions with random latencies; count what 'Telegram' sees at arrival times."""
    import random

    rnd = random.Random(4)
    limits = rl.Limits(per_second=30, chat_interval=1.0, group_per_minute=20)
    w = rl.Windows()
    chats = [rnd.randrange(300) for _ in range(1960)] + [-1, -2] * 20  # 300 people, two groups
    rnd.shuffle(chats)
    waiting = [(rnd.choice((0, 2)), i, chat) for i, chat in enumerate(chats)]
    now, arrivals, flying = 0.0, [], []  # flying: (answer_time, chat)
    while waiting or flying:
        index, wake = rl.choose(waiting, w, limits, now)
        if index is not None:
            _, _, chat = waiting.pop(index)
            rl.dispatched(w, chat)
            latency = rnd.uniform(0.001, 0.2)
            arrivals.append((now + rnd.uniform(0, latency), chat))
            flying.append((now + latency, chat))
            continue
        flying.sort()
        nxt = min([flying[0][0]] if flying else [] + ([wake] if wake else []))
        nxt = min(nxt, wake) if wake else nxt
        now = max(now, nxt)
        while flying and flying[0][0] <= now:
            rl.answered(w, flying.pop(0)[1], now)
    arrivals.sort()
    times = [t for t, _ in arrivals]
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 30
    last: dict[int, float] = {}
    for t, chat in arrivals:
        if chat >= 0:
            assert chat not in last or t - last[chat] >= 1.0
            last[chat] = t
        else:
            assert sum(1 for u, c in arrivals if c == chat and t <= u < t + 60.0) <= 20
    assert len(arrivals) == 2000 and 2000 / now > 25  # and still close to the 30/s limit


def test_sends_from_before_a_restart_count():
    w = rl.Windows()
    rl.seed(w, [(9.5, 7), (9.6, -3), (9.7, -3)])
    assert rl.choose([(0, 0, 7)], w, LIMITS, 10.0) == (None, pytest.approx(10.5))
    assert rl.choose([(0, 0, -3)], w, LIMITS, 10.0) == (None, pytest.approx(69.6))  # 2 of 2 per minute used
    assert rl.global_ready_at(w, LIMITS, 10.0) == pytest.approx(10.5)
