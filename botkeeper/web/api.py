"""JSON API: {"success": true, "data": ...}. Restart and log lines need the Bearer token."""

from __future__ import annotations

import logging
import re

from flask import Blueprint, Response, current_app, jsonify, request

from ..supervise import control
from ..logs import Redactor, escape
from . import logtail, params
from .errors import error_response
from .status import ERROR_FIELDS

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api")

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Logs of botkeeper's own processes, besides the components'.
EXTRA_LOGS = ("supervisor", "auto_recovery", "runner", "combined")
MAX_LINES = 1000


def _ctx():
    return current_app.extensions["botkeeper"]


def ok(data) -> Response:
    return jsonify(success=True, data=data)


def _components() -> set[str]:
    ctx = _ctx()
    return {c.name for c in ctx.settings.components} | ctx.source.component_names()


def _client() -> str:
    return _ctx().gate.client(request.remote_addr or "?", request.headers.get("X-Forwarded-For"))


def _authorized() -> Response | None:
    client = _client()
    denial = _ctx().gate.check(client, request.headers.get("Authorization"))
    if denial is None:
        return None
    if denial.status == 429:  # one line a minute however hard someone guesses; the path escaped
        _ctx().gate.locked_out.note(f"latest from {escape(client)} (via {escape(request.remote_addr or '?')})"
                                    f" for {escape(request.path)}")
    return error_response(denial.status, denial.error, denial.headers)


@bp.get("/health")
def health() -> Response:
    _, body = _ctx().source.health()
    return ok(body)


@bp.get("/status")
def status() -> Response:
    """Without a token the public view (no chat or user ids); with the right one, everything."""
    ctx = _ctx()
    if request.headers.get("Authorization") is not None:
        denied = _authorized()
        if denied is not None:
            return denied
        return ok(ctx.memo("status-private", ctx.source.snapshot))
    return ok(ctx.memo("status", ctx.source.public_snapshot))


@bp.get("/metrics")
def metrics() -> Response:
    snap = _ctx().source.snapshot()
    counts = _ctx().source.restarts.counts()
    by_reason: dict[str, int] = {}
    for (_, cause), n in counts.items():
        by_reason[cause] = by_reason.get(cause, 0) + n
    return ok({
        "host": snap["host"],
        "bot": snap["bot"],
        "components": {c["name"]: {"memory_bytes": c["memory_bytes"], "cpu_percent": c["cpu_percent"],
                                   "uptime": c["uptime"], "restarts": c["restarts"]} for c in snap["components"]},
        "heartbeat_age": snap["heartbeat"]["age"],
        "last_poll_age": snap["heartbeat"]["last_poll_age"],
        "events": {"updates_handled": snap["heartbeat"]["updates_handled"],
                   "restarts_seen": sum(by_reason.values()), "restarts_by_reason": by_reason},
    })


@bp.get("/errors")
def errors() -> Response:
    """Error fingerprints, most frequent in the last day first. The last message (redacted, but it
    may quote what a user wrote) only with the Bearer token."""
    limit = params.whole_number("limit", 20, 1, 200)
    with_messages = request.headers.get("Authorization") is not None
    if with_messages:
        denied = _authorized()
        if denied is not None:
            return denied
    ctx = _ctx()
    rows = ctx.source.store.read(lambda store: store.errors(ctx.source.clock(), limit)) or []
    keep = ERROR_FIELDS + (("last_message",) if with_messages else ())
    return ok({"errors": [{k: r[k] for k in keep} for r in rows], "messages": with_messages})


@bp.post("/restart/<component>")
def restart(component: str) -> Response:
    denied = _authorized()
    if denied is not None:
        return denied
    if not NAME_RE.match(component) or component not in _components():
        return error_response(404, f"no component named {component!r}")
    try:
        data = control.call(_ctx().settings, "restart", name=component, cause="operator",
                            reason="requested from the web page", by="web")
    except control.SupervisorUnavailable as exc:
        log.warning("restart %s: supervisor unavailable: %s", component, exc)
        return error_response(503, f"the supervisor is not running, so nothing can be restarted ({exc})")
    except control.ControlError as exc:
        status = 404 if "unknown" in str(exc).lower() or "no component" in str(exc).lower() else 409
        return error_response(status, str(exc))
    log.info("restart %s: requested from the web page by %s", component, _client())
    # Only the state: the supervisor's snapshot also holds the command line, which may carry a secret.
    return ok({"component": component, "requested": True, "state": (data or {}).get("state")})


@bp.get("/logs/<component>")
def logs(component: str) -> Response:
    denied = _authorized()
    if denied is not None:
        return denied
    count = params.whole_number("lines", 100, 1, MAX_LINES)
    # The name picks from known files; a user-supplied path never reaches the file system.
    if not NAME_RE.match(component) or component not in _components() | set(EXTRA_LOGS):
        return error_response(404, f"no component named {component!r}")
    settings = _ctx().settings
    try:
        lines = logtail.tail(settings.logs_dir / f"{component}.log", count)
    except FileNotFoundError:
        return error_response(404, f"no log for {component} yet")
    except OSError as exc:
        return error_response(500, f"cannot read the log of {component}: {exc.strerror}")
    redact = Redactor(settings.secrets() + [settings.bot_token or ""])
    return ok({"component": component, "lines": [redact(line) for line in lines]})
