"""What the bot is working on: updates in flight, the event loop's lag, errors per handler, and a
watchdog thread that shows where a blocked event loop hangs.

This is what the heartbeat reports (a `Health.reporters` entry), so that a bot which hangs or dies
on one update leaves behind which update it was (botkeeper.bot.poison strikes it), and the owner sees
which handler, at which line of their code, blocks.

Updates are seen through python-telegram-bot's update processor (`TrackingProcessor` wraps the
application's own, keeping its concurrency), so begin and end are exact whatever the handlers do
(ApplicationHandlerStop, exceptions, several groups). A beat is written as an update begins and
ends: a handler that blocks the loop or kills the process at once still leaves its update behind.

python-telegram-bot confirms a batch of updates to Telegram with its next getUpdates, which it sends
while the batch is still being handled; a bot that hangs or dies on one of them would lose the rest
(and the poison one would never come back to be judged). `HeldPolls` makes a sequential bot ask for
(and so confirm) more only once every fetched update is handled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import sysconfig
import threading
import time
import traceback
from typing import Any, Awaitable, Callable

from telegram import Update
from telegram.ext import Application, BaseUpdateProcessor
from telegram.request import BaseRequest

from ..logs import escape

log = logging.getLogger("botkeeper.bot")
TICK = 0.25  # seconds between the event loop's proofs of life to the watchdog
MAX_HANDLERS_COUNTED = 50  # handler names in the error counts (bounded heartbeat)
KINDS = ("message", "edited_message", "channel_post", "edited_channel_post", "callback_query", "inline_query",
         "chosen_inline_result", "shipping_query", "pre_checkout_query", "poll", "poll_answer", "my_chat_member",
         "chat_member", "chat_join_request", "message_reaction", "business_message")
_NOT_USER_CODE = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
                       | {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})


def kind_of(update: object) -> str:
    """The command itself ("/freeze", never its arguments) or the update's kind: no message text."""
    if not isinstance(update, Update):
        return type(update).__name__
    message = update.effective_message
    text = getattr(message, "text", None) if message is not None else None
    if text and text.startswith("/"):
        return escape(text.split()[0].split("@")[0], 64)  # a user typed it: it reaches logs and the page
    return next((k for k in KINDS if getattr(update, k, None) is not None), "update")


def handler_name(handler: Any) -> str:
    callback = getattr(handler, "callback", None)
    return getattr(callback, "__qualname__", None) or type(handler).__name__


def user_frame(frame: Any) -> str | None:
    """file:line function of the innermost frame of the user's code (not stdlib, libraries, botkeeper)."""
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_NOT_USER_CODE) and not path.startswith("<"):
            return f"{path}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return None


