"""The persistent outbox: messages stored in SQLite before they are sent, delivered by a worker in
the bot process (`botkeeper.bot.delivery`), so a crash or restart between queueing and sending
loses nothing. See docs/outbox.md.

    from botkeeper import outbox
    key = await outbox.send(chat_id, "text", priority="high", parse_mode="HTML")
    keys = await outbox.broadcast([1, 2, 3], "announcement")     # low priority
    outbox.enqueue_sync(settings, chat_id, "text")                # from any process, no event loop

Its own file, data/outbox.db (WAL): the delivery worker commits once per message, up to 30 times a
second, and must not contend with the history writers of data/history.db.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .. import store

KEEP_SENT = (7 * 86400.0, 50_000)  # sent rows kept (age, rows): enough to answer "was it sent?"
KEEP_DEAD = (30 * 86400.0, 10_000)
PRUNE_EVERY = 500  # sends between two prunes

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,        -- returned to the caller; a repeated key is queued once
    chat_id INTEGER NOT NULL,
    priority INTEGER NOT NULL,       -- 0 high, 1 normal, 2 low
    text TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',   -- JSON: the other send_message arguments
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',  -- pending | sent
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at REAL,
    message_id INTEGER               -- Telegram's id of the delivered message
);
CREATE INDEX IF NOT EXISTS messages_pending ON messages(status, chat_id, priority, id);
CREATE INDEX IF NOT EXISTS messages_sent ON messages(status, sent_at);

CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,          -- the message's id in `messages`
    key TEXT NOT NULL UNIQUE,
    chat_id INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    text TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    died_at REAL NOT NULL,
    reason TEXT NOT NULL             -- what Telegram said, or "too old"
);

CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
COUNTERS = ("queued", "sent", "retried", "dead")


class Priority(IntEnum):
    HIGH = 0  # replies, alerts
    NORMAL = 1
    LOW = 2  # broadcasts


def priority_of(value: Any) -> Priority:
    if isinstance(value, Priority):
        return value
    if isinstance(value, str) and value.upper() in Priority.__members__:
        return Priority[value.upper()]
    if isinstance(value, int) and value in (0, 1, 2):
        return Priority(value)
    raise ValueError(f"priority {value!r} is not valid: expected high, normal or low")


@dataclass(frozen=True)
class Message:
    id: int
    key: str
    chat_id: int
    priority: int
    text: str
    options: dict[str, Any]
    created_at: float
    attempts: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Message":
        return cls(row["id"], row["key"], row["chat_id"], row["priority"], row["text"],
                   json.loads(row["options"] or "{}"), row["created_at"], row["attempts"])


class Outbox:
    """data/outbox.db. One short transaction per call; safe with several processes."""

    def __init__(self, path: Path | str, readonly: bool = False, history: Path | str | None = None):
        self.path = Path(path)
        if readonly:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2.0,
                                      isolation_level=None, check_same_thread=False)
        else:
            # The one opener of the bundle's SQLite files: a corrupt outbox is set aside, a fresh one
            # started, one corrupt-file event says how many queued messages were lost; the bot runs on.
            self.db, target, problem = store.open_database(self.path, self._connect)
            if target is not None:
                # history.db sits beside it (settings.history_db): the alerter sends the event once
                history_path = Path(history) if history else self.path.with_name("history.db")
                history_store = store.Store(history_path)
                store.record_set_aside(history_store, "outbox", f"{self.path.name} was corrupt ({problem}): moved"
                                       f" aside to {target.name} and a fresh outbox started; {salvage(target, self.db)}")
                history_store.close()
        self.db.row_factory = sqlite3.Row
        self._sends_since_prune = 0

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives the process being killed (SIGKILL), which is what matters here.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            if store.is_corrupt(exc):
                store._abandon(db)  # never close it: closing deletes -wal/-shm by name (store.py)
            else:
                db.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _count(self, db: sqlite3.Connection, name: str, n: int = 1) -> None:
        db.execute("INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                   (name, n, n))

    # --- queueing ----------------------------------------------------------------------------------
    def enqueue(self, items: Iterable[tuple[int, str]], priority: Any = Priority.NORMAL,
                options: Mapping[str, Any] | None = None, keys: Iterable[str | None] | None = None,
                now: float | None = None) -> list[str]:
        """Store messages (chat_id, text); returns their keys. A key already queued is kept as is."""
        prio = priority_of(priority)
        opts = json.dumps(dict(options or {}), separators=(",", ":"), sort_keys=True)
        now = time.time() if now is None else now
        items = list(items)
        keys = list(keys) if keys is not None else [None] * len(items)
        out: list[str] = []
        with self._tx() as db:
            for (chat_id, text), key in zip(items, keys):
                key = key or uuid.uuid4().hex
                cur = db.execute(
                    "INSERT OR IGNORE INTO messages(key, chat_id, priority, text, options, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", (key, int(chat_id), int(prio), str(text), opts, now))
                if cur.rowcount:
                    self._count(db, "queued")
                out.append(key)
        return out

    # --- what the worker needs ---------------------------------------------------------------------
    def due(self, now: float, busy: Iterable[int] = (), limit: int = 300) -> list[Message]:
        """The first pending message of each chat (by priority, then age) whose retry time has come,
        skipping chats in `busy`. A chat whose first message waits for a retry waits as a whole,
        so messages to one chat keep their order."""
        busy = sorted(set(busy))
        skip = f"AND chat_id NOT IN ({','.join('?' * len(busy))})" if busy else ""
        rows = self.db.execute(
            f"""SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY chat_id ORDER BY priority, id) AS n
                FROM messages WHERE status = 'pending' {skip})
                WHERE n = 1 AND next_attempt_at <= ? ORDER BY priority, id LIMIT ?""",
            (*busy, now, limit)).fetchall()
        return [Message.from_row(r) for r in rows]

    def recent_sends(self, since: float) -> list[tuple[float, int]]:
        """(sent_at, chat_id) of messages delivered since then, oldest first."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT sent_at, chat_id FROM messages WHERE status = 'sent' AND sent_at >= ? ORDER BY sent_at", (since,))]

    def next_retry_at(self) -> float | None:
        row = self.db.execute("SELECT MIN(next_attempt_at) FROM messages WHERE status = 'pending'").fetchone()
        return row[0]

    def mark_sent(self, msg: Message, message_id: int | None, now: float | None = None) -> None:
        """Telegram answered: recorded in the same step, the duplicate window is this one commit."""
        with self._tx() as db:
            db.execute("UPDATE messages SET status = 'sent', sent_at = ?, message_id = ?, attempts = attempts + 1,"
                       " last_error = NULL WHERE id = ?", (time.time() if now is None else now, message_id, msg.id))
            self._count(db, "sent")
        self._sends_since_prune += 1
        if self._sends_since_prune >= PRUNE_EVERY:
            self.prune()

    def retry(self, msg: Message, at: float, error: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE messages SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
                       (at, error[:500], msg.id))
            self._count(db, "retried")

    def bury(self, msg: Message, reason: str, now: float | None = None) -> None:
        """Move to dead letters at once: a permanent error, or too old to be worth sending."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO dead_letters(id, key, chat_id, priority, text, options, created_at, attempts,"
                " died_at, reason) SELECT id, key, chat_id, priority, text, options, created_at, attempts + 1, ?, ?"
                " FROM messages WHERE id = ?", (now, reason[:500], msg.id))
            db.execute("DELETE FROM messages WHERE id = ?", (msg.id,))
            self._count(db, "dead")

    # --- the operator ------------------------------------------------------------------------------
    def requeue(self, ids: Iterable[int] | None = None, now: float | None = None) -> int:
        """Dead letters back into the queue (all when ids is None), as new messages with their key."""
        now = time.time() if now is None else now
        params = () if ids is None else tuple(int(i) for i in ids)
        where = "" if ids is None else f"WHERE id IN ({','.join('?' * len(params)) or 'NULL'})"
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM dead_letters {where} ORDER BY id", params).fetchall()
            for r in rows:
                db.execute("DELETE FROM messages WHERE key = ?", (r["key"],))
                db.execute("INSERT INTO messages(key, chat_id, priority, text, options, created_at)"
                           " VALUES (?, ?, ?, ?, ?, ?)", (r["key"], r["chat_id"], r["priority"], r["text"],
                                                          r["options"], now))
                db.execute("DELETE FROM dead_letters WHERE id = ?", (r["id"],))
            self._count(db, "queued", len(rows))
        return len(rows)

    def pending(self, limit: int = 100) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM messages WHERE status = 'pending' ORDER BY priority, id LIMIT ?",
                               (limit,)).fetchall()

    def dead(self, limit: int = 100) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)).fetchall()

    def status_of(self, key: str) -> str | None:
        """pending, sent, dead, or None for a key never queued (or long pruned)."""
        row = self.db.execute("SELECT status FROM messages WHERE key = ?", (key,)).fetchone()
        if row:
            return row[0]
        return "dead" if self.db.execute("SELECT 1 FROM dead_letters WHERE key = ?", (key,)).fetchone() else None

    def summary(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        depth = {p.name.lower(): 0 for p in Priority}
        for prio, n in self.db.execute(
                "SELECT priority, COUNT(*) FROM messages WHERE status = 'pending' GROUP BY priority"):
            depth[Priority(prio).name.lower()] = n
        oldest = self.db.execute("SELECT MIN(created_at) FROM messages WHERE status = 'pending'").fetchone()[0]
        counts = dict.fromkeys(COUNTERS, 0) | {r[0]: r[1] for r in self.db.execute("SELECT name, value FROM counters")}
        dead_now = self.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        return {"pending": depth, "pending_total": sum(depth.values()),
                "oldest_pending_age": None if oldest is None else max(0.0, now - oldest),
                "queued": counts["queued"], "sent": counts["sent"], "retried": counts["retried"],
                "dead": counts["dead"], "dead_letters": dead_now}

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._sends_since_prune = 0
        with self._tx() as db:
            age, rows = KEEP_SENT
            db.execute("DELETE FROM messages WHERE status = 'sent' AND (sent_at < ? OR id <= (SELECT id FROM messages"
                       " WHERE status = 'sent' ORDER BY id DESC LIMIT 1 OFFSET ?))", (now - age, rows))
            age, rows = KEEP_DEAD
            db.execute("DELETE FROM dead_letters WHERE died_at < ? OR id <= (SELECT id FROM dead_letters"
                       " ORDER BY id DESC LIMIT 1 OFFSET ?)", (now - age, rows))


EMPTY_SUMMARY = {"pending": {p.name.lower(): 0 for p in Priority}, "pending_total": 0, "oldest_pending_age": None,
                 "queued": 0, "sent": 0, "retried": 0, "dead": 0, "dead_letters": 0}


def salvage(corrupt: Path, fresh: sqlite3.Connection) -> str:
    """Queue again, in the fresh outbox, the pending messages SQLite can still read from a corrupt
    one (same keys: nothing is sent twice); say what was saved and what was lost."""
    try:
        db = sqlite3.connect(f"file:{corrupt}?mode=ro&immutable=1", uri=True)
        try:
            rows = db.execute("SELECT key, chat_id, priority, text, options, created_at FROM messages"
                              " WHERE status = 'pending' ORDER BY id").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return "its queued messages could not be read (how many is unknown): they will not be sent"
    fresh.executemany("INSERT OR IGNORE INTO messages(key, chat_id, priority, text, options, created_at)"
                      " VALUES (?, ?, ?, ?, ?, ?)", rows)
    return f"{len(rows)} queued message(s) could be read and were queued again"


def outbox_summary(settings: Any) -> dict[str, Any]:
    """Queue depth by priority and the sent/retried/dead counts, read-only and cheap (indexed
    counts); all zeros while data/outbox.db does not exist. For the page, /api/status, /metrics."""
    path = settings.outbox_db
    if not path.exists():
        return dict(EMPTY_SUMMARY)
    try:
        box = Outbox(path, readonly=True)
        try:
            return box.summary()
        finally:
            box.close()
    except sqlite3.Error:  # being created or locked for longer than the timeout: say nothing rather than fail
        return dict(EMPTY_SUMMARY) | {"error": "outbox database unreadable"}


# --- the API for handlers and other processes ------------------------------------------------------
class _Current:
    """The bot process's outbox and the callback that wakes its delivery worker."""

    box: Outbox | None = None
    wake: Any = None


