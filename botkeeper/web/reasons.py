"""Restart counts by (component, cause) for the `reason` label of botkeeper_restarts_total.

The label takes only `Cause` values (RESTART_CAUSES), so it stays bounded; the cause comes typed
from state.json's recent_restarts, never read out of a sentence.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Iterable, Mapping

from ..causes import RESTART_CAUSES, Cause

REASONS = tuple(c.value for c in RESTART_CAUSES)


def reason_label(cause: Any) -> str:
    parsed = Cause.parse(cause)
    return parsed.value if parsed in RESTART_CAUSES else Cause.UNKNOWN.value


class RestartCounter:
    """Monotonic restart counts by (component, cause), fed from state.json's recent_restarts.

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
                key = (entry.get("at"), entry.get("component"), entry.get("cause"), entry.get("by"))
                window.add(key)
                if key not in self._seen:
                    self._counts[(str(entry.get("component")), reason_label(entry.get("cause")))] += 1
            self._seen = window  # only the current window can reappear

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)
