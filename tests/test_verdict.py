"""The one verdict over hand-made snapshots (a fake clock, no processes), and the one reader over
hand-made files: corrupt, empty, future-dated and oversized heartbeats and state files."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from botkeeper import runfiles
from botkeeper.causes import Cause
from botkeeper.fsutil import create_time, write_pidfile
from botkeeper.health.snapshot import Heartbeat, Snapshot, read_snapshot
from botkeeper.health.verdict import Limits, judge

NOW = 1_000_000.0
BOT_PID = 4242
LIMITS = Limits(heartbeat_interval=10.0, stale_after=60.0, heartbeat_grace=30.0)


def comp(name="bot", state="running", started=NOW - 300, pid=BOT_PID, heartbeat=None, **extra):
    return {"name": name, "state": state, "pid": pid if state in ("starting", "running", "stopping") else None,
            "started_at": started, "heartbeat": name == "bot" if heartbeat is None else heartbeat, **extra}


def state(*components, shutting_down=False):
    comps = list(components) or [comp(), comp("web", pid=10), comp("monitor", pid=11)]
    return {"supervisor": {"pid": 1, "started_at": NOW - 400, "shutting_down": shutting_down},
            "components": comps, "recent_restarts": [], "updated_at": NOW - 1}


def beat(age=2.0, pid=BOT_PID, hb_state="polling", **extra):
    return Heartbeat({"pid": pid, "written_at": NOW - age, "state": hb_state, **extra}, lineage=(pid, 1))


def snap(st="default", hb=None, alive=True, stopping=False, state_error=None):
    st = state() if st == "default" else st
    return Snapshot(NOW, st, state_error, alive, 1 if alive else None, stopping,
                    hb if hb is not None else beat())


NO_BEAT = Heartbeat(None, "bot_health.txt does not exist yet", "missing")

CASES = [
    # (id, snapshot, overall, cause)
    ("healthy", snap(), "healthy", None),
    ("bot-starting-no-beat-yet", snap(state(comp(state="starting", started=NOW - 2)), NO_BEAT), "starting", Cause.STARTING),
    ("heartbeat-says-starting", snap(hb=beat(hb_state="starting")), "starting", Cause.STARTING),
    ("late-heartbeat", snap(hb=beat(age=25)), "degraded", Cause.STALE_HEARTBEAT),
    ("stale-heartbeat", snap(hb=beat(age=90)), "down", Cause.STALE_HEARTBEAT),
    ("loop-blocked-a-moment", snap(hb=beat(blocked={"since": NOW - 6, "handler": "freeze"})), "degraded",
     Cause.LOOP_BLOCKED),
    ("loop-blocked-past-block-limit", snap(hb=beat(blocked={"since": NOW - 12, "handler": "freeze"})), "down",
     Cause.LOOP_BLOCKED),
    ("restarted-first-poll-pending", snap(state(comp(restarts=1)), beat(polled=False)), "starting", Cause.STARTING),
    ("restarted-first-poll-done", snap(state(comp(restarts=1)), beat(polled=True)), "healthy", None),
    ("first-start-poll-pending", snap(hb=beat(polled=False)), "healthy", None),
    ("restarted-webhook-undelivered", snap(state(comp(restarts=1)), beat(hb_state="webhook", webhook_received=0,
                                                                         webhook={"pending": 3})), "starting",
     Cause.STARTING),
    ("restarted-webhook-served", snap(state(comp(restarts=1)), beat(hb_state="webhook", webhook_received=1,
                                                                    webhook={"pending": 3})), "healthy", None),
    ("restarted-webhook-nothing-pending", snap(state(comp(restarts=1)), beat(hb_state="webhook", webhook_received=0,
                                                                             webhook={"pending": 0})), "healthy", None),
    ("earlier-bots-beat-in-grace", snap(state(comp(started=NOW - 5)), beat(pid=999)), "starting", Cause.STARTING),
    ("earlier-bots-beat-after-grace", snap(hb=beat(pid=999, age=1)), "down", Cause.STALE_HEARTBEAT),
    ("beat-older-than-the-bot", snap(state(comp(started=NOW - 5)), beat(age=50)), "starting", Cause.STARTING),
    ("no-beat-long-after-start", snap(hb=NO_BEAT), "down", Cause.STALE_HEARTBEAT),
    ("future-dated-beat", snap(hb=beat(age=-365 * 86400)), "down", Cause.HEARTBEAT_INVALID),
    ("corrupt-beat", snap(hb=Heartbeat(None, "bot_health.txt is corrupt: not JSON", "corrupt")), "down",
     Cause.HEARTBEAT_INVALID),
    ("oversized-beat-in-grace", snap(state(comp(started=NOW - 3)), Heartbeat(None, "too big", "oversized")),
     "starting", Cause.STARTING),
    ("conflict", snap(hb=beat(hb_state="conflict", conflict_since=NOW - 40)), "down", Cause.CONFLICT),
    ("telegram-outage", snap(hb=beat(hb_state="telegram-unreachable", unreachable_since=NOW - 40)), "degraded",
     Cause.TELEGRAM_OUTAGE),
    ("bot-says-token-rejected", snap(hb=beat(hb_state="fatal", cause="token-rejected", detail="Telegram rejected")),
     "needs-config", Cause.TOKEN_REJECTED),
    ("needs-config-token", snap(state(comp(state="needs-config", cause="token-rejected",
                                           last_restart_reason="Telegram rejected the bot token"))),
     "needs-config", Cause.TOKEN_REJECTED),
    ("needs-config-other", snap(state(comp(state="needs-config", cause="needs-config"))), "needs-config",
     Cause.NEEDS_CONFIG),
    ("errored", snap(state(comp(state="errored", cause="crash-loop"))), "down", Cause.CRASH_LOOP),
    ("backoff", snap(state(comp(state="backoff", cause="crash"))), "down", Cause.CRASH),
    ("restarting-for-a-hang", snap(state(comp(state="stopping", stop_cause="stale-heartbeat"))), "down",
     Cause.STALE_HEARTBEAT),
    ("restarting-on-request", snap(state(comp(state="stopping", stop_cause="operator"))), "starting", Cause.OPERATOR),
    ("stopping-on-request", snap(state(comp(state="stopping", stop_cause="operator", after_stop="stopped"))),
     "stopped", Cause.OPERATOR),
    ("bot-stopped-by-operator", snap(state(comp(state="stopped", cause="operator"), comp("web", pid=10))), "stopped",
     Cause.OPERATOR),
    ("web-crash-looping", snap(state(comp(), comp("web", state="backoff", cause="crash"))), "degraded",
     Cause.COMPONENT_DOWN),
    ("web-starting", snap(state(comp(), comp("web", state="starting", pid=10))), "starting", Cause.STARTING),
    ("no-heartbeat-bot", snap(state(comp(heartbeat=False)), NO_BEAT), "healthy", None),
    ("disk-full", snap(hb=beat(disk_full=True)), "degraded", Cause.DISK_FULL),
    ("redis-down-standby", snap(hb=beat(hb_state="standby", redis_down_since=NOW - 30, redis_error="ConnectionError")),
     "degraded", Cause.REDIS_UNREACHABLE),
    ("redis-down-polling", snap(hb=beat(redis_down_since=NOW - 30, redis_error="AuthenticationError")), "degraded",
     Cause.REDIS_UNREACHABLE),
    ("supervisor-gone", snap(alive=False), "down", Cause.SUPERVISOR_DOWN),
    ("stopped-on-purpose", snap(alive=False, stopping=True), "stopped", Cause.STOPPED),
    ("shutting-down", snap(state(shutting_down=True)), "stopped", Cause.SHUTDOWN),
    ("state-unreadable-supervisor-alive", snap(None, state_error="run/state.json is corrupt"), "degraded",
     Cause.STATE_UNKNOWN),
]


@pytest.mark.parametrize("snapshot,overall,cause", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_verdict_table(snapshot, overall, cause):
    verdict = judge(snapshot, LIMITS)
    assert (verdict.overall, verdict.cause) == (overall, cause), verdict.checks
    assert verdict.healthy == (overall == "healthy")  # starting is never healthy
    assert verdict.detail


def test_whose_heartbeat_is_decided_once():
    child = Heartbeat({"pid": 5555, "written_at": NOW - 1, "state": "polling"}, lineage=(5555, BOT_PID, 1))
    assert judge(snap(hb=child), LIMITS).heartbeat.own  # written by a child of the bot (sh -c wrapper)
    touched = Heartbeat({"written_at": NOW - 1, "state": "alive", "touched": True})
    assert judge(snap(hb=touched), LIMITS).heartbeat.own  # another language touches the file
    old_touch = Heartbeat({"written_at": NOW - 400, "state": "alive", "touched": True})
    assert not judge(snap(hb=old_touch), LIMITS).heartbeat.own
    recycled = beat(age=310)  # same pid as the bot, but written before this bot started
    assert not judge(snap(hb=recycled), LIMITS).heartbeat.own


def test_ages_are_never_negative_and_small_skew_is_tolerated():
    view = judge(snap(hb=beat(age=-2.0)), LIMITS).heartbeat  # 2 s ahead: clocks differ a little
    assert view.own and view.age == 0.0 and view.status == "fresh"
    view = judge(snap(hb=beat(age=-3600.0)), LIMITS).heartbeat
    assert not view.own and view.age is None and "future" in view.error


def test_hung_only_past_grace_and_stale_after():
    young = snap(state(comp(started=NOW - 20)), NO_BEAT)
    assert not judge(young, LIMITS).heartbeat.hung
    assert judge(snap(hb=NO_BEAT), LIMITS).heartbeat.hung
    assert judge(snap(hb=beat(age=61)), LIMITS).heartbeat.hung
    assert not judge(snap(hb=beat(age=59)), LIMITS).heartbeat.hung
    crashed = snap(state(comp(state="backoff")), NO_BEAT)
    assert not judge(crashed, LIMITS).heartbeat.hung  # not alive: nothing to restart for a hang


def test_a_garbled_beat_written_since_the_start_is_a_sign_of_life():
    garbled = Heartbeat(None, "bot_health.txt is corrupt: not JSON", "corrupt", mtime=NOW - 2)
    view = judge(snap(hb=garbled), LIMITS).heartbeat
    assert (view.status, view.silent_for, view.hung) == ("invalid", 2.0, False)
    old = Heartbeat(None, "bot_health.txt is corrupt: not JSON", "corrupt", mtime=NOW - 100)
    assert judge(snap(hb=old), LIMITS).heartbeat.hung


def test_a_blocked_loop_is_hung_past_block_limit_with_where_it_hangs():
    blocked = {"since": NOW - 12.4, "handler": "freeze", "frame": "/home/me/bot/handlers.py:6 freeze",
               "update_id": 7, "in_flight": 1}
    verdict = judge(snap(hb=beat(age=1, blocked=blocked)), LIMITS)
    assert verdict.heartbeat.hung and verdict.heartbeat.status == "fresh"  # the watchdog beats; the loop is stuck
    assert verdict.detail == "event loop blocked for 12 s in handler freeze (handlers.py:6) (BLOCK_LIMIT=10)"
    check = next(c for c in verdict.checks if c.name == "heartbeat")
    assert check.since == NOW - 12.4  # the incident begins when the loop went silent
    assert not judge(snap(hb=beat(age=1, blocked=blocked | {"since": NOW - 9})), LIMITS).heartbeat.hung
    # a whole process silent (its watchdog too) goes stale: STALE_AFTER decides, as before
    stale = judge(snap(hb=beat(age=61, blocked=blocked)), LIMITS)
    assert stale.cause == Cause.STALE_HEARTBEAT and stale.heartbeat.blocked_for is None
    # a `since` before the bot's start or in the future is clamped, never backdated
    early = judge(snap(state(comp(started=NOW - 20)), beat(age=1, blocked=blocked | {"since": NOW - 5000})), LIMITS)
    assert next(c for c in early.checks if c.name == "heartbeat").since == NOW - 20


def test_a_hang_incident_begins_when_the_heartbeat_went_silent_never_at_the_bots_start():
    stale = judge(snap(hb=beat(age=75)), LIMITS)  # the bot started 300 s ago
    assert next(c for c in stale.checks if c.name == "heartbeat").since == NOW - 75
    future = Heartbeat({"pid": BOT_PID, "written_at": NOW + 3600, "state": "polling"}, lineage=(BOT_PID, 1),
                       mtime=NOW - 70)  # future-dated 70 s ago: silent since then, not since the start
    verdict = judge(snap(hb=future), LIMITS)
    assert verdict.heartbeat.hung and next(c for c in verdict.checks if c.name == "heartbeat").since == NOW - 70
    stepped = Heartbeat({"pid": BOT_PID, "written_at": NOW + 3600, "state": "polling"}, lineage=(BOT_PID, 1),
                        mtime=NOW + 3600)  # the clock stepped back: when it went silent is unknown, not the start
    verdict = judge(snap(hb=stepped), LIMITS)
    assert next(c for c in verdict.checks if c.name == "heartbeat").since == NOW


def test_since_comes_from_the_files():
    outage = judge(snap(hb=beat(hb_state="telegram-unreachable", unreachable_since=NOW - 40)), LIMITS)
    assert next(c for c in outage.checks if c.name == "telegram").since == NOW - 40


# --- the reader over real files ---------------------------------------------------------------------
@pytest.fixture
def home(tmp_path):
    s = SimpleNamespace(run_dir=tmp_path / "run", state_file=tmp_path / "run" / "state.json",
                        heartbeat_file=tmp_path / "bot_health.txt")
    s.run_dir.mkdir()
    return s


def own_supervisor(s, comps=None):
    """This test process plays a living supervisor: its PID file names us, with our create time."""
    write_pidfile(runfiles.pidfile(s, "supervisor"))
    data = {"supervisor": {"pid": os.getpid(), "create_time": create_time(os.getpid())},
            "components": comps if comps is not None else [comp(pid=os.getpid(), started=NOW - 300)]}
    s.state_file.write_text(json.dumps(data))


@pytest.mark.parametrize("content", [b"[1,2,3]", b"", b"{not json", b"\xff\xfe", b'{"components": 5}'])
def test_a_bad_state_file_under_a_living_supervisor_is_unknown_for_a_moment(home, content):
    own_supervisor(home)
    home.state_file.write_bytes(content)
    snapshot = read_snapshot(home, now=NOW)
    assert snapshot.supervisor_alive and snapshot.state is None and snapshot.state_error
    verdict = judge(snapshot, LIMITS)
    assert (verdict.overall, verdict.cause) == ("degraded", Cause.STATE_UNKNOWN)


def test_a_state_file_from_an_earlier_supervisor_is_not_believed(home):
    own_supervisor(home)
    data = json.loads(home.state_file.read_text())
    data["supervisor"]["pid"] = 999_999
    home.state_file.write_text(json.dumps(data))
    snapshot = read_snapshot(home, now=NOW)
    assert snapshot.state is None and "earlier supervisor" in snapshot.state_error


def test_no_supervisor_pid_file_means_not_running(home):
    home.state_file.write_text(json.dumps(state()))
    snapshot = read_snapshot(home, now=NOW)
    assert not snapshot.supervisor_alive
    assert judge(snapshot, LIMITS).cause == Cause.SUPERVISOR_DOWN
    runfiles.mark_stopping(home)
    assert judge(read_snapshot(home, now=NOW), LIMITS).overall == "stopped"


def test_an_oversized_heartbeat_is_refused_before_it_is_read(home):
    with open(home.heartbeat_file, "wb") as fh:
        fh.truncate(300 * 1024 * 1024)  # sparse: 300 MB on paper, nothing read
    snapshot = read_snapshot(home, now=NOW)
    assert snapshot.heartbeat.problem == "oversized" and snapshot.heartbeat.data is None
    assert snapshot.took < 0.5


@pytest.mark.parametrize("content,problem", [(b"{oops", "corrupt"), (b'{"written_at": "soon"}', "corrupt"),
                                             (b'{"written_at": NaN}', "corrupt"), (b"[]", "corrupt")])
def test_corrupt_heartbeats(home, content, problem):
    home.heartbeat_file.write_bytes(content)
    hb = read_snapshot(home, now=NOW).heartbeat
    assert hb.problem == problem and hb.data is None and hb.error


def test_an_empty_heartbeat_counts_by_its_mtime(home):
    home.heartbeat_file.write_bytes(b"")
    os.utime(home.heartbeat_file, (NOW - 3, NOW - 3))
    hb = read_snapshot(home, now=NOW).heartbeat
    assert hb.data == {"written_at": NOW - 3, "state": "alive", "touched": True}


def test_a_heartbeat_from_our_child_carries_its_lineage(home):
    home.heartbeat_file.write_text(json.dumps({"pid": os.getpid(), "written_at": NOW}))
    hb = read_snapshot(home, now=NOW).heartbeat
    assert hb.lineage[0] == os.getpid() and os.getppid() in hb.lineage
