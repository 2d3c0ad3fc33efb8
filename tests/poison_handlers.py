"""Handlers with poison in them (HANDLERS=tests/poison_handlers.py): /freeze blocks the event loop,
/die ends the process, /boom raises; /slow is innocent (it awaits 4 s, the loop runs on). The token
is printed in a local so a leak would show."""

import asyncio
import os
import time

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes


async def freeze(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    secret = context.bot.token  # in the frame's locals: must never reach a log
    time.sleep(120 if secret else 0)  # blocks the whole event loop


async def die(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    os._exit(1)


async def boom(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    raise RuntimeError("boom")


async def slow(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await asyncio.sleep(4)
    await update.effective_message.reply_text("slow done")


def register(application: Application) -> None:
    application.add_handler(CommandHandler("freeze", freeze))
    application.add_handler(CommandHandler("die", die))
    application.add_handler(CommandHandler("boom", boom))
    application.add_handler(CommandHandler("slow", slow))
