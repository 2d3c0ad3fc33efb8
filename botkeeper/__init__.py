"""botkeeper: keep a Telegram bot alive 24/7 on one machine."""

__version__ = "0.1.0"
