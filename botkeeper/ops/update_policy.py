"""The update's decision (pure): after each look at the bundle, keep waiting, keep the new version,
or roll it back.

The new version is kept only on a healthy verdict whose heartbeat is the new bot's own (a bot pid
other than the one before the deploy, and the deploy's restart counted). It is rolled back at once
when the new bot exits (a restart beyond the deploy's own, or backoff/errored/needs-config), and
when no such verdict came by the deadline (UPDATE_HEALTH_TIMEOUT).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..causes import Cause

WAIT, KEEP, ROLL_BACK = "wait", "keep", "roll-back"
EXITED_STATES = ("backoff", "errored", "needs-config")


@dataclass(frozen=True)
class Watch:
    """What the update knew just before asking for the deploy."""

    old_pid: int | None  # the bot before the deploy
    base_restarts: int  # its restart count then: the deploy's own restart makes it one more
    deadline: float  # monotonic
    timeout: float  # UPDATE_HEALTH_TIMEOUT, for the sentence


@dataclass(frozen=True)
class Look:
    """One look at the bundle: the bot's row of the supervisor's state and the verdict's essentials."""

    now: float
    bot_pid: int | None
    bot_state: str | None
    bot_restarts: int
    bot_cause: str | None
    bot_detail: str | None  # last exit and reason, as the supervisor wrote them
    healthy: bool
    heartbeat_own: bool
    heartbeat_used: bool  # False for a bot that writes no heartbeat: a healthy verdict is all there is
    verdict_cause: str | None
    verdict_detail: str


@dataclass(frozen=True)
class Step:
    action: str  # WAIT | KEEP | ROLL_BACK
    cause: Cause | None = None
    detail: str = ""


def decide(watch: Watch, look: Look) -> Step:
    deployed = look.bot_restarts >= watch.base_restarts + 1  # the deploy's restart has happened
    if look.bot_restarts > watch.base_restarts + 1 or (deployed and look.bot_state in EXITED_STATES):
        cause = Cause.parse(look.bot_cause, Cause.CRASH)
        return Step(ROLL_BACK, cause, f"the new bot exited: {look.bot_detail or cause.label}")
    new_bot = look.bot_pid is not None and look.bot_pid != watch.old_pid
    if deployed and new_bot and look.healthy and (look.heartbeat_own or not look.heartbeat_used):
        return Step(KEEP)
    if look.now >= watch.deadline:
        cause = Cause.parse(look.verdict_cause, Cause.STARTING)
        return Step(ROLL_BACK, cause, f"not healthy within UPDATE_HEALTH_TIMEOUT={watch.timeout:g} s:"
                                      f" {look.verdict_detail}")
    return Step(WAIT)
