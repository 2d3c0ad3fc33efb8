"""Error statistics: handler exceptions grouped by fingerprint, counted in data/history.db.

A fingerprint is the exception's type plus the innermost frame of *user* code (file:function, no
line number: lines shift with every edit; botkeeper's, python-telegram-bot's and the standard
library's frames are skipped, so one bug is one row wherever the library calls it from). Two
messages of the same bug ("user 1 not found", "user 2 not found") share a row; the row keeps the
last message, redacted and truncated.

The bot records from its error handler (keeper.py): `ErrorLog.add` only fingerprints and buffers
(microseconds, on the event loop); one worker thread at a time writes the buffered counts in one
transaction, so a burst of a thousand errors is a handful of writes. A fingerprint seen for the
first time also becomes a `new-error` event, which the alerter alerts once with ERROR_ALERTS=new.

Why history.db and not a file of its own: errors are rare writes (unlike the outbox's 30 a
second), the page, the daily report and `errors` already read history.db, and it brings the
corrupt-file handling and pruning with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

from ..causes import Cause
from ..store import Store

log = logging.getLogger("botkeeper.errors")
MESSAGE_MAX = 300
MAX_PENDING = 1000  # distinct fingerprints buffered while the database cannot be written


@dataclass(frozen=True)
class Fingerprint:
    id: str  # 10 hex digits, stable across restarts and line-number changes
    type: str
    location: str  # file:function of the innermost user frame (or of the innermost frame at all)


def _library_dirs() -> tuple[str, ...]:
    """Where code that is not the user's lives: the standard library, installed packages, botkeeper."""
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.add(str(Path(__file__).resolve().parents[1]))  # botkeeper/
    return tuple(sorted({os.path.realpath(d) + os.sep for d in dirs}, key=len, reverse=True))


LIBRARY_DIRS = _library_dirs()


def type_name(error: BaseException) -> str:
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _short_path(filename: str, home: Path | None, library: str | None) -> str:
    """A path that reads the same on every machine: relative to the bundle home or the library dir."""
    real = os.path.realpath(filename) if not filename.startswith("<") else filename
    if library:
        return real[len(library):]
    if home is not None:
        root = os.path.realpath(home) + os.sep
        if real.startswith(root):
            return real[len(root):]
    return os.path.basename(real)


def fingerprint(error: BaseException, home: Path | None = None,
                library_dirs: tuple[str, ...] = LIBRARY_DIRS) -> Fingerprint:
    """The exception's type and its innermost user frame, hashed into a short id."""
    frames: list[tuple[str, str, str | None]] = []  # (filename, function, library dir or None)
    tb: TracebackType | None = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        name = code.co_filename
        real = os.path.realpath(name)
        lib = "<" if name.startswith("<") else next((d for d in library_dirs if real.startswith(d)), None)
        frames.append((name, getattr(code, "co_qualname", code.co_name), lib))
        tb = tb.tb_next
    users = [f for f in frames if f[2] is None]
    chosen = users[-1] if users else (frames[-1] if frames else None)
    if chosen is None:
        location = "(no traceback)"
    else:
        lib = chosen[2] if chosen[2] != "<" else None
        location = f"{_short_path(chosen[0], home, lib)}:{chosen[1]}"
    kind = type_name(error)
    digest = hashlib.sha1(f"{kind} {location}".encode()).hexdigest()[:10]
    return Fingerprint(digest, kind, location)


def message_of(error: BaseException, redact: Callable[[str], str]) -> str:
    text = redact(" ".join(str(error).split()))  # one line, secrets masked before truncating
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX - 1] + "…"


