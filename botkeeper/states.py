"""Component states and the transitions allowed between them.

An illegal transition is a bug in the supervisor, so it raises instead of being ignored.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    STARTING = "starting"  # spawned, not yet up for start_seconds
    RUNNING = "running"
    BACKOFF = "backoff"  # exited; waiting for the restart delay
    STOPPING = "stopping"  # SIGTERM sent, waiting for exit (then SIGKILL)
    STOPPED = "stopped"  # stopped on purpose; not restarted
    ERRORED = "errored"  # too many quick failures; retried slowly
    NEEDS_CONFIG = "needs-config"  # exited 78: a setting must be fixed; not restarted

    def __str__(self) -> str:
        return self.value


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.STARTING, S.BACKOFF, S.ERRORED, S.NEEDS_CONFIG, S.STOPPING}),
    S.RUNNING: frozenset({S.STARTING, S.BACKOFF, S.ERRORED, S.NEEDS_CONFIG, S.STOPPING}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED, S.STARTING, S.BACKOFF, S.ERRORED, S.NEEDS_CONFIG}),
    S.ERRORED: frozenset({S.STARTING, S.STOPPED}),
    S.NEEDS_CONFIG: frozenset({S.STARTING, S.STOPPED}),
}
# States in which a process of the component may exist.
LIVE = frozenset({S.STARTING, S.RUNNING, S.STOPPING})


class IllegalTransition(RuntimeError):
    pass


def check_transition(old: State, new: State) -> State:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"component state cannot go from {old.value} to {new.value}")
    return new
