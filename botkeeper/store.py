"""History in SQLite (WAL): events, incidents, resource samples, the alert outbox and error statistics.

Safe with several writer processes: every call is one short transaction (autocommit, or an
explicit `BEGIN IMMEDIATE` for multi-row changes) and a busy timeout waits out other writers. A
writer killed mid-write (even by SIGKILL) loses at most its own uncommitted transaction; SQLite's
write-ahead log guarantees the rest, so readers never see half of a multi-row change.

Size is bounded by `prune()` (see LIMITS): about 25 MB in the worst case (20 MB measured with every
table full of long rows, plus a 4 MB WAL), well under 2 MB for a
healthy bot. Deleted pages are reused, so the file stops growing at its peak; the WAL is
checkpointed automatically and truncated to JOURNAL_LIMIT bytes.

Every SQLite file of the bundle (this one, data/outbox.db) is opened through `open_database`:
checked on open (quick_check, ~20 ms for a 10 MB file, once per process), set aside when corrupt,
a fresh one started, one `corrupt-file` event saying what was lost; the process never stops for it.
A corrupt file (random bytes, a torn disk; SQLite says "file is not a database" or "database disk
image is malformed") is found at the one place connections are opened and on any statement: the
writer that meets it first sets it aside as `history.db.corrupt-<time>` (with its -wal/-shm, kept
for inspection) under a lock, starts a fresh database and records a `corrupt-file` event in it, which
the alerter turns into one alert. Every other process notices that the file it holds was replaced
and follows it to the fresh one. Read-only readers (the page) never move anything.

Uptime is computed from incidents by the pure `uptime_percent()`: down time is the union of
incident intervals inside the window; the window starts no earlier than the database's creation
(the bundle cannot know about time before it existed).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .causes import Cause

DAY = 86400.0
UPTIME_WINDOWS = (("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY))
JOURNAL_LIMIT = 4 * 1024 * 1024
# table -> (maximum age in seconds, maximum rows). Rows past either limit are deleted by prune().
LIMITS = {
    "events": (30 * DAY, 20_000),
    "incidents": (90 * DAY, 10_000),
    "samples": (7 * DAY, 100_000),
    "alerts": (30 * DAY, 5_000),
    "watched": (31 * DAY, 10_000),
}
MAX_PENDING_ALERTS = 500  # an outbox that cannot drain for days drops its oldest entries
PRUNE_EVERY_SAMPLES = 200
ERRORS_KEPT = (30 * DAY, 1_000)  # fingerprints not seen for 30 days, or past the 1000 most recent, go
RATE_HOURS = 24  # the per-hour rate is taken over the last day (or since first seen, if later)
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,          -- start, exit, restart, stop, errored, needs-config, stale, ...
    component TEXT,
    detail TEXT NOT NULL DEFAULT '',
    by TEXT,                     -- who caused or asked for it: supervisor, monitor, web, cli, ...
    exit_code INTEGER,
    cause TEXT                   -- a botkeeper.causes.Cause value; `detail` is only the sentence beside it
);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE INDEX IF NOT EXISTS events_component_kind ON events(component, kind, at);

CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    component TEXT NOT NULL DEFAULT 'bot',
    started_at REAL NOT NULL,    -- first failure
    ended_at REAL,               -- recovery; NULL while the incident is open
    cause TEXT NOT NULL,         -- a botkeeper.causes.Cause value (crash-loop, stale-heartbeat, ...)
    detail TEXT NOT NULL DEFAULT '',
    failures INTEGER NOT NULL DEFAULT 0,   -- crashes/forced restarts during the incident
    alerted INTEGER NOT NULL DEFAULT 0,    -- a "down" alert went into the outbox
    end_cause TEXT               -- operator/shutdown: ended by a stop, not by recovery
);
CREATE INDEX IF NOT EXISTS incidents_started ON incidents(started_at);

CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    component TEXT NOT NULL,
    rss_bytes INTEGER,
    cpu_percent REAL
);
CREATE INDEX IF NOT EXISTS samples_at ON samples(at);

CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    channel TEXT NOT NULL,       -- telegram | webhook
    kind TEXT NOT NULL,          -- down | recovered | flapping | flap-summary | test
    incident_id INTEGER,
    text TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',       -- JSON facts for the webhook payload
    status TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at REAL,
    delayed INTEGER NOT NULL DEFAULT 0     -- delivered only after a failed attempt
);
CREATE INDEX IF NOT EXISTS alerts_outbox ON alerts(channel, status, id);
CREATE INDEX IF NOT EXISTS alerts_created ON alerts(created_at);

CREATE TABLE IF NOT EXISTS watched (   -- periods the monitor was watching: uptime counts only these
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS watched_ended ON watched(ended_at);

CREATE TABLE IF NOT EXISTS errors (    -- handler errors grouped by fingerprint (botkeeper/bot/errorstats.py)
    fingerprint TEXT PRIMARY KEY,  -- 10 hex digits of sha1(type + top user frame)
    type TEXT NOT NULL,            -- the exception's class, module-qualified unless a builtin
    location TEXT NOT NULL,        -- file:function of the innermost frame of user code
    component TEXT,
    count INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_message TEXT NOT NULL DEFAULT ''  -- redacted and truncated
);
CREATE INDEX IF NOT EXISTS errors_last_seen ON errors(last_seen);
CREATE TABLE IF NOT EXISTS error_hours (  -- counts per fingerprint and hour, for the rate
    fingerprint TEXT NOT NULL,
    hour INTEGER NOT NULL,         -- unix time // 3600
    count INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, hour)
);

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


# --- pure uptime arithmetic -----------------------------------------------------------------------
def downtime(intervals: Iterable[tuple[float, float | None]], start: float, end: float) -> float:
    """Seconds inside [start, end] covered by the union of intervals; an open interval runs to end."""
    clipped = sorted(
        (max(a, start), min(end if b is None else b, end))
        for a, b in intervals
    )
    total, cur_a, cur_b = 0.0, None, None
    for a, b in clipped:
        if b <= a:
            continue
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total


def uptime_percent(intervals: Sequence[tuple[float, float | None]], now: float, window: float,
                   observed_since: float | None = None,
                   watched: Sequence[tuple[float, float]] | None = None) -> float | None:
    """Percentage of the watched part of the last `window` seconds not covered by an incident.

    `watched`: the periods the bundle was observing (the machine may have been off in between:
    that time is neither up nor down). Without it, everything since observed_since counts.
    None when nothing of the window was watched."""
    start = now - window
    if observed_since is not None:
        start = max(start, observed_since)
    periods = [(start, now)] if watched is None else [(max(a, start), min(b, now)) for a, b in watched]
    span = sum(b - a for a, b in periods if b > a)
    if span <= 0:
        return None
    down = sum(downtime(intervals, a, b) for a, b in periods if b > a)
    return max(0.0, min(100.0, 100.0 * (1.0 - down / span)))


WATCH_GAP_SAMPLES = 2.5  # a gap of this many sample intervals ends a watched period (the monitor's rule)


def watch_gap(settings) -> float:
    return settings.sample_interval * WATCH_GAP_SAMPLES


def merge_periods(periods: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching (start, end) periods joined, sorted."""
    merged: list[list[float]] = []
    for a, b in sorted(periods):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def watched_seconds(watched: Sequence[tuple[float, float]], now: float, window: float) -> float:
    start = now - window
    return sum(max(0.0, min(b, now) - max(a, start)) for a, b in watched)


