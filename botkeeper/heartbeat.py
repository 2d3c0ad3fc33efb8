"""bot_health.txt: the bot's proof of life, written atomically, read defensively.

Any bot can take part in hang detection: `from botkeeper import heartbeat; heartbeat.beat()` from
Python, or from any language write `{"written_at": <unix time>}` to the file (or just touch it:
an empty/unparsable file counts by its modification time).

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

from .fsutil import NO_SPACE, atomic_write

STATES = ("starting", "polling", "telegram-unreachable", "conflict", "stopping", "alive")
SLOT = 4096  # bytes every beat is padded to: one block, reused in place when the disk is full
TORN_RETRY = 0.005  # seconds before reading a half-overwritten file again


class HeartbeatError(Exception):
    """The heartbeat file is missing, unreadable or corrupt; the message says which."""


def default_path() -> Path:
    home = os.environ.get("BOTKEEPER_HOME")
    if home:
        return Path(home) / "bot_health.txt"
    from .config import PACKAGE_ROOT

    return PACKAGE_ROOT / "bot_health.txt"


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


def read(path: Path) -> dict[str, Any]:
    """The heartbeat as a dict with at least `written_at`; raises HeartbeatError otherwise."""
    for attempt in (1, 2):
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
            break
        except (UnicodeDecodeError, ValueError):
            if attempt == 2:
                raise HeartbeatError(f"{path.name} is corrupt: not JSON") from None
            time.sleep(TORN_RETRY)  # caught in the middle of an in-place write (disk full)
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
