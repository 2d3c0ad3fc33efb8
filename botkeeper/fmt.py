"""Number and time formatting shared by the CLI and the page (static/app.js mirrors it for refreshes)."""

from __future__ import annotations

import math
import time


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


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