def is_corrupt(exc: BaseException) -> bool:
    """SQLite's "file is not a database" or "database disk image is malformed" (not "locked")."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc)
    return "file is not a database" in text or "malformed" in text


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _abandon(conn: sqlite3.Connection) -> None:
    """Never close a connection to a file that is (being) set aside: closing the last connection of
    a WAL database checkpoints and then deletes "<name>-wal" and "<name>-shm" *by name*, which by
    then belong to the fresh database. One extra reference keeps it open even through interpreter
    shutdown; the OS closes its files at exit. (One leaked connection per corruption, per process.)"""
    import ctypes  # only here: the supervisor does not pay for ctypes in normal operation

    ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))


# --- the one rule for every SQLite file of the bundle ----------------------------------------------
def problem_of(conn: sqlite3.Connection) -> str | None:
    """None when SQLite's quick_check finds the file sound, else what it found (the integrity check
    on open: a few ms for the bundle's small files)."""
    rows = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
    return None if rows == ["ok"] else "; ".join(str(r) for r in rows)[:300]


def open_database(path: Path, connect: Callable[[], sqlite3.Connection]
                  ) -> tuple[sqlite3.Connection, Path | None, str | None]:
    """Every SQLite file the bundle writes (history.db, outbox.db, ...) is opened here: `connect()`
    opens and sets up the schema; the file is checked on open, and a corrupt one is set aside with a
    timestamp (`set_aside`) and a fresh one opened. (conn, where the corrupt file went or None, why).
    The caller says what was lost, once (`record_set_aside`); the process never stops for it."""
    try:
        conn = connect()
        problem = problem_of(conn)
        if problem is None:
            return conn, None, None
        _abandon(conn)
    except sqlite3.DatabaseError as exc:
        if not is_corrupt(exc):
            raise
        problem = str(exc)
    conn, target = set_aside(path, connect)
    return conn, target, problem


