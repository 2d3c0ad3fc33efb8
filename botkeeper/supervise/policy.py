"""Pure decisions of the supervisor: what to do when a component exits (backoff, errored, config).

The health verdict lives in botkeeper/health/verdict.py.

Nothing here touches processes, files or the clock: callers pass `now` in, so every rule is tested
with plain numbers.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass
from typing import Any, Iterable

from ..causes import Cause
from ..config import EX_CONFIG
from ..states import State


# --- restart policy -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestartDecision:
    state: State  # STARTING = restart now; BACKOFF / ERRORED = restart after `delay`; NEEDS_CONFIG = hold
    delay: float
    failures: tuple[float, ...]  # times of recent quick failures, to pass back next time
    cause: Cause
    detail: str


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
        return RestartDecision(State.NEEDS_CONFIG, 0.0, (), Cause.NEEDS_CONFIG, f"{how} (EX_CONFIG)")
    if ran_for >= spec.min_uptime:
        return RestartDecision(State.STARTING, 0.0, (), Cause.CRASH, f"{how} after {ran_for:.1f} s")
    recent = tuple(t for t in failures if now - t <= spec.restart_window) + (now,)
    if len(recent) >= spec.max_restarts:
        return RestartDecision(
            State.ERRORED, spec.errored_retry, recent, Cause.CRASH_LOOP,
            f"{how}; {len(recent)} quick failures in a row, retrying every {spec.errored_retry:g} s",
        )
    delay = backoff_delay(spec.restart_delay, spec.max_restart_delay, len(recent))
    cause = Cause.CRASH_LOOP if len(recent) >= 2 else Cause.CRASH
    return RestartDecision(State.BACKOFF, delay, recent, cause,
                           f"{how} after {ran_for:.1f} s (quick failure {len(recent)})")
