"""Pure decisions of the two watchers: the monitor (bot heartbeat and limits) and auto_recovery.

Nothing here touches processes, files or the clock. The monitor passes an `Observation` (built
from the one snapshot and verdict) and the `Memory` it kept from its previous check; `decide()`
returns what to do, with a typed cause, and the memory to keep.
Times are wall-clock seconds (`time.time()`), because heartbeats and state.json carry wall times.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..causes import Cause
from .verdict import Check, HeartbeatView

MIB = 1024 * 1024
MEMORY_CHECKS = 3  # memory above the limit this many checks in a row -> restart
WEB_FAILURES = 3  # /health connection failures in a row -> restart web
TELEGRAM_BAD = ("telegram-unreachable", "conflict")
DISK_FULL = "disk-full"  # Cause.DISK_FULL: a fresh heartbeat with "disk_full": true


# --- the monitor ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    max_memory_mb: float
    max_cpu_percent: float
    cpu_window: float
    max_uptime_hours: float
    outage_restart_interval: float
    cooldown: float  # after asking for a restart, ask again only after this long (the bot is starting)
    stale_after: float = 0.0  # only named in the restart's detail: the verdict decides "hung"
    memory_checks: int = MEMORY_CHECKS

    @classmethod
    def from_settings(cls, s: Any) -> "Limits":
        return cls(s.max_memory_mb, s.max_cpu_percent, s.cpu_window, s.max_uptime_hours,
                   s.outage_restart_interval, max(s.heartbeat_grace, s.stale_after), s.stale_after)


@dataclass(frozen=True)
class Observation:
    """What one monitor check saw. The heartbeat is already judged (botkeeper.health.verdict): whose it is
    and whether the bot is hung is decided there, once, for every reader."""

    now: float
    bot_state: str | None  # the bot component's state (None: no bot component, or no supervisor)
    bot_pid: int | None  # verified live pid, None if the recorded process is gone
    bot_started_at: float | None
    heartbeat: HeartbeatView
    telegram: Check | None = None  # the verdict's telegram check, when the bot reported one
    heartbeat_problem: str | None = None  # bot_health.txt unreadable/corrupt (not merely missing)
    disk_full: bool = False  # the bot's fresh heartbeat says it could only be written in place
    tree_pids: frozenset[int] = frozenset()  # the bot and its descendants
    rss_bytes: int | None = None
    cpu_percent: float | None = None


@dataclass(frozen=True)
class Memory:
    """What the monitor carries from one check to the next."""

    pid: int | None = None  # the bot process these streaks are about
    memory_checks: int = 0  # consecutive checks above MAX_MEMORY_MB
    cpu_high_since: float | None = None
    outage_since: float | None = None
    requested_at: float | None = None  # our last restart request
    requested_pid: int | None = None
    outage_restart_at: float | None = None
    active: frozenset[str] = frozenset()  # conditions already reported (report on onset only)


@dataclass(frozen=True)
class Decision:
    restart: tuple[Cause, str] | None  # (cause, detail) when the bot should be restarted now
    reports: tuple[tuple[str, Cause, str], ...]  # (event kind, cause, detail) to record in the history
    memory: Memory
    verdict: str  # one word for the log: up, waiting, stale, blocked, limit, outage, not-running, cooldown, disk-full


def _mb(n: float) -> str:
    return f"{n / MIB:.1f} MB"


def decide(obs: Observation, mem: Memory, limits: Limits) -> Decision:
    """One monitor check: restart the bot? report something? what to remember?"""
    now = obs.now
    if obs.bot_state not in ("running", "starting") or obs.bot_pid is None:
        # Nothing to judge; forget the streaks of a process that is gone, keep our request record.
        keep = Memory(requested_at=mem.requested_at, requested_pid=mem.requested_pid,
                      outage_restart_at=mem.outage_restart_at, active=mem.active)
        return Decision(None, (), keep, "not-running")
    if mem.pid != obs.bot_pid:
        mem = Memory(pid=obs.bot_pid, requested_at=mem.requested_at, requested_pid=mem.requested_pid,
                     outage_restart_at=mem.outage_restart_at, active=mem.active)
    uptime = max(0.0, now - obs.bot_started_at) if obs.bot_started_at is not None else 0.0
    reports: list[tuple[str, Cause, str]] = []
    active = set()
    candidates: list[tuple[str, Cause, str]] = []  # (verdict word, cause, detail), most urgent first
    hb = obs.heartbeat

    if obs.heartbeat_problem:
        key = "heartbeat-unreadable:" + obs.heartbeat_problem
        active.add(key)
        if key not in mem.active:
            reports.append(("heartbeat-unreadable", Cause.HEARTBEAT_INVALID, obs.heartbeat_problem))
    if hb.own and not hb.hung and obs.disk_full:  # alive, only its disk is full: a restart would not help
        active.add(DISK_FULL)
        if DISK_FULL not in mem.active:
            reports.append((DISK_FULL, Cause.DISK_FULL, "the bot beats but cannot write files: the disk is full"))
    if hb.hung and hb.blocked_for is not None:  # the bot's watchdog tells: its loop is blocked
        candidates.append(("blocked", Cause.LOOP_BLOCKED, hb.blocked_detail))
    elif hb.hung:
        if hb.own:
            detail = f"heartbeat stale for {hb.silent_for:.0f} s (STALE_AFTER={limits.stale_after:g})"
        else:
            detail = f"no heartbeat {hb.silent_for:.0f} s after start ({hb.error or hb.status})"
        cause = Cause.HEARTBEAT_INVALID if hb.status == "invalid" else Cause.STALE_HEARTBEAT  # as the verdict says
        candidates.append(("stale", cause, detail))
    tg = obs.telegram
    if tg is not None and tg.cause in (Cause.TELEGRAM_OUTAGE, Cause.CONFLICT):
        kind = "telegram-unreachable" if tg.cause == Cause.TELEGRAM_OUTAGE else "conflict"
        active.add(kind)
        if kind not in mem.active:
            reports.append((kind, tg.cause, tg.detail[:300]))
        if tg.cause == Cause.TELEGRAM_OUTAGE:
            outage_since = min(x for x in (tg.since, mem.outage_since, now) if x is not None)
            mem = dataclasses.replace(mem, outage_since=outage_since)
            outage = now - outage_since
            last = mem.outage_restart_at
            if outage >= limits.outage_restart_interval and (last is None or now - last >= limits.outage_restart_interval):
                candidates.append(("outage", Cause.TELEGRAM_OUTAGE,
                                   f"Telegram unreachable for {outage:.0f} s: one restart per"
                                   f" {limits.outage_restart_interval:g} s in case the process' network is wedged"))
    elif hb.own and not hb.hung:
        mem = dataclasses.replace(mem, outage_since=None)
        if mem.active & set(TELEGRAM_BAD):
            reports.append(("telegram-reachable", Cause.TELEGRAM_OUTAGE, f"heartbeat state {hb.state}"))

    # Resources of the bot's whole process tree.
    if obs.rss_bytes is not None:
        limit = limits.max_memory_mb * MIB
        checks = mem.memory_checks + 1 if obs.rss_bytes > limit else 0
        mem = dataclasses.replace(mem, memory_checks=checks)
        if checks >= limits.memory_checks:
            candidates.append(("limit", Cause.MEMORY, f"memory {_mb(obs.rss_bytes)} above"
                                                      f" MAX_MEMORY_MB={limits.max_memory_mb:g} for {checks} checks in a row"))
    if obs.cpu_percent is not None:
        if obs.cpu_percent > limits.max_cpu_percent:
            high_since = mem.cpu_high_since if mem.cpu_high_since is not None else now
            mem = dataclasses.replace(mem, cpu_high_since=high_since)
            if now - high_since >= limits.cpu_window:
                candidates.append(("limit", Cause.CPU, f"CPU {obs.cpu_percent:.0f}% above MAX_CPU_PERCENT="
                                                       f"{limits.max_cpu_percent:g} for {now - high_since:.0f} s"))
        else:
            mem = dataclasses.replace(mem, cpu_high_since=None)
    if limits.max_uptime_hours > 0 and uptime > limits.max_uptime_hours * 3600:
        candidates.append(("limit", Cause.MAX_UPTIME, f"planned restart after {uptime / 3600:.1f} h up"
                                                      f" (MAX_UPTIME_HOURS={limits.max_uptime_hours:g})"))

    mem = dataclasses.replace(mem, active=frozenset(active))
    if DISK_FULL in active:
        return Decision(None, tuple(reports), mem, DISK_FULL)
    if not candidates:
        word = "waiting" if hb.enabled and not hb.own else "up"
        return Decision(None, tuple(reports), mem, word)
    word, cause, detail = candidates[0]
    # The cooldown waits out a new bot's start; a heartbeat of its own that says hung needs no wait.
    fresh_evidence = hb.own and mem.requested_pid is not None and obs.bot_pid != mem.requested_pid
    if mem.requested_at is not None and now - mem.requested_at < limits.cooldown and not fresh_evidence:
        return Decision(None, tuple(reports), mem, "cooldown")
    mem = dataclasses.replace(mem, requested_at=now, requested_pid=obs.bot_pid, memory_checks=0,
                              cpu_high_since=None,
                              outage_restart_at=now if word == "outage" else mem.outage_restart_at)
    return Decision((cause, detail), tuple(reports), mem, word)


# --- auto_recovery ----------------------------------------------------------------------------------
RELAUNCH, REPLACE_RUNNER, WAIT, NOTHING = "relaunch-runner", "replace-runner", "wait", "nothing"


def roots_action(runner_alive: bool, supervisor_alive: bool, supervisor_gone_for: float | None,
                 grace: float) -> str:
    """What auto_recovery does about run_24_7.sh and the supervisor.

    - runner gone: relaunch it. If the supervisor still runs, the new runner waits on the
      supervisor's lock and takes over when that supervisor ends (no second supervisor).
    - runner alive, supervisor gone: the runner restarts it (with backoff); step in only when the
      supervisor stays gone past `grace` (the runner is stuck or stopped): replace the runner.
    """
    if not runner_alive:
        return RELAUNCH
    if supervisor_alive:
        return NOTHING
    if supervisor_gone_for is not None and supervisor_gone_for > grace:
        return REPLACE_RUNNER
    return WAIT


def stuck_components(components: Iterable[Mapping[str, Any]], now: float, first_seen: Mapping[str, float],
                     grace: float) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """Components the supervisor should have started by now: [(name, reason)], and the new first_seen.

    backoff / errored are the supervisor's own waits: stuck only past their `next_start_at` (or,
    without one, past `grace` since we first saw them) plus `grace`. `stopped` is only ever the
    result of an explicit stop or a shutdown, and `needs-config` waits for the user: both are left
    alone. A live state without a pid is also stuck.
    """
    stuck: list[tuple[str, str]] = []
    seen: dict[str, float] = {}
    for comp in components:
        name, state = comp.get("name"), comp.get("state")
        if not isinstance(name, str):
            continue
        if state in ("backoff", "errored"):
            due = comp.get("next_start_at")
        elif state in ("running", "starting") and not comp.get("pid"):
            due = None
        else:
            continue
        since = first_seen.get(name, now)
        seen[name] = since
        if isinstance(due, (int, float)):
            late = now - float(due)
            if late > grace:
                stuck.append((name, f"{state} and {late:.0f} s past its restart time"))
        elif now - since > grace:
            stuck.append((name, f"{state} with nothing scheduled for {now - since:.0f} s"))
    return stuck, seen


def web_check(failures: int, connected: bool) -> tuple[int, bool]:
    """Consecutive /health connection failures; True once there are WEB_FAILURES in a row.

    Any HTTP answer (503 included: that is a truthful 'unhealthy') counts as connected."""
    if connected:
        return 0, False
    failures += 1
    return failures, failures >= WEB_FAILURES


def prune_plan(rotated: Iterable[tuple[str, float, int]], free_bytes: int, min_free_bytes: int) -> list[str]:
    """Rotated logs to delete, oldest first, until free space is back above the threshold.

    `rotated` is [(path, mtime, size)]. Returns [] when there is enough space."""
    plan: list[str] = []
    for path, _, size in sorted(rotated, key=lambda r: (r[1], r[0])):
        if free_bytes >= min_free_bytes:
            break
        plan.append(path)
        free_bytes += size
    return plan


def older_than(files: Iterable[tuple[str, float]], now: float, age: float) -> list[str]:
    """Paths whose mtime is more than `age` seconds before now, oldest first."""
    return [p for p, m in sorted(files, key=lambda f: (f[1], f[0])) if now - m > age]
