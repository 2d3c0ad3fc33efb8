"""What several replicas of one bot share through Redis (REDIS_URL): nothing else in botkeeper
imports this module, so without REDIS_URL the bundle stays as it was (no redis import at all).

- `claim(update_id)`: each update is handled by exactly one replica. Telegram retries a delivery it
  thinks failed and a load balancer may hand the retry to another replica: the first SET NX wins.
- `reserve_send(chat)`: Telegram's sending limits for the bot as a whole (every replica together),
  a sliding window per second and per chat kept in Redis by one atomic script.
- `add_strikes` / strikes in `claim`: poison-update strikes summed over replicas.
- `hold_poller()`: in polling mode, one poller per token; the others stand by instead of a 409 fight.

Keys are `botkeeper:<bot id>:...`; the bot id is the token's public half, never the secret one.
Decisions about time take `now` from the caller (tests pass a fake clock to the real script).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from typing import Any, Iterable

import redis
import redis.asyncio as aioredis

log = logging.getLogger("botkeeper.shared")

CLAIM_TTL = 26 * 3600  # seconds: Telegram keeps (and may redeliver) an update for 24 h
TIMEOUT = 2.0  # seconds for any Redis call: a lost Redis must not hang the event loop
STRIKES_TTL = 7 * 86400  # as poison.STRIKE_TTL

# Like the local gate (botkeeper/bot/ratelimit.py), a send counts from the moment it leaves until one
# window after its answer arrived: Telegram sees it somewhere in between, so whatever the network's
# jitter it never sees more than the limit in any window. A send in flight is scored INFLIGHT
# seconds ahead (a replica killed mid-send frees its place after that); `answered` rescores it.
# KEYS: global window, chat window. ARGV: now, per_second, chat limit, chat window (s), member, inflight.
# Returns '0' (reserved: the send may go now) or the seconds to wait before asking again.
RESERVE = """
local now, per_second = tonumber(ARGV[1]), tonumber(ARGV[2])
local chat_limit, chat_window, inflight = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local function wait_for(key, limit, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local n = redis.call('ZCARD', key)
  if n < limit then return 0 end
  local entry = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
  local at = tonumber(entry[2])
  if at > now then return 0.02 end  -- only sends in flight fill the window: look again shortly
  return at + window - now
end
local wait = math.max(wait_for(KEYS[1], per_second, 1.0), wait_for(KEYS[2], chat_limit, chat_window))
if wait > 0 then return tostring(wait) end
redis.call('ZADD', KEYS[1], now + inflight, ARGV[5])
redis.call('ZADD', KEYS[2], now + inflight, ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.ceil((inflight + 1) * 1000))
redis.call('PEXPIRE', KEYS[2], math.ceil((inflight + chat_window) * 1000))
return '0'
"""
# KEYS: global window, chat window. ARGV: now, member. The send was answered: it counts from now.
ANSWERED = """
redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
return 0
"""
INFLIGHT = 10.0
# KEYS: the lock. ARGV: our id, ttl ms. Returns the holder ('' when the lock is now ours).
HOLD = """
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ''
end
return holder
"""
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def replica_id() -> str:
    """Who holds a claim or the lock: host (the pod's name in Kubernetes) and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Shared:
    """One bot's shared state in Redis. The async client serves the event loop, the sync one the
    poison guard's start (run in a thread)."""

    def __init__(self, url: str, bot_id: str | int, replica: str | None = None):
        self.url = url
        self.prefix = f"botkeeper:{bot_id}:"
        self.replica = replica or replica_id()
        options = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT, "decode_responses": True}
        self.aio = aioredis.Redis.from_url(url, **options)
        self.sync = redis.Redis.from_url(url, **options)
        self._reserve = self.aio.register_script(RESERVE)
        self._answered = self.aio.register_script(ANSWERED)
        self._hold = self.aio.register_script(HOLD)
        self._release = self.aio.register_script(RELEASE)
        self.down_since: float | None = None
        self.down_error: str | None = None  # the kind of failure (ConnectionError, AuthenticationError)
        self.unclaimed: list[int] = []  # updates handled here while Redis was down (checked once it is back)
        self.duplicates_unprevented = 0  # of those, how many another replica handled too
        self._seq = itertools.count()

    def key(self, *parts: Any) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    # --- updates ---------------------------------------------------------------------------------
    async def claim(self, update_id: int) -> tuple[bool, int]:
        """(is this replica the one to handle the update, its poison strikes over all replicas).
        With Redis unreachable: handled here (a duplicate is better than a lost update), 0 strikes."""
        try:
            async with self.aio.pipeline(transaction=False) as pipe:
                pipe.set(self.key("update", update_id), self.replica, nx=True, ex=CLAIM_TTL)
                pipe.hget(self.key("strikes"), str(update_id))
                won, strikes = await pipe.execute()
        except redis.RedisError as exc:
            self._down(exc)
            if len(self.unclaimed) < 10_000:
                self.unclaimed.append(update_id)
            return True, 0
        self._up()
        if self.unclaimed:
            await self._count_unprevented()
        return bool(won), int(strikes or 0)

    async def _count_unprevented(self) -> None:
        """Redis is back: claim what was handled here while it was down. A claim another replica
        holds already is an update both handled: a duplicate no claim could prevent, counted."""
        ids, self.unclaimed = self.unclaimed, []
        try:
            async with self.aio.pipeline(transaction=False) as pipe:
                for update_id in ids:
                    pipe.set(self.key("update", update_id), self.replica, nx=True, ex=CLAIM_TTL)
                won = await pipe.execute()
        except redis.RedisError as exc:
            self._down(exc)
            self.unclaimed = ids + self.unclaimed
            return
        lost = sum(1 for w in won if not w)
        if lost:
            self.duplicates_unprevented += lost
            log.warning("%d update(s) handled here while Redis was down were handled by another replica too", lost)

    def add_strikes(self, update_ids: Iterable[int]) -> dict[int, int]:
        """One strike more for each update (sync: the guard's start runs in a thread). Returns the
        totals over all replicas; {} when Redis is unreachable (the local count still holds)."""
        ids = list(update_ids)
        if not ids:
            return {}
        try:
            with self.sync.pipeline(transaction=True) as pipe:
                for update_id in ids:
                    pipe.hincrby(self.key("strikes"), str(update_id), 1)
                pipe.expire(self.key("strikes"), STRIKES_TTL)
                totals = pipe.execute()[:-1]
        except redis.RedisError as exc:
            self._down(exc)
            return {}
        return dict(zip(ids, (int(t) for t in totals)))

    # --- sending limits --------------------------------------------------------------------------
    async def reserve_send(self, chat_id: int | str, limits: Any, now: float | None = None) -> tuple[float, str]:
        """(0, member) when a message to chat_id may go now (it is counted as in flight until
        `answered(chat_id, member)`), else (seconds to wait and ask again, ""). Redis unreachable:
        0 (each replica's own gate still keeps its own sends within the limits)."""
        group = isinstance(chat_id, str) or chat_id < 0
        chat_limit, window = (limits.group_per_minute, 60.0) if group else (1, limits.chat_interval)
        now = time.time() if now is None else now
        member = f"{self.replica}:{next(self._seq)}"
        try:
            wait = await self._reserve(keys=[self.key("sent"), self.key("sent", chat_id)],
                                       args=[repr(now), limits.per_second, chat_limit, repr(window), member, INFLIGHT])
        except redis.RedisError as exc:
            self._down(exc)
            return 0.0, ""
        self._up()
        wait = float(wait)
        return (0.0, member) if wait <= 0 else (wait, "")

    async def answered(self, chat_id: int | str, member: str, now: float | None = None) -> None:
        """The send reserved as `member` got its answer: it counts in the windows from now."""
        if not member:
            return
        try:
            await self._answered(keys=[self.key("sent"), self.key("sent", chat_id)],
                                 args=[repr(time.time() if now is None else now), member])
        except redis.RedisError as exc:
            self._down(exc)  # the entry ages out INFLIGHT seconds later

    # --- polling ---------------------------------------------------------------------------------
    async def hold_poller(self, ttl: float) -> str | None:
        """Take or keep the poller lock for ttl seconds. None when it is ours, else who holds it.
        Redis unreachable: "unknown", and the caller keeps doing what it does (a poller polls on,
        a standby waits on): nobody starts a 409 fight because Redis blinked."""
        try:
            holder = await self._hold(keys=[self.key("poller")], args=[self.replica, int(ttl * 1000)])
        except redis.RedisError as exc:
            self._down(exc)
            return "unknown (Redis unreachable)"
        self._up()
        return holder or None

    async def release_poller(self) -> None:
        try:
            await self._release(keys=[self.key("poller")], args=[self.replica])
        except redis.RedisError:
            pass  # it expires by itself

    async def close(self) -> None:
        await self.aio.aclose()
        self.sync.close()

    # --- an outage of Redis: said once when it starts and once when it ends ---------------------
    def _down(self, exc: BaseException) -> None:
        self.down_error = type(exc).__name__  # never the message: it may carry the URL
        if self.down_since is None:
            self.down_since = time.time()
            log.error("Redis unreachable (%s): handling updates here without the shared claims and limits"
                      " until it is back", type(exc).__name__)

    def report(self) -> dict[str, Any]:
        """Heartbeat fields: the verdict says degraded (redis-unreachable) while Redis is down."""
        fields: dict[str, Any] = {"redis_down_since": self.down_since}
        if self.down_since is not None:
            fields["redis_error"] = self.down_error
        if self.duplicates_unprevented:
            fields["duplicates_unprevented"] = self.duplicates_unprevented
        return fields

    def _up(self) -> None:
        if self.down_since is not None:
            log.info("Redis reachable again after %.1f s", time.time() - self.down_since)
            self.down_since = None


_ONE: dict[tuple[str, str], Shared] = {}


def for_settings(settings: Any) -> Shared:
    """The process's one Shared for these settings (keeper, gate and guard use the same clients)."""
    bot_id = (settings.bot_token or "0").split(":", 1)[0]
    key = (settings.redis_url, bot_id)
    if key not in _ONE:
        _ONE[key] = Shared(settings.redis_url, bot_id)
    return _ONE[key]
