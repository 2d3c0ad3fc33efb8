"""Pure decisions with plain numbers and an injected clock: no processes, no sleeps."""

from types import SimpleNamespace

import pytest

from botkeeper.supervise import policy
from botkeeper.causes import Cause
from botkeeper.states import IllegalTransition, State, check_transition

SPEC = SimpleNamespace(min_uptime=10.0, restart_delay=0.5, max_restart_delay=60.0, max_restarts=10,
                       restart_window=900.0, errored_retry=300.0)


def test_backoff_doubles_from_restart_delay_to_the_cap():
    delays = [policy.backoff_delay(0.5, 60.0, n) for n in range(1, 10)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.backoff_delay(0.5, 60.0, 0) == 0
    assert policy.backoff_delay(0.5, 60.0, 5000) == 60  # no overflow on a very long streak


def test_a_long_run_restarts_at_once_and_forgets_earlier_failures():
    d = policy.after_exit(SPEC, 1, None, ran_for=10.0, failures=(1.0, 2.0, 3.0), now=100.0)
    assert (d.state, d.delay, d.failures, d.cause) == (State.STARTING, 0.0, (), Cause.CRASH)
    assert "exited with code 1 after 10.0 s" in d.detail


def test_quick_failures_back_off_and_grow():
    failures, now, delays = (), 0.0, []
    for _ in range(5):
        d = policy.after_exit(SPEC, 1, None, ran_for=0.2, failures=failures, now=now)
        assert d.state == State.BACKOFF
        assert d.cause == (Cause.CRASH if not failures else Cause.CRASH_LOOP)  # typed: nobody parses the detail
        delays.append(d.delay)
        failures, now = d.failures, now + d.delay + 0.2
    assert delays == [0.5, 1, 2, 4, 8]


def test_max_restarts_quick_failures_make_errored_with_slow_retry():
    failures = tuple(float(i) for i in range(9))
    d = policy.after_exit(SPEC, None, 9, ran_for=0.1, failures=failures, now=9.0)
    assert d.state == State.ERRORED and d.delay == 300.0 and d.cause == Cause.CRASH_LOOP
    assert "killed by SIGKILL" in d.detail and "10 quick failures" in d.detail
    # The retry from errored that fails quickly again goes straight back to errored: never hammered.
    again = policy.after_exit(SPEC, 1, None, ran_for=0.1, failures=d.failures, now=309.0)
    assert again.state == State.ERRORED and again.delay == 300.0


def test_failures_outside_the_window_are_forgotten():
    old = tuple(float(i) for i in range(9))
    d = policy.after_exit(SPEC, 1, None, ran_for=0.1, failures=old, now=2000.0)
    assert d.state == State.BACKOFF and d.failures == (2000.0,) and d.delay == 0.5


def test_exit_78_needs_config_and_a_signal_does_not():
    assert policy.after_exit(SPEC, 78, None, 0.1, (), 0.0).state == State.NEEDS_CONFIG
    assert policy.after_exit(SPEC, 78, None, 0.1, (), 0.0).cause == Cause.NEEDS_CONFIG
    assert policy.after_exit(SPEC, 78, None, 100.0, (), 0.0).state == State.NEEDS_CONFIG
    assert policy.after_exit(SPEC, None, 15, 0.1, (), 0.0).state == State.BACKOFF


def test_transition_table_allows_the_lifecycle_and_rejects_nonsense():
    path = [State.STARTING, State.RUNNING, State.STOPPING, State.STARTING, State.RUNNING, State.BACKOFF,
            State.STARTING, State.ERRORED, State.STARTING, State.NEEDS_CONFIG, State.STOPPED]
    current = State.STOPPED
    for nxt in path:
        current = check_transition(current, nxt)
    for old, new in [(State.STOPPED, State.RUNNING), (State.BACKOFF, State.RUNNING), (State.ERRORED, State.STOPPING),
                     (State.NEEDS_CONFIG, State.RUNNING)]:
        with pytest.raises(IllegalTransition):
            check_transition(old, new)
    assert State.NEEDS_CONFIG == "needs-config" and str(State.RUNNING) == "running"
