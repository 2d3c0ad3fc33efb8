"""Delivery inside the bot process: one gate that keeps every message within Telegram's limits, the
python-telegram-bot rate limiter that puts the bot's direct sends (replies) through that gate, and
the worker that delivers the persistent outbox (botkeeper/bot/outbox.py) through it.

The decisions (who may send when, how long to back off) are the pure functions of
botkeeper/bot/ratelimit.py; this module only waits, sends and records.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Coroutine

from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, BaseRateLimiter

from . import outbox, ratelimit
from .outbox import Message, Outbox, Priority

log = logging.getLogger("botkeeper.outbox")

RESERVED = {"botkeeper": "outbox"}  # rate_limit_args of the worker's sends: the gate was passed already
DIRECT_MAX_WAIT = 300.0  # a handler's own send waits out 429s this long in total, then gets RetryAfter
MAX_TASKS = 500  # messages (one per chat) waiting at the gate at once
COALESCE = 0.02  # seconds: answers arriving together cause one look at the queue, not one each
STOP_GRACE = 2.0  # seconds sends already on the wire get to finish at shutdown


def limits_of(settings: Any) -> ratelimit.Limits:
    return ratelimit.Limits(settings.outbox_rate, settings.outbox_chat_interval, settings.outbox_group_per_minute)


def _seconds(retry_after: Any) -> float:
    return float(retry_after.total_seconds() if hasattr(retry_after, "total_seconds") else retry_after)


def _chat_key(chat_id: Any) -> int | str | None:
    if isinstance(chat_id, int):
        return chat_id
    if isinstance(chat_id, str):
        return int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id  # "@channel" keeps its name
    return None


@dataclass
class _Waiter:
    priority: int
    seq: int
    chat_id: int | str
    future: asyncio.Future = field(compare=False)


class Gate:
    """Senders wait here for their turn: by priority, then arrival; within ratelimit's windows."""

    def __init__(self, limits: ratelimit.Limits, clock: Callable[[], float] = time.monotonic, shared: Any = None):
        self.limits, self.clock = limits, clock
        self.shared = shared  # botkeeper.bot.shared.Shared with REDIS_URL: the limits hold for all replicas
        self._reserved: dict[int | str, deque] = {}  # chat -> its sends' places in Redis's windows
        self._answering: set[asyncio.Task] = set()
        self.windows = ratelimit.Windows()
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._recent_429s: deque = deque(maxlen=32)

    @asynccontextmanager
    async def slot(self, chat_id: int | str, priority: int) -> AsyncIterator[None]:
        await self.acquire(chat_id, priority)
        try:
            yield
        finally:
            self.release(chat_id)

    async def acquire(self, chat_id: int | str, priority: int) -> None:
        waiter = _Waiter(int(priority), next(self._seq), chat_id, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        self._dispatch()
        try:
            await waiter.future
            if self.shared is not None:
                while True:
                    wait, member = await self.shared.reserve_send(chat_id, self.limits)
                    if not wait:
                        break
                    await asyncio.sleep(wait)  # another replica used the bot's budget: our turn comes
                self._reserved.setdefault(chat_id, deque()).append(member)
        except asyncio.CancelledError:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                self.release(chat_id)  # granted, then cancelled before it could send
            raise

    def release(self, chat_id: int | str) -> None:
        ratelimit.answered(self.windows, chat_id, self.clock())
        members = self._reserved.get(chat_id)
        if members:
            task = asyncio.get_running_loop().create_task(self.shared.answered(chat_id, members.popleft()))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
            if not members:
                del self._reserved[chat_id]
        self._dispatch()

    def told_to_wait(self, chat_id: int | str | None, seconds: float) -> str:
        """A 429: pause that chat or every chat (ratelimit.pause_scope). Returns the scope."""
        now = self.clock()
        self._recent_429s.append((now, chat_id))
        scope = ratelimit.pause_scope(self._recent_429s, now)
        ratelimit.pause(self.windows, None if scope == "global" else chat_id, now + seconds)
        self._dispatch()
        return scope

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while True:
            self._waiting = [w for w in self._waiting if not w.future.done()]
            index, wake = ratelimit.choose([(w.priority, w.seq, w.chat_id) for w in self._waiting],
                                           self.windows, self.limits, self.clock())
            if index is None:
                break
            waiter = self._waiting.pop(index)
            ratelimit.dispatched(self.windows, waiter.chat_id)
            waiter.future.set_result(None)
        if wake is not None:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, wake - self.clock()), self._dispatch)


GATED_PREFIXES = ("send", "copyMessage", "forwardMessage")  # calls that put a new message in a chat
# Calls with their own retry loops (start-up, webhook registration): the limiter does not retry them.
NOT_RETRIED = {"getUpdates", "getMe", "deleteWebhook", "setWebhook", "getWebhookInfo", "close", "logOut"}


