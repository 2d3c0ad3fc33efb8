"""Your bot's own handlers. botkeeper imports this file and calls register(application).

Add python-telegram-bot handlers here; they get botkeeper's error handling, heartbeat and
restarts without extra work. Built-in commands: /start /help /ping /status /uptime.
Docs: https://docs.python-telegram-bot.org/ (version 22).
"""

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters


async def hello(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(f"Hello, {update.effective_user.first_name}!")


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(f"You said: {update.effective_message.text}")


def register(application: Application) -> None:
    application.add_handler(CommandHandler("hello", hello))
    # Plain text that is not a command: echo it back (replace with your own logic).
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
