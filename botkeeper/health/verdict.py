"""The one health verdict: a pure function of a snapshot and the limits.

Overall is one of healthy, starting, degraded, down, needs-config, stopped, with one typed cause,
a detail sentence, and the checks behind it. `starting` is not healthy. Whose heartbeat it is (the
current bot's PID or a child of it, written after the bot started, not from the future) is
decided here and nowhere else; the monitor restarts on `verdict.heartbeat.hung`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..causes import Cause
from .snapshot import Snapshot, read_snapshot

HEALTHY, STARTING, DEGRADED, DOWN, NEEDS_CONFIG, STOPPED = (
    "healthy", "starting", "degraded", "down", "needs-config", "stopped")
OVERALLS = (HEALTHY, STARTING, DEGRADED, DOWN, NEEDS_CONFIG, STOPPED)
RANK = {HEALTHY: 0, STARTING: 1, DEGRADED: 2, DOWN: 3, NEEDS_CONFIG: 4, STOPPED: 5}
CLOCK_SKEW = 5.0  # a heartbeat written further in the future than this is not believed


@dataclass(frozen=True)
class Limits:
    heartbeat_interval: float
    stale_after: float
    heartbeat_grace: float
    clock_skew: float = CLOCK_SKEW
    block_limit: float = 10.0  # the bot's watchdog reports its loop blocked this long: hung

    @classmethod
    def from_settings(cls, s: Any) -> "Limits":
        return cls(s.heartbeat_interval, s.stale_after, s.heartbeat_grace, block_limit=s.block_limit)


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # one of OVERALLS; healthy = this check passes
    detail: str
    cause: Cause | None = None
    since: float | None = None  # when this condition began, where the files say so

    @property
    def ok(self) -> bool:
        return self.level == HEALTHY

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "level": self.level, "detail": self.detail,
                "cause": self.cause.value if self.cause else None}


@dataclass(frozen=True)
class HeartbeatView:
    """The bot's heartbeat as judged: `own` = written by the current bot process (or its child)."""

    enabled: bool
    status: str  # fresh | late | stale | missing | foreign | invalid | disabled
    own: bool = False
    age: float | None = None  # of the current bot's own heartbeat, never negative
    silent_for: float | None = None  # since its last own beat, or since its start when none yet
    state: str | None = None  # the bot's own word: starting, polling, telegram-unreachable, ...
    error: str | None = None
    hung: bool = False  # alive but silent past stale_after (and past the start grace), or blocked: restart it
    blocked_for: float | None = None  # the bot's watchdog reports its event loop blocked this long
    blocked_since: float | None = None
    blocked_where: str = ""  # "in handler freeze (handlers.py:6)"

    def as_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "status": self.status, "own": self.own,
                "age": None if self.age is None else round(self.age, 1),
                "silent_for": None if self.silent_for is None else round(self.silent_for, 1),
                "state": self.state, "error": self.error, "hung": self.hung,
                "blocked_for": None if self.blocked_for is None else round(self.blocked_for, 1)}

    @property
    def blocked_detail(self) -> str:
        return f"event loop blocked for {self.blocked_for or 0:.0f} s{self.blocked_where}"


@dataclass(frozen=True)
class Verdict:
    overall: str
    cause: Cause | None  # None when healthy
    detail: str
    checks: tuple[Check, ...]
    heartbeat: HeartbeatView
    supervisor_alive: bool

    @property
    def healthy(self) -> bool:
        return self.overall == HEALTHY

    @property
    def failing(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "healthy": self.healthy,
                "cause": self.cause.value if self.cause else None, "detail": self.detail,
                "checks": [c.as_dict() for c in self.checks], "heartbeat": self.heartbeat.as_dict()}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cause(comp: Mapping[str, Any], key: str, default: Cause) -> Cause:
    return Cause.parse(comp.get(key), default) if comp.get(key) else default


