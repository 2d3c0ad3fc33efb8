"""bot: the bot component and everything that runs inside it (python-telegram-bot app, attach(), heartbeat,
poison guard, outbox, rate limits, Redis sharing, the fork server). Imports base, health and supervise.

Importing this wing is cheap: `build_application`, `main` and `serve` load python-telegram-bot only when
asked for, so the web, the monitor and the CLI can read `bot.outbox` or `bot.poison` without it.
`main.py` calls `main()`."""

import sys

# httpx imports its command-line client when it is imported and click is installed (Flask brings
# it): click's modules, about 1 MiB in every bot and in the fork server, for code a bot never runs.
# A None entry makes that import fail the way httpx expects (it then defines a stub `httpx.main`).
sys.modules.setdefault("httpx._main", None)

__all__ = ["build_application", "main", "serve"]


def __getattr__(name: str):
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'botkeeper.bot' has no attribute {name!r}")
