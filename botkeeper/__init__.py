"""botkeeper: keep a Telegram bot alive 24/7 on one machine.

`botkeeper.attach(application)` adds botkeeper's heartbeat, error handler and built-in commands to
your own python-telegram-bot Application (imported lazily: the supervisor never loads telegram).
"""

__version__ = "0.2.0"


def __getattr__(name: str):
    if name == "attach":
        from .keeper import attach

        return attach
    raise AttributeError(f"module 'botkeeper' has no attribute {name!r}")
