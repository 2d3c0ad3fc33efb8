"""The `monitor` component: watches the bot's heartbeat, memory, CPU and uptime.

Each check reads run/state.json (which bot process is current), bot_health.txt and the bot's process
tree, and lets `watch_policy.decide()` judge. It never signals a process: restarts are asked of the
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

import psutil

from . import control, heartbeat
from .config import Settings
from .fsutil import read_json, verified_process
from .store import Store
from .watch_policy import Decision, Limits, Memory, Observation, decide

log = logging.getLogger("monitor")
BY = "monitor"


class Monitor:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time,
                 call: Callable[..., Any] = control.call, store: Store | None = None):
        self.settings = settings
        self.limits = Limits.from_settings(settings)
        self.clock = clock
        self.call = call
        self.store = store if store is not None else Store(settings.history_db)
        self.memory = Memory()
        self.stopping = threading.Event()
        self.next_sample = 0.0
        self.last_verdict: str | None = None
        self._procs: dict[tuple[int, float], psutil.Process] = {}  # kept for cpu_percent deltas
        # Alerts are sent from this process so the supervisor stays small (issue 6). The one call
        # site is in step(); until botkeeper/alerts.py lands this stays None.
        self.alerter: Any = None

    # --- one check ---------------------------------------------------------------------------------
    def step(self) -> Decision:
        now = self.clock()
        state = read_json(self.settings.state_file)
        comps = state.get("components", []) if isinstance(state, dict) else []
        bot = next((c for c in comps if isinstance(c, dict) and c.get("name") == "bot"), None) or {}
        proc = verified_process(bot.get("pid"), bot.get("create_time")) if bot.get("pid") else None
        tree, rss, cpu = self.measure(proc)
        hb_enabled = bool(bot.get("heartbeat"))
        hb, error = heartbeat.read_or_error(self.settings.heartbeat_file) if hb_enabled else (None, None)
        started = bot.get("started_at")
        obs = Observation(
            now=now, bot_state=bot.get("state"), bot_pid=proc.pid if proc else None,
            bot_started_at=float(started) if isinstance(started, (int, float)) else None,
            heartbeat_enabled=hb_enabled, heartbeat=hb, heartbeat_error=error,
            heartbeat_missing=error is not None and not os.path.lexists(self.settings.heartbeat_file),
            tree_pids=tree, rss_bytes=rss, cpu_percent=cpu,
        )
        decision = decide(obs, self.memory, self.limits)
        self.memory = decision.memory
        if decision.verdict != self.last_verdict:
            log.info("bot: %s (pid %s, heartbeat %s)", decision.verdict, obs.bot_pid,
                     error or _age(hb, now))
            self.last_verdict = decision.verdict
        for kind, detail in decision.reports:
            self.report(kind, detail)
        if decision.restart:
            self.ask_restart(decision.restart)
        if rss is not None and now >= self.next_sample:
            self.next_sample = now + self.settings.sample_interval
            self.sample(rss, cpu, now)
        if self.alerter is not None:  # the single alert call site, every tick
            self.alerter.step(now)
        return decision

    def measure(self, proc: psutil.Process | None) -> tuple[frozenset[int], int | None, float | None]:
        """(pids, total RSS bytes, total CPU %) of the bot's process tree; (∅, None, None) if gone."""
        if proc is None:
            self._procs.clear()
            return frozenset(), None, None
        try:
            members = [proc] + proc.children(recursive=True)
        except psutil.Error:
            return frozenset(), None, None
        rss, cpu, pids, keep = 0, 0.0, set(), {}
        for member in members:
            try:
                key = (member.pid, member.create_time())
                member = self._procs.get(key, member)
                with member.oneshot():
                    rss += member.memory_info().rss
                    cpu += member.cpu_percent(None)  # since our previous check (0.0 the first time)
                keep[key] = member
                pids.add(member.pid)
            except psutil.Error:  # ended between listing and reading
                continue
        self._procs = keep
        if not pids:
            return frozenset(), None, None
        return frozenset(pids), rss, cpu

    # --- asking the supervisor ---------------------------------------------------------------------
    def ask_restart(self, reason: str) -> None:
        log.warning("bot: asking the supervisor for a restart: %s", reason)
        try:
            self.call(self.settings, "restart", name="bot", reason=reason, by=BY, timeout=3.0)
        except control.SupervisorUnavailable as exc:
            log.error("bot: restart not requested, %s; auto_recovery will bring the supervisor back", exc)
        except control.ControlError as exc:
            log.error("bot: the supervisor refused the restart: %s", exc)

    def report(self, kind: str, detail: str) -> None:
        log.warning("bot: %s: %s", kind, detail)
        try:
            self.call(self.settings, "event", component="bot", kind=kind, detail=detail, by=BY, timeout=3.0)
        except (control.SupervisorUnavailable, control.ControlError) as exc:
            log.error("bot: could not record %s in the history: %s", kind, exc)

    def sample(self, rss: int, cpu: float | None, now: float) -> None:
        try:
            self.store.add_sample("bot", rss, None if cpu is None else round(cpu, 1), at=now)
        except sqlite3.Error as exc:  # the chart loses a point; the watch goes on
            log.warning("history: could not store a bot resource sample: %s", exc)

    # --- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        log.info("monitor pid %s: checking the bot every %g s (stale after %g s, memory %g MB, CPU %g%%"
                 " for %g s, uptime %g h)", os.getpid(), self.settings.monitor_interval, self.limits.stale_after,
                 self.limits.max_memory_mb, self.limits.max_cpu_percent, self.limits.cpu_window,
                 self.limits.max_uptime_hours)
        interval = self.settings.monitor_interval
        while not self.stopping.is_set():
            began = time.monotonic()
            self.step()
            self.stopping.wait(max(0.0, interval - (time.monotonic() - began)))
        log.info("monitor stopping")
        self.store.close()
        return 0


def _age(hb: dict | None, now: float) -> str:
    if not hb or not isinstance(hb.get("written_at"), (int, float)):
        return "none"
    return f"{now - hb['written_at']:.1f} s old"


def main(settings: Settings) -> int:
    try:
        from .alerts import Alerter

        monitor = Monitor(settings)
        monitor.alerter = Alerter(settings, store=monitor.store)  # incidents + alerts, every tick
        return monitor.run()
    except Exception:  # process boundary: the supervisor restarts us
        log.exception("monitor crashed")
        return 1