# --- the heartbeat --------------------------------------------------------------------------------
def belongs(data: Mapping[str, Any], lineage: tuple[int, ...], pid: Any, started_at: float | None) -> bool:
    """Written by the current bot: its pid (or a descendant's), and not before it started.
    A beat without a pid (a touched file, another language) must be newer than the start."""
    written = _num(data.get("written_at"))
    if written is None:
        return False
    if started_at is not None and written < started_at - 1.0:
        return False
    hb_pid = data.get("pid")
    if isinstance(hb_pid, int) and not isinstance(hb_pid, bool):
        return hb_pid == pid or (isinstance(pid, int) and pid in lineage)
    return started_at is None or written >= started_at


def judge_heartbeat(snap: Snapshot, bot: Mapping[str, Any] | None, limits: Limits) -> HeartbeatView:
    if not bot or not bot.get("heartbeat"):
        return HeartbeatView(False, "disabled")
    now, beat = snap.now, snap.heartbeat
    started = _num(bot.get("started_at"))
    uptime = None if started is None else max(0.0, now - started)
    live = bot.get("state") in ("starting", "running") and bool(bot.get("pid"))
    data = beat.data
    if data is None:
        status, error, own = ("missing" if beat.problem == "missing" else "invalid"), beat.error, False
    else:
        written = float(data["written_at"])
        if written > now + limits.clock_skew:
            status, error, own = "invalid", f"bot_health.txt is dated {written - now:.0f} s in the future (clock skew?)", False
        elif not belongs(data, beat.lineage, bot.get("pid"), started):
            status, error, own = "foreign", "bot_health.txt was written by an earlier bot process", False
        else:
            own, error = True, None
            age = max(0.0, now - written)
            status = ("stale" if age > limits.stale_after
                      else "late" if age > min(2 * limits.heartbeat_interval, limits.stale_after) else "fresh")
    if own:
        age = max(0.0, now - float(data["written_at"]))
        blocked_since, where = _blocked(data, started, now)
        blocked_for = None if blocked_since is None or status == "stale" else now - blocked_since
        hung = live and (status == "stale" or (blocked_for is not None and blocked_for > limits.block_limit))
        return HeartbeatView(True, status, True, age, age, str(data.get("state") or "alive"), None, hung,
                             blocked_for, blocked_since, where)
    silent = uptime
    mtime = beat.mtime
    if status == "invalid" and mtime is not None and started is not None and started - 1.0 <= mtime <= now:
        # Unreadable, but written since the bot started: a sign of life (a torn or garbled write is
        # replaced on the next beat), so it is silent only since that write.
        silent = max(0.0, now - mtime)
    hung = (live and uptime is not None and silent is not None and uptime > limits.heartbeat_grace
            and silent > limits.stale_after)
    return HeartbeatView(True, status, False, None, silent, None, error, hung)


def _blocked(data: Mapping[str, Any], started: float | None, now: float) -> tuple[float | None, str]:
    """(since when the loop is blocked, where) from the watchdog's `blocked` field; never before the
    bot's start nor in the future."""
    blocked = data.get("blocked")
    since = _num(blocked.get("since")) if isinstance(blocked, Mapping) else None
    if since is None:
        return None, ""
    since = min(max(since, started if started is not None else since), now)
    handler, frame = blocked.get("handler"), blocked.get("frame")
    where = f" in handler {str(handler)[:80]}" if handler else ""
    if isinstance(frame, str) and frame:
        place = frame.rsplit(" ", 1)[0] if " " in frame else frame
        where += f" ({place.replace(chr(92), '/').rsplit('/', 1)[-1][:120]})"
    return since, where


