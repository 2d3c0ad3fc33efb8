"""The bot component: python-telegram-bot with built-in commands, the user's handlers.py, an honest
heartbeat and classified Telegram failures. `main.py` calls `main()`."""

from .app import build_application, main, serve

__all__ = ["build_application", "main", "serve"]
