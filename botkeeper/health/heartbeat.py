"""bot_health.txt: the bot's proof of life, written atomically.

Any bot can take part in hang detection: `from botkeeper import heartbeat; heartbeat.beat()` from
Python, or from any language write `{"written_at": <unix time>}` to the file (or just touch it:
an empty file counts by its modification time). Reading and judging it is botkeeper.health.snapshot's and
botkeeper.health.verdict's job, for every reader alike.

A full disk must not make a live bot look hung. Every beat is padded to SLOT bytes, so the file
always owns the blocks a beat needs; when the atomic write (a new file, then rename) fails with
ENOSPC/EDQUOT, the beat overwrites the existing file in place instead (no new blocks) and carries
`"disk_full": true`. A reader that meets a half-overwritten file (not JSON) reads it once more.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..fsutil import NO_SPACE, atomic_write

STATES = ("starting", "polling", "webhook", "standby", "telegram-unreachable", "conflict", "stopping", "fatal", "alive")
SLOT = 4096  # bytes every beat is padded to: one block, reused in place when the disk is full


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
    from ..config import discover_home

    return discover_home() / "bot_health.txt"


def write(path: Path, **fields: Any) -> dict[str, Any]:
    data = {"pid": os.getpid(), "written_at": time.time()} | fields
    try:
        atomic_write(path, _padded(data))
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        data["disk_full"] = True
        _overwrite(path, _padded(data))
    return data


def _padded(data: dict[str, Any]) -> str:
    text = json.dumps(data, separators=(",", ":"))
    if len(text.encode()) >= SLOT:
        return text + "\n"  # an oversized beat (a huge detail): written as it is
    return text + " " * (SLOT - 1 - len(text.encode())) + "\n"


def _overwrite(path: Path, text: str) -> None:
    """Rewrite the existing file in place, same length: the disk has no block to spare."""
    raw = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # no O_CREAT: a missing file cannot be made now
    try:
        if os.pwrite(fd, raw, 0) != len(raw):
            raise OSError(28, "short write in place: the disk is full")
    finally:
        os.close(fd)


def beat(path: Path | str | None = None, state: str = "alive", **fields: Any) -> dict[str, Any]:
    """One heartbeat for a bring-your-own bot. Call it at least every HEARTBEAT_INTERVAL."""
    return write(Path(path) if path else default_path(), state=state, **fields)
