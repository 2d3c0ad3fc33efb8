"""The page's picture: bot memory over time, restarts as markers, bad periods as bands.

Rendered on the server as a small inline SVG (no JS chart library, no CDN). The time axis covers
the samples there are, from 10 minutes up to 24 hours, so a freshly started bundle still shows
a useful picture. Presentation attributes rather than CSS classes: the same markup works inline
in the page and on its own at /chart.svg.
"""

from __future__ import annotations

from html import escape
from typing import Any, Iterable, Sequence

from .history import DAY, Sample

WIDTH, MIN_WIDTH, MAX_WIDTH = 640, 280, 1600
H = 200
LEFT, RIGHT, TOP, BOTTOM = 40, 12, 22, 24
PLOT_H = H - TOP - BOTTOM
MIN_SPAN = 600.0
BUCKETS = 320  # points on the line at most, whatever the number of samples
MB = 1024 * 1024
BAND = {"down": "#e5484d", "degraded": "#f5a524"}
TEXT, GRID, LINE = "#98a2b3", "#2c3440", "#4cc38a"


def _nice(value: float) -> float:
    """The next 'round' number at or above value (1, 2, 2.5, 5 x 10^n)."""
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for mult in (1, 2, 2.5, 5, 10):
        if step * mult >= value:
            return step * mult
    return step * 10


def _ago(seconds: float) -> str:
    if seconds <= 0:
        return "now"
    if seconds >= 3600:
        return f"-{seconds / 3600:g}h" if seconds % 3600 == 0 else f"-{seconds / 3600:.1f}h"
    return f"-{round(seconds / 60, 1):g}m"


def _typical_step(samples: Sequence[Sample]) -> float:
    """Median spacing of the samples: history may come from a source sampled at another rate."""
    tail = samples[-200:]
    steps = sorted(b.at - a.at for a, b in zip(tail, tail[1:]))
    return steps[len(steps) // 2] if steps else 0.0


def render(now: float, samples: Sequence[Sample], restarts: Iterable[dict[str, Any]],
           limit_bytes: float | None = None, gap: float = 180.0, width: int = WIDTH) -> str:
    """SVG markup. `gap`: samples further apart than this are not joined (the web was down).

    `width` is the viewBox width: the page asks for its real pixel width, so the 11 px labels
    stay 11 px on a phone instead of being scaled down with the picture.
    """
    W = min(MAX_WIDTH, max(MIN_WIDTH, int(width)))
    PLOT_W = W - LEFT - RIGHT
    first = samples[0].at if samples else now
    gap = max(gap, 3 * _typical_step(samples))
    span = min(DAY, max(MIN_SPAN, now - first))
    start = now - span

    def x(t: float) -> float:
        return LEFT + (min(max(t, start), now) - start) / span * PLOT_W

    mems = [s.bot_memory for s in samples if s.bot_memory is not None]
    peak = max(mems, default=0)
    top = _nice(max(peak * 1.25, 8 * MB) / MB) * MB
    show_limit = bool(limit_bytes) and limit_bytes <= max(peak, MB) * 2.5
    if show_limit:
        top = max(top, _nice(limit_bytes * 1.1 / MB) * MB)

    def y(v: float) -> float:
        return TOP + PLOT_H - v / top * PLOT_H

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="Bot memory and restarts, last {_ago(span)[1:]}" class="chart" '
           f'data-samples="{len(samples)}" data-width="{W}" font-family="system-ui, sans-serif" font-size="11">']
    out += _bands(samples, x, now, gap)
    for k in range(5):  # horizontal grid with MB labels
        v = top * k / 4
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="{TEXT}">{v / MB:g}</text>')
    out.append(f'<text x="4" y="{TOP - 10}" fill="{TEXT}">MB</text>')
    for k in range(5):  # time axis, relative so it needs no time zone
        t = start + span * k / 4
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        out.append(f'<text x="{x(t):.1f}" y="{H - 6}" text-anchor="{anchor}" fill="{TEXT}">{_ago(now - t)}</text>')
    if show_limit:
        ly = y(limit_bytes)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{ly:.1f}" y2="{ly:.1f}" stroke="#e5484d" '
                   f'stroke-dasharray="6 4" stroke-width="1"/>')
        out.append(f'<text x="{W - RIGHT - 4}" y="{ly - 4:.1f}" text-anchor="end" fill="#e5484d">'
                   f'limit {limit_bytes / MB:g} MB</text>')
    out += _memory(samples, x, y, start, span, gap)
    out += _restarts(restarts, x, now, start)
    if not samples:
        out.append(f'<text x="{LEFT + PLOT_W / 2}" y="{TOP + PLOT_H / 2}" text-anchor="middle" '
                   f'fill="{TEXT}" font-size="13">collecting samples…</text>')
    out.append("</svg>")
    return "".join(out)