def install(box: Outbox, wake: Any) -> None:
    """Called by the delivery worker when it starts (botkeeper.bot.delivery)."""
    _Current.box, _Current.wake = box, wake


def _box() -> Outbox:
    if _Current.box is None:
        from ..config import Settings

        _Current.box = Outbox(Settings.from_env().outbox_db)
    return _Current.box


async def send(chat_id: int, text: str, priority: Any = Priority.NORMAL, key: str | None = None,
               **send_message_kwargs: Any) -> str:
    """Queue one message; returns its key. Stored before this returns; delivered by the worker
    within Telegram's limits. Extra keyword arguments go to Bot.send_message (parse_mode, ...)."""
    return (await broadcast([chat_id], text, priority, keys=[key], **send_message_kwargs))[0]


async def broadcast(chat_ids: Iterable[int], text: str, priority: Any = Priority.LOW,
                    keys: Iterable[str | None] | None = None, **send_message_kwargs: Any) -> list[str]:
    """Queue the same text to many chats (low priority by default); returns the keys in order."""
    _check_options(send_message_kwargs)
    chat_ids = list(chat_ids)
    keys = derived_keys(list(keys) if keys is not None else [None] * len(chat_ids))
    out = _box().enqueue([(c, text) for c in chat_ids], priority, send_message_kwargs, keys)
    if _Current.wake is not None:
        _Current.wake()
    await asyncio.sleep(0)
    return out


