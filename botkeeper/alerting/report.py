"""The daily report: at DAILY_REPORT_AT (HH:MM, the machine's local time) one message to the admin
chat/webhook with the last 24 hours: uptime %, incidents, restarts by cause, updates handled, top
errors, outbox totals, disk and memory.

The alerter (monitor process, every tick) asks the pure `due()` whether a report is due and queues
it in its outbox together with the day it covers (store meta `daily_report`, same transaction), so a
monitor restart never sends it twice. A minute missed while the monitor was down is sent late, once,
and says so. A bundle that has never sent one and starts past the minute begins the next day rather
than greeting a new setting with a "late" report.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .. import fmt
from ..causes import Cause
from ..bot.outbox import outbox_summary
from ..health.procstats import HostStats
from ..health.snapshot import Snapshot
from ..store import DAY, Store

SEEN = "daily_report"  # meta key: {"day": "YYYY-MM-DD" of the last report sent (or skipped)}


@dataclass(frozen=True)
class Due:
    day: str  # the local date the report is for, YYYY-MM-DD
    send: bool  # False: only remember the day (first run past the minute)
    late: bool  # sent after its minute (the monitor was not running then)
    slot: datetime


def due(now: datetime, at: str | None, last_day: str | None) -> Due | None:
    """Is a report due at local time `now` for the setting `at` ("HH:MM" or None), given the day of
    the last one? Pure: the alerter passes datetime.fromtimestamp(now)."""
    if at is None:
        return None
    hour, minute = (int(x) for x in at.split(":"))
    slot = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    today = now.date().isoformat()
    if now < slot or (last_day is not None and last_day >= today):
        return None
    late = now >= slot + timedelta(minutes=1)
    return Due(today, send=not (late and last_day is None), late=late, slot=slot)


def compose(settings: Any, store: Store, now: float, snapshot: Snapshot | None, due_: Due,
            host: dict[str, Any] | None = None) -> str:
    """The report's text, from the history (last 24 h), the heartbeat, the outbox and the host."""
    since = now - DAY
    lines = [f"📊 botkeeper daily report for {socket.gethostname()}, {due_.day}"]
    if due_.late:
        lines.append(f"(sent late at {datetime.fromtimestamp(now):%H:%M}: the monitor was not running at"
                     f" {due_.slot:%H:%M})")
    summary = store.summary(now)
    uptime, watched = summary["uptime"].get("24h"), summary["observed_seconds"].get("24h") or 0.0
    lines.append(f"Uptime (24 h): {'–' if uptime is None else f'{uptime:.2f} %'} of {fmt.duration(watched)} watched")
    incidents = store.incidents(since, 1000, "bot")
    causes = Counter(Cause.parse(i["cause"]).label for i in incidents)
    lines.append(f"Incidents: {len(incidents)}" + (f" ({_counts(causes)})" if causes else "")
                 + (" — one is open now" if summary["open_incident"] else ""))
    restarts = Counter(f"{e['cause'] or 'unknown'}" for e in store.events(since, ("restart",), limit=20_000))
    lines.append(f"Restarts: {sum(restarts.values())}" + (f" ({_counts(restarts)})" if restarts else ""))
    beat = (snapshot.heartbeat.data or {}) if snapshot is not None else {}
    if isinstance(beat.get("updates_handled"), int):
        started = beat.get("started_at")
        run = f" by the running bot (up {fmt.duration(now - started)})" if isinstance(started, (int, float)) else ""
        lines.append(f"Updates handled: {beat['updates_handled']}{run}")
    else:
        lines.append("Updates handled: – (no heartbeat from the bot)")
    errors = [e for e in store.errors(now, 3) if e["last_24h"]]
    lines.append(f"Errors (24 h): {sum(e['last_24h'] for e in errors) if errors else 'none'}")
    lines += [f"  {e['last_24h']}× {e['type']} in {e['location']} [{e['fingerprint']}]" for e in errors]
    box = outbox_summary(settings)
    lines.append(f"Outbox: {box['pending_total']} waiting, {box['sent']} sent, {box['dead']} dead-lettered (all time)")
    host = host if host is not None else HostStats(str(settings.home)).read()
    lines.append(f"Disk: {fmt.size(host.get('disk_free'))} free of {fmt.size(host.get('disk_total'))}; memory:"
                 f" {fmt.size(host.get('memory_used'))} used of {fmt.size(host.get('memory_total'))}")
    return "\n".join(lines)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{name} {n}" for name, n in counter.most_common())
