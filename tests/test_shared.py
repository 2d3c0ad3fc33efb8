"""botkeeper/bot/shared.py against a real redis-server, with a fake clock for the sending windows; the
pure webhook verdict; poison strikes raised from the shared total."""

from __future__ import annotations

import asyncio

from redisfixtures import redis_url  # noqa: F401 - fixture

from botkeeper.bot import poison
from botkeeper.causes import Cause
from botkeeper.bot.ratelimit import Limits
from botkeeper.bot.shared import Shared
from botkeeper.health.verdict import HEALTHY, DEGRADED, webhook_check


def run(coro):
    return asyncio.run(coro)


def test_an_update_is_claimed_once_and_strikes_are_summed(redis_url):  # noqa: F811
    async def go():
        a, b = Shared(redis_url, 42, "a"), Shared(redis_url, 42, "b")
        try:
            assert await a.claim(7) == (True, 0)
            assert await b.claim(7) == (False, 0)
            assert await b.claim(8) == (True, 0)
            assert a.add_strikes([9]) == {9: 1}
            assert b.add_strikes([9, 10]) == {9: 2, 10: 1}
            assert (await a.claim(9))[1] == 2
            other_bot = Shared(redis_url, 43, "a")
            assert await other_bot.claim(7) == (True, 0)  # keys are per bot id
            await other_bot.close()
        finally:
            await a.close()
            await b.close()

    run(go())


def test_sending_windows_hold_for_all_replicas_together(redis_url):  # noqa: F811
    limits = Limits(per_second=3, chat_interval=1.0, group_per_minute=2)

    async def go():
        a, b = Shared(redis_url, 1, "a"), Shared(redis_url, 1, "b")

        async def send(who, chat, at, answer_after=0.1):
            """Reserve, and when granted, answered `answer_after` later. Returns the wait (0 = sent)."""
            wait, member = await who.reserve_send(chat, limits, at)
            if not wait:
                await who.answered(chat, member, at + answer_after)
            return wait

        try:
            now = 1000.0
            assert await send(a, 1, now) == 0
            assert await send(b, 2, now) == 0
            wait, flying = await a.reserve_send(3, limits, now + 0.1)  # in flight: not answered yet
            assert wait == 0
            wait, _ = await b.reserve_send(4, limits, now + 0.2)  # full: the oldest answer leaves at now + 1.1
            assert abs(wait - 0.9) < 1e-6
            await a.answered(3, flying, now + 0.3)
            wait = await send(b, 4, now + 0.4)  # the 4th within one window of the answers, from another replica
            assert abs(wait - 0.7) < 1e-6  # the first answer (at now + 0.1) leaves the window at now + 1.1
            assert await send(b, 4, now + 1.11) == 0
            # One private chat: once per chat_interval after the answer (now + 1.21), whoever sends.
            assert abs(await send(a, 4, now + 1.5) - 0.71) < 1e-6
            # A group: group_per_minute per minute.
            assert await send(a, -5, now + 10) == 0
            assert await send(b, -5, now + 20) == 0
            assert await send(a, -5, now + 30) > 39
        finally:
            await a.close()
            await b.close()

    run(go())


def test_one_poller_lock_released_and_taken_over(redis_url):  # noqa: F811
    async def go():
        a, b = Shared(redis_url, 5, "host-a:1"), Shared(redis_url, 5, "host-b:2")
        try:
            assert await a.hold_poller(5) is None
            assert await b.hold_poller(5) == "host-a:1"
            assert await a.hold_poller(5) is None  # renewing
            await b.release_poller()  # not b's: nothing happens
            assert await b.hold_poller(5) == "host-a:1"
            await a.release_poller()
            assert await b.hold_poller(5) is None
        finally:
            await a.close()
            await b.close()

    run(go())


def test_redis_gone_means_local_decisions_not_a_crash():
    async def go():
        gone = Shared("redis://127.0.0.1:1/0", 1, "a")  # nothing listens on port 1
        try:
            assert await gone.claim(1) == (True, 0)
            assert await gone.reserve_send(1, Limits(), 0.0) == (0.0, "")
            assert (await gone.hold_poller(1)).startswith("unknown")
            assert gone.add_strikes([1]) == {}
            assert gone.down_since is not None
        finally:
            await gone.close()

    run(go())


def test_shared_strikes_raise_the_local_count_never_lower_it():
    book = {"struck": {"5": {"update_id": 5, "strikes": 2}}}
    assert poison.with_strikes(book, 5, 1)["struck"]["5"]["strikes"] == 2
    raised = poison.with_strikes(book, 6, 2)
    assert poison.decide(raised, 6, 2).action == "quarantine"
    assert poison.decide(book, 6, 2).action == "run"


def test_webhook_verdict():
    assert webhook_check({"webhook": {"url_ok": True, "pending": 0}}).level == HEALTHY
    failing = webhook_check({"webhook": {"url_ok": True, "pending": 3, "last_error_at": 200.0,
                                         "last_error": "Connection refused"}, "webhook_last_received_at": 150.0})
    assert (failing.level, failing.cause) == (DEGRADED, Cause.WEBHOOK_FAILING)
    assert "Connection refused" in failing.detail and "3 pending" in failing.detail
    # An old error, updates received since: healthy again; nothing pending: healthy.
    assert webhook_check({"webhook": {"url_ok": True, "pending": 3, "last_error_at": 100.0},
                          "webhook_last_received_at": 150.0}).level == HEALTHY
    assert webhook_check({"webhook": {"url_ok": True, "pending": 0, "last_error_at": 200.0}}).level == HEALTHY
    taken = webhook_check({"webhook": {"url_ok": False, "pending": 0}})
    assert (taken.level, taken.cause) == (DEGRADED, Cause.WEBHOOK_FAILING)


def test_in_flight_sends_fill_the_window_until_answered(redis_url):  # noqa: F811
    limits = Limits(per_second=2)

    async def go():
        a = Shared(redis_url, 2, "a")
        try:
            assert (await a.reserve_send(1, limits, 10.0))[0] == 0
            assert (await a.reserve_send(2, limits, 10.0))[0] == 0
            assert await a.reserve_send(3, limits, 10.5) == (0.02, "")  # both in flight: look again soon
        finally:
            await a.close()

    run(go())


def test_redis_password_and_webhook_secret_are_secrets(tmp_path):
    from botkeeper.config import Settings

    s = Settings.from_env({"BOTKEEPER_HOME": str(tmp_path), "REDIS_URL": "redis://:pa55word@redis:6379/0",
                           "TELEGRAM_MODE": "webhook", "WEBHOOK_URL": "https://bot.example.com/telegram",
                           "WEBHOOK_SECRET": "hook-secret"})
    assert {"pa55word", "hook-secret", "redis://:pa55word@redis:6379/0"} <= set(s.secrets())
    shown = {row[0]: row[1] for row in s.describe()}
    assert shown["REDIS_URL"] == shown["WEBHOOK_SECRET"] == "***"


def test_webhook_mode_without_its_url_or_secret_is_one_clear_line(tmp_path):
    import pytest

    from botkeeper.config import ConfigError, Settings

    base = {"BOTKEEPER_HOME": str(tmp_path), "TELEGRAM_MODE": "webhook"}
    with pytest.raises(ConfigError, match="TELEGRAM_MODE=webhook needs WEBHOOK_URL"):
        Settings.from_env(base)
    with pytest.raises(ConfigError, match="TELEGRAM_MODE=webhook needs WEBHOOK_SECRET"):
        Settings.from_env(base | {"WEBHOOK_URL": "https://bot.example.com/telegram"})
