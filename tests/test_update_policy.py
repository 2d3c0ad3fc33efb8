"""The update's pure decision, look after look, under a fake clock; and the reload plan."""

from __future__ import annotations

import dataclasses

from conftest import bk_env

from botkeeper.causes import Cause
from botkeeper.config import Settings
from botkeeper.supervise.reload_plan import plan
from botkeeper.ops.update_policy import KEEP, ROLL_BACK, WAIT, Look, Watch, decide

WATCH = Watch(old_pid=100, base_restarts=3, deadline=60.0, timeout=60.0)


def look(now: float = 1.0, **kw) -> Look:
    base = dict(now=now, bot_pid=100, bot_state="running", bot_restarts=3, bot_cause="initial-start", bot_detail="",
                healthy=True, heartbeat_own=True, heartbeat_used=True, verdict_cause=None, verdict_detail="ok")
    return Look(**(base | kw))


def test_the_old_bot_still_healthy_is_not_the_new_version():
    assert decide(WATCH, look()).action == WAIT  # the deploy's restart has not happened yet


def test_the_new_bot_is_kept_only_with_its_own_heartbeat_on_a_healthy_verdict():
    starting = look(2.0, bot_pid=200, bot_state="starting", bot_restarts=4, healthy=False, heartbeat_own=False,
                    verdict_cause="starting")
    assert decide(WATCH, starting).action == WAIT
    foreign = look(3.0, bot_pid=200, bot_restarts=4, healthy=True, heartbeat_own=False)  # the old bot's beat
    assert decide(WATCH, foreign).action == WAIT
    assert decide(WATCH, look(4.0, bot_pid=200, bot_restarts=4)).action == KEEP
    no_beat = look(4.0, bot_pid=200, bot_restarts=4, heartbeat_own=False, heartbeat_used=False)
    assert decide(WATCH, no_beat).action == KEEP  # a bot without a heartbeat: the verdict is all there is


def test_a_new_bot_that_exits_is_rolled_back_at_once_with_its_cause():
    crashed = look(2.0, bot_pid=300, bot_state="starting", bot_restarts=5, bot_cause="crash",
                   bot_detail="exit code 1; exit code 1 after 0.2 s", healthy=False, heartbeat_own=False)
    step = decide(WATCH, crashed)
    assert (step.action, step.cause) == (ROLL_BACK, Cause.CRASH) and "exit code 1" in step.detail
    for state, cause in (("backoff", "crash-loop"), ("needs-config", "needs-config"), ("errored", "crash-loop")):
        step = decide(WATCH, look(2.0, bot_pid=None, bot_state=state, bot_restarts=4, bot_cause=cause, healthy=False))
        assert (step.action, step.cause) == (ROLL_BACK, Cause(cause)), state


def test_no_healthy_new_bot_by_the_deadline_is_rolled_back_with_the_verdicts_cause():
    silent = dict(bot_pid=200, bot_restarts=4, healthy=False, heartbeat_own=False, verdict_cause="stale-heartbeat",
                  verdict_detail="no heartbeat for 61 s")
    assert decide(WATCH, look(59.9, **silent)).action == WAIT
    step = decide(WATCH, look(60.0, **silent))
    assert (step.action, step.cause) == (ROLL_BACK, Cause.STALE_HEARTBEAT)
    assert "UPDATE_HEALTH_TIMEOUT=60 s" in step.detail and "no heartbeat for 61 s" in step.detail


def test_reload_plan_restarts_web_and_monitor_for_a_threshold_and_the_bot_only_for_its_own_command(tmp_path):
    env = bk_env(tmp_path)  # one PORT for all
    old = Settings.from_env(env, home=tmp_path)
    new = Settings.from_env(env | {"STALE_AFTER": "9"}, home=tmp_path)
    p = plan(old, new)
    assert p.changed == ("STALE_AFTER",) and set(p.restart) == {"web", "monitor"} and "bot" not in p.restart
    assert plan(old, old).nothing
    token = Settings.from_env(env | {"HEARTBEAT_INTERVAL": "0.3"}, home=tmp_path)
    assert "bot" in plan(old, token).restart  # the bot's environment carries the heartbeat interval
    worker = dataclasses.replace(old.component("web"), name="worker")
    grown = dataclasses.replace(old, components=old.components + (worker,))
    assert plan(old, grown).start == ("worker",) and plan(grown, old).remove == ("worker",)
    slower = dataclasses.replace(old, components=tuple(dataclasses.replace(c, kill_timeout=7.0) for c in old.components))
    p = plan(old, slower)
    assert set(p.respec) == {"bot", "web", "monitor"} and not p.restart  # limits: in place, nothing restarted
