"""An ordinary python-telegram-bot bot, exactly as one is written without botkeeper (nothing here
knows of it). Kept alive by one line in botkeeper's .env:

    BOT_COMMAND="python examples/unchanged_bot/bot.py"

botkeeper runs it with its own Python through a launcher that attaches to the Application this file
builds: heartbeat, token redaction, /ping /status /uptime /help, and in the offline demo the
emulator's URL. Nothing to edit.

Test it offline:  python -m pytest -p botkeeper.testing examples/unchanged_bot
"""

import logging
import os

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import ApplicationBuilder, CallbackQueryHandler, CommandHandler, ContextTypes

logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.message.reply_text("Hi! I am the weather bot. Try /weather.")


async def weather(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """today's weather"""
    await update.message.reply_text("Sunny, 21 degrees.")


async def umbrella(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """ask about an umbrella"""
    buttons = [[InlineKeyboardButton("Yes", callback_data="umbrella:yes"),
                InlineKeyboardButton("No", callback_data="umbrella:no")]]
    await update.message.reply_text("Going out today?", reply_markup=InlineKeyboardMarkup(buttons))


async def answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    await query.answer()
    advice = "No umbrella needed." if query.data == "umbrella:yes" else "Enjoy your day in."
    await context.bot.send_message(query.message.chat.id, advice)


if __name__ == "__main__":
    app = ApplicationBuilder().token(os.environ["TELEGRAM_BOT_TOKEN"]).build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("weather", weather))
    app.add_handler(CommandHandler("umbrella", umbrella))
    app.add_handler(CallbackQueryHandler(answer))
    app.run_polling()
