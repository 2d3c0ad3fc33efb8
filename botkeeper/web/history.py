"""Resource samples for the 24 h chart, behind a small seam.

`History` is what the chart needs: add a sample, list samples since a time. `RingHistory` keeps
them in this process; a SQLite-backed history (data/history.db, issue 6) can replace it by
offering the same two methods.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

log = logging.getLogger(__name__)
DAY = 86400.0
MAX_SAMPLES = 20_000  # bounds memory when sample_interval is tiny (tests)


@dataclass(frozen=True)
class Sample:
    at: float
    bot_memory: int | None  # bytes, whole process tree; None when the bot was not running
    bot_cpu: float | None
    overall: str  # healthy | degraded | down


class History(Protocol):
    def add(self, sample: Sample) -> None: ...

    def since(self, t: float) -> list[Sample]: ...


class RingHistory:
    def __init__(self, interval: float, span: float = DAY):
        self._samples: deque[Sample] = deque(maxlen=min(MAX_SAMPLES, int(span / interval) + 2))
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)

    def since(self, t: float) -> list[Sample]:
        with self._lock:
            return [s for s in self._samples if s.at >= t]


class Sampler(threading.Thread):
    """Daemon thread: one sample every `interval` seconds until `stop` is set."""

    def __init__(self, take: Callable[[], None], interval: float, stop: threading.Event):
        super().__init__(name="web-sampler", daemon=True)
        self._take, self._interval, self._halt = take, interval, stop

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self._take()
            except Exception:  # thread boundary: one bad sample must not end sampling
                log.exception("sampler: taking a resource sample failed")
            self._halt.wait(self._interval)
