"""`botkeeper.attach(application)`: botkeeper's care for an existing python-telegram-bot Application.

It adds the heartbeat, the redacting error handler and the built-in commands through PTB's own
hooks (post_init, post_stop, error handlers, a counting TypeHandler); the user's `run_polling()`,
handlers and own hooks stay as they are. botkeeper's own bot (main.py) is built on it too.

    application = ApplicationBuilder().token(TOKEN).build()
    application.add_handler(...)
    botkeeper.attach(application)
    application.run_polling()
"""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping

from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationHandlerStop, ContextTypes, TypeHandler

from ..health import heartbeat
from .. import logs
from .errorstats import ErrorLog
from . import commands
from .health import Health, heartbeat_loop
from .work import JOURNAL, Watchdog, Work, confirm_polls, track
from ..config import Settings, load_or_exit
from .quarantine import Guard
from ..health.snapshot import read_heartbeat

log = logging.getLogger("botkeeper.bot")
COUNT_GROUP = -1000  # before every user group: counts each update once, skips a quarantined one


class Keeper:
    """What attach() added to one Application: the heartbeat task and the built-ins' bookkeeping."""

    def __init__(self, application: Application, settings: Settings, health: Health, heartbeat_file: Path,
                 descriptions: Mapping[str, str], observed: bool, menu: bool = True):
        self.application = application
        self.errors = ErrorLog(settings.history_db, health.redact, settings.home)
        self.settings = settings
        self.health = health
        self.heartbeat_file = heartbeat_file
        self.descriptions = dict(descriptions)
        self.observed = observed  # the request layer reports to health (our own bot): errors need not
        self.menu = menu
        self.added: list[str] = []
        self._beat: asyncio.Task | None = None
        self._menu_task: asyncio.Task | None = None
        self._ready = False
        # What the bot works on (heartbeat fields), the poison-update gate, the blocked-loop watchdog.
        self.work = Work(application, self.write_beat)
        self.guard: Guard | None = None
        self.shared = None  # botkeeper.bot.shared.Shared with REDIS_URL: claims, strikes across replicas
        self.duplicates = 0  # updates another replica claimed first (not handled here)
        # Claims only in webhook mode: a poller is alone (the lock), and an update it got again after
        # its predecessor died mid-handling must run again (poison strikes decide), not be skipped.
        self.claims = False
        self.watchdog: Watchdog | None = None
        self._pulse: asyncio.Task | None = None
        self.processor = None  # botkeeper.bot.work.TrackingProcessor, once track() put it in place

    def start_heartbeat(self) -> None:
        """Start beating (idempotent). Our bot calls it before connecting; attached bots in post_init."""
        if self._beat is None or self._beat.done():
            before = None if self.observed else self._see_updater
            self._beat = asyncio.get_running_loop().create_task(
                heartbeat_loop(self.health, self.heartbeat_file, self.settings.heartbeat_interval, before))

    def write_beat(self) -> None:
        """A beat out of turn (an update begins or ends): the same state as the periodic one."""
        if not self.observed:
            self._see_updater()
        self.health.write(self.heartbeat_file)

    def write_blocked(self, extra: dict[str, Any], still_blocked: Any) -> bool:
        """The watchdog thread's beat while the event loop is blocked (work.Watchdog)."""
        return self.health.write(self.heartbeat_file, extra, still_blocked)

    def _see_updater(self) -> None:
        updater = self.application.updater
        self.health.polling_seen(bool(updater and updater.running))

    async def ready(self) -> None:
        """post_init (after the user's own): every handler of the user is registered by now, so
        built-ins fill only gaps. The menu goes out in the background: polling, and with it a
        restarted bot's first answer, does not wait for one more round trip to Telegram."""
        self.start_heartbeat()
        if self._ready:
            return
        self._ready = True
        self._pulse = asyncio.get_running_loop().create_task(self.work.pulse())
        # It tells on a blocked loop by BLOCK_LIMIT at the latest, whatever BLOCKED_WARN says.
        self.watchdog = Watchdog(self.work, min(self.settings.blocked_warn, self.settings.block_limit),
                                 self.health.redact, self.write_blocked, self.settings.heartbeat_interval)
        self.watchdog.start()
        if self.guard is not None:  # before polling starts: no update is taken before the strikes count
            await asyncio.to_thread(self.guard.start)
        replayed = self.work.replay()  # what the previous bot fetched and did not finish: first in line
        for raw in replayed:
            update = Update.de_json(raw, self.application.bot)
            if update is not None:
                self.application.update_queue.put_nowait(update)
        if replayed:
            log.info("%d update(s) the previous bot had not finished: handled first (%s)", len(replayed),
                     " ".join(str(u["update_id"]) for u in replayed[:20]))
        self.added, kept = commands.install(self.application, self.settings.builtin_commands)
        if self.added or kept:
            log.info("built-in commands added: %s%s", " ".join(f"/{c}" for c in self.added) or "none",
                     f" (yours kept: {' '.join(f'/{c}' for c in kept)})" if kept else "")
        if self.menu:
            rows = commands.describe(self.application, self.descriptions)
            self._menu_task = asyncio.get_running_loop().create_task(commands.set_menu(self.application, rows))

    async def stopped(self) -> None:
        """post_stop: one last beat saying so, then no more."""
        for task in (self._beat, self._menu_task, self._pulse):
            if task is not None:
                task.cancel()
        if self.watchdog is not None:
            self.watchdog.stopped.set()
        if self.health.state not in ("stopping", "fatal"):  # "fatal" says why we exit: keep it
            self.health.state, self.health.detail = "stopping", "stopping on request"
        self.health.write(self.heartbeat_file)
        await asyncio.to_thread(self.errors.flush)  # what the last errors left in the buffer

    async def leave_unfinished(self, limit_passed: bool) -> None:
        """The end of a graceful stop: updates still handled are cancelled and left for the next bot
        (not confirmed to Telegram), said in the log and in the last beat."""
        if limit_passed and self.processor is not None:
            limiter = getattr(self.application.bot, "rate_limiter", None)
            if hasattr(limiter, "close"):  # a send on the wire ends before its handler is cut
                await limiter.close()
            await self.processor.abandon()
        self.work.write_journal(1 << 62)  # what is left is in the journal, whatever was confirmed
        if self.work.left:
            log.warning("%s", self.health.redact(f"stopping with {len(self.work.left)} update(s) unfinished, left for"
                                                 f" the next bot: {self.work.describe_left()}"))
        self.health.write(self.heartbeat_file)

    async def count(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Group -1000, before every handler of the user: count the update, or skip it when it is
        quarantined (ApplicationHandlerStop: no handler runs, and Telegram gets it confirmed)."""
        shared_strikes = None
        if isinstance(update, Update) and self.claims:
            mine, shared_strikes = await self.shared.claim(update.update_id)
            if not mine:  # Telegram delivered it again, and another replica took it first
                self.duplicates += 1
                log.info("update %s is handled by another replica: not here", update.update_id)
                raise ApplicationHandlerStop
        if isinstance(update, Update) and self.guard is not None:
            seen = self.work.in_flight.get(update.update_id) or {}
            if self.guard.check(update.update_id, seen, shared_strikes).action == "quarantine":
                raise ApplicationHandlerStop
        self.health.handled()

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Every handler's exception lands here once, with the token redacted from text and traceback."""
        error, job = context.error, getattr(context, "job", None)
        if update is not None:
            self.work.failed(update, error)
        if update is None and job is None and not self.observed and error is not None:
            # An attached bot's polling error (python-telegram-bot retries it): the heartbeat state
            # says it, with one explanation per episode, not a traceback per retry.
            self.health.polling_failed(error)
            return
        if update is None and job is None and isinstance(error, TelegramError):
            # Polling's own errors (network, Telegram's 5xx, the demo's emulator going away): Telegram's
            # weather, reported by the heartbeat; never one of the user's handler errors.
            log.warning("%s", self.health.redact(f"polling: {type(error).__name__}: {error}"))
            return
        where = f"job {job.name}" if job is not None else "a task"
        extra: dict[str, Any] = {}
        if isinstance(update, Update):
            chat = update.effective_chat
            where = f"update {update.update_id}" + (f" in chat {chat.id}" if chat else "")
            extra["update_id"] = update.update_id
        if error is not None:
            extra["fingerprint"] = self.errors.add(error).id
        stack = "".join(traceback.format_exception(error)) if error is not None else ""
        log.error("%s", self.health.redact(
            f"handler failed on {where}: {type(error).__name__}: {error}\n{stack}".rstrip()), extra=extra)


def attach(application: Application, settings: Settings | None = None, *,
           commands: Iterable[BotCommand | tuple[str, str]] = (), menu: bool = True,
           health: Health | None = None) -> Keeper:
    """Add botkeeper's heartbeat, error handler and built-in commands to `application`.

    `commands`: your own descriptions (BotCommand or (command, text)) for /help and the menu;
    without them a handler's docstring (first line) is used; `menu=False` leaves the bot's command
    menu (setMyCommands) to you. Settings come from the environment
    (BOTKEEPER_HOME, .env, botkeeper.toml); BOTKEEPER_HEARTBEAT_FILE, set by the supervisor for
    every bot, says where to beat. Call it after building, before run_polling(); handlers may be
    added before or after it.
    """
    existing = application.bot_data.get("botkeeper.keeper") if isinstance(application.bot_data, dict) else None
    if isinstance(existing, Keeper):  # attached already (the launcher did, for an unchanged bot): once only
        existing.descriptions.update(_descriptions(commands))
        existing.menu = menu
        return existing
    settings = settings or load_or_exit()
    observed = health is not None
    beat_file = heartbeat.default_path(settings)
    predecessor = read_heartbeat(beat_file).data  # before this bot's first beat replaces it
    redactor = logs.Redactor(settings.secrets() + [settings.bot_token or "", application.bot.token or ""])
    health = health or Health(redactor)
    _redact_existing_log_handlers(redactor, settings)
    keeper = Keeper(application, settings, health, beat_file, _descriptions(commands), observed, menu)
    health.reporters.append(keeper.work.report)
    if settings.redis_url:  # several replicas: imported only then (the single-VM path stays as it was)
        from .shared import for_settings

        keeper.shared = for_settings(settings)
        health.reporters.append(keeper.shared.report)
        keeper.claims = settings.telegram_mode == "webhook"
        if keeper.claims:
            health.reporters.append(lambda: {"duplicates_skipped": keeper.duplicates})
    keeper.processor = track(application, keeper.work, settings.update_concurrency)
    if keeper.processor is not None:
        keeper.guard = Guard(settings, predecessor or {}, redact=health.redact, shared=keeper.shared)
        keeper.work.after_predecessor(predecessor)
        keeper.work.fatal = health.fatal.is_set
        keeper.work.struck = keeper.guard.struck
        keeper.work.journal = settings.data_dir / JOURNAL
        confirm_polls(application, keeper.work)
    limiter = getattr(application.bot, "rate_limiter", None)
    if hasattr(limiter, "give_up"):  # botkeeper's GateLimiter: no send retries once the bot stops
        limiter.give_up = lambda: keeper.work.stopping or health.fatal.is_set()
    application.bot_data["botkeeper.settings"] = settings
    application.bot_data["botkeeper.health"] = health
    application.bot_data["botkeeper.keeper"] = keeper
    application.bot_data["botkeeper.descriptions"] = keeper.descriptions
    application.add_handler(TypeHandler(Update, keeper.count), group=COUNT_GROUP)
    application.add_error_handler(keeper.on_error)
    _chain(application, "post_init", keeper.ready)
    _chain(application, "post_stop", keeper.stopped)
    return keeper


def _descriptions(commands: Iterable[BotCommand | tuple[str, str]]) -> dict[str, str]:
    return {c.command if isinstance(c, BotCommand) else c[0]: c.description if isinstance(c, BotCommand)
            else c[1] for c in commands}


def _chain(application: Application, hook: str, ours: Any) -> None:
    """Run our coroutine after the user's own hook (if any): handlers the user adds in their
    post_init still count as theirs before the built-ins fill the gaps."""
    theirs = getattr(application, hook)

    async def both(app: Application) -> None:
        if theirs is not None:
            await theirs(app)
        await ours()

    setattr(application, hook, both)


def _redact_existing_log_handlers(redactor: logs.Redactor, settings: Settings) -> None:
    """A bot with its own logging set-up still never prints the token; httpx request lines (which
    carry it in the URL) stay at WARNING. A bot without one still shows botkeeper's own lines
    (stderr, which the supervisor writes to logs/bot.log), without touching the root logger."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, logs.RedactingFilter) for f in handler.filters):
            handler.addFilter(logs.RedactingFilter(redactor))
    logging.getLogger("httpx").setLevel(max(logging.getLogger("httpx").level, logging.WARNING))
    ours = logging.getLogger("botkeeper")
    if not root.handlers and not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logs.formatter(settings, os.environ.get("BOTKEEPER_COMPONENT", "bot")))
        handler.addFilter(logs.RedactingFilter(redactor))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
