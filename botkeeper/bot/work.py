"""What the bot is working on: updates in flight, the event loop's lag, errors per handler, and a
watchdog thread that shows where a blocked event loop hangs.

This is what the heartbeat reports (a `Health.reporters` entry), so that a bot which hangs or dies
on one update leaves behind which update it was (botkeeper.bot.poison strikes it), and the owner sees
which handler, at which line of their code, blocks.

Updates are seen through python-telegram-bot's update processor (`TrackingProcessor` wraps the
application's own), so begin and end are exact whatever the handlers do (ApplicationHandlerStop,
exceptions, several groups). A beat is written as an update begins and ends: a handler that blocks
the loop or kills the process at once still leaves its update behind. The processor handles updates
of different chats at once (UPDATE_CONCURRENCY) and those of one chat in order; updates with a
poison strike run one at a time, so a second death strikes that one again and no other struck one.

Every message answered, once (docs/bot.md, "The guarantee"): an update is *done* only when its
handlers finished. One cancelled at a stop, or failed because the token was rejected or the bot was
stopping, is *left* for the next bot. python-telegram-bot confirms fetched updates to Telegram with
its next getUpdates, while they are still handled; `ConfirmingPolls` first writes every update
fetched and not done (its JSON) to data/unfinished_updates.json, and the next bot handles those
before it polls. The updates done but not yet confirmed are an explicit set of ids (`done`, in the
heartbeat): when Telegram delivers one again, it is skipped; the next bot inherits the set, never
"every id up to N" (Telegram's ids may restart lower or at random).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
import sysconfig
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Awaitable, Callable

from telegram import Update
from telegram.error import InvalidToken
from telegram.ext import Application, BaseUpdateProcessor
from telegram.request import BaseRequest

from ..logs import escape
from ..health import heartbeat
from . import outbox

log = logging.getLogger("botkeeper.bot")
TICK = 0.25  # seconds between the event loop's proofs of life to the watchdog
MAX_HANDLERS_COUNTED = 50  # handler names in the error counts (bounded heartbeat)
DONE_KEPT = 300  # ids done and not yet confirmed, kept in the heartbeat (one or two polls' worth)
DONE_TTL = 86400.0  # Telegram keeps an unconfirmed update 24 h: an older "done" can never come again
FULL_POLL = 100  # updates getUpdates returns at most
JOURNAL = "unfinished_updates.json"  # in DATA_DIR: updates confirmed to Telegram and not done yet
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
        self.done: dict[int, float] = {}  # finished here or by the predecessor, not yet confirmed: id -> when
        self.fetched: dict[int, dict[str, Any]] = {}  # fetched by getUpdates (or replayed), not done: id -> JSON
        self.journal: Path | None = None  # data/unfinished_updates.json (ConfirmingPolls writes it)
        self.journaled: set[int] = set()  # the ids the journal lists now
        self.claimed: set[int] = set()  # taken by the processor: waiting for its chat, or running
        self.left: dict[int, dict[str, Any]] = {}  # unfinished, for the next bot (cancelled, token rejected)
        self.failures: dict[int, BaseException] = {}  # what a handler raised, until the update ends
        self.stopping = False  # set as a graceful stop begins: a failure now leaves the update
        self.fatal: Callable[[], bool] = lambda: False  # the token was rejected: the bot is about to exit
        self.struck: Callable[[int], bool] = lambda update_id: False  # poison strikes: the one-at-a-time lane
        self.duplicates = 0  # deliveries of an update already running or done here (skipped)
        self.inherited: set[int] = set()  # done by the predecessor (said in the log when skipped)
        self.replayed: set[int] = set()  # taken from the journal at start, until the first poll tells
        # replayed ids the first poll did not bring: confirmed long ago, never delivered again. Not kept
        # as done once the journal no longer lists them (ids restarting lower would meet them).
        self.confirmed_replays: set[int] = set()
        self.lag = 0.0
        self.last_tick = time.monotonic()
        self.loop_thread: int | None = None
        self.blocked: dict[str, Any] | None = None  # set by the watchdog while the loop is blocked
        self.told = False  # the watchdog wrote a `blocked` beat: the loop overwrites it once it runs
        self.bot_id = (application.bot.token or "").split(":", 1)[0]
        # Which Telegram the journal's updates came from: a digest of the Bot API URL (it holds the
        # token, never written). A bot pointed at another server (a test's emulator, the demo after
        # going live) replays nothing of another server's updates.
        self.telegram = hashlib.sha256(str(getattr(application.bot, "base_url", "")).encode()).hexdigest()[:16]

    # --- updates ---------------------------------------------------------------------------------
    def begin(self, update: object) -> None:
        if not isinstance(update, Update):
            return
        chat, user = update.effective_chat, update.effective_user
        self.in_flight[update.update_id] = {
            "update_id": update.update_id, "chat": chat.id if chat else None, "user": user.id if user else None,
            "kind": kind_of(update), "handler": self.handler_for(update), "since": round(self.clock(), 3)}
        self.beat()

    def duplicate(self, update_id: int) -> str | None:
        """Why a delivered update must not run here: it is running (or waits for its chat), or it is
        done (by this bot or its predecessor) and Telegram has not heard yet. None: run it."""
        if update_id in self.claimed:
            return "running"
        if update_id in self.done:
            return "inherited" if update_id in self.inherited else "done"
        return None

    def claim(self, update_id: int) -> None:
        self.claimed.add(update_id)

    def end(self, update: object, cancelled: bool = False) -> None:
        """The update's handlers returned (done), or not (left for the next bot)."""
        if not isinstance(update, Update):
            return
        update_id = update.update_id
        self.claimed.discard(update_id)
        entry = self.in_flight.pop(update_id, None)
        error = self.failures.pop(update_id, None)
        if cancelled or isinstance(error, InvalidToken) or (error is not None and (self.stopping or self.fatal())):
            # Never begun (it waited for its chat): no "since", so no suspect for the poison rules.
            chat = update.effective_chat
            self.left[update_id] = entry or {"update_id": update_id, "chat": chat.id if chat else None,
                                             "kind": kind_of(update)}
        else:
            self.done[update_id] = self.clock()
            self.fetched.pop(update_id, None)
            self._bound_done()
        self.beat()

    def after_predecessor(self, beat: dict[str, Any] | None) -> None:
        """Inherit what the previous bot (same token) finished and Telegram may not have heard of:
        exactly those ids come again and are skipped; any other id runs, lower ones included."""
        beat = beat or {}
        done = beat.get("done")
        if beat.get("bot_id") != self.bot_id or beat.get("pid") == os.getpid() or not isinstance(done, list):
            return
        now = self.clock()
        for update_id in done[-DONE_KEPT:]:
            if isinstance(update_id, int) and not isinstance(update_id, bool):
                self.done[update_id] = now
                self.inherited.add(update_id)

    # --- what Telegram was told (ConfirmingPolls) --------------------------------------------------
    def polled(self, offset: int, updates: list[dict[str, Any]]) -> None:
        """A getUpdates with `offset` was answered with these updates: Telegram forgot every update
        below the offset (confirmed: no longer kept as done, once the journal does not list it)."""
        if offset:
            for update_id in [u for u in self.done if u < offset and u not in self.journaled]:
                del self.done[update_id]
                self.inherited.discard(update_id)
        elif (self.inherited or self.replayed) and len(updates) < FULL_POLL:
            # The first poll (no offset) brings every update Telegram still holds: an inherited or
            # replayed id not among them was confirmed. Forgotten (a replayed one once done and out of
            # the journal), so ids that restarted lower and reach it later are not taken for it (no
            # inequality can tell them apart).
            brought = {u.get("update_id") for u in updates}
            for update_id in [u for u in self.inherited if u not in brought and u not in self.journaled]:
                self.done.pop(update_id, None)
                self.inherited.discard(update_id)
            self.confirmed_replays |= self.replayed - brought
            self.replayed.clear()
        for update_id in [u for u in self.confirmed_replays if u in self.done and u not in self.journaled]:
            del self.done[update_id]
            self.confirmed_replays.discard(update_id)
        for update in updates:
            update_id = update.get("update_id")
            if isinstance(update_id, int) and update_id not in self.done and update_id not in self.fetched:
                self.fetched[update_id] = update

    def write_journal(self, confirming: int) -> None:
        """Before a getUpdates that confirms updates below `confirming`: the journal lists exactly the
        updates fetched and not done (written only when that changed). Not fsynced: it must survive
        the process (a SIGKILL), which the page cache does."""
        if self.journal is None or set(self.fetched) == self.journaled:
            return
        if not self.journaled and not any(u < confirming for u in self.fetched):
            return  # nothing to lose yet: this poll confirms none of them
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"bot_id": self.bot_id, "telegram": self.telegram,
                                       "updates": list(self.fetched.values())},
                                      separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, self.journal)
            self.journaled = set(self.fetched)
        except OSError as exc:  # a full disk: the updates in flight are lost if the bot dies now
            log.error("cannot write %s: %s", self.journal, exc.strerror or exc)

    def replay(self) -> list[dict[str, Any]]:
        """At start: what the previous bot (same token) had fetched and not done, minus what it did
        finish; kept as fetched until done here (so still journaled)."""
        if self.journal is None:
            return []
        try:
            data = json.loads(self.journal.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): nothing replayed", self.journal, exc)
            return []
        if not isinstance(data, dict) or (data.get("bot_id"), data.get("telegram")) != (self.bot_id, self.telegram) \
                or not isinstance(data.get("updates"), list):
            return []
        out = []
        for update in data["updates"][:1000]:
            update_id = update.get("update_id") if isinstance(update, dict) else None
            if isinstance(update_id, int) and update_id not in self.done and update_id not in self.fetched:
                self.fetched[update_id] = update
                out.append(update)
        self.replayed = {u["update_id"] for u in out}
        self.journaled = {u["update_id"] for u in data["updates"] if isinstance(u, dict)}
        return out

    def _bound_done(self) -> None:
        now = self.clock()
        for update_id in [u for u, at in self.done.items() if now - at > DONE_TTL]:
            del self.done[update_id]
        for update_id in [u for u in self.done if u not in self.journaled][:max(0, len(self.done) - DONE_KEPT)]:
            del self.done[update_id]  # the oldest first; never one the journal still lists

    def describe_left(self, limit: int = 10) -> str:
        entries = list(self.left.values())
        text = ", ".join(f"update {e['update_id']} (chat {e.get('chat', '?')}, {e.get('kind', 'update')}"
                         f"{', handler ' + e['handler'] if e.get('handler') else ''})" for e in entries[:limit])
        return text + (f" and {len(entries) - limit} more" if len(entries) > limit else "")

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

    def failed(self, update: object, error: BaseException | None = None) -> None:
        """A handler raised on this update (the error handler calls this): counted per handler, and
        remembered until the update ends (a rejected token or a stop then leaves it for the next bot)."""
        entry = self.in_flight.get(update.update_id) if isinstance(update, Update) else None
        if isinstance(update, Update) and error is not None and update.update_id in self.claimed:
            self.failures[update.update_id] = error
        name = (entry or {}).get("handler") or "unknown"
        if name in self.errors or len(self.errors) < MAX_HANDLERS_COUNTED:
            self.errors[name] = self.errors.get(name, 0) + 1

    # --- the heartbeat ---------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        begun_left = [e for e in self.left.values() if "since" in e]  # poison suspects; not those never begun
        fields: dict[str, Any] = {"in_flight": [*self.in_flight.values(), *begun_left],
                                  "loop_lag": round(self.lag, 3), "handler_errors": dict(self.errors),
                                  "bot_id": self.bot_id, "done": list(self.done)}
        if self.left:
            fields["left"] = list(self.left)
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
    TrackingProcessor.process_update (or do_process_update) up the chain of awaiting coroutines holds it."""
    codes = (TrackingProcessor.process_update.__code__, TrackingProcessor.do_process_update.__code__)
    while frame is not None:
        if frame.f_code in codes:
            update = frame.f_locals.get("update")
            return update.update_id if isinstance(update, Update) else None
        frame = frame.f_back
    return None


def chat_of(update: object) -> Any:
    """What orders updates: their chat (else their user); updates with neither run in any order."""
    if isinstance(update, Update):
        if update.effective_chat is not None:
            return update.effective_chat.id
        if update.effective_user is not None:
            return ("user", update.effective_user.id)
    return ("update", id(update))


class TrackingProcessor(BaseUpdateProcessor):
    """The application's own update processor, with each update's begin and end reported to Work;
    updates of different chats run at once (up to `concurrency`), one chat's in arrival order, those
    with poison strikes one at a time. A second delivery of an update running or done is skipped."""

    def __init__(self, inner: BaseUpdateProcessor, work: Work, concurrency: int = 1):
        super().__init__(max(1, concurrency))
        self._inner, self._work = inner, work
        self._tails: dict[Any, asyncio.Future] = {}  # chat -> the end of its last update
        self._tasks: set[asyncio.Task] = set()  # tasks handling an update now (for abandon())
        # Updates with a poison strike run one at a time (beside the others): should one bring this
        # bot down too, the other struck updates were not in flight and are not blamed again.
        self._struck_lane = asyncio.Lock()

    async def process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        if update_id is not None:
            why = self._work.duplicate(update_id)
            if why is not None:
                getattr(coroutine, "close", lambda: None)()
                self._work.duplicates += 1
                log.log(logging.INFO if why == "inherited" else logging.DEBUG,
                        "update %s delivered again: %s, not run twice", update_id,
                        {"inherited": "handled by the previous bot", "done": "already handled here"}.get(
                            why, "still being handled here"))
                return
            self._work.claim(update_id)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        key = chat_of(update)
        before, mine = self._tails.get(key), loop.create_future()
        self._tails[key] = mine  # set before the first await: arrival order is kept per chat
        began = cancelled = False
        try:
            if before is not None and not before.done():
                await asyncio.wait([before])  # never cancels the chat's earlier update
            struck = update_id is not None and self._work.struck(update_id)
            async with self._struck_lane if struck else contextlib.nullcontext(), self._semaphore:
                began = True
                self._work.begin(update)
                run = outbox.begin_run(update_id, _stamp(update)) if update_id is not None else None
                try:
                    await self._inner.do_process_update(update, coroutine)
                finally:
                    if run is not None:
                        outbox.end_run(run)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if not began:
                getattr(coroutine, "close", lambda: None)()
            self._work.end(update, cancelled)
            if not mine.done():
                mine.set_result(None)
            if self._tails.get(key) is mine:
                del self._tails[key]
            if task is not None:
                self._tasks.discard(task)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        await self._inner.do_process_update(update, coroutine)

    async def abandon(self, timeout: float = 1.0) -> None:
        """A stop past its limit: cancel the updates still handled (each is left for the next bot)."""
        tasks = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def initialize(self) -> None:
        await self._inner.initialize()

    async def shutdown(self) -> None:
        await self._inner.shutdown()


def _stamp(update: object) -> int:
    """The update's message date: with its id, names this update and no other (ids may restart)."""
    message = getattr(update, "effective_message", None)
    date = getattr(message, "date", None)
    return int(date.timestamp()) if date is not None else 0