class Work:
    """Updates in flight, loop lag and handler errors. Touched from the event loop, read (copied)
    by the watchdog thread."""

    def __init__(self, application: Application, beat: Callable[[], None], clock: Callable[[], float] = time.time):
        self.application = application
        self.beat = beat  # writes a heartbeat now
        self.clock = clock
        self.in_flight: dict[int, dict[str, Any]] = {}
        self.errors: dict[str, int] = {}
        self.done_upto: int | None = None  # highest update finished (sequential processing only)
        self.lag = 0.0
        self.last_tick = time.monotonic()
        self.loop_thread: int | None = None
        self.blocked: dict[str, Any] | None = None  # set by the watchdog while the loop is blocked
        self.told = False  # the watchdog wrote a `blocked` beat: the loop overwrites it once it runs
        self.bot_id = (application.bot.token or "").split(":", 1)[0]
        self._predecessor_done = -1

    # --- updates ---------------------------------------------------------------------------------
    def begin(self, update: object) -> None:
        if not isinstance(update, Update):
            return
        chat, user = update.effective_chat, update.effective_user
        self.in_flight[update.update_id] = {
            "update_id": update.update_id, "chat": chat.id if chat else None, "user": user.id if user else None,
            "kind": kind_of(update), "handler": self.handler_for(update), "since": round(self.clock(), 3)}
        self.beat()

    def end(self, update: object, sequential: bool) -> None:
        if isinstance(update, Update) and self.in_flight.pop(update.update_id, None) is not None:
            if sequential:
                self.done_upto = max(self.done_upto or 0, update.update_id)
            self.beat()

    def after_predecessor(self, beat: dict[str, Any] | None) -> None:
        """Remember what the previous bot (same token) had finished: it may have ended before
        Telegram heard that, and those updates come again."""
        beat = beat or {}
        done = beat.get("done_upto")
        if beat.get("bot_id") == self.bot_id and isinstance(done, int) and beat.get("pid") != os.getpid():
            self._predecessor_done = done

    def already_done(self, update_id: int) -> bool:
        return update_id <= self._predecessor_done

    def handler_for(self, update: Update) -> str | None:
        """The first of the user's handlers that will take the update (what PTB itself checks)."""
        for group in sorted(self.application.handlers):
            if group <= -1000:
                continue  # botkeeper's own gate
            for handler in self.application.handlers[group]:
                try:
                    if handler.check_update(update) not in (None, False):
                        return handler_name(handler)
                except Exception:  # a user's filter that fails here fails again in PTB, reported there
                    return handler_name(handler)
        return None

    def failed(self, update: object) -> None:
        """A handler raised on this update (the error handler calls this): counted per handler."""
        entry = self.in_flight.get(update.update_id) if isinstance(update, Update) else None
        name = (entry or {}).get("handler") or "unknown"
        if name in self.errors or len(self.errors) < MAX_HANDLERS_COUNTED:
            self.errors[name] = self.errors.get(name, 0) + 1

    # --- the heartbeat ---------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"in_flight": list(self.in_flight.values()), "loop_lag": round(self.lag, 3),
                                  "handler_errors": dict(self.errors), "bot_id": self.bot_id}
        if self.done_upto is not None:
            fields["done_upto"] = self.done_upto
        return fields

    # --- the loop's pulse ------------------------------------------------------------------------
    async def pulse(self) -> None:
        """Runs in the event loop: each tick proves it is not blocked and measures how late it was."""
        self.loop_thread = threading.get_ident()
        while True:
            before = time.monotonic()
            self.last_tick = before  # first: the watchdog writes no `blocked` beat after this
            if self.told:
                self.told = False
                self.beat()
            await asyncio.sleep(TICK)
            self.lag = max(0.0, time.monotonic() - before - TICK)


class Watchdog(threading.Thread):
    """Tells on a blocked event loop. Once the loop has not come back for `warn_after` seconds it
    logs the loop thread's stack (once per episode) and, while the loop stays blocked, writes the
    heartbeat itself every `beat_every` seconds with `blocked`: since when, the update in flight, its
    handler and the user's file:line. The verdict restarts the bot on that after BLOCK_LIMIT. A
    process silent as a whole (SIGSTOP, the GIL held in C code, this thread stuck) writes nothing
    and goes stale as before (STALE_AFTER)."""

    def __init__(self, work: Work, warn_after: float, redact: Callable[[str], str],
                 write: Callable[[dict[str, Any], Callable[[], bool]], bool], beat_every: float = 1.0):
        super().__init__(name="botkeeper-watchdog", daemon=True)
        self.work, self.warn_after, self.redact = work, warn_after, redact
        self.write = write  # write(extra heartbeat fields, still_blocked) under the heartbeat's lock
        self.beat_every = beat_every
        self.stopped = threading.Event()
        self.entries: list[dict[str, Any]] = []  # in flight when the episode began, with the frame

    def run(self) -> None:
        episode: float | None = None  # the loop's last tick before the block
        next_beat = 0.0
        while not self.stopped.wait(min(0.25, self.warn_after / 4)):
            tick = self.work.last_tick
            silent = time.monotonic() - tick
            if silent < self.warn_after or self.work.loop_thread is None:
                if episode is not None and tick != episode:
                    log.info("event loop running again after %.1f s blocked", max(0.0, tick - episode - TICK))
                    episode, self.work.blocked = None, None
                continue
            if episode != tick:
                episode, next_beat = tick, 0.0
                self.work.blocked = self.report(silent)
            if self.work.blocked is not None and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.beat_every
                self.beat(tick)

    def report(self, silent: float) -> dict[str, Any] | None:
        """Log where the loop hangs; the `blocked` heartbeat field (None when there is no frame)."""
        frame = sys._current_frames().get(self.work.loop_thread)
        if frame is None:
            return None
        where = user_frame(frame)
        try:
            entries = [dict(e) for e in list(self.work.in_flight.values())]
        except RuntimeError:  # changed under us: the loop is moving again
            return None
        culprit = update_on_stack(frame)
        handler = next((e.get("handler") for e in entries if e.get("update_id") == culprit), None) or \
            next((e.get("handler") for e in entries if e.get("handler")), None)
        stack = "".join(traceback.format_stack(frame))
        what = f"handler {handler} (update {entries[0]['update_id']}, chat {entries[0].get('chat')})" if entries \
            else "no update in flight"
        log.error("%s", self.redact(f"event loop blocked for {silent:.1f} s: {what}, at {where or 'no frame of your code'}"
                                    f"\nstack of the event loop's thread (most recent call last):\n{stack}".rstrip()))
        for entry in entries:
            entry["frame"] = where
        self.entries = entries
        # `update_id`: the update whose handler is on the blocked stack; with exactly one in flight
        # the culprit is certain (botkeeper.bot.poison quarantines it on the first strike).
        return {"since": round(time.time() - silent, 3), "handler": handler, "frame": where,
                "update_id": culprit, "in_flight": len(entries)}

    def beat(self, tick: float) -> None:
        """One heartbeat from this thread, only while the loop is still stuck at `tick`."""
        blocked = dict(self.work.blocked or {})
        try:
            if self.write({"blocked": blocked, "in_flight": self.entries}, lambda: self.work.last_tick == tick):
                self.work.told = True  # the loop writes a beat without `blocked` as soon as it runs
        except (OSError, RuntimeError) as exc:
            log.warning("cannot write the blocked loop's heartbeat: %s", exc)


