"""web: the status page, health API and metrics (served by keep_alive.py through waitress). Imports
the base, health, supervise (the control channel) and bot (outbox and poison summaries), never alerting.

`create_app(settings, clock=..., history=...)` builds the Flask app; every data source is the
bundle's own files (run/state.json, bot_health.txt, logs/) plus psutil, so tests drive it by
writing those files. Background work (the chart sampler, the self-pinger) starts only through
`start_background(app)`, which keep_alive.py calls and tests call when they want it. keep_alive.py
passes `history=StoreHistory(settings)`: the monitor samples into data/history.db, so the web runs
no sampler of its own; the default in-memory history is sampled by this process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Flask

from .auth import TokenGate
from .fastpath import FastPaths, HealthBody, LiveBody
from .history import History, Sampler
from .metrics import make_registry
from .status import StatusSource

MAX_BODY = 64 * 1024  # nothing here takes a body worth more


@dataclass
class WebContext:
    settings: Any
    source: StatusSource
    gate: TokenGate
    registry: Any
    refresh_seconds: float
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    charts: dict[int, tuple[float, str]] = field(default_factory=dict)  # width -> (drawn at, svg)
    health_body: Any = None  # fastpath.HealthBody
    memos: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (health reading, value)

    def memo(self, name: str, build: Callable[[], Any]) -> Any:
        """`build()`, reused while the health reading is the same object (files unchanged and
        the same 1/4 s of the clock): a page hit 200 times a second is built a few times."""
        key = self.source.health()
        cached = self.memos.get(name)
        if cached is not None and cached[0] is key:
            return cached[1]
        value = build()
        self.memos[name] = (key, value)
        return value


def _log_exception(app: Flask):
    def log_exception(exc_info) -> None:  # noqa: ANN001 - Flask's signature
        from flask import request

        from ..logs import escape

        app.logger.error("Exception on %s [%s]", escape(request.path), escape(request.method), exc_info=exc_info)

    return log_exception


def create_app(settings: Any, *, clock: Callable[[], float] = time.time, history: History | None = None,
               refresh_seconds: float = 5.0, cache_ttl: float = 1.0) -> Flask:
    app = Flask(__name__)
    app.log_exception = _log_exception(app)  # Flask's own line quotes the raw request path
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY)
    app.json.sort_keys = False  # keep the documented field order
    source = StatusSource(settings, clock=clock, history=history, cache_ttl=cache_ttl)
    health_body = HealthBody(source)
    app.extensions["botkeeper"] = WebContext(
        settings=settings,
        source=source,
        gate=TokenGate(settings.restart_token, clock, trusted_proxies=settings.trusted_proxies),
        registry=make_registry(source),
        refresh_seconds=refresh_seconds,
        health_body=health_body,
    )
    app.wsgi_app = FastPaths(app.wsgi_app, health_body, LiveBody(settings))  # type: ignore[method-assign]
    from . import api, errors, views

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    errors.install(app)
    return app


def context(app: Flask) -> WebContext:
    return app.extensions["botkeeper"]


def start_background(app: Flask) -> WebContext:
    """Start the chart sampler (unless another process samples the history) and, when enabled,
    the self-pinger as daemon threads."""
    ctx = context(app)
    if not ctx.source.history.sampled_elsewhere:
        ctx.threads.append(Sampler(ctx.source.take_sample, ctx.settings.sample_interval, ctx.stop))
    if ctx.settings.self_ping_enabled:
        from .selfping import SelfPinger  # imports requests (~5 MB): only when pinging

        ctx.threads.append(SelfPinger(ctx.settings.self_ping_url, ctx.settings.self_ping_interval, ctx.stop))
    for thread in ctx.threads:
        thread.start()
    return ctx


def stop_background(app: Flask, timeout: float = 2.0) -> None:
    ctx = context(app)
    ctx.stop.set()
    for thread in ctx.threads:
        thread.join(timeout)
