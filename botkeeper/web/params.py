"""Query parameters, each checked: a bad one is a 400 naming it and what it accepts, never a 500.

Only ASCII digits count: `"²".isdigit()` is true and `int("²")` raises, which is how a public
`/chart.svg?w=%C2%B2` used to become a 500 with a traceback in logs/web.log.
"""

from __future__ import annotations

from flask import request

from .errors import BadParam


def whole_number(name: str, default: int, lo: int, hi: int) -> int:
    """`?name=N` with lo <= N <= hi; `default` when the parameter is absent."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(hi))) or not lo <= int(raw) <= hi:
        raise BadParam(f"{name} must be a whole number from {lo} to {hi}")
    return int(raw)
