"""Pure decisions with plain numbers and an injected clock: no processes, no sleeps."""

from types import SimpleNamespace

import pytest

from botkeeper import policy
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
    assert (d.state, d.delay, d.failures) == (State.STARTING, 0.0, ())
    assert "exited with code 1 after 10.0 s" in d.reason


def test_quick_failures_back_off_and_grow():
    failures, now, delays = (), 0.0, []
    for _ in range(5):
        d = policy.after_exit(SPEC, 1, None, ran_for=0.2, failures=failures, now=now)
        assert d.state == State.BACKOFF
        delays.append(d.delay)
        failures, now = d.failures, now + d.delay + 0.2
    assert delays == [0.5, 1, 2, 4, 8]


def test_max_restarts_quick_failures_make_errored_with_slow_retry():
    failures = tuple(float(i) for i in range(9))
    d = policy.after_exit(SPEC, None, 9, ran_for=0.1, failures=failures, now=9.0)
    assert d.state == State.ERRORED and d.delay == 300.0
    assert "killed by SIGKILL" in d.reason and "10 quick failures" in d.reason
    # The retry from errored that fails quickly again goes straight back to errored: never hammered.
    again = policy.after_exit(SPEC, 1, None, ran_for=0.1, failures=d.failures, now=309.0)
    assert again.state == State.ERRORED and again.delay == 300.0


def test_failures_outside_the_window_are_forgotten():
    old = tuple(float(i) for i in range(9))
    d = policy.after_exit(SPEC, 1, None, ran_for=0.1, failures=old, now=2000.0)
    assert d.state == State.BACKOFF and d.failures == (2000.0,) and d.delay == 0.5


def test_exit_78_needs_config_and_a_signal_does_not():
    assert policy.after_exit(SPEC, 78, None, 0.1, (), 0.0).state == State.NEEDS_CONFIG
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


@pytest.mark.parametrize("age,expected", [(0.0, "up"), (20.0, "up"), (21.0, "late"), (60.0, "late"), (60.5, "stale")])
def test_staleness_is_up_late_stale_by_age(age, expected):
    hb = {"written_at": 1000.0}
    assert policy.staleness(hb, 1000.0 + age, interval=10.0, stale_after=60.0) == expected


def test_staleness_of_missing_or_malformed_heartbeat_is_stale():
    assert policy.staleness(None, 5.0, 1, 10) == "stale"
    assert policy.staleness({"written_at": "yesterday"}, 5.0, 1, 10) == "stale"


def _state(bot_state="running", started_at=0.0, heartbeat=True, others=("web", "monitor")):
    comps = [{"name": "bot", "state": bot_state, "started_at": started_at, "heartbeat": heartbeat,
              "last_restart_reason": "crashed: exited with code 1"}]
    comps += [{"name": n, "state": "running", "started_at": started_at, "heartbeat": False} for n in others]
    return {"supervisor": {"pid": 1}, "components": comps}


def health(state, hb, now, alive=True, error=None):
    return policy.health(state, alive, hb, error, now, interval=10.0, stale_after=60.0, grace=30.0)


def test_health_is_green_only_with_everything_running_and_a_fresh_polling_heartbeat():
    v = health(_state(), {"written_at": 995.0, "state": "polling"}, 1000.0)
    assert v.healthy and v.overall == "healthy" and not v.failing


def test_health_down_when_supervisor_gone_bot_not_running_or_stale():
    assert health(_state(), None, 1000.0, alive=False).overall == "down"
    v = health(_state("backoff"), {"written_at": 995.0, "state": "polling"}, 1000.0)
    assert v.overall == "down" and "component:bot" in [c.name for c in v.failing]
    v = health(_state(), {"written_at": 900.0, "state": "polling"}, 1000.0)
    assert v.overall == "down" and [c.name for c in v.failing] == ["heartbeat"]


def test_health_degraded_for_telegram_trouble_or_a_secondary_component():
    v = health(_state(), {"written_at": 999.0, "state": "conflict"}, 1000.0)
    assert v.overall == "degraded" and v.failing[0].name == "telegram" and "409" in v.failing[0].detail
    state = _state()
    state["components"][1]["state"] = "errored"
    assert health(state, {"written_at": 999.0, "state": "polling"}, 1000.0).overall == "degraded"


def test_missing_heartbeat_during_grace_is_not_down_but_not_healthy():
    v = health(_state(started_at=990.0), None, 1000.0, error="bot_health.txt does not exist yet")
    assert not v.healthy and v.overall == "degraded"
    v = health(_state(started_at=900.0), None, 1000.0, error="bot_health.txt does not exist yet")
    assert v.overall == "down"


def test_bots_without_heartbeat_are_judged_on_liveness_alone():
    assert health(_state(heartbeat=False), None, 1000.0).healthy
