"""Resource samples for the 24 h chart, behind a small seam.

`History` is what the chart needs: add a sample, list samples since a time. `StoreHistory` (what
keep_alive.py serves) reads them from data/history.db, written by the monitor process, so the
chart survives a restart of the web; `RingHistory` keeps them in this process, filled by the
web's own `Sampler` thread (the `create_app` default, for tests and embedding without a bundle).
`StoreReader` is the short-lived read access to that database shared with the uptime summary.
"""

from __future__ import annotations

import bisect
import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

from ..store import UPTIME_WINDOWS, Store

log = logging.getLogger(__name__)
T = TypeVar("T")
DAY = 86400.0
MAX_SAMPLES = 20_000  # bounds memory when sample_interval is tiny (tests)


@dataclass(frozen=True)
class Sample:
    at: float
    bot_memory: int | None  # bytes, whole process tree; None when the bot was not running
    bot_cpu: float | None
    overall: str  # healthy | degraded | down


class History(Protocol):
    sampled_elsewhere: bool  # True: another process writes the samples; the web runs no Sampler

    def add(self, sample: Sample) -> None: ...

    def since(self, t: float) -> list[Sample]: ...


class RingHistory:
    sampled_elsewhere = False

    def __init__(self, interval: float, span: float = DAY):
        self._samples: deque[Sample] = deque(maxlen=min(MAX_SAMPLES, int(span / interval) + 2))
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)

    def since(self, t: float) -> list[Sample]:
        with self._lock:
            return [s for s in self._samples if s.at >= t]


class StoreReader:
    """Reads data/history.db with a Store opened and closed per call: a Store holds one sqlite3
    connection, which waitress's threads must not share. The web never creates the database (the
    supervisor and monitor do); a missing or unreadable one gives None, logged once per spell."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._failing: str | None = None  # what went wrong last, while it keeps going wrong

    def read(self, what: Callable[[Store], T]) -> T | None:
        if not self.path.is_file():
            self._failed("does not exist yet", logging.INFO)
            return None
        store = Store(self.path, readonly=True)
        try:
            result = what(store)
        except (sqlite3.Error, OSError) as exc:
            self._failed(f"cannot be read: {exc}", logging.WARNING)
            return None
        finally:
            store.close()
        if self._failing is not None:
            log.info("history: %s is readable again", self.path)
            self._failing = None
        return result

    def _failed(self, why: str, level: int) -> None:
        if self._failing is None:
            log.log(level, "history: %s %s; the chart and uptime stay empty until it can be read", self.path, why)
        self._failing = why


def no_summary() -> dict[str, Any]:
    """Store.summary()'s shape when there is no database to read."""
    return {"uptime": {label: None for label, _ in UPTIME_WINDOWS},
            "observed_seconds": {label: 0.0 for label, _ in UPTIME_WINDOWS}, "open_incident": None}


def down_spans(incidents: list[dict[str, Any]], now: float) -> list[tuple[float, float]]:
    """Incident intervals merged and sorted; an open incident runs until now."""
    spans = sorted((i["started_at"], now if i["ended_at"] is None else i["ended_at"]) for i in incidents)
    merged: list[tuple[float, float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


class StoreHistory:
    """The bot's samples from data/history.db, "down" inside an incident, else "healthy"."""

    sampled_elsewhere = True

    def __init__(self, settings: Any, clock: Callable[[], float] = time.time):
        self.reader = StoreReader(settings.history_db)
        self.clock = clock

    def add(self, sample: Sample) -> None:
        """Nothing: the monitor process is the single writer of samples (one per SAMPLE_INTERVAL),
        so the web neither samples nor writes."""

    def since(self, t: float) -> list[Sample]:
        rows = self.reader.read(lambda store: (store.samples(t, "bot"), store.incidents(t, 100_000, "bot")))
        if rows is None:
            return []
        samples, incidents = rows
        spans = down_spans(incidents, self.clock())
        starts = [a for a, _ in spans]
        out = []
        for r in samples:
            i = bisect.bisect_right(starts, r["at"]) - 1
            overall = "down" if i >= 0 and r["at"] <= spans[i][1] else "healthy"
            out.append(Sample(r["at"], r["rss_bytes"], r["cpu_percent"], overall))
        return out


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
