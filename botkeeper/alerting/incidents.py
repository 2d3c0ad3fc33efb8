"""The incident machine (pure): from the verdict and the restart history to typed actions.

An incident is one bot-down period, from the first failure to recovery (up for MIN_UPTIME).
Restarts inside it do not open new incidents: one "down" alert and one "recovered" alert each.
- "down" goes out at once for severe causes (crash loop, needs-config, token rejected, a hang as soon as
  the verdict judges it, a restart the monitor forced for a stale heartbeat or a memory/CPU limit, Telegram unreachable longer than
  UNREACHABLE_ALERT_AFTER) and for anything else once it lasts HEALTH_GRACE. A single
  crash the supervisor fixes within HEALTH_GRACE is recorded as an incident but not alerted. A full
  disk or an unwritable run/ is not an outage of a bot that answers: it is a notice, alerted once.
- FLAP_THRESHOLD incidents within FLAP_WINDOW make the bot "flapping": one alert says so, single
  incidents are no longer alerted, and a summary follows once it has been stable for FLAP_WINDOW.
- An operator's stop (the verdict says stopped) ends the open incident: what follows is not downtime.

Causes are `Cause` values throughout; nothing here reads a sentence for keywords.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .. import fmt
from ..causes import Cause
from ..health.verdict import DEGRADED, DOWN as V_DOWN, HEALTHY, NEEDS_CONFIG as V_NEEDS_CONFIG, STOPPED as V_STOPPED, Verdict

UP, DOWN, UNKNOWN, STOPPED = "up", "down", "unknown", "stopped"
FLAP_THRESHOLD = 3  # incidents within FLAP_WINDOW that make the bot "flapping"

# An incident's cause is upgraded to a more specific or serious one as it unfolds.
RANK = {
    Cause.CRASH: 1, Cause.SUPERVISOR_DOWN: 1, Cause.UNKNOWN: 1, Cause.HEARTBEAT_INVALID: 2,
    Cause.TELEGRAM_OUTAGE: 2, Cause.STALE_HEARTBEAT: 3, Cause.LOOP_BLOCKED: 3, Cause.MEMORY: 3, Cause.CPU: 3, Cause.DISK_FULL: 3,
    Cause.POISON_UPDATE: 3, Cause.CRASH_LOOP: 4, Cause.CONFLICT: 5, Cause.NEEDS_CONFIG: 7, Cause.TOKEN_REJECTED: 7,
}
# Restarts that mean a failure, and whether it is severe enough to alert at once.
FAILURE_SEVERITY = {
    Cause.CRASH: False, Cause.CRASH_LOOP: True, Cause.STALE_HEARTBEAT: True, Cause.LOOP_BLOCKED: True, Cause.MEMORY: True, Cause.CPU: True,
    Cause.POISON_UPDATE: True, Cause.TELEGRAM_OUTAGE: False, Cause.STUCK: True, Cause.HEARTBEAT_INVALID: True,
}
SEVERE_STATES = {Cause.NEEDS_CONFIG, Cause.TOKEN_REJECTED, Cause.CRASH_LOOP, Cause.TELEGRAM_OUTAGE}
FILE_FAULTS = {Cause.DISK_FULL, Cause.STATE_UNWRITABLE, Cause.LOG_ROTATION}  # the bundle's files, not the bot
PERSISTENT = {Cause.NEEDS_CONFIG, Cause.TOKEN_REJECTED, Cause.CONFLICT}  # end a flapping episode early: the owner must act
HINTS = {
    Cause.NEEDS_CONFIG: "Fix the setting (`python -m botkeeper doctor` names it), then `python -m botkeeper restart bot`.",
    Cause.TOKEN_REJECTED: "Put a valid token from @BotFather into TELEGRAM_BOT_TOKEN, then `python -m botkeeper restart bot`.",
    Cause.CRASH_LOOP: "See `python -m botkeeper logs bot` for the error.",
    Cause.CRASH: "See `python -m botkeeper logs bot` for the error.",
    Cause.CONFLICT: "Stop the other copy that uses this token (e.g. the Replit editor and a deployment at once).",
    Cause.TELEGRAM_OUTAGE: "A network or Telegram outage; the bot keeps retrying by itself.",
    Cause.STALE_HEARTBEAT: "The bot stopped responding and was restarted. See `python -m botkeeper logs bot`.",
    Cause.LOOP_BLOCKED: "A handler blocks the event loop (a blocking call in async code); the bot was restarted."
                        " See `python -m botkeeper logs bot` for where.",
    Cause.MEMORY: "The bot was restarted for using too much memory (MAX_MEMORY_MB).",
    Cause.CPU: "The bot was restarted for using too much CPU (MAX_CPU_PERCENT).",
    Cause.DISK_FULL: "Free disk space: old logs are pruned, but something else fills the disk.",
}


# --- formatting ----------------------------------------------------------------------------------
def fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


# --- inputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """A discrete failure seen in the events table: a crash, a forced restart."""

    at: float
    cause: Cause
    detail: str
    severe: bool


@dataclass(frozen=True)
class Observation:
    condition: str  # up | down | unknown (starting, a moment of doubt) | stopped (on purpose)
    cause: Cause | None = None
    detail: str = ""
    severe: bool = False
    since: float | None = None


def failures_from_events(events: Sequence[Mapping[str, Any]], pending_exit: float | None
                         ) -> tuple[list[Failure], float | None]:
    """Failures among the bot's new events and the crash exit still waiting for its restart.

    A crash is dated by its exit, not by the (backed-off) restart that follows it. The supervisor
    writes a fast restart before the exit it follows (with the exit's earlier time), so events are
    taken in time order. Exits of requested stops (`by` someone else) are not crashes.
    """
    found: list[Failure] = []
    for ev in sorted(events, key=lambda e: (e["at"], e["id"])):
        kind = ev.get("kind")
        if kind == "exit":
            if (ev.get("by") or "supervisor") == "supervisor":
                pending_exit = float(ev["at"])
        elif kind == "restart":
            cause = Cause.parse(ev.get("cause"))
            severe = FAILURE_SEVERITY.get(cause)
            crash = cause in (Cause.CRASH, Cause.CRASH_LOOP) and (ev.get("by") or "supervisor") == "supervisor"
            if severe is not None:
                at = pending_exit if crash and pending_exit is not None else float(ev["at"])
                found.append(Failure(at, cause, str(ev.get("detail") or "")[:200], severe))
            pending_exit = None
        elif kind == "start":
            pending_exit = None
    return found, pending_exit


def observe(verdict: Verdict, now: float, unreachable_alert_after: float) -> Observation:
    """The bot's condition for incidents, from the one verdict."""
    overall, cause = verdict.overall, verdict.cause
    since = next((c.since for c in verdict.checks if not c.ok and c.cause == cause), None)
    if overall == HEALTHY:
        return Observation(UP, since=now)
    if overall == V_STOPPED:
        return Observation(STOPPED, cause, verdict.detail, since=since)
    if overall in (V_DOWN, V_NEEDS_CONFIG):  # a hang is alerted as it is judged, not after the kill
        return Observation(DOWN, cause, verdict.detail[:200], cause in SEVERE_STATES or verdict.heartbeat.hung,
                           None if since is None else min(since, now))
    if overall == DEGRADED and cause == Cause.TELEGRAM_OUTAGE:
        began = since if since is not None else now
        if now - began >= unreachable_alert_after:
            return Observation(DOWN, cause, f"for {fmt.duration(now - began, 'words')}", True, began)
    if overall == DEGRADED and cause == Cause.REDIS_UNREACHABLE:  # one alert once it lasts
        began = since if since is not None else now
        if now - began >= unreachable_alert_after:
            return Observation(DOWN, cause, verdict.detail[:200], True, began)
    if overall == DEGRADED and cause in FILE_FAULTS:
        # A full disk, an unwritable run/state.json, a failing log rotation: the bot answers, so it
        # is up (no down alert, no downtime, no "back up after 1 s" when space returns); the
        # condition is alerted once as a notice (alerting/notices.py).
        return Observation(UP, since=now)
    return Observation(UNKNOWN)  # starting, a late beat, state unknown for a moment, a secondary component


# --- the tracker and its actions -----------------------------------------------------------------
@dataclass
class Incident:
    started_at: float
    cause: Cause
    detail: str
    severe: bool
    failures: int
    id: int | None = None
    alerted: bool = False  # a down (or flapping) alert was raised for it
    up_since: float | None = None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"cause": self.cause.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Incident":
        fields = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in fields}
        return cls(**(kept | {"cause": Cause.parse(data.get("cause"))}))


