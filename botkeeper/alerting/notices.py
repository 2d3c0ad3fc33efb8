"""Notices: events about the bundle's own files and disk (a corrupt database set aside, a disk too
full to write the heartbeat), a new kind of handler error (errorstats.py, alerted only with
ERROR_ALERTS=new), poison updates the bot quarantined and a rolled-back update (update.py), that
any process may record, and the alerter sends once each.

The recording process may not be the one that sends alerts (the CLI can find the database corrupt),
so the event itself is the message: its kind is the cause, and the last one alerted is remembered
in the same database (a fresh database after a corruption starts from zero, so its own
`corrupt-file` event is alerted).
"""

from __future__ import annotations

import socket
from typing import Any

from ..causes import Cause
from ..store import Store

KINDS = (Cause.CORRUPT_FILE.value, Cause.DISK_FULL.value, Cause.NEW_ERROR.value, Cause.POISON_UPDATE.value,
         Cause.ROLLBACK.value, Cause.STATE_UNWRITABLE.value, Cause.LOG_ROTATION.value)
SEEN = "notices"  # meta key: {"upto": last notice event id handled, "last": {kind: when last alerted}}
REPEAT = 3600.0  # one spell seen by two processes (the monitor and auto_recovery both see a full disk): one alert
# One event per fingerprint, quarantined update or rolled-back update: each is its own alert.
# A file set aside is set aside once (one mover, under a lock): each is its own alert too.
ONCE_EACH = (Cause.NEW_ERROR.value, Cause.POISON_UPDATE.value, Cause.ROLLBACK.value, Cause.CORRUPT_FILE.value)


def kinds_for(settings: Any) -> tuple[str, ...]:
    """The notice kinds this bundle alerts: new error fingerprints only with ERROR_ALERTS=new."""
    return tuple(k for k in KINDS if k != Cause.NEW_ERROR.value or settings.error_alerts == "new")


def due(store: Store, now: float, limit: int = 50,
        kinds: tuple[str, ...] = KINDS) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Notice events of `kinds` to alert now, oldest first, and the memory to save with `handled()`
    once they are queued (None: nothing new). A kind alerted less than REPEAT ago is skipped (but
    handled), except ONCE_EACH kinds."""
    seen = store.get_meta(SEEN, {})
    seen = seen if isinstance(seen, dict) else {}
    upto = start = seen.get("upto") if isinstance(seen.get("upto"), int) else 0
    last = dict(seen.get("last") or {})
    alert = []
    for event in reversed(store.events(kinds=KINDS, limit=limit)):
        if event["id"] <= upto:
            continue
        upto = event["id"]  # handled even when its kind is not alerted: turning a kind on later
        if event["kind"] not in kinds:  # does not alert its past
            continue
        if event["kind"] in ONCE_EACH or now - float(last.get(event["kind"], float("-inf"))) >= REPEAT:
            alert.append(event)
            last[event["kind"]] = now
    return alert, ({"upto": upto, "last": last} if upto != start else None)


def handled(store: Store, memory: dict[str, Any]) -> None:
    store.set_meta(SEEN, memory)


def alert_text(event: dict[str, Any]) -> str:
    cause = Cause.parse(event["kind"])
    return f"⚠️ botkeeper on {socket.gethostname()}: {cause.label}. {event['detail']}"
