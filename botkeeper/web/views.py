"""Public, read-only routes: the page, /ping, /health and the chart. Every GET also answers HEAD."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from prometheus_client import CONTENT_TYPE_LATEST

from . import chart, fmt
from .metrics import exposition

bp = Blueprint("views", __name__)


def _ctx():
    return current_app.extensions["botkeeper"]


@bp.get("/ping")
def ping() -> Response:
    # Touches nothing: an uptime pinger that only keeps the VM awake must always get 200.
    return Response("pong", mimetype="text/plain")


@bp.get("/health")
def health() -> Response:
    _, body = _ctx().source.health()
    resp = jsonify(body)
    resp.status_code = 200 if body["healthy"] else 503
    return resp


def render_chart(width: int = chart.WIDTH) -> str:
    ctx = _ctx()
    now, samples, restarts = ctx.source.chart_data()
    limit = ctx.settings.max_memory_mb * 1024 * 1024
    return chart.render(now, samples, restarts, limit, gap=max(3 * ctx.settings.sample_interval, 5.0),
                        width=width)


@bp.get("/metrics")
def metrics() -> Response:
    return Response(exposition(_ctx().registry), content_type=CONTENT_TYPE_LATEST)


@bp.get("/chart.svg")
def chart_svg() -> Response:
    raw = request.args.get("w", "")
    width = int(raw) if raw.isdigit() and len(raw) < 6 else chart.WIDTH  # clamped by render
    return Response(render_chart(width), mimetype="image/svg+xml")


@bp.get("/")
def index() -> Response:
    ctx = _ctx()
    snap = ctx.source.snapshot()
    html = render_template("index.html", s=snap, chart_svg=render_chart(), refresh=ctx.refresh_seconds,
                           f=fmt, noscript_refresh=max(10, int(ctx.refresh_seconds * 6)))
    return Response(html, mimetype="text/html")
