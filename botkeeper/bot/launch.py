"""Runs an unchanged python-telegram-bot bot under botkeeper: `python mybot.py` (BOT_COMMAND) becomes
`<our python> botkeeper/bot/launch.py mybot.py` (config.bot_command decides; it reads the bot's files
and wraps only a bot that imports python-telegram-bot).

Before the bot's own code runs, `ApplicationBuilder.build()` is taught two things, so the bot file
stays as it is:
- a bot that chose no Bot API URL of its own (no `.base_url()`, no `.bot()`) talks to
  BOTKEEPER_API_BASE_URL: Telegram live, the emulator in the offline demo;
- the Application it builds is `attach()`ed: heartbeat, token redaction, the built-in commands.
  A bot that calls `botkeeper.attach()` itself gets the same Keeper back (attach is idempotent).
Then the script (or `-m module`) runs as `python` would run it: same sys.argv, sys.path[0], __main__.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run by file path (the component's command)
    sys.path[0] = str(Path(__file__).resolve().parents[2])  # not botkeeper/bot/: its modules would shadow

TELEGRAM_URL = "https://api.telegram.org/bot"  # python-telegram-bot's default base_url


def install(environ=os.environ) -> None:
    """Wrap ApplicationBuilder.build once (idempotent)."""
    from telegram.ext import ApplicationBuilder

    from botkeeper.bot.keeper import attach  # now: sys.path[0] becomes the bot's directory

    if getattr(ApplicationBuilder.build, "_botkeeper", False):
        return
    original = ApplicationBuilder.build

    def build(self):
        url = environ.get("BOTKEEPER_API_BASE_URL")
        own_bot = _is_set(self._bot) or _is_set(self._updater)  # the URL is theirs to choose then
        if url and not own_bot and not _is_set(self._base_url) and _value(self._base_url) == TELEGRAM_URL:
            self._base_url = url
            if not _is_set(self._base_file_url) and url.endswith("/bot"):
                self._base_file_url = url[: -len("/bot")] + "/file/bot"
        application = original(self)
        attach(application)
        return application

    build._botkeeper = True  # type: ignore[attr-defined]
    ApplicationBuilder.build = build


def _is_set(value) -> bool:
    """The builder's field was given by the bot (python-telegram-bot keeps unset ones as DefaultValue)."""
    from telegram._utils.defaultvalue import DefaultValue

    return not isinstance(value, DefaultValue) and value is not None


def _value(value):
    from telegram._utils.defaultvalue import DefaultValue

    return DefaultValue.get_value(value)


def run(argv: list[str]) -> None:
    """`python ARGV...` in this interpreter: a script, or `-m module`."""
    import runpy

    if not argv:
        raise SystemExit("usage: launch.py SCRIPT.py [ARGS...] | -m MODULE [ARGS...]")
    if argv[0] == "-m" and len(argv) >= 2:
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        script = os.path.abspath(argv[0])
        sys.argv = [argv[0], *argv[1:]]
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")


def main(argv: list[str]) -> None:
    install()
    run(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