class ErrorLog:
    """The bot's error counter: `add()` on the event loop, writes in a worker thread."""

    def __init__(self, db_path: Path, redact: Callable[[str], str], home: Path | None = None,
                 component: str = "bot", clock: Callable[[], float] = time.time):
        self.db_path = Path(db_path)
        self.redact, self.home, self.component, self.clock = redact, home, component, clock
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._writing = False

    def add(self, error: BaseException) -> Fingerprint:
        fp = fingerprint(error, self.home)
        now = self.clock()
        with self._lock:
            row = self._pending.get(fp.id)
            if row is None:
                if len(self._pending) >= MAX_PENDING:
                    return fp  # the database has been unwritable for a long while: count what fits
                row = self._pending[fp.id] = {"fingerprint": fp.id, "type": fp.type, "location": fp.location,
                                              "component": self.component, "count": 0, "first_seen": now}
            row["count"] += 1
            row["last_seen"] = now
            row["last_message"] = message_of(error, self.redact)
            start = not self._writing
            self._writing = True
        if start:
            try:
                asyncio.get_running_loop().run_in_executor(None, self.flush)
            except RuntimeError:  # not on an event loop (a job thread, a test): write now
                self.flush()
        return fp

    def flush(self) -> None:
        """Write everything buffered, batch after batch, until nothing is left."""
        while True:
            with self._lock:
                rows, self._pending = list(self._pending.values()), {}
                if not rows:
                    self._writing = False
                    return
            try:
                self._write(rows)
            except Exception as exc:  # thread boundary: keep the counts for the next error's write
                log.warning("errors: cannot record %d error fingerprint(s) in %s: %s", len(rows),
                            self.db_path.name, exc)
                with self._lock:
                    for row in rows:
                        newer = self._pending.get(row["fingerprint"])
                        if newer is not None:  # counted meanwhile: the newer row keeps its last message
                            newer["count"] += row["count"]
                            newer["first_seen"] = min(newer["first_seen"], row["first_seen"])
                        elif len(self._pending) < MAX_PENDING:
                            self._pending[row["fingerprint"]] = row
                    self._writing = False
                return

    def _write(self, rows: list[dict[str, Any]]) -> None:
        store = Store(self.db_path)
        try:
            for fp in store.add_errors(rows):
                row = next(r for r in rows if r["fingerprint"] == fp)
                store.record(Cause.NEW_ERROR.value, self.component, new_error_detail(row), self.component,
                             at=row["first_seen"], cause=Cause.NEW_ERROR)
        finally:
            store.close()


def new_error_detail(row: dict[str, Any]) -> str:
    return f"{row['type']} in {row['location']} [{row['fingerprint']}]: {row['last_message']}"


# --- `python -m botkeeper errors` ---------------------------------------------------------------
def main(argv: list[str]) -> int:
    import argparse
    import json
    import sqlite3
    import sys

    from .. import fmt
    from ..config import load_or_exit

    parser = argparse.ArgumentParser(prog="python -m botkeeper errors",
                                     description="Handler errors grouped by fingerprint, most frequent today first.")
    parser.add_argument("--limit", type=int, default=20, help="how many fingerprints (default 20)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.limit <= 1000:
        parser.error("--limit: expected a whole number from 1 to 1000")
    settings = load_or_exit()
    if not settings.history_db.is_file():
        print("no errors recorded yet (data/history.db does not exist)")
        return 0
    store = Store(settings.history_db, readonly=True)
    try:
        rows = store.errors(limit=args.limit)
    except sqlite3.Error as exc:
        print(f"botkeeper: cannot read {settings.history_db}: {exc} (`python -m botkeeper doctor` checks it)",
              file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no errors recorded")
        return 0
    now = time.time()
    print(f"{'fingerprint':<11} {'count':>6} {'per h':>6} {'last seen':>10}  error")
    for r in rows:
        ago = fmt.duration(now - r["last_seen"]) + " ago"
        print(f"{r['fingerprint']:<11} {r['count']:>6} {r['per_hour']:>6g} {ago:>10}  {r['type']} in {r['location']}")
        print(f"{'':<11} first seen {time.strftime('%Y-%m-%d %H:%M', time.localtime(r['first_seen']))}: "
              f"{r['last_message']}")
    return 0
