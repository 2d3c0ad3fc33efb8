"""Pure decisions: restart backoff, heartbeat staleness, the health verdict.

Nothing here touches processes, files or the clock: callers pass `now` in, so every rule is tested
with plain numbers.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .states import State

EX_CONFIG = 78


# --- restart policy -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestartDecision:
    state: State  # STARTING = restart now; BACKOFF / ERRORED = restart after `delay`; NEEDS_CONFIG = hold
    delay: float
    failures: tuple[float, ...]  # times of recent quick failures, to pass back next time
    reason: str


def backoff_delay(restart_delay: float, max_delay: float, n_failures: int) -> float:
    """0.5, 1, 2, 4 ... seconds for the 1st, 2nd, 3rd ... quick failure in a row, capped."""
    if n_failures <= 0:
        return 0.0
    return min(restart_delay * (2 ** min(n_failures - 1, 60)), max_delay)


def describe_exit(exit_code: int | None, exit_signal: int | None) -> str:
    if exit_signal:
        try:
            name = _signal.Signals(exit_signal).name
        except ValueError:
            name = f"signal {exit_signal}"
        return f"killed by {name}"
    return f"exited with code {exit_code}"


def after_exit(spec: Any, exit_code: int | None, exit_signal: int | None, ran_for: float,
               failures: Iterable[float], now: float) -> RestartDecision:
    """What to do when a component's process ended without being asked to.

    `spec` needs min_uptime, restart_delay, max_restart_delay, max_restarts, restart_window and
    errored_retry (a ComponentSpec). A run that lasted min_uptime clears the failure record.
    """
    how = describe_exit(exit_code, exit_signal)
    if exit_code == EX_CONFIG and not exit_signal:
        return RestartDecision(State.NEEDS_CONFIG, 0.0, (), f"needs configuration ({how})")
    if ran_for >= spec.min_uptime:
        return RestartDecision(State.STARTING, 0.0, (), f"{how} after {ran_for:.1f} s")
    recent = tuple(t for t in failures if now - t <= spec.restart_window) + (now,)
    if len(recent) >= spec.max_restarts:
        return RestartDecision(
            State.ERRORED, spec.errored_retry, recent,
            f"{how}; {len(recent)} quick failures in a row, retrying every {spec.errored_retry:g} s",
        )
    delay = backoff_delay(spec.restart_delay, spec.max_restart_delay, len(recent))
    return RestartDecision(State.BACKOFF, delay, recent, f"{how} after {ran_for:.1f} s (quick failure {len(recent)})")


# --- heartbeat staleness --------------------------------------------------------------------------
UP, LATE, STALE = "up", "late", "stale"


def heartbeat_age(heartbeat: Mapping[str, Any] | None, now: float) -> float | None:
    if not heartbeat:
        return None
    written = heartbeat.get("written_at")
    if not isinstance(written, (int, float)):
        return None
    return max(0.0, now - float(written))


def staleness(heartbeat: Mapping[str, Any] | None, now: float, interval: float, stale_after: float) -> str:
    """up while beats arrive on time, late once two are missed, stale past stale_after."""
    age = heartbeat_age(heartbeat, now)
    if age is None or age > stale_after:
        return STALE
    if age > min(2 * interval, stale_after):
        return LATE
    return UP


# --- health verdict -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    overall: str  # healthy | degraded | down
    checks: tuple[Check, ...]

    @property
    def failing(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


TELEGRAM_BAD = {"telegram-unreachable": "Telegram is unreachable", "conflict": "another program polls with this token (409 Conflict)"}


def health(state: Mapping[str, Any] | None, supervisor_alive: bool, heartbeat: Mapping[str, Any] | None,
           heartbeat_error: str | None, now: float, interval: float, stale_after: float,
           grace: float) -> Verdict:
    """The bundle's health from the supervisor's state, the bot's heartbeat and the clock.

    healthy: every component running and the heartbeat fresh. down: the supervisor or the bot is
    not running, or the bot is stale. degraded: anything else that fails (Telegram unreachable, a
    secondary component down, a late heartbeat).
    """
    checks: list[Check] = []
    if not supervisor_alive or not state:
        checks.append(Check("supervisor", False, "the supervisor is not running"))
        return Verdict(False, "down", tuple(checks))
    checks.append(Check("supervisor", True, f"pid {state.get('supervisor', {}).get('pid')}"))
    down = False
    bot_started = None
    for comp in state.get("components", []):
        name, cstate = comp.get("name"), comp.get("state")
        ok = cstate == State.RUNNING.value
        detail = cstate if ok else f"{cstate}: {comp.get('last_restart_reason') or comp.get('last_exit') or 'not running'}"
        checks.append(Check(f"component:{name}", ok, detail))
        if name == "bot":
            down = down or not ok
            bot_started = comp.get("started_at")
    bot = next((c for c in state.get("components", []) if c.get("name") == "bot"), None)
    if bot and bot.get("heartbeat"):
        age = heartbeat_age(heartbeat, now)
        in_grace = bot_started is not None and now - float(bot_started) < grace
        if heartbeat_error or age is None:
            why = heartbeat_error or "no heartbeat yet"
            ok = False
            checks.append(Check("heartbeat", ok, why + (" (bot starting)" if in_grace else "")))
            down = down or not in_grace
        else:
            verdict = staleness(heartbeat, now, interval, stale_after)
            checks.append(Check("heartbeat", verdict == UP, f"{verdict}, {age:.1f} s old"))
            down = down or verdict == STALE
            hb_state = heartbeat.get("state") if heartbeat else None
            if hb_state in TELEGRAM_BAD:
                checks.append(Check("telegram", False, TELEGRAM_BAD[hb_state]))
            elif hb_state == "polling":
                checks.append(Check("telegram", True, "polling"))
    healthy = all(c.ok for c in checks)
    overall = "healthy" if healthy else ("down" if down else "degraded")
    return Verdict(healthy, overall, tuple(checks))
