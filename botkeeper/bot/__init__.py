"""The bot component: python-telegram-bot with built-in commands, the user's handlers.py, an honest
heartbeat and classified Telegram failures. `main.py` calls `main()`."""

import sys

# httpx imports its command-line client when it is imported and click is installed (Flask brings
# it): click's modules, about 1 MiB in every bot and in the fork server, for code a bot never runs.
# A None entry makes that import fail the way httpx expects (it then defines a stub `httpx.main`).
sys.modules.setdefault("httpx._main", None)

from .app import build_application, main, serve  # noqa: E402

__all__ = ["build_application", "main", "serve"]
