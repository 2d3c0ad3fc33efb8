"""Poison updates: strikes against an update that was in flight when its bot hung or died, and the
quarantine that ends the restart loop it would otherwise cause.

Telegram delivers an unconfirmed update again to every new bot, so an update whose handler blocks
the event loop or kills the process would keep the bot down forever. Each bot, as it starts, reads
what its predecessor left: the last heartbeat (with the updates it had in flight) and why it was
restarted (the bot component's `cause` in run/state.json). A failure (crash, stale heartbeat, ...)
gives each of those updates a strike; with QUARANTINE_AFTER strikes the update is skipped: confirmed
to Telegram without running handlers, and recorded. One strike is enough when the culprit is certain:
the bot's watchdog saw its event loop blocked while exactly that one update was in flight. With fewer strikes it is retried, so a hang
that was not the update's fault costs that user nothing.

The decisions here are pure functions over plain data (`strike`, `decide`); `PoisonBook` is the
small persisted record in data/poison.json (atomic writes), which survives every restart.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..causes import Cause
from ..fsutil import atomic_write_json

log = logging.getLogger("botkeeper.poison")

# Causes of a predecessor's end that blame the updates it was working on. Planned restarts
# (operator, deploy, max-uptime, shutdown) and Telegram's own trouble do not.
FAILURE_CAUSES = frozenset({Cause.CRASH, Cause.CRASH_LOOP, Cause.STALE_HEARTBEAT, Cause.LOOP_BLOCKED, Cause.HEARTBEAT_INVALID,
                            Cause.MEMORY, Cause.CPU, Cause.POISON_UPDATE, Cause.UNKNOWN})
KEEP_STRUCK = 200  # strike records kept (oldest dropped): a bounded file whatever happens
KEEP_QUARANTINED = 50  # quarantined updates listed (the events table keeps the full history)
STRIKE_TTL = 7 * 86400.0  # Telegram keeps an unconfirmed update for 24 h; a week is plenty
FIELDS = ("chat", "user", "kind", "handler", "frame")  # what is kept of an update: never its text


@dataclass(frozen=True)
class Decision:
    action: str  # "run" | "retry" | "quarantine"
    strikes: int


def blames(cause: Any) -> bool:
    """Does a predecessor's end for this cause count against its updates in flight?"""
    return cause is not None and Cause.parse(cause) in FAILURE_CAUSES


def in_flight_of(beat: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The well-formed in-flight entries of a heartbeat (a bring-your-own bot may write less)."""
    entries = (beat or {}).get("in_flight")
    if not isinstance(entries, list):
        return []
    out = []
    for entry in entries[:100]:
        if isinstance(entry, int) and not isinstance(entry, bool):
            entry = {"update_id": entry}  # heartbeat.beat(in_flight=[123, ...]) from any bot
        if isinstance(entry, dict) and isinstance(entry.get("update_id"), int) and not isinstance(entry["update_id"], bool):
            out.append(entry)
    return out


def strike(book: Mapping[str, Any], beat: Mapping[str, Any] | None, cause: Any, now: float) -> dict[str, Any]:
    """The book after a predecessor ended for `cause` with `beat` as its last heartbeat: each update
    it had in flight gets one strike when the cause is a failure. The same heartbeat is never
    counted twice (a bot that starts twice after one death, e.g. killed during its own start)."""
    new = {"struck": dict(book.get("struck") or {}), "quarantined": list(book.get("quarantined") or []),
           "counted_beat": book.get("counted_beat")}
    if "quarantined_total" in book:  # a strike never resets the count of quarantined updates
        new["quarantined_total"] = book["quarantined_total"]
    beat_id = None if not beat else [beat.get("pid"), beat.get("written_at")]
    if not blames(cause) or beat_id is None or beat_id == new["counted_beat"]:
        return new
    entries = in_flight_of(beat)
    if not entries:
        return new
    new["counted_beat"] = beat_id
    culprit = certain_culprit(beat, entries)
    for entry in entries:
        key = str(entry["update_id"])
        old = new["struck"].get(key) or {}
        new["struck"][key] = {
            "update_id": entry["update_id"], "strikes": int(old.get("strikes") or 0) + 1,
            "first_at": old.get("first_at") or now, "last_at": now, "cause": Cause.parse(cause).value,
        } | {f: _short(entry.get(f)) for f in FIELDS if entry.get(f) is not None} \
            | ({"certain": True} if entry["update_id"] == culprit else {})
    return _bounded(new, now)


def certain_culprit(beat: Mapping[str, Any], entries: list[dict[str, Any]]) -> int | None:
    """The update that certainly hung its bot: the bot's watchdog saw the event loop blocked with
    this update's handler on the blocked stack. Other updates in flight then were only awaiting
    (chats run at once): they cannot block a loop, so they are not suspects of this hang. None
    otherwise (a crash, a silent process, a block outside any handler): QUARANTINE_AFTER decides."""
    blocked = beat.get("blocked")
    if not isinstance(blocked, Mapping):
        return None
    culprit = blocked.get("update_id")
    if isinstance(culprit, bool) or not any(e.get("update_id") == culprit for e in entries):
        return None
    return culprit


def with_strikes(book: Mapping[str, Any], update_id: int, strikes: int) -> dict[str, Any]:
    """The book with the update's strikes raised to `strikes` (the total over all replicas, from
    Redis): never lowered, so a replica's own count still holds when Redis forgot."""
    new = dict(book)
    struck = dict(new.get("struck") or {})
    record = dict(struck.get(str(update_id)) or {"update_id": update_id, "strikes": 0})
    if strikes <= int(record.get("strikes") or 0):
        return new
    record["strikes"] = strikes
    struck[str(update_id)] = record
    new["struck"] = struck
    return new


