"""/ping, /health and /live without Flask's request machinery: they are what probes hammer.

A WSGI middleware in front of the Flask app answers GET and HEAD of exactly these paths;
everything else (other methods included, which get Flask's 405) passes through. The bodies come
from the same functions the Flask views use, so both paths answer identically.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterable

from ..supervise import control

from .status import StatusSource

PONG = b"pong"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
# Same protective headers as every Flask response (errors.security_headers).
COMMON = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
          ("Referrer-Policy", "no-referrer")]


class HealthBody:
    """The /health answer as (status code, JSON bytes), serialized once per memoized verdict."""

    def __init__(self, source: StatusSource):
        self.source = source
        self._last: tuple[Any, bytes] | None = None

    def __call__(self) -> tuple[int, bytes]:
        _, body = self.source.health()
        last = self._last
        if last is None or last[0] is not body:
            last = (body, json.dumps(body, separators=(",", ":")).encode())
            self._last = last
        return (200 if body["healthy"] else 503), last[1]


class LiveBody:
    """/live, the liveness probe: fails only when the bundle cannot recover by itself, that is
    when the supervisor is gone or does not answer on its control socket. A crashed bot or a
    Telegram outage is the supervisor's job (and /health's), not a reason to kill the container.
    One control-socket round trip per second at most, however often the probe asks."""

    def __init__(self, settings: Any, ttl: float = 1.0, timeout: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.ttl, self.timeout, self.clock = settings, ttl, timeout, clock
        self._last: tuple[float, int, bytes] | None = None

    def __call__(self) -> tuple[int, bytes]:
        now = self.clock()
        last = self._last
        if last is not None and now - last[0] < self.ttl:
            return last[1], last[2]
        try:
            state = control.call(self.settings, "status", timeout=self.timeout)
            code, body = 200, {"live": True, "supervisor_pid": (state.get("supervisor") or {}).get("pid")}
        except control.SupervisorUnavailable as exc:
            code, body = 503, {"live": False, "reason": str(exc)}
        except control.ControlError as exc:  # it answered: alive, if unhappy with the request
            code, body = 200, {"live": True, "detail": str(exc)}
        data = json.dumps(body, separators=(",", ":")).encode()
        self._last = (now, code, data)
        return code, data


class FastPaths:
    def __init__(self, app: Callable, health: HealthBody, live: LiveBody | None = None):
        self.app = app
        self.health = health
        self.live = live

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            return self.app(environ, start_response)
        path = environ.get("PATH_INFO")
        if path == "/ping":
            code, ctype, body = 200, TEXT, PONG
        elif path == "/health":
            code, body = self.health()
            ctype = JSON
        elif path == "/live" and self.live is not None:
            code, body = self.live()
            ctype = JSON
        else:
            return self.app(environ, start_response)
        start_response("200 OK" if code == 200 else "503 SERVICE UNAVAILABLE",
                       [("Content-Type", ctype), ("Content-Length", str(len(body)))] + COMMON)
        return [b""] if method == "HEAD" else [body]