# --- checks ---------------------------------------------------------------------------------------
def _bot_checks(snap: Snapshot, bot: Mapping[str, Any], hb: HeartbeatView, limits: Limits) -> list[Check]:
    st = bot.get("state")
    reason = str(bot.get("last_restart_reason") or bot.get("last_exit") or "")
    exit_at = _num(bot.get("last_exit_at"))
    if st == "needs-config":
        return [Check("component:bot", NEEDS_CONFIG, reason or "needs configuration", _cause(bot, "cause", Cause.NEEDS_CONFIG), exit_at)]
    if st == "errored":
        return [Check("component:bot", DOWN, reason or "too many quick crashes", _cause(bot, "cause", Cause.CRASH_LOOP), exit_at)]
    if st == "backoff":
        return [Check("component:bot", DOWN, reason or "crashed", _cause(bot, "cause", Cause.CRASH), exit_at)]
    if st == "stopped":
        return [Check("component:bot", STOPPED, reason or "stopped", _cause(bot, "cause", Cause.STOPPED),
                      _num(bot.get("stopped_at")))]
    if st == "stopping":
        cause = _cause(bot, "stop_cause", Cause.OPERATOR)
        if bot.get("after_stop") == "stopped":  # a stop, not a restart
            return [Check("component:bot", STOPPED, f"stopping: {cause.label}", cause)]
        return [Check("component:bot", STARTING if cause.planned else DOWN, f"restarting: {cause.label}", cause)]
    if st not in ("starting", "running"):
        return [Check("component:bot", DEGRADED, f"unknown state {st!r}", Cause.UNKNOWN)]
    started = _num(bot.get("started_at"))
    if not hb.enabled:
        if st == "starting":
            return [Check("component:bot", STARTING, "starting", Cause.STARTING, started)]
        return [Check("component:bot", HEALTHY, "running", None, started)]
    checks = [Check("component:bot", HEALTHY, st, None, started)]
    if not hb.own:
        if hb.hung:
            cause = Cause.HEARTBEAT_INVALID if hb.status == "invalid" else Cause.STALE_HEARTBEAT
            silent_since = snap.now - (hb.silent_for or 0.0)  # since it went silent: never before its start
            mtime = snap.heartbeat.mtime  # a write since the start (even future-dated: a clock step) is life
            if mtime is not None and started is not None and mtime >= started - 1.0:
                silent_since = max(silent_since, min(mtime, snap.now))
            checks.append(Check("heartbeat", DOWN, f"no heartbeat from this bot {hb.silent_for:.0f} s after its start"
                                f" ({hb.error or hb.status})", cause,
                                silent_since if started is None else min(snap.now, max(started, silent_since))))
        elif hb.status == "invalid" and started is not None and snap.now - started > limits.heartbeat_grace:
            # A bot that has run past its start grace is not starting: its beat is unreadable (the
            # next good beat clears this; a silence past STALE_AFTER makes it hung above).
            checks.append(Check("heartbeat", DEGRADED, f"heartbeat unreadable ({hb.error or hb.status})",
                                Cause.HEARTBEAT_INVALID, snap.heartbeat.mtime))
        else:
            checks.append(Check("heartbeat", STARTING, f"waiting for the bot's first heartbeat ({hb.error or hb.status})",
                                Cause.STARTING, started))
        return checks
    written = snap.now - (hb.age or 0.0)
    if hb.status == "stale":  # the incident begins when it went silent, never before the bot's start
        checks.append(Check("heartbeat", DOWN, f"stale: {hb.age:.0f} s old (STALE_AFTER={limits.stale_after:g})",
                            Cause.STALE_HEARTBEAT, written if started is None else max(started, written)))
        return checks
    if hb.blocked_for is not None:  # the bot's own watchdog tells: the loop is blocked, the process alive
        level = DOWN if hb.hung else DEGRADED
        checks.append(Check("heartbeat", level, f"{hb.blocked_detail} (BLOCK_LIMIT={limits.block_limit:g})",
                            Cause.LOOP_BLOCKED, hb.blocked_since))
        return checks
    if hb.status == "late":
        checks.append(Check("heartbeat", DEGRADED, f"late: {hb.age:.1f} s old", Cause.STALE_HEARTBEAT,
                            written + 2 * limits.heartbeat_interval))
    else:
        checks.append(Check("heartbeat", HEALTHY, f"fresh, {hb.age:.1f} s old", None, started))
    data = snap.heartbeat.data or {}
    detail = str(data.get("detail") or "")[:300]
    # REDIS_URL: the replicas' shared state is gone. Before the telegram check: a standby waiting for
    # Redis is degraded for Redis, not for another copy.
    if _num(data.get("redis_down_since")) is not None:
        checks.append(Check("redis", DEGRADED, f"Redis unreachable ({str(data.get('redis_error') or 'error')[:80]}):"
                            " no shared update claims, poller lock or limits", Cause.REDIS_UNREACHABLE,
                            _num(data.get("redis_down_since"))))
    state = hb.state
    if state == "starting":
        checks.append(Check("telegram", STARTING, detail or "connecting to Telegram", Cause.STARTING, started))
    elif state == "fatal":
        cause = Cause.parse(data.get("cause"), Cause.NEEDS_CONFIG)
        checks.append(Check("telegram", NEEDS_CONFIG, detail or cause.label, cause, _num(data.get("written_at"))))
    elif state == "conflict":
        checks.append(Check("telegram", DOWN, detail or "another program polls with this token (409 Conflict)",
                            Cause.CONFLICT, _num(data.get("conflict_since"))))
    elif state == "telegram-unreachable":
        checks.append(Check("telegram", DEGRADED, detail or "Telegram is unreachable", Cause.TELEGRAM_OUTAGE,
                            _num(data.get("unreachable_since"))))
    elif state == "stopping":
        checks.append(Check("telegram", STARTING, "the bot is stopping", Cause.STARTING))
    elif state == "polling" and data.get("polled") is False and (bot.get("restarts") or 0) > 0:
        # After a restart: a retried update may block the new bot in its first batch.
        checks.append(Check("telegram", STARTING, "restarted: waiting for its first completed poll", Cause.STARTING,
                            started))
    elif state == "polling":
        checks.append(Check("telegram", HEALTHY, "polling", None, started))
    elif state == "standby":
        checks.append(Check("telegram", DEGRADED, detail or "another copy polls with this token", Cause.STANDBY,
                            started))
    elif state == "webhook" and _awaiting_delivery(data) and (bot.get("restarts") or 0) > 0:
        checks.append(Check("telegram", STARTING, f"restarted: waiting for its first webhook delivery"
                            f" ({_awaiting_delivery(data)} pending at Telegram)", Cause.STARTING, started))
    elif state == "webhook":
        checks.append(webhook_check(data, started))
    if data.get("disk_full"):
        checks.append(Check("disk", DEGRADED, "the disk is full: the heartbeat is written in place",
                            Cause.DISK_FULL, _num(data.get("disk_full_since"))))
    return checks


