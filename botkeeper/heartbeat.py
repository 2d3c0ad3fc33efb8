"""bot_health.txt: the bot's proof of life, written atomically, read defensively.

Any bot can take part in hang detection: `from botkeeper import heartbeat; heartbeat.beat()` from
Python, or from any language write `{"written_at": <unix time>}` to the file (or just touch it:
an empty/unparsable file counts by its modification time).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .fsutil import atomic_write

STATES = ("starting", "polling", "telegram-unreachable", "conflict", "stopping", "alive")


class HeartbeatError(Exception):
    """The heartbeat file is missing, unreadable or corrupt; the message says which."""


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


def read(path: Path) -> dict[str, Any]:
    """The heartbeat as a dict with at least `written_at`; raises HeartbeatError otherwise."""
    try:
        if path.is_dir():
            raise HeartbeatError(f"{path.name} is a directory, not a file")
        raw = path.read_bytes()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        raise HeartbeatError(f"{path.name} does not exist yet") from None
    except OSError as exc:
        raise HeartbeatError(f"{path.name} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > 65536:
        raise HeartbeatError(f"{path.name} is corrupt: {len(raw)} bytes, expected a small JSON object")
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (UnicodeDecodeError, ValueError):
        raise HeartbeatError(f"{path.name} is corrupt: not JSON") from None
    if data is None:
        # Touched (empty) file from a non-Python bot: its modification time is the beat.
        return {"written_at": mtime, "state": "alive", "touched": True}
    if not isinstance(data, dict) or not isinstance(data.get("written_at"), (int, float)):
        raise HeartbeatError(f"{path.name} is corrupt: expected a JSON object with written_at")
    return data


def read_or_error(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return read(path), None
    except HeartbeatError as exc:
        return None, str(exc)
