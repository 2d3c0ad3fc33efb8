"""An ordinary python-telegram-bot bot, exactly as one is written without botkeeper (nothing here
knows of it). Kept alive by one line in botkeeper's .env:

    BOT_COMMAND="python examples/unchanged_bot/bot.py"

botkeeper runs it with its own Python through a launcher that attaches to the Application this file
builds: heartbeat, token redaction, /ping /status /uptime /help, and in the offline demo the
emulator's URL. Nothing to edit.
"""

import logging
import os

from telegram import Update
from telegram.ext import ApplicationBuilder, CommandHandler, ContextTypes

logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.message.reply_text("Hi! I am the weather bot. Try /weather.")


async def weather(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """today's weather"""
    await update.message.reply_text("Sunny, 21 degrees.")


if __name__ == "__main__":
    app = ApplicationBuilder().token(os.environ["TELEGRAM_BOT_TOKEN"]).build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("weather", weather))
    app.run_polling()
