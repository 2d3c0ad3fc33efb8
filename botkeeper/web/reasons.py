"""Restart reasons, bucketed into a small fixed set so metric labels stay bounded.

The supervisor writes free-text reasons ("heartbeat stale for 63 s", "exited with code 1 after
2.0 s"); Prometheus needs a handful of label values, not one per distinct sentence.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Iterable, Mapping

BUCKETS = ("crash", "stale", "memory", "cpu", "uptime", "manual", "config", "other")
MANUAL_BY = {"web", "cli", "user", "admin", "telegram"}

# First match wins; config before crash because "needs configuration (exited with code 78)".
_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("manual", ("requested", "manual", "by hand")),
    ("config", ("config", "token")),
    ("stale", ("stale", "heartbeat", "hung", "stuck", "unresponsive")),
    ("memory", ("memory", "rss")),
    ("cpu", ("cpu",)),
    ("uptime", ("uptime", "planned", "scheduled")),
    ("crash", ("exit", "killed", "crash", "signal", "code", "died", "missing")),
)


def bucket(reason: str | None, by: str | None = None) -> str:
    if (by or "").lower() in MANUAL_BY:
        return "manual"
    text = (reason or "").lower()
    for name, words in _KEYWORDS:
        if any(w in text for w in words):
            return name
    return "other"


class RestartCounter:
    """Monotonic restart counts by (component, bucket), fed from state.json's recent_restarts.

    recent_restarts is a window of the last 50 entries, so counting it directly would go down
    when old entries fall out. This counts each entry once, the first time it is seen; a process
    restart resets the counts, which Prometheus counters handle.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple] = set()
        self._counts: Counter[tuple[str, str]] = Counter()

    def update(self, recent: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            window = set()
            for entry in recent:
                if not isinstance(entry, Mapping):
                    continue
                key = (entry.get("at"), entry.get("component"), entry.get("reason"), entry.get("by"))
                window.add(key)
                if key not in self._seen:
                    self._counts[(str(entry.get("component")), bucket(entry.get("reason"), entry.get("by")))] += 1
            self._seen = window  # only the current window can reappear

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)
