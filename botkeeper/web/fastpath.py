"""/ping and /health without Flask's request machinery: they are what probes hammer.

A WSGI middleware in front of the Flask app answers GET and HEAD of exactly these two paths;
everything else (other methods included, which get Flask's 405) passes through. The bodies come
from the same functions the Flask views use, so both paths answer identically.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

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


class FastPaths:
    def __init__(self, app: Callable, health: HealthBody):
        self.app = app
        self.health = health

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
        else:
            return self.app(environ, start_response)
        start_response("200 OK" if code == 200 else "503 SERVICE UNAVAILABLE",
                       [("Content-Type", ctype), ("Content-Length", str(len(body)))] + COMMON)
        return [b""] if method == "HEAD" else [body]