# --- keys derived inside a handler ------------------------------------------------------------------
# A handler that runs again on the same update (its bot died or stopped before the update was done,
# docs/bot.md) queues the same messages again: each message queued without a key gets one derived from
# the update (id and message date) and its position in that handler run, so the second run's
# messages are the first run's, queued once. An explicit key wins.
_RUN: contextvars.ContextVar[list | None] = contextvars.ContextVar("botkeeper_outbox_run", default=None)


def begin_run(update_id: int, stamp: int = 0) -> contextvars.Token:
    """The update processor, as an update's handlers start (the context is that update's task)."""
    return _RUN.set([f"u{update_id}.{stamp}", 0])


def end_run(token: contextvars.Token) -> None:
    try:
        _RUN.reset(token)
    except ValueError:  # reset from another context (a handler's own task): nothing to undo here
        pass


def derived_keys(keys: list[str | None]) -> list[str | None]:
    """Each missing key, inside a handler run: "u<update_id>.<date>#<n>", n counting that run's messages."""
    run = _RUN.get()
    if run is None:
        return keys
    out = []
    for key in keys:
        if key is None:
            run[1] += 1
            key = f"{run[0]}#{run[1]}"
        out.append(key)
    return out


def enqueue_sync(settings: Any, chat_id: int, text: str, priority: Any = Priority.HIGH, key: str | None = None,
                 **send_message_kwargs: Any) -> str:
    """Queue from any process (no event loop), e.g. the alert sender; the bot's worker picks it up
    within OUTBOX_POLL_INTERVAL. Returns the key; `status(settings, key)` tells what became of it."""
    _check_options(send_message_kwargs)
    box = Outbox(settings.outbox_db)
    try:
        return box.enqueue([(chat_id, text)], priority, send_message_kwargs, [key])[0]
    finally:
        box.close()


def status(settings: Any, key: str) -> str | None:
    """pending, sent, dead, or None (unknown key)."""
    if not settings.outbox_db.exists():
        return None
    box = Outbox(settings.outbox_db, readonly=True)
    try:
        return box.status_of(key)
    finally:
        box.close()


def _check_options(options: Mapping[str, Any]) -> None:
    for name in ("chat_id", "text"):
        if name in options:
            raise TypeError(f"outbox: {name} is given once, as an argument of its own")
    try:
        json.dumps(dict(options))
    except (TypeError, ValueError):
        raise TypeError("outbox: send_message options must be JSON values (str, int, bool, dict, list)") from None
