"""botkeeper: keep a Telegram bot alive 24/7 on one machine.

`botkeeper.attach(application)` adds botkeeper's heartbeat, error handler and built-in commands to
your own python-telegram-bot Application (imported lazily: the supervisor never loads telegram).

The house (ARCHITECTURE.md): a base of top-level modules (config, store, causes, states, fsutil, fmt,
logs, runfiles, emulator, testing) that every wing may import, and wings that import downwards only:
health ← supervise ← bot ← alerting, web ← ops.
"""

__version__ = "0.2.0"

# Documented imports that predate the wings: `from botkeeper import outbox, heartbeat`.
_MOVED = {"outbox": "botkeeper.bot.outbox", "heartbeat": "botkeeper.health.heartbeat"}


def __getattr__(name: str):
    if name == "attach":
        from .bot.keeper import attach

        return attach
    if name in _MOVED:
        import importlib

        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'botkeeper' has no attribute {name!r}")