def track(application: Application, work: Work, concurrency: int = 1) -> TrackingProcessor | None:
    """Put TrackingProcessor in front of the application's processor (PTB >= 20.4). None when this
    python-telegram-bot has no processor to wrap: the bot then reports nothing in flight (old behaviour)."""
    inner = getattr(application, "_update_processor", None)
    if isinstance(inner, TrackingProcessor):
        return inner
    if not isinstance(inner, BaseUpdateProcessor):
        log.warning("this python-telegram-bot has no update processor to wrap: updates in flight are not reported")
        return None
    application._update_processor = TrackingProcessor(inner, work, max(concurrency, inner.max_concurrent_updates))
    return application._update_processor


class ConfirmingPolls(BaseRequest):
    """python-telegram-bot's getUpdates request, sent only after the updates it confirms to Telegram
    and that are not done yet are in the journal (Work.write_journal); each answer is read for the
    updates it brings (Work.polled)."""

    def __init__(self, inner: BaseRequest, work: Work):
        self._inner, self._work = inner, work

    @property
    def read_timeout(self) -> float | None:
        return self._inner.read_timeout

    async def initialize(self) -> None:
        await self._inner.initialize()

    async def shutdown(self) -> None:
        await self._inner.shutdown()

    async def do_request(self, url: str, method: str, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        data = kwargs.get("request_data", args[0] if args else None)
        offset = None
        if url.endswith("/getUpdates") and data is not None:
            offset = int(data.parameters.get("offset") or 0)
            self._work.write_journal(offset)
        code, payload = await self._inner.do_request(url, method, *args, **kwargs)
        if offset is not None and 200 <= code <= 299:
            updates: list = []
            try:
                updates = [u for u in json.loads(payload)["result"] if isinstance(u, dict)]
            except (ValueError, KeyError, TypeError):
                pass  # python-telegram-bot reports an unreadable answer itself
            self._work.polled(offset, updates)
        return code, payload


def confirm_polls(application: Application, work: Work) -> bool:
    """Put ConfirmingPolls in front of the bot's getUpdates request (a request pair of PTB >= 20)."""
    bot = application.bot
    pair = getattr(bot, "_request", None)
    if not isinstance(pair, tuple) or len(pair) != 2:
        log.warning("this python-telegram-bot has no getUpdates request to wrap: updates fetched with"
                    " one that kills the bot may be confirmed before they are handled")
        return False
    if not isinstance(pair[0], ConfirmingPolls):
        bot._request = (ConfirmingPolls(pair[0], work), pair[1])
    return True
