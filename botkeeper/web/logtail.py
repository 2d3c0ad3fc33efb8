"""The last lines of a component's log file, read from the end (logs can be many MB)."""

from __future__ import annotations

import os
from pathlib import Path

BLOCK = 64 * 1024
MAX_BYTES = 2 * 1024 * 1024  # never read more than this, whatever `lines` says


def tail(path: Path, lines: int) -> list[str]:
    """Up to `lines` last lines (without newlines). Raises FileNotFoundError when absent."""
    with open(path, "rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= lines and end - pos < MAX_BYTES:
            step = min(BLOCK, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    text = data.decode("utf-8", errors="replace")
    out = text.splitlines()
    if pos > 0 and out:
        out = out[1:]  # the first line is probably cut in the middle
    return out[-lines:]
