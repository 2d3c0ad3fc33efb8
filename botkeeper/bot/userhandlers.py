"""Find and load the user's own handlers for main.py: the file or package named by HANDLERS
(default `handlers.py` in BOTKEEPER_HOME), with `register(application)` and optionally `COMMANDS`
(BotCommands or (command, description) pairs for /help and the menu).

handlers.py is the user's file, never shipped: on the first start it is created from
botkeeper/bot/handlers_example.py, so an upgrade (git pull, pip install -U) never touches it.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import KNOBS

EXAMPLE = Path(__file__).with_name("handlers_example.py")
log = logging.getLogger("botkeeper.bot")


class UserHandlersError(Exception):
    """The user's handlers could not be loaded; the message says what to fix."""


class HandlersMissing(UserHandlersError):
    """HANDLERS names a file that does not exist: a setting to fix (exit 78), not a crash."""


@dataclass
class Loaded:
    path: Path
    commands: list = field(default_factory=list)


def find(settings) -> Path | None:
    """The handlers' file (a package's __init__.py), None for HANDLERS=none; creates the default
    handlers.py from the example on the first start."""
    if settings.handlers == "none":
        return None
    base = Path(settings.handlers)
    base = base if base.is_absolute() else settings.home / base
    candidates = [base / "__init__.py"] if base.suffix != ".py" else [base, base.with_suffix("") / "__init__.py"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if settings.handlers != KNOBS["handlers"].default:
        raise HandlersMissing(
            f"HANDLERS={settings.handlers!r} is not valid: {base} does not exist; expected a .py file or a package"
            " directory (relative to BOTKEEPER_HOME), or none")
    try:
        shutil.copyfile(EXAMPLE, base)
        log.info("created %s from the example: put your own handlers there (upgrades never touch it)", base)
        return base
    except OSError as exc:  # a read-only home still gets a working bot
        log.warning("cannot create %s (%s): running the example handlers", base, exc.strerror or exc)
        return EXAMPLE


PRELOADED = "__botkeeper_preloaded__"  # set on a module the fork server imported ahead of a start


def preload(settings) -> Path | None:
    """Import the user's handlers without registering them (the fork server, botkeeper/bot/forkserver.py):
    a bot forked from it then only calls register(). The fork server checks the file's mtime first."""
    path = find(settings)
    if path is None:
        return None
    setattr(_import(path), PRELOADED, str(path))
    return path


def load(settings, application) -> Loaded | None:
    """Import the user's handlers (or take the ones the fork server preloaded) and call their
    register(application)."""
    path = find(settings)
    if path is None:
        return None
    module = sys.modules.get(_module_name(path))
    if getattr(module, PRELOADED, None) != str(path):
        module = _import(path)
    register = getattr(module, "register", None)
    if not callable(register):
        raise UserHandlersError(f"{path} has no register(application) function")
    register(application)
    return Loaded(path, list(getattr(module, "COMMANDS", []) or []))


def _module_name(path: Path) -> str:
    return path.parent.name if path.name == "__init__.py" else path.stem


def _import(path: Path):
    package = path.name == "__init__.py"
    folder = path.parent.parent if package else path.parent
    if str(folder) not in sys.path:  # so handlers.py can import its own sibling modules
        sys.path.insert(0, str(folder))
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # errors propagate: the caller logs them with the traceback
    return module
