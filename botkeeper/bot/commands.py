"""The bot's built-in commands: /start, /help, /ping, /status, /uptime.

They never override the user: `install()` adds a built-in only where the bot has no handler for
that command (in any group, ConversationHandlers included), after all of the user's handlers are
registered. /help and the command menu use the user's own descriptions.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import Application, BaseHandler, CommandHandler, ContextTypes, ConversationHandler, PrefixHandler

from .. import fmt


BUILTIN_HELP = {
    "start": "say hello",
    "help": "list the commands",
    "ping": "answer pong with the measured round-trip to the Bot API",
    "status": "health of the bot and the bundle keeping it alive",
    "uptime": "how long the bot has been running",
}


log = logging.getLogger("botkeeper.bot")
MENU_NAME = re.compile(r"^[a-z0-9_]{1,32}$")  # what Telegram accepts in setMyCommands


def _commands_of(handler: BaseHandler) -> Iterable[tuple[str, Callable]]:
    if isinstance(handler, (CommandHandler, PrefixHandler)):
        for command in sorted(handler.commands):
            yield command, handler.callback
    elif isinstance(handler, ConversationHandler):
        nested = [*handler.entry_points, *handler.fallbacks, *(h for hs in handler.states.values() for h in hs)]
        for inner in nested:
            yield from _commands_of(inner)


def command_callbacks(application: Application) -> dict[str, Callable]:
    """Every /command the application answers, mapped to its (first) callback, in handler order."""
    found: dict[str, Callable] = {}
    for group in sorted(application.handlers):
        for handler in application.handlers[group]:
            for command, callback in _commands_of(handler):
                found.setdefault(command, callback)
    return found


def command_list(application: Application) -> list[str]:
    """Every /command registered, built-in and the user's, in registration order."""
    return list(command_callbacks(application))


def install(application: Application, wanted: Iterable[str]) -> tuple[list[str], list[str]]:
    """Add the wanted built-ins the user has no handler for. Returns (added, kept as the user's)."""
    taken = command_callbacks(application)
    added = [c for c in wanted if c not in taken]
    for command in added:
        application.add_handler(CommandHandler(command, BUILTINS[command]))
    return added, [c for c in wanted if c in taken]


def describe(application: Application, given: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(command, description) for /help and the menu: the user's BotCommand descriptions first,
    then the first line of the handler's docstring, then our text for our built-ins."""
    given = dict(given or {})
    rows = []
    for command, callback in command_callbacks(application).items():
        ours = BUILTINS.get(command) is callback
        doc = "" if ours else ((inspect.getdoc(callback) or "").strip().splitlines() or [""])[0]
        text = given.get(command) or doc or (BUILTIN_HELP[command] if ours else "")
        rows.append((command, text))
    return rows


async def set_menu(application: Application, rows: list[tuple[str, str]]) -> bool:
    """The bot's command menu in Telegram clients (setMyCommands). A failure is logged, not fatal."""
    menu = [BotCommand(c, (d or c)[:256]) for c, d in rows if MENU_NAME.match(c)]
    try:
        await application.bot.set_my_commands(menu)
        return True
    except TelegramError as exc:
        log.warning("could not set the command menu (setMyCommands): %s", exc)
        return False


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    name = update.effective_user.first_name if update.effective_user else "there"
    await update.effective_message.reply_text(
        f"Hello {name}! I am kept alive 24/7 by botkeeper. Try /ping or /status; /help lists everything."
    )


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    rows = describe(context.application, context.bot_data.get("botkeeper.descriptions"))
    lines = [f"/{c} - {d}" if d else f"/{c}" for c, d in rows]
    await update.effective_message.reply_text("Commands:\n" + "\n".join(lines))


async def ping(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    sent_at = time.monotonic()
    reply = await update.effective_message.reply_text("pong")
    round_trip = (time.monotonic() - sent_at) * 1000
    await reply.edit_text(f"pong ({round_trip:.0f} ms round-trip to the Bot API)")


async def uptime(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    health = context.bot_data["botkeeper.health"]
    started = datetime.fromtimestamp(health.started_at).strftime("%Y-%m-%d %H:%M")
    await update.effective_message.reply_text(
        f"Up {fmt.duration(time.time() - health.started_at)} (since {started})."
    )


async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    settings = context.bot_data["botkeeper.settings"]
    health = context.bot_data["botkeeper.health"]
    chat = update.effective_chat
    if settings.admin_chat_id is not None and (chat is None or chat.id != settings.admin_chat_id):
        # Operational detail (restart reasons, memory) is for the owner only.
        await update.effective_message.reply_text(
            f"The bot is up ({fmt.duration(time.time() - health.started_at)}). Details go to the admin only."
        )
        return
    await update.effective_message.reply_text(status_text(settings, health, time.time()))


def status_text(settings: Any, health: Any, now: float) -> str:
    """A few lines for /status, from the one snapshot and verdict the page and `status` use."""
    from ..health.verdict import read_and_judge

    snap, verdict = read_and_judge(settings, now=now)
    lines = ["DEMO mode (offline emulator)"] if settings.demo_active else []
    lines.append(f"Bot: up {fmt.duration(now - health.started_at)}, {health.state},"
                 f" {health.updates_handled} updates handled")
    cause = f" ({verdict.cause.label}: {verdict.detail})" if verdict.cause else ""
    lines.append(f"Overall: {verdict.overall}{cause}")
    bot = snap.component("bot") if snap.supervisor_alive else None
    if bot is None:
        lines.append("Supervisor: not running (bot started on its own)")
    else:
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        today = [r for r in snap.state.get("recent_restarts", [])
                 if r.get("component") == "bot" and (r.get("at") or 0) >= midnight]
        lines.append(f"Restarts today: {len(today)} (total {bot.get('restarts', 0)})")
        reason = bot.get("last_restart_reason")
        if reason:
            at = bot.get("last_restart_at")
            when = f" at {datetime.fromtimestamp(at).strftime('%H:%M')}" if isinstance(at, (int, float)) else ""
            lines.append(f"Last restart{when}: {bot.get('cause') or '-'}: {reason}")
    hb = verdict.heartbeat
    lines.append(f"Heartbeat: {hb.age:.1f} s ago" if hb.age is not None else f"Heartbeat: {hb.error or hb.status}")
    lines.append(host_memory())
    return "\n".join(lines)


def host_memory() -> str:
    import psutil  # imported here: only /status needs it

    mem = psutil.virtual_memory()
    rss = psutil.Process().memory_info().rss
    return (f"Host memory: {mem.percent:.0f}% used ({mem.used / 2**30:.1f} of {mem.total / 2**30:.1f} GB);"
            f" bot {rss / 2**20:.0f} MB")


BUILTINS: dict[str, Callable] = {"start": start, "help": help_command, "ping": ping, "status": status, "uptime": uptime}
