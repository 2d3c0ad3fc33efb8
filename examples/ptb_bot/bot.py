"""A standalone python-telegram-bot bot, kept alive by botkeeper without changing its shape.

Run it under botkeeper:   BOT_COMMAND="python examples/ptb_bot/bot.py" bash start_24_7.sh
Test it offline:          python -m pytest examples/ptb_bot     (botkeeper's pytest plugin)

The two lines marked "botkeeper" are all a bot needs: the API URL (the offline demo's emulator, or
Telegram when unset) and attach() (heartbeat, redacting error handler, /ping /status ... where
you have no command of your own).
"""

import os

from telegram import Update
from telegram.ext import ApplicationBuilder, CommandHandler, ContextTypes

import botkeeper


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """say hello"""
    await update.effective_message.reply_text("Hi! I am the coffee bot. Try /price.")


async def price(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """the price of a coffee"""
    await update.effective_message.reply_text("A coffee costs 2.50 EUR today.")


def main() -> None:
    application = (
        ApplicationBuilder()
        .token(os.environ["TELEGRAM_BOT_TOKEN"])
        .base_url(os.environ.get("BOTKEEPER_API_BASE_URL", "https://api.telegram.org/bot"))  # botkeeper
        .build()
    )
    application.add_handler(CommandHandler("start", start))
    application.add_handler(CommandHandler("price", price))
    botkeeper.attach(application)  # botkeeper
    application.run_polling()


if __name__ == "__main__":
    main()