def set_aside(path: Path, connect: Callable[[], sqlite3.Connection]) -> tuple[sqlite3.Connection, Path | None]:
    """The file is corrupt: move it (with its -wal/-shm, kept for inspection) to
    <name>.corrupt-<time> and open a fresh one. One process moves it (flock on <name>.lock); a
    process that waited finds a sound file and just opens it (then the target is None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = None
        try:
            conn = connect()
            bad = problem_of(conn) is not None
        except sqlite3.DatabaseError as again:
            if not is_corrupt(again):
                raise
            bad = True
        if not bad:
            return conn, None  # already set aside by someone else
        if conn is not None:
            _abandon(conn)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target, n = path.with_name(f"{path.name}.corrupt-{stamp}"), 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{path}{suffix}", f"{target}{suffix}")
            except FileNotFoundError:
                pass
        return connect(), target
    finally:
        os.close(lock)


def set_aside_files(directory: Path) -> list[Path]:
    """Files set aside in `directory` (corrupt databases, a state.json that was a directory), for doctor."""
    try:
        return sorted(p for p in Path(directory).iterdir() if ".corrupt-" in p.name or ".not-a-file-" in p.name)
    except OSError:
        return []


def _by() -> str:
    argv = sys.argv or ["botkeeper"]
    return os.environ.get("BOTKEEPER_COMPONENT") or (
        argv[1] if argv[0].endswith("__main__.py") and len(argv) > 1 else os.path.basename(argv[0]))


def record_set_aside(store: "Store", what: str, detail: str) -> None:
    """The one `corrupt-file` event (the alerter sends it once) for a file set aside. History being
    unwritable too must not stop the caller: the set-aside file itself is the record then."""
    try:
        store.record(Cause.CORRUPT_FILE.value, what, detail, _by(), cause=Cause.CORRUPT_FILE)
    except (sqlite3.Error, OSError):
        pass


class Store:
    def __init__(self, path: Path, busy_timeout: float = 5.0, readonly: bool = False):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.readonly = readonly  # readers (the web page) never create, migrate, move or lock the file
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (dev, inode) the connection was opened on
        self._in_transaction = False
        self._samples_added = 0

    def connect(self) -> sqlite3.Connection:
        if self._conn is not None and _file_id(self.path) != self._file:
            self._drop()  # another process set the file aside (or it was replaced): follow the new one
        if self._conn is None:
            if self.readonly:
                self._conn = self._open()  # a reader never moves anything: a corrupt file raises
            else:
                self._conn, target, problem = open_database(self.path, self._open)
                if target is not None:
                    self._recorded_set_aside(problem, target)
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if self.readonly:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                   timeout=self.busy_timeout, isolation_level=None)
            conn.row_factory = sqlite3.Row
            self._file = _file_id(self.path)
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        self._file = _file_id(self.path)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_LIMIT}")
            conn.executescript(SCHEMA)
            _migrate(conn)
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('created_at', ?)", (repr(time.time()),))
        except sqlite3.DatabaseError as exc:
            if is_corrupt(exc):
                _abandon(conn)
            else:
                conn.close()
            raise
        return conn

    def _drop(self) -> None:
        """Forget the current connection without letting SQLite clean up by file name (see _abandon)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if self.readonly:
                conn.close()  # a read-only connection never checkpoints or deletes anything
            else:
                _abandon(conn)

    def _set_aside(self, exc: sqlite3.DatabaseError) -> None:
        """The file is corrupt: set aside (see set_aside), open a fresh database, record why."""
        self._drop()
        if self.readonly:
            raise exc
        self._conn, target = set_aside(self.path, self._open)
        if target is not None:
            self._recorded_set_aside(str(exc), target)

    def _recorded_set_aside(self, problem: str | None, target: Path) -> None:
        self.record(Cause.CORRUPT_FILE.value, "history", f"{self.path.name} was corrupt ({problem}): moved aside to"
                    f" {target.name} and a fresh database started", _by(), cause=Cause.CORRUPT_FILE)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def opened_file(self) -> tuple[int, int] | None:
        """(device, inode) of the file the connection is open on: it changes when a corrupt file
        was set aside, so a holder of state read from the old file knows to reload."""
        return self._file

    def quick_check(self) -> str:
        """'ok', or what SQLite's quick_check found (for doctor; reads, never moves)."""
        rows = [r[0] for r in self.connect().execute("PRAGMA quick_check(5)")]
        return "ok" if rows == ["ok"] else "; ".join(rows)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Several statements that must land together (or not at all, if we are killed)."""
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            self._in_transaction = False
        conn.execute("COMMIT")

    # --- events ----------------------------------------------------------------------------------
    def record(self, kind: str, component: str | None = None, detail: str = "", by: str | None = None,
               exit_code: int | None = None, at: float | None = None, cause: Any = None) -> int:
        cur = self.connect().execute(
            "INSERT INTO events(at, kind, component, detail, by, exit_code, cause) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time() if at is None else at, kind, component, detail, by, exit_code,
             None if cause is None else str(cause)),
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

    def events_after(self, last_id: int, component: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Events with id > last_id, oldest first: for a reader that follows the table."""
        sql, args = "SELECT * FROM events WHERE id > ?", [last_id]
        if component:
            sql += " AND component = ?"
            args.append(component)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [dict(r) for r in self.connect().execute(sql, args)]

    def last_event_id(self) -> int:
        row = self.connect().execute("SELECT MAX(id) FROM events").fetchone()
        return int(row[0] or 0)

    # --- incidents -------------------------------------------------------------------------------
    def open_incident(self, cause: str, started_at: float, detail: str = "", component: str = "bot",
                      failures: int = 0) -> int:
        cur = self.connect().execute(
            "INSERT INTO incidents(component, started_at, cause, detail, failures) VALUES (?, ?, ?, ?, ?)",
            (component, started_at, cause, detail, failures),
        )
        return int(cur.lastrowid)

    def update_incident(self, incident_id: int, **fields: Any) -> None:
        allowed = {"cause", "detail", "failures", "alerted", "started_at"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update incident field {sorted(bad)[0]!r}: expected one of {sorted(allowed)}")
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            self.connect().execute(f"UPDATE incidents SET {sets} WHERE id = ?", [*fields.values(), incident_id])

    def close_incident(self, incident_id: int, ended_at: float, end_cause: Any = None) -> dict[str, Any] | None:
        self.connect().execute("UPDATE incidents SET ended_at = ?, end_cause = ? WHERE id = ? AND ended_at IS NULL",
                               (ended_at, None if end_cause is None else str(end_cause), incident_id))
        return self.incident(incident_id)

    def close_open_incidents(self, ended_at: float, end_cause: Any, component: str = "bot") -> list[int]:
        """End every open incident at `ended_at` (a stop by an operator: what follows is not downtime)."""
        with self.transaction() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM incidents WHERE ended_at IS NULL AND component = ?",
                                              (component,))]
            conn.execute("UPDATE incidents SET ended_at = MAX(started_at, ?), end_cause = ? WHERE ended_at IS NULL"
                         " AND component = ?", (ended_at, str(end_cause), component))
        return ids

    def incident(self, incident_id: int) -> dict[str, Any] | None:
        row = self.connect().execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return _incident(row) if row else None

    def open_incidents(self, component: str = "bot") -> list[dict[str, Any]]:
        rows = self.connect().execute(
            "SELECT * FROM incidents WHERE ended_at IS NULL AND component = ? ORDER BY id", (component,))
        return [_incident(r) for r in rows]

    def incidents(self, since: float = 0.0, limit: int = 1000, component: str | None = None,
                  with_alert_status: bool = False) -> list[dict[str, Any]]:
        """Incidents that were open at some point since `since`, newest first. With
        `with_alert_status`, each says what happened to its down alert: sent, pending or failed
        (None: no alert was queued for it)."""
        status = (", (SELECT CASE WHEN SUM(a.status = 'sent') > 0 THEN 'sent' WHEN SUM(a.status = 'pending') > 0"
                  " THEN 'pending' WHEN COUNT(*) > 0 THEN 'failed' END FROM alerts a WHERE a.incident_id = incidents.id"
                  " AND a.kind IN ('down', 'flapping')) AS alert_status") if with_alert_status else ""
        sql, args = f"SELECT *{status} FROM incidents WHERE (ended_at IS NULL OR ended_at >= ?)", [since]
        if component:
            sql += " AND component = ?"
            args.append(component)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        args.append(limit)
        return [_incident(r) for r in self.connect().execute(sql, args)]

    def created_at(self) -> float:
        row = self.connect().execute("SELECT value FROM meta WHERE key = 'created_at'").fetchone()
        return float(row[0]) if row else time.time()

    def uptime(self, now: float | None = None, component: str = "bot", gap: float | None = None) -> dict[str, float | None]:
        """{"24h": %, "7d": %, "30d": %} for the component: its incidents within the watched time."""
        now = time.time() if now is None else now
        spans, watched = self._coverage(now, component, gap)
        return {label: uptime_percent(spans, now, window, watched=watched) for label, window in UPTIME_WINDOWS}

    def _coverage(self, now: float, component: str = "bot", gap: float | None = None):
        """(incident spans, watched periods) of the longest window. An open incident is being watched
        (up to now); with `gap` (the monitor's), so is a watched period that ended less than `gap` ago:
        it runs to now, so the denominator does not shrink back to the last sample when an incident
        closes. A closed incident across a machine-off gap does not count that gap."""
        since = now - UPTIME_WINDOWS[-1][1]
        spans = [(i["started_at"], i["ended_at"]) for i in self.incidents(since, 100_000, component)]
        periods = self.watched(since)
        if gap is not None and periods and 0 <= now - periods[-1][1] <= gap:
            periods[-1] = (periods[-1][0], now)
        periods += [(a, now) for a, b in spans if b is None]
        return spans, merge_periods(periods)

    def summary(self, now: float | None = None, gap: float | None = None) -> dict[str, Any]:
        """Uptime (and how much time it covers) and the open incident: what `status` and the page show.
        `gap`: the monitor's watch gap (watch_gap(settings)), so the denominator runs to now."""
        now = time.time() if now is None else now
        open_ = self.open_incidents()
        current = open_[-1] if open_ else None
        if current is not None:
            current = current | {"duration_seconds": round(now - current["started_at"], 1)}
        _, watched = self._coverage(now, gap=gap)
        if current is not None:
            watched = merge_periods(watched + [(current["started_at"], now)])
        observed = {label: round(watched_seconds(watched, now, window), 1) for label, window in UPTIME_WINDOWS}
        return {"uptime": self.uptime(now, gap=gap), "observed_seconds": observed, "open_incident": current}

    # --- watched time ----------------------------------------------------------------------------
    def watch(self, now: float, gap: float) -> None:
        """The monitor was watching at `now`: extend the current period, or begin a new one when the
        last ended more than `gap` ago (the bundle or the machine was off)."""
        conn = self.connect()
        row = conn.execute("SELECT id, ended_at FROM watched ORDER BY id DESC LIMIT 1").fetchone()
        if row is not None and 0 <= now - row[1] <= gap:
            conn.execute("UPDATE watched SET ended_at = ? WHERE id = ?", (now, row[0]))
        elif row is None or now > row[1]:
            conn.execute("INSERT INTO watched(started_at, ended_at) VALUES (?, ?)", (now, now))

    def watched(self, since: float) -> list[tuple[float, float]]:
        rows = self.connect().execute("SELECT started_at, ended_at FROM watched WHERE ended_at >= ? ORDER BY id",
                                      (since,))
        return [(float(a), float(b)) for a, b in rows]

    # --- resource samples ------------------------------------------------------------------------
    def add_sample(self, component: str, rss_bytes: int | None, cpu_percent: float | None,
                   at: float | None = None) -> None:
        self.connect().execute("INSERT INTO samples(at, component, rss_bytes, cpu_percent) VALUES (?, ?, ?, ?)",
                               (time.time() if at is None else at, component, rss_bytes, cpu_percent))
        self._samples_added += 1
        if self._samples_added % PRUNE_EVERY_SAMPLES == 0:
            self._prune_table("samples", time.time())

    def samples(self, since: float, component: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT at, component, rss_bytes, cpu_percent FROM samples WHERE at >= ?", [since]
        if component:
            sql += " AND component = ?"
            args.append(component)
        return [dict(r) for r in self.connect().execute(sql + " ORDER BY at, id", args)]

    # --- alert outbox ----------------------------------------------------------------------------
    def enqueue_alert(self, channel: str, kind: str, text: str, data: dict[str, Any] | None = None,
                      incident_id: int | None = None, at: float | None = None,
                      conn: sqlite3.Connection | None = None) -> int:
        cur = (conn or self.connect()).execute(
            "INSERT INTO alerts(created_at, channel, kind, incident_id, text, data) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time() if at is None else at, channel, kind, incident_id, text, json.dumps(data or {})),
        )
        return int(cur.lastrowid)

    def pending_alerts(self, channel: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.connect().execute(
            "SELECT * FROM alerts WHERE channel = ? AND status = 'pending' ORDER BY id LIMIT ?", (channel, limit))
        return [_alert(r) for r in rows]

    def alert_sent(self, alert_id: int, at: float, delayed: bool) -> None:
        self.connect().execute(
            "UPDATE alerts SET status = 'sent', sent_at = ?, attempts = attempts + 1, delayed = ?, last_error = NULL"
            " WHERE id = ?", (at, int(delayed), alert_id))

    def alert_failed(self, alert_id: int, error: str, retry_at: float | None) -> None:
        """A failed attempt: retried at retry_at, or given up for good when retry_at is None."""
        if retry_at is None:
            self.connect().execute(
                "UPDATE alerts SET status = 'failed', attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error, alert_id))
        else:
            self.connect().execute(
                "UPDATE alerts SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                (error, retry_at, alert_id))

    def alerts(self, since: float = 0.0, limit: int = 1000, channel: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM alerts WHERE created_at >= ?", [since]
        if channel:
            sql += " AND channel = ?"
            args.append(channel)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [_alert(r) for r in self.connect().execute(sql, args)]

    # --- error statistics ----------------------------------------------------------------------
    def add_errors(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        """Count a batch of errors: each row {fingerprint, type, location, component, count,
        first_seen, last_seen, last_message}. Returns the fingerprints that were new."""
        new: list[str] = []
        with self.transaction() as conn:
            for r in rows:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO errors(fingerprint, type, location, component, count, first_seen,"
                    " last_seen, last_message) VALUES (?, ?, ?, ?, 0, ?, ?, '')",
                    (r["fingerprint"], r["type"], r["location"], r.get("component"), r["first_seen"], r["last_seen"]))
                if cur.rowcount:
                    new.append(r["fingerprint"])
                conn.execute("UPDATE errors SET count = count + ?, last_seen = MAX(last_seen, ?), last_message = ?"
                             " WHERE fingerprint = ?",
                             (r["count"], r["last_seen"], r["last_message"], r["fingerprint"]))
                conn.execute("INSERT INTO error_hours(fingerprint, hour, count) VALUES (?, ?, ?) ON CONFLICT"
                             " (fingerprint, hour) DO UPDATE SET count = count + excluded.count",
                             (r["fingerprint"], int(r["last_seen"] // 3600), r["count"]))
        return new

    def errors(self, now: float | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Fingerprints, most frequent in the last RATE_HOURS first (then most recent), each with
        `last_24h` and `per_hour` (over the last day, or since first seen if that is later)."""
        now = time.time() if now is None else now
        since_hour = int(now // 3600) - RATE_HOURS + 1
        rows = self.connect().execute(
            "SELECT e.*, COALESCE((SELECT SUM(h.count) FROM error_hours h WHERE h.fingerprint = e.fingerprint"
            " AND h.hour >= ?), 0) AS last_24h FROM errors e ORDER BY last_24h DESC, last_seen DESC LIMIT ?",
            (since_hour, limit))
        out = []
        for row in rows:
            data = dict(row)
            hours = min(float(RATE_HOURS), max(1.0, (now - data["first_seen"]) / 3600.0))
            data["per_hour"] = round(data["last_24h"] / hours, 2)
            out.append(data)
        return out

    def error_counts(self) -> list[tuple[str, int]]:
        """(fingerprint, count) of every fingerprint kept, most frequent first (for /metrics)."""
        return [(r[0], int(r[1])) for r in self.connect().execute(
            "SELECT fingerprint, count FROM errors ORDER BY count DESC, fingerprint")]

    def _prune_errors(self, now: float) -> int:
        max_age, max_rows = ERRORS_KEPT
        conn = self.connect()
        n = conn.execute("DELETE FROM errors WHERE last_seen < ? OR fingerprint NOT IN (SELECT fingerprint FROM"
                         " errors ORDER BY last_seen DESC LIMIT ?)", (now - max_age, max_rows)).rowcount
        conn.execute("DELETE FROM error_hours WHERE hour < ? OR fingerprint NOT IN (SELECT fingerprint FROM errors)",
                     (int(now // 3600) - RATE_HOURS,))
        return n

    # --- small persistent key/value (the alerter's memory across restarts) ----------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.connect().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except ValueError:
            return default

    def set_meta(self, key: str, value: Any, conn: sqlite3.Connection | None = None) -> None:
        (conn or self.connect()).execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                         (key, json.dumps(value)))

    # --- size bound ------------------------------------------------------------------------------
    def prune(self, now: float | None = None) -> dict[str, int]:
        """Delete rows past LIMITS (age or count); returns rows deleted per table."""
        now = time.time() if now is None else now
        deleted = {table: self._prune_table(table, now) for table in LIMITS}
        deleted["errors"] = self._prune_errors(now)
        # An outbox that cannot drain must not grow without end: give up on the oldest.
        conn = self.connect()
        cur = conn.execute(
            "UPDATE alerts SET status = 'failed', last_error = 'outbox full: dropped' WHERE status = 'pending'"
            " AND id NOT IN (SELECT id FROM alerts WHERE status = 'pending' ORDER BY id DESC LIMIT ?)",
            (MAX_PENDING_ALERTS,))
        deleted["alerts_dropped"] = cur.rowcount
        return deleted

    def _prune_table(self, table: str, now: float) -> int:
        max_age, max_rows = LIMITS[table]
        column = {"events": "at", "incidents": "started_at", "samples": "at", "alerts": "created_at",
                  "watched": "ended_at"}[table]
        keep_open = {"incidents": " AND ended_at IS NOT NULL", "alerts": " AND status != 'pending'"}.get(table, "")
        conn = self.connect()
        n = conn.execute(f"DELETE FROM {table} WHERE {column} < ?{keep_open}", (now - max_age,)).rowcount
        n += conn.execute(
            f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?){keep_open}",
            (max_rows,)).rowcount
        return n


def _incident(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["alerted"] = bool(data["alerted"])
    end = data["ended_at"]
    data["duration_seconds"] = None if end is None else round(end - data["started_at"], 3)
    return data


def _alert(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["delayed"] = bool(data["delayed"])
    try:
        data["data"] = json.loads(data["data"] or "{}")
    except ValueError:
        data["data"] = {}
    return data


def _migrate(conn: sqlite3.Connection) -> None:
    """Columns added after a database was first created (CREATE TABLE IF NOT EXISTS keeps old tables)."""
    for table, column, decl in (("events", "cause", "TEXT"), ("incidents", "end_cause", "TEXT")):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


def _recovering(method):
    """A statement that finds the file corrupt sets it aside and runs once more on the fresh one."""
    @functools.wraps(method)
    def call(self: Store, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc) or self._in_transaction:
                raise
            self._set_aside(exc)  # a read-only reader re-raises: it reports the history unavailable
            return method(self, *args, **kwargs)
    return call


for _name, _method in list(vars(Store).items()):
    if callable(_method) and not _name.startswith("_") and _name not in ("connect", "close", "transaction"):
        setattr(Store, _name, _recovering(_method))
