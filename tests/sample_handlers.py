"""The tests' own user handlers (HANDLERS=tests/sample_handlers.py): the project's tests never
depend on the handlers.py a user is told to replace."""

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

COMMANDS = [("hello", "greet the sender by name")]


async def hello(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(f"Hello, {update.effective_user.first_name}!")


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """welcome from the sample bot"""
    await update.effective_message.reply_text("Welcome to the sample bot (the user's own /start)")


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(f"You said: {update.effective_message.text}")


def register(application: Application) -> None:
    application.add_handler(CommandHandler("hello", hello))
    application.add_handler(CommandHandler("start", start), group=1)  # another group still counts as theirs
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
