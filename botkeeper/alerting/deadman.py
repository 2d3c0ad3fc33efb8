"""The dead man's switch: someone outside the machine hears when the pings stop.

Every alert comes from the machine it watches, so a dead, suspended or cut-off VM says nothing. With
DEADMAN_URL set, the monitor pings a service (healthchecks.io, an Uptime Kuma push monitor, a Better
Stack heartbeat) while the verdict is healthy or degraded and reports a failure while it is down or
needs configuration; the service alerts when the pings stop. docs/alerts.md has the URL shapes.

- `decide()` is pure: from what was last queued, the verdict and the clock, the ping due now (if any).
- `request_for()` is pure: the HTTP request a ping is for this service (healthchecks.io's
  `<url>`, `<url>/fail`, `<url>/start`, which Better Stack shares; Uptime Kuma's `?status=up|down&msg=`).
- `Sender` sends from a worker thread behind a bounded queue, so a dead network never stalls the
  monitor's loop; each answer (or its failure) is counted and written to run/deadman.json, which
  the snapshot reads for the page, `status` and /metrics. Failures are shown, never alerted (the
  service itself is the alert), and the URL is never logged (it is the secret).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import runfiles
from ..fsutil import atomic_write_json

log = logging.getLogger("deadman")

ALIVE = ("healthy", "degraded")  # the bot works: "I am alive"
DOWN = ("down", "needs-config")  # the bot does not: "I failed, and why"
PING_TIMEOUT = (3.05, 5.0)  # connect, read: a few seconds, in the worker thread
QUEUE_SIZE = 4  # pings waiting behind a slow one; more are dropped (counted), the next tick sends again
MESSAGE_LIMIT = 2000  # bytes of cause and detail in a /fail body (healthchecks.io keeps 100 kB)


# --- the decision (pure) --------------------------------------------------------------------------
@dataclass(frozen=True)
class Ping:
    kind: str  # start | ok | fail
    overall: str = ""
    message: str = ""  # "cause: detail" for a fail


@dataclass(frozen=True)
class Memory:
    """What was last queued. A ping is "sent" when queued: its answer does not change the plan
    (a lost ping is followed by the next one an interval later, which is what the service expects)."""

    last_kind: str | None = None
    last_at: float | None = None
    last_cause: str | None = None  # "overall/cause" of the last fail: a new one is sent at once
    started: bool = False


def decide(memory: Memory, overall: str, cause: str | None, detail: str, now: float, interval: float,
           want_start: bool = False) -> tuple[Memory, Ping | None]:
    """The ping due now, if any. Healthy or degraded: "ok" every `interval`, at once after a fail
    (the recovery). Down or needs-config: "fail" at once on the first tick that sees it, again when
    the cause changes (not the detail: its figures change every tick), and every `interval` while it
    lasts. Starting or stopped: nothing (a start
    that never ends lets the service's grace run out, which is the truth)."""
    if want_start and not memory.started:
        return replace(memory, started=True), Ping("start", overall)
    if overall in ALIVE:
        kind, message = "ok", ""
    elif overall in DOWN:
        kind, message = "fail", f"{overall}: {cause or 'unknown'}: {detail}".strip(": ")
    else:
        return memory, None
    why = f"{overall}/{cause}" if kind == "fail" else None
    due = (memory.last_kind != kind or memory.last_at is None or now - memory.last_at >= interval
           or why != memory.last_cause)
    if not due:
        return memory, None
    return replace(memory, last_kind=kind, last_at=now, last_cause=why), Ping(kind, overall, message)


def service(url: str) -> str:
    """Which convention the URL speaks: `uptime-kuma` (a push URL) or `healthchecks` (healthchecks.io,
    Better Stack, Cronitor's and most others' /fail and /start)."""
    return "uptime-kuma" if "/api/push/" in urlsplit(url).path else "healthchecks"


def request_for(url: str, ping: Ping) -> tuple[str, str, bytes | None] | None:
    """(method, url, body) for this ping, or None when the service has no such ping (Kuma's start)."""
    parts = urlsplit(url)
    if service(url) == "uptime-kuma":
        if ping.kind == "start":
            return None
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("status", "msg")]
        up = ping.kind == "ok"
        query += [("status", "up" if up else "down"), ("msg", "OK" if up else ping.message[:250])]
        return "GET", urlunsplit(parts._replace(query=urlencode(query))), None
    if ping.kind == "ok":
        return "GET", url, None
    path = parts.path.rstrip("/") + "/" + ping.kind  # /start or /fail, before the query (?rid=...)
    target = urlunsplit(parts._replace(path=path))
    if ping.kind == "start":
        return "GET", target, None
    return "POST", target, ping.message.encode("utf-8", "replace")[:MESSAGE_LIMIT]


