"""The `monitor` component: watches the bot's heartbeat, memory, CPU and uptime.

Each check reads the one snapshot (botkeeper.health.snapshot) and its verdict (botkeeper.health.verdict), measures
the bot's process tree, and lets `watch_policy.decide()` judge. It never signals a process: restarts are asked of the
supervisor through the control channel with a reason that lands in the restart history. If the
supervisor does not answer, that is logged and left to auto_recovery.

The loop is thin (`while not stopping: step(); wait`) and `step()` is what tests call.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from typing import Any, Callable

from ..supervise import control
from ..config import Settings
from ..causes import Cause
from ..health.procstats import ProcessStats
from ..health.snapshot import read_snapshot
from ..store import WATCH_GAP_SAMPLES, Store  # a gap of that many sample intervals ends a watched period
from ..health.verdict import Limits as VerdictLimits, judge
from ..health.watch_policy import Decision, Limits, Memory, Observation, decide

log = logging.getLogger("monitor")
BY = "monitor"


class Monitor:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time,
                 call: Callable[..., Any] = control.call, store: Store | None = None):
        self.settings = settings
        self.limits = Limits.from_settings(settings)
        self.verdict_limits = VerdictLimits.from_settings(settings)
        self.clock = clock
        self.call = call
        self.store = store if store is not None else Store(settings.history_db)
        self.memory = Memory()
        self.stopping = threading.Event()
        self.next_sample = 0.0
        self.last_verdict: str | None = None
        self.recheck_at: float | None = None  # wall clock: judge again then (a blocked loop's limit)
        self.meter = ProcessStats(ttl=0.0)
        # Alerts are sent from this process so the supervisor stays small; the one call site is in
        # step(), which hands the alerter the same snapshot and verdict it judged by.
        self.alerter: Any = None
        self.deadman: Any = None  # DEADMAN_URL: alerting/deadman.py, one call per tick (never blocks)

    # --- one check ---------------------------------------------------------------------------------
    def step(self) -> Decision:
        snap = read_snapshot(self.settings, now=self.clock())
        verdict = judge(snap, self.verdict_limits)
        now = snap.now
        bot = (snap.component("bot") or {}) if snap.supervisor_alive else {}
        use = self.measure(bot)
        hb_problem = snap.heartbeat.error if snap.heartbeat.problem in ("unreadable", "oversized", "corrupt") else None
        obs = Observation(
            now=now, bot_state=bot.get("state"), bot_pid=bot.get("pid") if use else None,
            bot_started_at=bot.get("started_at") if isinstance(bot.get("started_at"), (int, float)) else None,
            heartbeat=verdict.heartbeat, telegram=next((c for c in verdict.checks if c.name == "telegram"), None),
            heartbeat_problem=hb_problem if bot.get("heartbeat") else None,
            disk_full=any(c.cause == Cause.DISK_FULL for c in verdict.checks),
            tree_pids=frozenset(use["pids"]) if use else frozenset(),
            rss_bytes=use["memory_bytes"] if use else None, cpu_percent=use["cpu_percent"] if use else None,
        )
        decision = decide(obs, self.memory, self.limits)
        self.recheck_at = self.due_again(verdict, now)
        self.memory = decision.memory
        if decision.verdict != self.last_verdict:
            log.info("bot: %s (pid %s, heartbeat %s); overall %s", decision.verdict, obs.bot_pid,
                     verdict.heartbeat.status, verdict.overall)
            self.last_verdict = decision.verdict
        for kind, cause, detail in decision.reports:
            self.report(kind, cause, detail)
        if decision.restart:
            self.ask_restart(*decision.restart)
        if now >= self.next_sample:
            self.next_sample = now + self.settings.sample_interval
            self.sample(obs.rss_bytes, obs.cpu_percent, now)
        if self.deadman is not None:  # before the alerter: its deliveries may take seconds
            self.deadman.step(now, verdict)
        if self.alerter is not None:  # the single alert call site, every tick
            self.alerter.step(now, snap, verdict)
        return decision

    def due_again(self, verdict: Any, now: float) -> float | None:
        """When the bot's own heartbeat turns hung if nothing changes (it goes stale, its blocked
        loop passes BLOCK_LIMIT): judged again then, not up to MONITOR_INTERVAL later."""
        hb = verdict.heartbeat
        if not hb.own or hb.hung or hb.age is None:
            return None
        due = now - hb.age + self.verdict_limits.stale_after
        if hb.blocked_since is not None:
            due = min(due, hb.blocked_since + self.verdict_limits.block_limit)
        return due + 0.05

    def measure(self, bot: dict[str, Any]) -> dict[str, Any] | None:
        """Memory, CPU and pids of the bot's process tree (None when it is not running)."""
        if bot.get("state") not in ("starting", "running") or not bot.get("pid"):
            return None
        return self.meter.measure([("bot", bot.get("pid"), bot.get("create_time"))]).get("bot")

    # --- asking the supervisor ---------------------------------------------------------------------
    def ask_restart(self, cause: Cause, detail: str) -> None:
        log.warning("bot: asking the supervisor for a restart: %s: %s", cause.value, detail)
        try:
            self.call(self.settings, "restart", name="bot", cause=cause.value, reason=detail, by=BY, timeout=3.0)
        except control.SupervisorUnavailable as exc:
            log.error("bot: restart not requested, %s; auto_recovery will bring the supervisor back", exc)
        except control.ControlError as exc:
            log.error("bot: the supervisor refused the restart: %s", exc)

    def report(self, kind: str, cause: Cause, detail: str) -> None:
        log.warning("bot: %s: %s", kind, detail)
        try:
            self.call(self.settings, "event", component="bot", kind=kind, cause=cause.value, detail=detail, by=BY,
                      timeout=3.0)
        except (control.SupervisorUnavailable, control.ControlError) as exc:
            log.error("bot: could not record %s in the history: %s", kind, exc)

    def sample(self, rss: int | None, cpu: float | None, now: float) -> None:
        """One chart point (empty while the bot is down) and one tick of watched time for uptime %."""
        try:
            self.store.add_sample("bot", rss, None if cpu is None else round(cpu, 1), at=now)
            self.store.watch(now, self.settings.sample_interval * WATCH_GAP_SAMPLES)
        except sqlite3.Error as exc:  # the chart loses a point; the watch goes on
            log.warning("history: could not store a bot resource sample: %s", exc)

    # --- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        log.info("monitor pid %s: checking the bot every %g s (stale after %g s, blocked loop after %g s, memory"
                 " %g MB, CPU %g%% for %g s, uptime %g h)", os.getpid(), self.settings.monitor_interval,
                 self.settings.stale_after, self.settings.block_limit,
                 self.limits.max_memory_mb, self.limits.max_cpu_percent, self.limits.cpu_window,
                 self.limits.max_uptime_hours)
        interval = self.settings.monitor_interval
        while not self.stopping.is_set():
            began = time.monotonic()
            self.step()
            wait = interval - (time.monotonic() - began)
            if self.recheck_at is not None:
                wait = min(wait, self.recheck_at - self.clock())
            self.stopping.wait(max(0.0, wait))
        log.info("monitor stopping")
        self.store.close()
        return 0


def main(settings: Settings) -> int:
    try:
        from .alerts import Alerter

        monitor = Monitor(settings)
        monitor.alerter = Alerter(settings, store=monitor.store)  # incidents + alerts, every tick
        if settings.deadman_url:
            from .deadman import DeadMan

            monitor.deadman = DeadMan(settings, monitor.alerter.redact)
        return monitor.run()
    except Exception:  # process boundary: the supervisor restarts us
        log.exception("monitor crashed")
        return 1