class GateLimiter(BaseRateLimiter):
    """python-telegram-bot's rate limiter hook: every new message the bot sends passes the gate
    (high priority: it is a reply), and a 429 pauses what it says and is retried, not lost."""

    def __init__(self, gate: Gate, retry_for: float = 30.0):
        self.gate = gate
        self.retry_for = retry_for  # seconds a send is retried after 5xx, timeouts, dropped connections
        self.give_up: Callable[[], bool] = lambda: False  # the bot stops: no more retries (attach sets it)
        self.failed_sends = 0  # sends given up after retrying
        self.closed = False  # a stop past its limit: no new send goes out (its update is left for the next bot)
        self.on_wire = 0  # sends waiting for Telegram's answer now

    @classmethod
    def from_settings(cls, settings: Any) -> "GateLimiter":
        shared = None
        if getattr(settings, "redis_url", None):  # several replicas: imported only then
            from .shared import for_settings

            shared = for_settings(settings)
        return cls(Gate(limits_of(settings), shared=shared), getattr(settings, "send_retry_for", 30.0))

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def close(self, grace: float = STOP_GRACE) -> None:
        """A stop past its limit: nothing new goes out; sends on the wire get `grace` seconds for
        Telegram's answer (so their handlers can finish, rather than be cut after the message went)."""
        self.closed = True
        deadline = time.monotonic() + grace
        while self.on_wire and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0)  # the handlers whose answer came continue

    async def process_request(self, callback: Callable[..., Coroutine[Any, Any, Any]], args: Any,
                              kwargs: dict[str, Any], endpoint: str, data: dict[str, Any],
                              rate_limit_args: Any) -> Any:
        if rate_limit_args == RESERVED:  # the outbox worker holds a slot and handles 429 itself
            return await callback(*args, **kwargs)
        chat = _chat_key(data.get("chat_id"))
        gated = chat is not None and endpoint.startswith(GATED_PREFIXES) and endpoint != "sendChatAction"
        waited, attempts, first_at = 0.0, 0, time.monotonic()
        while True:
            if gated:
                await self.gate.acquire(chat, Priority.HIGH)
            pause = 0.0
            try:
                attempts += 1
                if self.closed:
                    raise NetworkError("not sent: the bot is stopping")
                self.on_wire += 1
                try:
                    return await callback(*args, **kwargs)
                finally:
                    self.on_wire -= 1
            except RetryAfter as exc:
                seconds = _seconds(exc.retry_after)
                waited += seconds
                if waited > DIRECT_MAX_WAIT:
                    raise
                if gated:
                    self.gate.told_to_wait(chat, seconds)  # the next acquire waits it out
                else:
                    pause = seconds
            except NetworkError as exc:  # 5xx, a timeout, a dropped connection (TimedOut is one)
                if isinstance(exc, BadRequest) or endpoint in NOT_RETRIED or self.closed:
                    raise
                pause = ratelimit.backoff(attempts, first=0.5, cap=8.0)
                if self.give_up() or time.monotonic() + pause - first_at > self.retry_for:
                    self.failed_sends += 1
                    log.error("%s to chat %s failed after %d attempt(s) in %.1f s: %s: %s; not retried further",
                              endpoint, chat if chat is not None else "?", attempts, time.monotonic() - first_at,
                              type(exc).__name__, exc)
                    raise
            finally:
                if gated:
                    self.gate.release(chat)
            if pause:
                await asyncio.sleep(pause)


def _permanent(exc: TelegramError) -> str | None:
    """The reason a send can never succeed, or None when a later retry may."""
    if isinstance(exc, ChatMigrated):
        return f"chat migrated to {exc.new_chat_id}: queue it again for the new id"
    if isinstance(exc, Forbidden):
        return f"forbidden: {exc.message}"
    if isinstance(exc, BadRequest):  # chat not found, message too long, bad markup: the same next time
        return f"bad request: {exc.message}"
    return None