def update_on_stack(frame: Any) -> int | None:
    """The id of the update whose processing is on this (blocked) stack, if any: the frame of
    TrackingProcessor.do_process_update up the chain of awaiting coroutines holds it."""
    code = TrackingProcessor.do_process_update.__code__
    while frame is not None:
        if frame.f_code is code:
            update = frame.f_locals.get("update")
            return update.update_id if isinstance(update, Update) else None
        frame = frame.f_back
    return None


class TrackingProcessor(BaseUpdateProcessor):
    """The application's own update processor, with each update's begin and end reported to Work."""

    def __init__(self, inner: BaseUpdateProcessor, work: Work):
        super().__init__(inner.max_concurrent_updates)
        self._inner, self._work = inner, work

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        self._work.begin(update)
        try:
            await self._inner.do_process_update(update, coroutine)
        finally:
            self._work.end(update, self.max_concurrent_updates == 1)

    async def initialize(self) -> None:
        await self._inner.initialize()

    async def shutdown(self) -> None:
        await self._inner.shutdown()


def track(application: Application, work: Work) -> bool:
    """Put TrackingProcessor in front of the application's processor (PTB >= 20.4). False when this
    python-telegram-bot has no processor to wrap: the bot then reports nothing in flight (old behaviour)."""
    inner = getattr(application, "_update_processor", None)
    if isinstance(inner, TrackingProcessor):
        return True
    if not isinstance(inner, BaseUpdateProcessor):
        log.warning("this python-telegram-bot has no update processor to wrap: updates in flight are not reported")
        return False
    application._update_processor = TrackingProcessor(inner, work)
    return True


class HeldPolls(BaseRequest):
    """python-telegram-bot's getUpdates request, sent only once every update fetched before is
    handled (`update_queue.join()`): nothing is confirmed to Telegram that was not handled."""

    def __init__(self, inner: BaseRequest, application: Application):
        self._inner, self._application = inner, application

    @property
    def read_timeout(self) -> float | None:
        return self._inner.read_timeout

    async def initialize(self) -> None:
        await self._inner.initialize()

    async def shutdown(self) -> None:
        await self._inner.shutdown()

    async def do_request(self, url: str, method: str, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        await self._application.update_queue.join()
        return await self._inner.do_request(url, method, *args, **kwargs)


def hold_polls(application: Application) -> bool:
    """Put HeldPolls in front of the bot's getUpdates request, for a bot that handles updates one
    at a time (with concurrent updates, confirmations stay python-telegram-bot's; documented)."""
    bot = application.bot
    pair = getattr(bot, "_request", None)
    if application.update_processor.max_concurrent_updates != 1 or not isinstance(pair, tuple) or len(pair) != 2:
        return False
    if not isinstance(pair[0], HeldPolls):
        bot._request = (HeldPolls(pair[0], application), pair[1])
    return True
