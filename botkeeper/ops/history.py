"""`python -m botkeeper history [--since 24h]`: incidents and restarts with reasons, newest first."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import time
from typing import Any

from .. import fmt
from ..bot import poison
from ..causes import Cause
from ..config import ConfigError, Settings
from ..store import Store, watch_gap

CAUSE_VALUES = {c.value for c in Cause}
UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SHOWN_KINDS = ("start", "restart", "exit", "errored", "needs-config", "orphan-stopped", "relaunch", "shutdown",
               "stale", "limit", "conflict", "telegram-unreachable", "telegram-reachable", "heartbeat-unreadable",
               "alert", "alert-not-sent", "alert-sent", "alert-failed", "corrupt-file", "disk-full", "poison-update",
               "state-unwritable", "log-rotation")


def parse_since(text: str) -> float:
    """'90s', '30m', '24h', '7d', '2w' or 'all' -> seconds (inf for all)."""
    text = text.strip().lower()
    if text == "all":
        return float("inf")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: expected e.g. 30m, 24h, 7d or all")
    return float(match.group(1)) * UNITS[match.group(2)]


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def cause_label(value: str) -> str:
    return Cause.parse(value).label if value in CAUSE_VALUES else value


def render(summary: dict[str, Any], incidents: list[dict[str, Any]], events: list[dict[str, Any]], now: float,
           since_label: str, quarantined: list[dict[str, Any]] = ()) -> str:
    up, seen = summary["uptime"], summary.get("observed_seconds") or {}
    out = ["uptime: " + "   ".join(f"{w} {fmt.uptime(up[w])}" + (f" (of {fmt.duration(seen[w], 'words')} watched)"
                                                                      if up[w] is not None and seen.get(w) else "")
                                   for w in ("24h", "7d", "30d"))]
    cur = summary.get("open_incident")
    if cur:
        out.append(f"OPEN INCIDENT: {cause_label(cur['cause'])} for {fmt.duration(now - cur['started_at'], 'words')}"
                   f" (since {when(cur['started_at'])})")
    out += ["", f"incidents (last {since_label}, newest first):"]
    if not incidents:
        out.append("  none")
    for inc in incidents:
        took = "ongoing " + fmt.duration(now - inc["started_at"], "words") if inc["ended_at"] is None else fmt.duration(inc["duration_seconds"], "words")
        extra = f"; {inc['failures']} restarts" if inc["failures"] > 1 else ""
        alerted = f"; alert {inc['alert_status']}" if inc.get("alert_status") else ""
        stopped = "; ended by a stop" if inc.get("end_cause") else ""
        detail = f" ({inc['detail']})" if inc["detail"] else ""
        out.append(f"  {when(inc['started_at'])}  {took:>14}  {cause_label(inc['cause'])}{detail}{extra}{alerted}{stopped}")
    if quarantined:  # shown only when there are any
        out += ["", "quarantined updates (skipped without running handlers, newest first):"]
        out += [f"  {when(q.get('quarantined_at') or 0)}  {poison.describe(q)}" for q in quarantined]
    out += ["", f"restarts and events (last {since_label}, newest first):"]
    if not events:
        out.append("  none")
    for ev in events:
        who = f" [by {ev['by']}]" if ev.get("by") else ""
        comp = ev.get("component") or "-"
        cause = f"{ev['cause']}: " if ev.get("cause") else ""
        out.append(f"  {when(ev['at'])}  {ev['kind']:<14} {comp:<13} {cause}{ev['detail']}{who}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m botkeeper history",
                                     description="Incidents and restarts with reasons, newest first.")
    parser.add_argument("--since", default="24h", type=parse_since, help="how far back: 30m, 24h, 7d, all (default 24h)")
    parser.add_argument("--limit", type=int, default=200, help="at most this many rows per section (default 200)")
    parser.add_argument("--all-events", action="store_true", help="also show every start and exit")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"botkeeper: configuration error: {exc}", file=sys.stderr)
        return 78
    if not settings.history_db.exists():
        print(f"botkeeper: no history yet ({settings.history_db} does not exist; it appears once the bundle runs)")
        return 0
    now = time.time()
    since = 0.0 if args.since == float("inf") else now - args.since
    label = "all time" if args.since == float("inf") else fmt.duration(args.since, 'words').replace(".0 s", " s")
    store = Store(settings.history_db)
    try:
        summary = store.summary(now, gap=watch_gap(settings))
        incidents = store.incidents(since, args.limit, with_alert_status=True)
        kinds = SHOWN_KINDS if args.all_events else tuple(k for k in SHOWN_KINDS if k not in ("start", "exit"))
        events = store.events(since, kinds, limit=args.limit)
    except sqlite3.Error as exc:
        print(f"botkeeper: cannot read {settings.history_db}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    quarantined = poison.quarantined(settings.data_dir / "poison.json")[:args.limit]
    if args.json:
        print(json.dumps({"summary": summary, "incidents": incidents, "events": events,
                          "quarantined_updates": quarantined}, indent=2))
    else:
        print(render(summary, incidents, events, now, label, quarantined))
    return 0
