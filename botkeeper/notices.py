"""Notices: events about the bundle's own files and disk (a corrupt database set aside, a disk too
full to write the heartbeat) that any process may record, and the alerter sends once each.

The recording process may not be the one that sends alerts (the CLI can find the database corrupt),
so the event itself is the message: its kind is the cause, and the last one alerted is remembered
in the same database (a fresh database after a corruption starts from zero, so its own
`corrupt-file` event is alerted).
"""

from __future__ import annotations

import socket
from typing import Any

from .causes import Cause
from .store import Store

KINDS = (Cause.CORRUPT_FILE.value, Cause.DISK_FULL.value)
SENT_UPTO = "notices_sent_upto"  # meta key: id of the last notice event turned into an alert


def pending(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """Notice events not alerted yet, oldest first."""
    done = store.get_meta(SENT_UPTO, 0)
    done = done if isinstance(done, int) else 0
    return [e for e in reversed(store.events(kinds=KINDS, limit=limit)) if e["id"] > done]


def alert_text(event: dict[str, Any]) -> str:
    cause = Cause.parse(event["kind"])
    return f"⚠️ botkeeper on {socket.gethostname()}: {cause.label}. {event['detail']}"


def mark_sent(store: Store, event_id: int) -> None:
    store.set_meta(SENT_UPTO, event_id)