def _bands(samples: Sequence[Sample], x, now: float, gap: float) -> list[str]:
    """Merged stretches where the bundle was degraded or down."""
    out, run = [], None  # run: [overall, t_start, t_end]
    for i, s in enumerate(samples):
        nxt = samples[i + 1].at if i + 1 < len(samples) else now
        end = min(nxt, s.at + gap)
        if run and run[0] == s.overall and s.at - run[2] <= gap:
            run[2] = end
            continue
        if run and run[0] in BAND:
            out.append(_band(run, x))
        run = [s.overall, s.at, end]
    if run and run[0] in BAND:
        out.append(_band(run, x))
    return out


def _band(run: list, x) -> str:
    x0, x1 = x(run[1]), x(run[2])
    return (f'<rect x="{x0:.1f}" y="{TOP}" width="{max(1.0, x1 - x0):.1f}" height="{PLOT_H}" '
            f'fill="{BAND[run[0]]}" fill-opacity="0.18" class="band-{run[0]}"><title>{run[0]}</title></rect>')


def _memory(samples: Sequence[Sample], x, y, start: float, span: float, gap: float) -> list[str]:
    """Max memory per time bucket as a line (broken where there is no data) and a faint area."""
    width = span / BUCKETS
    buckets: dict[int, tuple[float, int]] = {}
    for s in samples:
        if s.bot_memory is None or s.at < start:
            continue
        b = int((s.at - start) / width)
        if b not in buckets or s.bot_memory > buckets[b][1]:
            buckets[b] = (s.at, s.bot_memory)
    points = [buckets[b] for b in sorted(buckets)]
    runs: list[list[tuple[float, int]]] = []
    for p in points:
        if runs and p[0] - runs[-1][-1][0] <= max(gap, 2 * width):
            runs[-1].append(p)
        else:
            runs.append([p])
    out = []
    base = y(0)
    for run in runs:
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
        if len(run) == 1:
            t, v = run[0]
            out.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{LINE}"/>')
            continue
        out.append(f'<polygon points="{x(run[0][0]):.1f},{base:.1f} {coords} {x(run[-1][0]):.1f},{base:.1f}" '
                   f'fill="{LINE}" fill-opacity="0.12"/>')
        out.append(f'<polyline points="{coords}" fill="none" stroke="{LINE}" stroke-width="2" '
                   f'stroke-linejoin="round" class="memory-line"/>')
    return out


def _restarts(restarts: Iterable[dict[str, Any]], x, now: float, start: float) -> list[str]:
    out = []
    for r in restarts:
        at = r.get("at")
        if at is None or at < start or at > now:
            continue
        xr = x(at)
        label = escape(f"{_ago(now - at).lstrip('-')} ago: {r.get('component')} restarted: {r.get('cause')}:"
                       f" {r.get('detail')}")
        color = "#f5a524" if r.get("planned") else "#e5484d"
        out.append(f'<g class="restart-marker"><title>{label}</title>'
                   f'<line x1="{xr:.1f}" x2="{xr:.1f}" y1="{TOP}" y2="{TOP + PLOT_H}" stroke="{color}" '
                   f'stroke-width="1.5" stroke-dasharray="3 3"/>'
                   f'<circle cx="{xr:.1f}" cy="{TOP + 3}" r="4" fill="{color}"/></g>')
    return out
