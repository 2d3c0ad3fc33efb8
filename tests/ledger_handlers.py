"""Handlers for the delivery-guarantee tests and bench/ledger.py (HANDLERS=tests/ledger_handlers.py).

/slow sleeps SLOW_SECONDS (a long handler at a stop), /queue3 queues three outbox messages and, the
first time only (a marker file), ends the process after they went out; any other text is echoed
("got <text>"): the bench counts answers by their number."""

import asyncio
import os
from pathlib import Path

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from botkeeper import outbox


async def slow(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await asyncio.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
    await update.effective_message.reply_text(f"slow done {update.update_id}")


async def queue3(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    chat = update.effective_chat.id
    for n in (1, 2, 3):
        await outbox.send(chat, f"queued {n} of update {update.update_id}")
    marker = Path(os.environ.get("BOTKEEPER_HOME", ".")) / "died-once"
    if not marker.exists():
        marker.write_text("x")
        await asyncio.sleep(1.5)  # the worker sends them
        os._exit(1)


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    text = update.effective_message.text or ""
    if text.startswith("slow "):  # the bench's slow handler: "slow <seconds> <n>"
        await asyncio.sleep(float(text.split()[1]))
    await update.effective_message.reply_text(f"got {text}")


def register(application: Application) -> None:
    application.add_handler(CommandHandler("slow", slow))
    application.add_handler(CommandHandler("queue3", queue3))
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
