"""What the page and the APIs report, all from one snapshot and one verdict.

`StatusSource.health()` is the cheap path (/health: botkeeper.health.snapshot.read_snapshot, a few small
files and /proc entries, and the pure botkeeper.health.verdict.judge); `snapshot()` adds process and host
usage (cached by procstats), restarts, and uptime and the open incident from data/history.db
(cached for HISTORY_TTL). The CLI, the monitor, the alerter and doctor call the same two functions.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..logs import Redactor
from ..bot.outbox import outbox_summary
from ..bot.poison import quarantine_summary
from ..health.procstats import HostStats, ProcessStats
from ..health.snapshot import Snapshot, deadman_view, read_snapshot
from ..states import LIVE, State
from ..causes import Cause
from ..store import watch_gap
from ..health.verdict import Limits, Verdict, judge
from .history import DAY, RingHistory, Sample, StoreHistory, StoreReader, no_summary
from .reasons import RestartCounter, reason_label

GO_LIVE = (
    "To go live: set TELEGRAM_BOT_TOKEN (from @BotFather) in Replit Secrets or in .env, "
    "then restart the bundle."
)


@dataclass(frozen=True)
class Reading:
    """One consistent look at the files, and the verdict on it."""

    snapshot: Snapshot
    verdict: Verdict

    @property
    def now(self) -> float:
        return self.snapshot.now

    @property
    def state(self) -> dict[str, Any] | None:
        return self.snapshot.state


class SinceTracker:
    """Since when the overall state and each check have been what they are.

    The web process may start long after a change, so a key seen for the first time gets an
    estimate from the files (bot start, last exit, heartbeat's unreachable_since...). A change
    seen while running is timed by the files too when they name a moment since the previous
    look (the bot knows better when Telegram went away), else by the moment it was seen.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key -> [value, since, estimated, last looked at]
        self._seen: dict[str, list[Any]] = {}

    def observe(self, key: str, value: Any, now: float, estimate: float | None) -> tuple[float, bool]:
        with self._lock:
            old = self._seen.get(key)
            if old is not None and old[0] == value:
                old[3] = now
                return old[1], old[2]
            if old is None:
                entry = [value, now if estimate is None else min(estimate, now), True, now]
            elif estimate is not None and old[3] <= estimate <= now:
                entry = [value, estimate, False, now]
            else:
                entry = [value, now, False, now]
            self._seen[key] = entry
            return entry[1], entry[2]

    def forget_except(self, keys: set[str]) -> None:
        with self._lock:
            for key in set(self._seen) - keys:
                del self._seen[key]


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


HEALTH_TICKS = 4  # /health memo granularity: 1/4 s
TOP_ERRORS = 5  # error fingerprints on the page and in /api/status
ERROR_FIELDS = ("fingerprint", "type", "location", "count", "first_seen", "last_seen", "last_24h", "per_hour")
HISTORY_TTL = 5.0  # seconds between reads of uptime and the open incident from data/history.db


def _file_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _proc_key(pid: int | None) -> bytes | None:
    """State and start time of a process from /proc (changes when it dies, is a zombie or the
    PID is reused); None when gone or off Linux."""
    if not pid or pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    return rest[0] + b"@" + rest[19] if len(rest) > 19 else data


# Public surfaces (the page, /api/status without the token) never show who wrote to the bot: the
# chat and user ids of in-flight and quarantined updates are dropped, and written out ids in
# sentences ("update 7 in chat 12345", a restart's detail) are hidden. With the token they stay.
ID_KEYS = frozenset({"chat", "user", "chat_id", "user_id", "from_id", "sender_chat_id"})
ID_TEXT = re.compile(r"\b(chats?|users?|chat_id|user_id|from)(\s*[:=#]?\s*)-?\d+")
HIDDEN = "(hidden)"


def public(value: Any) -> Any:
    """The snapshot as anyone may see it: no chat or user ids, in fields or in text."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items() if k not in ID_KEYS}
    if isinstance(value, list):
        return [public(v) for v in value]
    if isinstance(value, str):
        return ID_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2) or ' '}{HIDDEN}", value)
    return value


class StatusSource:
    def __init__(self, settings: Any, clock: Callable[[], float] = time.time, history: Any = None,
                 cache_ttl: float = 1.0):
        self.settings = settings
        self.clock = clock
        self.limits = Limits.from_settings(settings)
        self.history = history if history is not None else RingHistory(settings.sample_interval)
        self.procs = ProcessStats(ttl=cache_ttl)
        self.host = HostStats(str(settings.home), ttl=cache_ttl)
        self.restarts = RestartCounter()
        self.since = SinceTracker()
        self.redact = Redactor(settings.secrets() + [settings.bot_token or ""])
        self._supervisor_pid: int | None = None
        self._health_cache: tuple[tuple, tuple[Reading, dict[str, Any]]] | None = None
        self.store = self.history.reader if isinstance(self.history, StoreHistory) else StoreReader(settings.history_db)
        self._summary: tuple[float, dict[str, Any]] | None = None  # (read at, Store.summary())
        self._summary_lock = threading.Lock()
        self._errors: tuple[float, dict[str, Any]] | None = None  # (read at, errors_summary())

    def public_snapshot(self) -> dict[str, Any]:
        return public(self.snapshot())

    # --- the cheap path ---------------------------------------------------------------------
    def read(self) -> Reading:
        snap = read_snapshot(self.settings, clock=self.clock)
        return Reading(snap, judge(snap, self.limits))

    def health(self) -> tuple[Reading, dict[str, Any]]:
        """The reading and the /health + /api/health body: verdict, cause, checks and how long each
        has held.

        Memoized while nothing it depends on has changed: the files the snapshot reads (inode,
        mtime, size), the supervisor's /proc entry and the clock's quarter second. A probe hammering
        /health then costs a few system calls, and the answer is never more than 0.25 s behind.
        """
        s = self.settings
        # The supervisor's PID file and run/stopping change only with the supervisor's own start or
        # end, which its /proc entry already shows (or the next quarter second does).
        key = (_file_key(s.state_file), _file_key(s.heartbeat_file), _proc_key(self._supervisor_pid),
               int(self.clock() * HEALTH_TICKS))
        cached = self._health_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        result = self._health()
        self._supervisor_pid = result[0].snapshot.supervisor_pid
        # Re-key with the supervisor pid just read (the hint may have been stale).
        key = key[:2] + (_proc_key(self._supervisor_pid),) + key[3:]
        self._health_cache = (key, result)
        return result

    def _health(self) -> tuple[Reading, dict[str, Any]]:
        reading = self.read()
        verdict, now = reading.verdict, reading.now
        checks, keys = [], {"overall"}
        for check in verdict.checks:
            since, _ = self.since.observe("check:" + check.name, (check.level, check.cause), now, check.since)
            keys.add("check:" + check.name)
            checks.append(check.as_dict() | {"detail": self.redact(check.detail), "since": since,
                                             "for_seconds": round(max(0.0, now - since), 1)})
        # Healthy since the last check turned good; unhealthy since the oldest failing check. While
        # an incident is open, its start is the one "since" the page, the chart and history share.
        failing = [c["since"] for c in checks if not c["ok"]]
        estimate = min(failing) if failing else max((c["since"] for c in checks), default=None)
        since, estimated = self.since.observe("overall", (verdict.overall, verdict.cause), now, estimate)
        incident = self.history_summary(now)["open_incident"] if not verdict.healthy else None
        if incident is not None and verdict.overall in ("down", "needs-config"):
            since, estimated = incident["started_at"], False
        self.since.forget_except(keys)
        demo = self.settings.demo_active
        body = {
            "status": verdict.overall,
            "healthy": verdict.healthy,
            "cause": verdict.cause.value if verdict.cause else None,
            "cause_label": verdict.cause.label if verdict.cause else None,
            "detail": self.redact(verdict.detail),
            "state": verdict.overall,  # the headline is the health, demo or not (the banner says DEMO)
            "demo": demo,
            "since": since,
            "since_estimated": estimated,
            "for_seconds": round(max(0.0, now - since), 1),
            "checks": checks,
            "failing": [{"name": c["name"], "cause": c["cause"], "detail": c["detail"]} for c in checks if not c["ok"]],
            "took_ms": round(reading.snapshot.took * 1000, 2),
            "now": now,
        }
        return reading, public(body)  # /health is public: a blocked handler's detail names no chat

    # --- the full picture -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        reading, health = self.health()
        now, state = reading.now, reading.state or {}
        raw_comps = [c for c in state.get("components", []) if isinstance(c, dict) and c.get("name")]
        alive = reading.snapshot.supervisor_alive
        usage = self.procs.measure(
            (c["name"], c.get("pid"), _num(c.get("create_time"))) for c in raw_comps if c.get("pid")
        ) if alive else {}
        components = [self._component(c, usage.get(c["name"]), now) for c in raw_comps]
        recent = [r for r in state.get("recent_restarts", []) if isinstance(r, dict)]
        self.restarts.update(recent)
        bot = next((c for c in components if c["name"] == "bot"), None)
        sup = state.get("supervisor") or {}
        data = health | {
            "demo_message": GO_LIVE if self.settings.demo_active else None,
            "supervisor": {
                "running": alive,
                "pid": reading.snapshot.supervisor_pid if alive else None,
                "started_at": _num(sup.get("started_at")),
                "uptime": self._age(sup.get("started_at"), now) if alive else None,
                "outer": sup.get("outer", "none"),
                "version": sup.get("version") if isinstance(sup.get("version"), str) else None,
            },
            "heartbeat": self._heartbeat(reading),
            "components": components,
            "bot": {k: bot.get(k) for k in ("state", "uptime", "memory_bytes", "cpu_percent", "restarts")} if bot else None,
            "recent_restarts": [self._restart(r) for r in reversed(recent[-10:])],
            "host": self.host.read(),
            "history": self.history_summary(now),
            "limits": {"max_memory_bytes": int(self.settings.max_memory_mb * 1024 * 1024),
                       "max_cpu_percent": self.settings.max_cpu_percent},
            "outbox": outbox_summary(self.settings),  # issue 12: queue depth, sent/retried/dead
            "errors": self.errors_summary(now)["top"],
            "work": self._work(reading),  # issue 10: what the bot works on, where it hangs, what fails
            "quarantined_updates": self._quarantined(),
            "deadman": deadman_view(reading.snapshot.deadman, now) if self.settings.deadman_url else None,
            "demo_chat": self._demo_chat() if self.settings.demo_active else [],
        }
        return data

    def _demo_chat(self) -> list[dict[str, Any]]:
        """The demo user's conversation with the bot (run/demo_chat.json, written by the emulator)."""
        from ..fsutil import read_json

        try:
            data = read_json(self.settings.run_dir / "demo_chat.json")
        except (OSError, ValueError):
            return []
        messages = data.get("messages") if isinstance(data, dict) else None
        return [{"from": m["from"], "text": self.redact(str(m.get("text", "")))[:300], "at": _num(m.get("at"))}
                for m in (messages if isinstance(messages, list) else [])[-12:]
                if isinstance(m, dict) and m.get("from") in ("user", "bot")]

    def errors_summary(self, now: float) -> dict[str, Any]:
        """The top error fingerprints (no messages: they may quote what users wrote) and the
        counts for /metrics, read at most every HISTORY_TTL seconds."""
        with self._summary_lock:
            cached = self._errors
            if cached is None or not 0 <= now - cached[0] < HISTORY_TTL:
                read = self.store.read(lambda store: (store.errors(now, TOP_ERRORS), store.error_counts()))
                top, counts = read or ([], [])
                cached = self._errors = (now, {
                    "top": [{k: r[k] for k in ERROR_FIELDS} for r in top],
                    "counts": counts,
                })
        return cached[1]

    def history_summary(self, now: float) -> dict[str, Any]:
        """Store.summary(): uptime % per window and the open incident, read at most every
        HISTORY_TTL seconds (the incident's duration is brought up to `now` on every call)."""
        with self._summary_lock:
            cached = self._summary
            if cached is None or not 0 <= now - cached[0] < HISTORY_TTL:
                cached = self._summary = (now, self.store.read(lambda store: store.summary(now, gap=watch_gap(self.settings))) or no_summary())
        summary = cached[1]
        incident = summary["open_incident"]
        if incident is not None:
            incident = incident | {"cause": str(incident["cause"]), "cause_label": Cause.parse(incident["cause"]).label,
                                   "detail": self.redact(str(incident["detail"])),
                                   "duration_seconds": round(max(0.0, now - incident["started_at"]), 1)}
        return {"uptime": summary["uptime"], "observed_seconds": summary.get("observed_seconds") or {},
                "open_incident": incident}

    def take_sample(self) -> Sample:
        """One chart sample (called by the sampler thread every sample_interval, when the
        history is not sampled elsewhere)."""
        snap = self.snapshot()
        bot = snap["bot"] or {}
        sample = Sample(snap["now"], bot.get("memory_bytes"), bot.get("cpu_percent"), snap["status"])
        self.history.add(sample)
        return sample

    def chart_data(self, span: float = DAY) -> tuple[float, list[Sample], list[dict[str, Any]]]:
        """(now, samples, restarts) for the chart, the last `span` seconds."""
        reading, _ = self.health()
        now, state = reading.now, reading.state or {}
        restarts = [self._restart(r) for r in state.get("recent_restarts", [])]
        return now, self.history.since(now - span), [r for r in restarts if (r["at"] or 0) >= now - span]

    def component_names(self) -> set[str]:
        return {c["name"] for c in (self.health()[0].state or {}).get("components", [])}

    # --- pieces -----------------------------------------------------------------------------
    @staticmethod
    def _age(t: Any, now: float) -> float | None:
        t = _num(t)
        return None if t is None else round(max(0.0, now - t), 1)

    def _component(self, c: Mapping[str, Any], use: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
        cstate = c.get("state")
        live = cstate in {s.value for s in LIVE}
        nxt = _num(c.get("next_start_at"))
        # `command` and paths are left out on purpose: a command line may carry a secret.
        return {
            "name": str(c.get("name")),
            "state": cstate,
            "running": cstate == State.RUNNING.value,
            "pid": c.get("pid") if live else None,
            "alive": bool(use),
            "started_at": _num(c.get("started_at")),
            "uptime": self._age(c.get("started_at"), now) if live else None,
            "restarts": c.get("restarts") or 0,
            "cause": c.get("cause"),
            "last_restart_reason": self.redact(str(c["last_restart_reason"])) if c.get("last_restart_reason") else None,
            "last_restart_at": _num(c.get("last_restart_at")),
            "last_exit": self.redact(str(c["last_exit"])) if c.get("last_exit") else None,
            "last_exit_at": _num(c.get("last_exit_at")),
            "next_start_in": round(max(0.0, nxt - now), 1) if nxt is not None else None,
            "memory_bytes": use.get("memory_bytes") if use else None,
            "cpu_percent": use.get("cpu_percent") if use else None,
            "processes": use.get("processes") if use else None,
        }

    def _restart(self, r: Mapping[str, Any]) -> dict[str, Any]:
        cause = reason_label(r.get("cause"))
        return {"at": _num(r.get("at")), "component": str(r.get("component")), "cause": cause,
                "detail": self.redact(str(r.get("detail") or "")), "by": r.get("by"),
                "planned": Cause.parse(cause).planned}

    def _work(self, reading: Reading) -> dict[str, Any]:
        """Updates in flight, loop lag, errors per handler and a blocked loop, from the bot's own beat."""
        beat = reading.snapshot.heartbeat.data if reading.verdict.heartbeat.own else None
        beat = beat or {}
        flight = beat.get("in_flight") if isinstance(beat.get("in_flight"), list) else []
        errors = beat.get("handler_errors") if isinstance(beat.get("handler_errors"), dict) else {}
        blocked = beat.get("blocked") if isinstance(beat.get("blocked"), dict) else None
        return {
            "in_flight": [{k: (self.redact(v) if isinstance(v, str) else v) for k, v in e.items()}
                          for e in flight[:20] if isinstance(e, dict)],
            "loop_lag": _num(beat.get("loop_lag")),
            "handler_errors": {self.redact(str(k))[:120]: v for k, v in list(errors.items())[:50]
                               if isinstance(v, int) and not isinstance(v, bool)},
            "blocked": {k: self.redact(str(v)) if isinstance(v, str) else v for k, v in blocked.items()}
            if blocked else None,
        }

    def _quarantined(self) -> dict[str, Any]:
        summary = quarantine_summary(self.settings.data_dir / "poison.json")
        summary["latest"] = [{k: self.redact(v) if isinstance(v, str) else v for k, v in q.items()}
                             for q in summary["latest"]]
        return summary

    def _heartbeat(self, reading: Reading) -> dict[str, Any]:
        view, beat, now = reading.verdict.heartbeat, reading.snapshot.heartbeat.data, reading.now
        data = beat if view.own and beat is not None else {}
        handled = data.get("updates_handled")
        return view.as_dict() | {
            "error": self.redact(view.error or reading.snapshot.heartbeat.error or "") or None,
            "last_poll_at": _num(data.get("last_poll_at")),
            "last_poll_age": self._age(data.get("last_poll_at"), now),
            "updates_handled": handled if isinstance(handled, int) and not isinstance(handled, bool) else None,
            "unreachable_since": _num(data.get("unreachable_since")),
            "detail": self.redact(str(data["detail"]))[:300] if data.get("detail") else None,
        }
