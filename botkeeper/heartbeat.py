"""bot_health.txt: the bot's proof of life, written atomically.

Any bot can take part in hang detection: `from botkeeper import heartbeat; heartbeat.beat()` from
Python, or from any language write `{"written_at": <unix time>}` to the file (or just touch it:
an empty file counts by its modification time). Reading and judging it is botkeeper.snapshot's and
botkeeper.verdict's job, for every reader alike.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .fsutil import atomic_write

STATES = ("starting", "polling", "telegram-unreachable", "conflict", "stopping", "fatal", "alive")


def default_path(settings: Any = None) -> Path:
    """Where a bot beats: BOTKEEPER_HEARTBEAT_FILE (the supervisor sets it for every bot command),
    else the settings' file, else bot_health.txt in BOTKEEPER_HOME or the bundle found from here."""
    explicit = os.environ.get("BOTKEEPER_HEARTBEAT_FILE")
    if explicit:
        return Path(explicit)
    if settings is not None:
        return settings.heartbeat_file
    home = os.environ.get("BOTKEEPER_HOME")
    if home:
        return Path(home) / "bot_health.txt"
    from .config import discover_home

    return discover_home() / "bot_health.txt"


def write(path: Path, **fields: Any) -> dict[str, Any]:
    data = {"pid": os.getpid(), "written_at": time.time()} | fields
    atomic_write(path, json.dumps(data, separators=(",", ":")))
    return data


def beat(path: Path | str | None = None, state: str = "alive", **fields: Any) -> dict[str, Any]:
    """One heartbeat for a bring-your-own bot. Call it at least every HEARTBEAT_INTERVAL."""
    return write(Path(path) if path else default_path(), state=state, **fields)
