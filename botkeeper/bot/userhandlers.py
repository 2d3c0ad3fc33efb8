"""Find and load the user's own handlers: `handlers.py` (or a `handlers/` package) with
`register(application)`, looked up in BOTKEEPER_HOME first, then next to main.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..config import PACKAGE_ROOT


class UserHandlersError(Exception):
    """The user's handlers could not be loaded; the message says what to fix."""


def find(home: Path) -> Path | None:
    for base in dict.fromkeys([home.resolve(), PACKAGE_ROOT]):
        for candidate in (base / "handlers.py", base / "handlers" / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def load(home: Path, application) -> Path | None:
    """Import the user's handlers and call their register(application). Returns the file used."""
    path = find(home)
    if path is None:
        return None
    package = path.name == "__init__.py"
    folder = path.parent.parent if package else path.parent
    if str(folder) not in sys.path:  # so handlers.py can import its own sibling modules
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(
        "handlers", path, submodule_search_locations=[str(path.parent)] if package else None
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["handlers"] = module
    spec.loader.exec_module(module)  # errors propagate: the caller logs them with the traceback
    register = getattr(module, "register", None)
    if not callable(register):
        raise UserHandlersError(f"{path} has no register(application) function")
    register(application)
    return path