def _component_check(comp: Mapping[str, Any]) -> Check:
    name, st = comp["name"], comp.get("state")
    reason = str(comp.get("last_restart_reason") or comp.get("last_exit") or st)
    if st == "running":
        return Check(f"component:{name}", HEALTHY, "running", None, _num(comp.get("started_at")))
    if st in ("starting", "stopping"):
        return Check(f"component:{name}", STARTING, st, Cause.STARTING, _num(comp.get("started_at")))
    if st == "needs-config":
        return Check(f"component:{name}", NEEDS_CONFIG, reason, _cause(comp, "cause", Cause.NEEDS_CONFIG),
                     _num(comp.get("last_exit_at")))
    cause = Cause.OPERATOR if st == "stopped" else Cause.COMPONENT_DOWN
    return Check(f"component:{name}", DEGRADED, f"{name} {st}: {reason}", cause, _num(comp.get("last_exit_at")))


def fault_checks(state: Mapping[str, Any]) -> list[Check]:
    """The supervisor's own file faults (run/state.json unwritable, the disk full, a log that cannot
    rotate): the bundle runs and the bot answers, so each is `degraded` with its typed cause."""
    faults = state.get("faults")
    out = []
    for fault in faults if isinstance(faults, list) else []:
        if isinstance(fault, Mapping) and fault.get("cause"):
            cause = Cause.parse(fault.get("cause"))
            out.append(Check(f"file:{fault.get('file') or '?'}", DEGRADED, str(fault.get("detail") or cause.label)[:300],
                             cause, _num(fault.get("since"))))
    return out


