"""Public, read-only routes: the page, /ping, /health and the chart. Every GET also answers HEAD."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template

from prometheus_client import CONTENT_TYPE_LATEST

from .. import fmt
from . import chart, params
from .fastpath import PONG
from .metrics import exposition

bp = Blueprint("views", __name__)
MAX_ASKED_WIDTH = 10_000


def _ctx():
    return current_app.extensions["botkeeper"]


# GET/HEAD of /ping and /health are answered by fastpath.FastPaths before Flask; these views
# declare the routes (so other methods get 405) and give the same answers if reached.
@bp.get("/ping")
def ping() -> Response:
    # Touches nothing: an uptime pinger that only keeps the VM awake must always get 200.
    return Response(PONG, mimetype="text/plain")


@bp.get("/health")
def health() -> Response:
    code, body = _ctx().health_body()
    return Response(body, status=code, mimetype="application/json")


def render_chart(width: int = chart.WIDTH) -> str:
    """The chart, redrawn at most every few seconds per width: with a day of samples drawing
    takes milliseconds, and samples arrive once per sample_interval anyway."""
    ctx = _ctx()
    now = ctx.source.clock()
    ttl = min(10.0, ctx.settings.sample_interval)
    cached = ctx.charts.get(width)
    if cached is not None and 0 <= now - cached[0] < ttl:
        return cached[1]
    now, samples, restarts = ctx.source.chart_data()
    limit = ctx.settings.max_memory_mb * 1024 * 1024
    svg = chart.render(now, samples, restarts, limit, gap=max(3 * ctx.settings.sample_interval, 5.0),
                       width=width)
    if len(ctx.charts) > 32:  # widths come from clients: keep the cache small
        ctx.charts.clear()
    ctx.charts[width] = (now, svg)
    return svg


@bp.get("/metrics")
def metrics() -> Response:
    ctx = _ctx()
    return Response(ctx.memo("metrics", lambda: exposition(ctx.registry)), content_type=CONTENT_TYPE_LATEST)


@bp.get("/chart.svg")
def chart_svg() -> Response:
    # Any sane pixel width is fine (a phone may ask for less than MIN_WIDTH): render clamps it.
    width = params.whole_number("w", chart.WIDTH, 1, MAX_ASKED_WIDTH)
    width = min(chart.MAX_WIDTH, max(chart.MIN_WIDTH, width))  # and the cache holds few widths
    return Response(render_chart(width), mimetype="image/svg+xml")


@bp.get("/")
def index() -> Response:
    ctx = _ctx()

    def build() -> str:
        return render_template("index.html", s=ctx.source.public_snapshot(), chart_svg=render_chart(),
                               refresh=ctx.refresh_seconds, f=fmt,
                               noscript_refresh=max(10, int(ctx.refresh_seconds * 6)))

    return Response(ctx.memo("page", build), mimetype="text/html")
