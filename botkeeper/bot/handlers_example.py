"""Your bot's own handlers. botkeeper imports this file and calls register(application).

This is your file: botkeeper created it from its example on the first start, and upgrades never
touch it. Add python-telegram-bot handlers here; they get botkeeper's error handling, heartbeat and
restarts without extra work. Your commands always win: botkeeper's built-ins (/start /help /ping
/status /uptime, see BUILTIN_COMMANDS) are added only for commands you do not handle yourself.
/help and the bot's command menu show the first line of each handler's docstring, or COMMANDS.
Docs: https://docs.python-telegram-bot.org/ (version 22).
"""

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

# Optional: descriptions for /help and the command menu (else the docstrings below are used).
# COMMANDS = [("hello", "greet you by name")]


async def hello(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """greet you by name"""
    await update.effective_message.reply_text(f"Hello, {update.effective_user.first_name}!")


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(f"You said: {update.effective_message.text}")


def register(application: Application) -> None:
    application.add_handler(CommandHandler("hello", hello))
    # Plain text that is not a command: echo it back (replace with your own logic).
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