def judge(snap: Snapshot, limits: Limits) -> Verdict:
    """The verdict on one snapshot. Pure: same snapshot, same verdict."""
    state = snap.state or {}
    sup = state.get("supervisor") or {}
    bot = snap.component("bot")
    hb = judge_heartbeat(snap, bot, limits) if snap.supervisor_alive and snap.state else HeartbeatView(
        bool(bot and bot.get("heartbeat")), "missing" if snap.heartbeat.data is None else "foreign")
    if not snap.supervisor_alive:
        if snap.stopping or sup.get("shutting_down"):
            check = Check("supervisor", STOPPED, "the bundle is stopped", Cause.STOPPED, _num(state.get("updated_at")))
        else:
            check = Check("supervisor", DOWN, "the supervisor is not running", Cause.SUPERVISOR_DOWN,
                          _num(state.get("updated_at")))
        return Verdict(check.level, check.cause, check.detail, (check,), hb, False)
    if sup.get("shutting_down") or (snap.stopping and snap.state):
        check = Check("supervisor", STOPPED, "the bundle is stopping", Cause.SHUTDOWN, _num(state.get("updated_at")))
        return Verdict(STOPPED, Cause.SHUTDOWN, check.detail, (check,), hb, True)
    if snap.state is None:
        check = Check("supervisor", DEGRADED, f"state unknown for a moment: {snap.state_error or 'no state yet'}",
                      Cause.STATE_UNKNOWN)
        return Verdict(DEGRADED, Cause.STATE_UNKNOWN, check.detail, (check,), hb, True)
    checks = [Check("supervisor", HEALTHY, f"pid {snap.supervisor_pid}", None, _num(sup.get("started_at")))]
    if bot is not None:
        checks += _bot_checks(snap, bot, hb, limits)
    checks += [_component_check(c) for c in state["components"] if c["name"] != "bot"]
    checks += fault_checks(state)
    worst = max(checks, key=lambda c: RANK[c.level])  # first of the worst, in check order
    if worst.ok:
        return Verdict(HEALTHY, None, "every component is running and the bot's heartbeat is fresh"
                       if hb.enabled else "every component is running", tuple(checks), hb, True)
    return Verdict(worst.level, worst.cause, worst.detail, tuple(checks), hb, True)


def read_and_judge(settings: Any, **kwargs: Any) -> tuple[Snapshot, Verdict]:
    """The snapshot and its verdict in one call, for readers that need nothing else."""
    snap = read_snapshot(settings, **kwargs)
    return snap, judge(snap, Limits.from_settings(settings))


def _awaiting_delivery(data: Mapping[str, Any]) -> int:
    """Updates Telegram holds for a webhook bot that has not served one delivery yet (0: none)."""
    info = data.get("webhook") if isinstance(data.get("webhook"), Mapping) else {}
    pending = info.get("pending") if isinstance(info.get("pending"), int) else 0
    return pending if data.get("webhook_received") == 0 else 0


def webhook_check(data: Mapping[str, Any], since: float | None = None) -> Check:
    """Webhook mode: Telegram's side of the link, from the getWebhookInfo the bot last saw. Failing
    when Telegram reports a delivery error newer than the last update this bot received while
    updates wait, or when another URL is registered (someone else took the webhook)."""
    info = data.get("webhook") if isinstance(data.get("webhook"), Mapping) else {}
    pending = info.get("pending") if isinstance(info.get("pending"), int) else 0
    if info.get("url_ok") is False:
        return Check("telegram", DEGRADED, "Telegram delivers to another URL: setWebhook was called elsewhere",
                     Cause.WEBHOOK_FAILING, _num(info.get("checked_at")))
    error_at, received_at = _num(info.get("last_error_at")), _num(data.get("webhook_last_received_at"))
    if error_at is not None and pending > 0 and (received_at is None or error_at > received_at):
        why = str(info.get("last_error") or "delivery failed")[:200]
        return Check("telegram", DEGRADED, f"Telegram cannot deliver to the webhook: {why} ({pending} pending)",
                     Cause.WEBHOOK_FAILING, error_at)
    return Check("telegram", HEALTHY, f"webhook ({pending} pending at Telegram)", None, since)