@dataclass
class Tracker:
    incident: Incident | None = None
    flapping: bool = False
    flap_recent: list[list[Any]] = field(default_factory=list)  # [started_at, ended_at, cause value]
    last_end: float | None = None
    pending_exit: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"incident": self.incident.as_json() if self.incident else None, "flapping": self.flapping,
                "flap_recent": self.flap_recent, "last_end": self.last_end, "pending_exit": self.pending_exit}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "Tracker":
        data = data or {}
        inc = data.get("incident")
        return cls(Incident.from_json(inc) if isinstance(inc, Mapping) else None, bool(data.get("flapping")),
                   [list(r) for r in data.get("flap_recent") or [] if isinstance(r, (list, tuple)) and len(r) == 3],
                   data.get("last_end"), data.get("pending_exit"))


@dataclass(frozen=True)
class Open:
    incident: Incident


@dataclass(frozen=True)
class Update:
    incident: Incident


@dataclass(frozen=True)
class Close:
    incident: Incident
    ended_at: float
    end_cause: Cause | None = None  # operator/shutdown: ended by a stop, not by recovery


@dataclass(frozen=True)
class Alert:
    kind: str  # down | recovered | flapping | flap-summary
    text: str
    cause: Cause | None
    data: Mapping[str, Any]
    incident: Incident | None