class Delivery:
    """Delivers data/outbox.db through the bot: the first message of each chat goes to the gate."""

    def __init__(self, bot: Any, settings: Any, gate: Gate | None, box: Outbox | None = None):
        self.bot, self.settings = bot, settings
        self.gate = gate or Gate(limits_of(settings))
        self.reserved = RESERVED if isinstance(getattr(bot, "rate_limiter", None), GateLimiter) else None
        self.box = box or Outbox(settings.outbox_db)
        self._busy: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._sending: set[asyncio.Task] = set()  # on the wire: let them finish at shutdown
        self._event = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        wall, mono = time.time(), self.gate.clock()
        ratelimit.seed(self.gate.windows, [(mono - (wall - at), chat) for at, chat in
                                           self.box.recent_sends(wall - ratelimit.GROUP_WINDOW)])
        outbox.install(self.box, self.wake)
        self._task = asyncio.create_task(self.run(), name="outbox-delivery")

    def wake(self) -> None:
        self._event.set()

    async def run(self) -> None:
        while not self._stopping:
            self._event.clear()
            now = time.time()
            timeout = self.settings.outbox_poll_interval  # others may queue into the file too
            try:
                self._take_due(now)
                retry_at = self.box.next_retry_at()
            except sqlite3.Error as exc:  # locked past the busy timeout, disk full: try again later
                log.error("outbox: cannot read %s: %s; retrying in %g s", self.box.path, exc, timeout)
                retry_at = None
            if retry_at is not None and retry_at > now:
                timeout = min(timeout, retry_at - now)
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(COALESCE)

    def _take_due(self, now: float) -> None:
        room = MAX_TASKS - len(self._tasks)
        if room <= 0:
            return
        for msg in self.box.due(now, self._busy, room):
            self._busy.add(msg.chat_id)
            task = asyncio.create_task(self._deliver(msg))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the message stays pending
            log.error("outbox: delivery failed: %s", task.exception(), exc_info=task.exception())
        self.wake()

    async def _deliver(self, msg: Message) -> None:
        try:
            age = time.time() - msg.created_at
            if age > self.settings.outbox_max_age:
                self._bury(msg, f"too old: queued {age:.0f} s ago (OUTBOX_MAX_AGE={self.settings.outbox_max_age:g})")
                return
            async with self.gate.slot(msg.chat_id, msg.priority):
                if self._stopping:
                    return
                self._sending.add(asyncio.current_task())
                try:
                    await self._send(msg)
                finally:
                    self._sending.discard(asyncio.current_task())
        finally:
            self._busy.discard(msg.chat_id)

    async def _send(self, msg: Message) -> None:
        try:
            sent = await self.bot.send_message(msg.chat_id, msg.text, rate_limit_args=self.reserved, **msg.options)
        except RetryAfter as exc:
            seconds = _seconds(exc.retry_after)
            scope = self.gate.told_to_wait(msg.chat_id, seconds)
            self.box.retry(msg, time.time() + seconds, f"429: retry after {seconds:g} s ({scope})")
            return
        except TelegramError as exc:
            reason = _permanent(exc)
            if reason:
                self._bury(msg, reason)
                return
            if not isinstance(exc, (NetworkError, InvalidToken)):
                log.warning("outbox: message %s to chat %s: %s: %s; retrying", msg.id, msg.chat_id,
                            type(exc).__name__, exc)
            delay = ratelimit.backoff(msg.attempts + 1, cap=self.settings.outbox_max_backoff)
            self.box.retry(msg, time.time() + delay, f"{type(exc).__name__}: {exc}")
            return
        except (TypeError, ValueError) as exc:  # options send_message does not take: never sendable
            self._bury(msg, f"invalid send_message options: {exc}")
            return
        self.box.mark_sent(msg, getattr(sent, "message_id", None))

    def _bury(self, msg: Message, reason: str) -> None:
        self.box.bury(msg, reason)
        log.warning("outbox: message %s (key %s) to chat %s dead-lettered after %d attempt(s): %s",
                    msg.id, msg.key, msg.chat_id, msg.attempts + 1, reason)

    async def stop(self) -> None:
        """Take nothing new, let sends on the wire finish (their answer is recorded), drop the rest
        (they stay pending in the file)."""
        self._stopping = True
        self.wake()
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=STOP_GRACE)
        for task in [*self._tasks, self._task]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*self._tasks, *([self._task] if self._task else []), return_exceptions=True)
        outbox.install(None, None)
        self.box.close()


def start(application: Application, settings: Any) -> Delivery:
    """Start delivering the outbox from this application's bot (the gate of its GateLimiter)."""
    limiter = application.bot.rate_limiter
    delivery = Delivery(application.bot, settings, limiter.gate if isinstance(limiter, GateLimiter) else None)
    delivery.start()
    application.bot_data["botkeeper.delivery"] = delivery
    return delivery


async def stop(application: Application) -> None:
    delivery = application.bot_data.pop("botkeeper.delivery", None)
    if delivery is not None:
        await delivery.stop()


def attach(application: Application, settings: Any = None) -> None:
    """For a bring-your-own python-telegram-bot Application run with run_polling/run_webhook:
    deliver the outbox from it (started in post_init, stopped in post_stop, yours still called).
    Build it with `.rate_limiter(GateLimiter.from_settings(settings))` to put its replies through
    the same limits."""
    if settings is None:
        from ..config import Settings

        settings = Settings.from_env()
    before_init, before_stop = application.post_init, application.post_stop

    async def post_init(app: Application) -> None:
        start(app, settings)
        if before_init is not None:
            await before_init(app)

    async def post_stop(app: Application) -> None:
        await stop(app)
        if before_stop is not None:
            await before_stop(app)

    application.post_init, application.post_stop = post_init, post_stop
