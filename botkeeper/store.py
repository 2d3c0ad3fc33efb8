"""History in SQLite (WAL): events from every botkeeper process, safe with several writers.

Each call opens a short transaction; a busy timeout waits out other writers. A writer killed
mid-write loses at most its own uncommitted row (SQLite's journal guarantees the rest).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,          -- start, exit, restart, stop, errored, needs-config, stale, ...
    component TEXT,
    detail TEXT NOT NULL DEFAULT '',
    by TEXT,                     -- who caused or asked for it: supervisor, monitor, web, cli, ...
    exit_code INTEGER
);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE INDEX IF NOT EXISTS events_component_kind ON events(component, kind, at);
"""


class Store:
    def __init__(self, path: Path, busy_timeout: float = 5.0):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def record(self, kind: str, component: str | None = None, detail: str = "", by: str | None = None,
               exit_code: int | None = None, at: float | None = None) -> int:
        cur = self.connect().execute(
            "INSERT INTO events(at, kind, component, detail, by, exit_code) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time() if at is None else at, kind, component, detail, by, exit_code),
        )
        return int(cur.lastrowid)

    def events(self, since: float = 0.0, kinds: tuple[str, ...] = (), component: str | None = None,
               limit: int = 1000) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM events WHERE at >= ?", [since]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        if component:
            sql += " AND component = ?"
            args.append(component)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [dict(r) for r in self.connect().execute(sql, args)]