# --- the sender (a worker thread) -----------------------------------------------------------------
class Sender:
    """Queues pings from the monitor's loop and sends them one by one from a daemon thread."""

    def __init__(self, settings: Any, redact: Callable[[str], str], clock: Callable[[], float] = time.time):
        self.settings = settings
        self._url: str = settings.deadman_url
        self.redact = redact
        self.clock = clock
        self.path = runfiles.deadman_file(settings)
        self.queue: queue.Queue[Ping | None] = queue.Queue(QUEUE_SIZE)
        self.stats: dict[str, Any] = {
            "service": service(self._url), "interval": settings.deadman_interval, "pid": os.getpid(),
            "since": clock(), "sent": 0, "ok": 0, "failed": 0, "dropped": 0, "last": None, "last_ok_at": None,
            "last_failed": None,
        }
        self._lock = threading.Lock()
        self._failing = False
        self._thread = threading.Thread(target=self._work, name="deadman", daemon=True)
        self._write()
        self._thread.start()

    def submit(self, ping: Ping) -> bool:
        """Never blocks: a full queue (the network hangs) drops the ping and counts it."""
        try:
            self.queue.put_nowait(ping)
            return True
        except queue.Full:
            with self._lock:
                self.stats["dropped"] += 1
            self._write()
            return False

    def close(self, timeout: float = 1.0) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            ping = self.queue.get()
            if ping is None:
                return
            try:
                self._send(ping)
            except Exception as exc:  # thread boundary: the monitor goes on, the failure is shown
                self._record(ping, False, f"{type(exc).__name__}", 0.0)

    def _send(self, ping: Ping) -> None:
        req = request_for(self._url, ping)
        if req is None:
            return
        import requests

        from .alert_channels import http_error

        method, url, body = req
        began = time.monotonic()
        headers = {"Content-Type": "text/plain; charset=utf-8"} if body is not None else {}
        try:
            resp = requests.request(method, url, data=body, headers=headers, timeout=PING_TIMEOUT)
        except requests.RequestException as exc:
            self._record(ping, False, http_error(exc, self.redact), time.monotonic() - began)
            return
        ok = 200 <= resp.status_code < 300
        self._record(ping, ok, f"HTTP {resp.status_code}", time.monotonic() - began)

    def _record(self, ping: Ping, ok: bool, answer: str, took: float) -> None:
        now = self.clock()
        last = {"kind": ping.kind, "at": now, "ok": ok, "answer": answer, "took_ms": round(took * 1000, 1),
                "overall": ping.overall}
        with self._lock:
            s = self.stats
            s["sent"] += 1
            s["ok" if ok else "failed"] += 1
            s["last"] = last
            if ok:
                s["last_ok_at"] = now
            else:
                s["last_failed"] = last
        self._write()
        # One line when pings start failing and one when they work again: the page shows the rest.
        if not ok and not self._failing:
            log.warning("dead man's switch: the %s ping was not answered: %s (counted and shown, not alerted)",
                        ping.kind, answer)
        elif ok and self._failing:
            log.info("dead man's switch: pings are answered again (%s ping: %s)", ping.kind, answer)
        elif ok and ping.kind != "ok":
            log.info("dead man's switch: %s ping answered %s", ping.kind, answer)
        self._failing = not ok

    def _write(self) -> None:
        with self._lock:
            doc = dict(self.stats)
        try:
            atomic_write_json(self.path, doc)
        except OSError as exc:  # the page loses the figures for a moment; the pings go on
            log.debug("dead man's switch: could not write %s: %s", self.path.name, exc)


class DeadMan:
    """The monitor's one call per tick: `step(now, verdict)` decides and hands the ping to the sender."""

    def __init__(self, settings: Any, redact: Callable[[str], str], clock: Callable[[], float] = time.time):
        self.settings = settings
        self.redact = redact
        self.memory = Memory()
        self.sender = Sender(settings, redact, clock)
        log.info("dead man's switch: pinging a %s-style URL every %g s while the bot is healthy%s",
                 service(settings.deadman_url), settings.deadman_interval,
                 ", /start first" if settings.deadman_start else "")

    def step(self, now: float, verdict: Any) -> Ping | None:
        cause = verdict.cause.value if verdict.cause else None
        self.memory, ping = decide(self.memory, verdict.overall, cause, self.redact(verdict.detail or ""), now,
                                   self.settings.deadman_interval, self.settings.deadman_start)
        if ping is not None:
            self.sender.submit(ping)
        return ping

    def close(self) -> None:
        self.sender.close()