Action = Open | Update | Close | Alert


@dataclass(frozen=True)
class Rules:
    confirm_after: float  # a non-severe down is alerted once it lasts this long (HEALTH_GRACE)
    stable_after: float  # up this long = recovered (MIN_UPTIME)
    flap_window: float
    flap_threshold: int = FLAP_THRESHOLD

    @classmethod
    def from_settings(cls, s: Any) -> "Rules":
        return cls(s.health_grace, s.min_uptime, s.flap_window)


def decide(tracker: Tracker, obs: Observation, failures: Sequence[Failure], now: float,
           rules: Rules) -> tuple[Tracker, list[Action]]:
    """The new tracker and the actions to apply, in order."""
    t = Tracker.from_json(tracker.as_json())  # a copy: the caller's tracker is never changed
    acts: list[Action] = []
    inc = t.incident

    def open_incident(at: float, cause: Cause, detail: str, severe: bool, n: int) -> Incident:
        new = Incident(min(at, now), cause, detail, severe, n)
        t.incident = new
        acts.append(Open(new))
        recent = [r for r in t.flap_recent if t.flapping or now - r[0] <= rules.flap_window]
        recent.append([new.started_at, None, cause.value])
        t.flap_recent = recent
        if not t.flapping and len(recent) >= rules.flap_threshold:
            t.flapping = True
            new.alerted = True  # the flapping alert speaks for this incident
            span = now - recent[0][0]
            text = (f"⚠️ Your bot is flapping: {len(recent)} outages in {fmt.duration(span, 'words')}; latest cause:"
                    f" {cause.label}. Alerts for single outages are paused; a summary follows once it has been"
                    f" stable for {fmt.duration(rules.flap_window, 'words')}.")
            acts.append(Alert("flapping", text, cause, {"outages": len(recent)}, new))
        return new

    def upgrade(cur: Incident, cause: Cause, detail: str, severe: bool) -> bool:
        changed = False
        if RANK.get(cause, 0) > RANK.get(cur.cause, 0):
            cur.cause, cur.detail = cause, detail
            changed = True
        if severe and not cur.severe:
            cur.severe = changed = True
        return changed

    for f in failures:
        if inc is None:
            inc = open_incident(f.at, f.cause, f.detail, f.severe, 1)
            continue
        inc.failures += 1
        inc.up_since = None
        cause, severe = (Cause.CRASH_LOOP, True) if f.cause == Cause.CRASH and inc.failures >= 2 else (f.cause, f.severe)
        upgrade(inc, cause, f.detail, severe)
        acts.append(Update(inc))

    if obs.condition == STOPPED:
        if inc is not None:
            ended = max(inc.started_at, obs.since if obs.since is not None else now)
            acts.append(Close(inc, ended, obs.cause if obs.cause in (Cause.SHUTDOWN, Cause.STOPPED) else Cause.OPERATOR))
            t.incident, t.last_end, inc = None, ended, None
            if t.flap_recent:
                t.flap_recent[-1][1] = ended
    elif obs.condition == DOWN:
        cause = obs.cause or Cause.UNKNOWN
        if inc is None:
            inc = open_incident(obs.since if obs.since is not None else now, cause, obs.detail, obs.severe, 0)
        else:
            inc.up_since = None
            if upgrade(inc, cause, obs.detail, obs.severe):
                acts.append(Update(inc))
    elif inc is not None and obs.condition == UP:
        if inc.up_since is None:
            inc.up_since = obs.since if obs.since is not None else now
        if now - inc.up_since >= rules.stable_after:
            ended = max(inc.up_since, inc.started_at)
            acts.append(Close(inc, ended))
            t.incident, t.last_end = None, ended
            if t.flap_recent:
                t.flap_recent[-1][1:] = [ended, inc.cause.value]
            if inc.alerted and not t.flapping:
                took = ended - inc.started_at
                extra = f" ({inc.failures} restarts during the outage)" if inc.failures > 1 else ""
                text = f"✅ Your bot is back up after {fmt.duration(took, 'words')}; cause: {inc.cause.label}{extra}."
                acts.append(Alert("recovered", text, inc.cause,
                                  {"ended_at": ended, "duration_seconds": round(took, 1)}, inc))
            inc = None
    elif inc is not None:
        inc.up_since = None

    if inc is not None and not inc.alerted and not t.flapping and (
            inc.severe or now - inc.started_at >= rules.confirm_after):
        inc.alerted = True
        acts.append(Update(inc))
        acts.append(Alert("down", down_text(inc, now), inc.cause, {}, inc))

    if t.flapping:
        recent = t.flap_recent
        if inc is None and t.last_end is not None and now - t.last_end >= rules.flap_window:
            acts.append(Alert("flap-summary", flap_summary(recent), None, {"outages": len(recent)}, None))
            t.flapping, t.flap_recent = False, []
        elif inc is not None and (now - inc.started_at >= rules.flap_window or (
                inc.cause in PERSISTENT and now - inc.started_at >= rules.confirm_after)):
            inc.alerted = True
            acts.append(Update(inc))
            text = f"{flap_summary(recent[:-1], stable=False)}\n{down_text(inc, now)}"
            acts.append(Alert("down", text, inc.cause, {"outages": len(recent)}, inc))
            t.flapping, t.flap_recent = False, [recent[-1]]
    return t, acts


def down_text(inc: Incident, now: float) -> str:
    detail = f" ({inc.detail})" if inc.detail else ""
    hint = HINTS.get(inc.cause, "")
    return (f"🔴 Your bot is DOWN: {inc.cause.label}{detail}. Down since {fmt_time(inc.started_at)}"
            f" ({fmt.duration(now - inc.started_at, 'words')} ago).{(' ' + hint) if hint else ''}")


def flap_summary(recent: Sequence[Sequence[Any]], stable: bool = True) -> str:
    if not recent:
        return "Flapping is over."
    down = sum((r[1] if r[1] is not None else r[0]) - r[0] for r in recent)
    causes = Counter(Cause.parse(r[2]).label for r in recent)
    listed = ", ".join(f"{c} ×{n}" for c, n in causes.most_common())
    span = f"{fmt_time(recent[0][0])} to {fmt_time(recent[-1][1] or recent[-1][0])}"
    head = "✅ Your bot is stable again after flapping" if stable else "Flapping has ended"
    return f"{head}: {len(recent)} outages from {span}, {fmt.duration(down, 'words')} down in total; causes: {listed}."
