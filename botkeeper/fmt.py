"""Number and time formatting shared by the CLI and the page (web/static/app.js mirrors `duration` "short" for refreshes)."""

from __future__ import annotations

import math
import time


_UNITS = {"short": ("d", "h", "m", "s"), "words": (" d", " h", " min", " s")}


def duration(seconds: float | None, style: str = "short") -> str:
    """The one duration formatter. "short" for tables and the page (2m 5s, 3h 4m), "words" for
    sentences in alerts and history (2 min 5 s, 2.5 s: tenths under 10 s). Whole seconds are cut,
    never rounded, so every surface shows the same figure for the same moment."""
    if seconds is None:
        return "–"
    day, hour, minute, sec = _UNITS[style]
    seconds = max(0.0, float(seconds))
    if style == "words" and seconds < 10:
        return f"{seconds:.1f}{sec}"
    s = int(seconds)
    if s < 60:
        return f"{s}{sec}"
    if s < 3600:
        return f"{s // 60}{minute} {s % 60}{sec}"
    if s < 86400:
        return f"{s // 3600}{hour} {s % 3600 // 60}{minute}"
    return f"{s // 86400}{day} {s % 86400 // 3600}{hour}"


def size(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def percent(p: float | None) -> str:
    return "–" if p is None else f"{p:.1f}%"


def uptime(p: float | None) -> str:
    """Rounded down, so 99.996% shows as 99.99%, not as a perfect 100%."""
    return "–" if p is None else f"{math.floor(p * 100 + 1e-9) / 100:g}%"


def clock(t: float | None) -> str:
    """UTC wall time; the page's script rewrites it in the viewer's time zone."""
    return "–" if t is None else time.strftime("%H:%M:%S UTC", time.gmtime(t))


HEARTBEAT_WORDS = {  # verdict.HeartbeatView.status in plain words for the page (app.js has the same map)
    "fresh": "fresh", "late": "late", "stale": "stale: the bot may be hung", "missing": "not written yet",
    "foreign": "left by an earlier bot run", "invalid": "unreadable", "disabled": "not used by this bot",
}


def heartbeat_words(status: str | None) -> str:
    return HEARTBEAT_WORDS.get(status or "", status or "–")