def decide(book: Mapping[str, Any], update_id: int, quarantine_after: int) -> Decision:
    """What the bot does with an update it is about to handle."""
    record = (book.get("struck") or {}).get(str(update_id))
    strikes = int(record.get("strikes") or 0) if record else 0
    if strikes >= quarantine_after or (strikes and record.get("certain")):  # the first strike, when certain
        return Decision("quarantine", strikes)
    return Decision("retry" if strikes else "run", strikes)


def quarantine(book: Mapping[str, Any], update_id: int, seen: Mapping[str, Any], now: float) -> tuple[dict, dict]:
    """(the book with the update moved to the quarantined list, the record kept of it).
    `seen`: what the skipping bot knows of the update now (chat, user, command or kind)."""
    struck = dict(book.get("struck") or {})
    record = dict(struck.pop(str(update_id), None) or {"update_id": update_id, "strikes": 0})
    record |= {f: _short(seen[f]) for f in FIELDS if seen.get(f) is not None and record.get(f) is None}
    record["quarantined_at"] = now
    listed = [q for q in book.get("quarantined") or [] if q.get("update_id") != update_id] + [record]
    before = book.get("quarantined_total")
    before = before if isinstance(before, int) and not isinstance(before, bool) else 0
    # Never below what is listed: a book written before the total was kept still counts up.
    total = max(before, len(book.get("quarantined") or [])) + 1
    return {"struck": struck, "quarantined": listed[-KEEP_QUARANTINED:], "counted_beat": book.get("counted_beat"),
            "quarantined_total": total}, record


def describe(record: Mapping[str, Any]) -> str:
    """One line about a quarantined update: chat, command or kind, handler, the user's frame."""
    what = record.get("kind") or "update"
    text = f"update {record.get('update_id')} ({what}) in chat {record.get('chat', '?')}"
    if record.get("handler"):
        text += f", handler {record['handler']}"
    if record.get("frame"):
        text += f" at {record['frame']}"
    cause = Cause.parse(record.get("cause")) if record.get("cause") else None
    return text + f": quarantined after {record.get('strikes', 0)} strike(s)" + (f" ({cause.label})" if cause else "")


def _short(value: Any) -> Any:
    return value[:200] if isinstance(value, str) else value


def _bounded(book: dict[str, Any], now: float) -> dict[str, Any]:
    fresh = [(k, v) for k, v in book["struck"].items() if now - float(v.get("last_at") or now) <= STRIKE_TTL]
    fresh.sort(key=lambda kv: float(kv[1].get("last_at") or 0))
    book["struck"] = dict(fresh[-KEEP_STRUCK:])
    return book


class PoisonBook:
    """data/poison.json: strikes and quarantined updates. Written by the bot only, atomically."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): starting a fresh record of strikes", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, book: Mapping[str, Any]) -> None:
        try:
            atomic_write_json(self.path, dict(book))
        except OSError as exc:  # a full disk must not stop the bot; strikes are then not remembered
            log.error("cannot write %s: %s", self.path, exc.strerror or exc)


def quarantined(path: Path) -> list[dict[str, Any]]:
    """The quarantined updates listed in data/poison.json, newest first (page, API, history)."""
    items = PoisonBook(path).load().get("quarantined")
    return [q for q in reversed(items) if isinstance(q, dict)] if isinstance(items, list) else []


def quarantine_summary(path: Path, limit: int = 20) -> dict[str, Any]:
    """For /api/status, the page and /metrics: how many were quarantined ever, and the latest."""
    book = PoisonBook(path).load()
    total = book.get("quarantined_total")
    items = quarantined(path)
    return {"total": max(total, len(items)) if isinstance(total, int) else len(items),
            "latest": [q | {"summary": describe(q)} for q in items[:limit]]}
