"""The watchers' pure decisions (botkeeper/health/watch_policy.py) with plain numbers and a fake clock.

The monitor's observation carries the verdict's judgement of the heartbeat (botkeeper/health/verdict.py
decides whose beat it is and whether the bot is hung), so each check here is built the way the
monitor builds it: a snapshot, judged, then handed to `decide()`."""

from botkeeper.causes import Cause
from botkeeper.health.snapshot import Heartbeat, Snapshot
from botkeeper.health.verdict import HeartbeatView, Limits as VerdictLimits, belongs, judge
from botkeeper.health.watch_policy import MIB, NOTHING, RELAUNCH, REPLACE_RUNNER, WAIT, Limits, Memory, Observation, decide, older_than, prune_plan, roots_action, stuck_components, web_check

LIMITS = Limits(max_memory_mb=400, max_cpu_percent=80, cpu_window=300, max_uptime_hours=168,
                outage_restart_interval=600, cooldown=60, stale_after=60)
HB_LIMITS = VerdictLimits(heartbeat_interval=10, stale_after=60, heartbeat_grace=60)
T0 = 1_000_000.0  # the bot started here
PID = 4242
MISSING = "bot_health.txt does not exist yet"


def obs(now, hb=None, error=None, problem=None, pid=PID, state="running", rss=50 * MIB, cpu=1.0, enabled=True,
        lineage=None, started=T0, hb_limits=HB_LIMITS):
    """One monitor check as the monitor builds it: snapshot -> verdict -> Observation."""
    if hb is None and error is None:
        error, problem = MISSING, "missing"
    if hb is not None and lineage is None:
        lineage = (hb["pid"],) if isinstance(hb.get("pid"), int) else ()
    bot = {"name": "bot", "state": state, "pid": pid, "started_at": started, "heartbeat": enabled}
    snap = Snapshot(now, {"supervisor": {"pid": 1}, "components": [bot]}, None, True, 1, False,
                    Heartbeat(hb, None if hb is not None else error, None if hb is not None else problem,
                              lineage or ()))
    verdict = judge(snap, hb_limits)
    return Observation(
        now=now, bot_state=state, bot_pid=pid, bot_started_at=started, heartbeat=verdict.heartbeat,
        telegram=next((c for c in verdict.checks if c.name == "telegram"), None),
        disk_full=any(c.cause == Cause.DISK_FULL for c in verdict.checks),
        heartbeat_problem=error if enabled and problem in ("unreadable", "oversized", "corrupt") else None,
        tree_pids=frozenset({pid} if pid else ()), rss_bytes=rss, cpu_percent=cpu)


def beat(at, pid=PID, state="polling", **extra):
    return {"pid": pid, "written_at": at, "state": state, **extra}


class Clock:
    """Runs a sequence of checks, carrying the memory like the monitor does."""

    def __init__(self, limits=LIMITS):
        self.limits, self.mem = limits, Memory()

    def check(self, o):
        d = decide(o, self.mem, self.limits)
        self.mem = d.memory
        return d


def test_fresh_heartbeat_is_up_and_stale_one_restarts_with_its_age():
    c = Clock()
    d = c.check(obs(T0 + 100, beat(T0 + 95)))
    assert d.restart is None and d.verdict == "up"
    d = c.check(obs(T0 + 200, beat(T0 + 137)))
    assert d.restart == (Cause.STALE_HEARTBEAT, "heartbeat stale for 63 s (STALE_AFTER=60)") and d.verdict == "stale"


def test_stale_heartbeat_of_the_current_pid_counts_even_inside_the_grace():
    hb_limits = VerdictLimits(heartbeat_interval=0.2, stale_after=2, heartbeat_grace=4)
    limits = Limits(400, 80, 300, 0, 600, cooldown=4)
    d = decide(obs(T0 + 3.5, beat(T0 + 1.0), hb_limits=hb_limits), Memory(), limits)
    assert d.restart and d.restart[0] == Cause.STALE_HEARTBEAT and d.restart[1].startswith("heartbeat stale for 2 s")


def test_missing_heartbeat_waits_for_the_grace_then_counts_as_stale():
    c = Clock()
    for t in (1, 30, 59):
        d = c.check(obs(T0 + t))
        assert d.restart is None and d.reports == () and d.verdict == "waiting"
    d = c.check(obs(T0 + 61))
    assert d.restart == (Cause.STALE_HEARTBEAT, "no heartbeat 61 s after start (bot_health.txt does not exist yet)")


def test_heartbeat_of_a_previous_bot_is_not_fresh_for_the_new_one():
    c = Clock()
    old = beat(T0 - 0.5, pid=1111)  # the previous bot wrote it just before it died
    assert not belongs(old, (1111,), PID, T0)
    for t in (1, 30, 60):
        assert c.check(obs(T0 + t, old)).restart is None  # grace: the new bot is starting
    d = c.check(obs(T0 + 61, old))
    assert d.restart and d.restart[0] == Cause.STALE_HEARTBEAT
    assert d.restart[1].startswith("no heartbeat 61 s after start")


def test_heartbeat_from_a_child_of_the_bot_or_a_touched_file_counts():
    assert belongs(beat(T0 + 5, pid=5555), (5555, PID), PID, T0)  # sh -c wrapper
    assert belongs({"written_at": T0 + 5, "touched": True}, (), PID, T0)
    assert not belongs({"written_at": T0 - 5, "touched": True}, (), PID, T0)
    assert not belongs(beat(T0 - 30), (PID,), PID, T0)  # a recycled pid
    # ... and the monitor trusts that judgement: a child's fresh beat keeps the bot up past the grace.
    d = decide(obs(T0 + 500, beat(T0 + 499, pid=5555), lineage=(5555, PID)), Memory(), LIMITS)
    assert d.restart is None and d.verdict == "up"


def test_whether_the_bot_is_hung_is_the_verdicts_call():
    """decide() restarts on the verdict's `hung` and never re-judges the heartbeat itself."""
    o = obs(T0 + 100, beat(T0 + 99))
    hung = HeartbeatView(True, "stale", True, 70.0, 70.0, "polling", None, hung=True)
    d = decide(Observation(o.now, o.bot_state, o.bot_pid, o.bot_started_at, hung), Memory(), LIMITS)
    assert d.restart == (Cause.STALE_HEARTBEAT, "heartbeat stale for 70 s (STALE_AFTER=60)")
    calm = HeartbeatView(True, "stale", True, 70.0, 70.0, "polling", None, hung=False)
    d = decide(Observation(o.now, o.bot_state, o.bot_pid, o.bot_started_at, calm), Memory(), LIMITS)
    assert d.restart is None


def test_corrupt_heartbeat_is_reported_once_and_restarts_only_when_the_verdict_says_hung():
    c = Clock()
    assert c.check(obs(T0 + 20, beat(T0 + 19))).verdict == "up"
    junk = "bot_health.txt is corrupt: not JSON"
    d = c.check(obs(T0 + 30, None, junk, "corrupt"))  # inside the start grace: not hung yet
    assert d.restart is None and d.reports == (("heartbeat-unreadable", Cause.HEARTBEAT_INVALID, junk),)
    assert c.check(obs(T0 + 40, None, junk, "corrupt")).reports == ()  # reported on onset only
    d = c.check(obs(T0 + 61, None, junk, "corrupt"))
    assert d.reports == () and d.restart == (Cause.HEARTBEAT_INVALID, f"no heartbeat 61 s after start ({junk})")


def test_a_directory_in_place_of_the_heartbeat_is_reported_and_named_in_the_restart():
    c = Clock()
    err = "bot_health.txt is not a regular file"
    d = c.check(obs(T0 + 10, None, err, "unreadable"))
    assert d.restart is None and d.reports == (("heartbeat-unreadable", Cause.HEARTBEAT_INVALID, err),)
    assert c.check(obs(T0 + 59, None, err, "unreadable")).restart is None
    d = c.check(obs(T0 + 61, None, err, "unreadable"))
    assert d.restart[0] == Cause.HEARTBEAT_INVALID and "not a regular file" in d.restart[1]
    # Another problem is a new onset: reported again.
    d = Clock().check(obs(T0 + 10, None, "bot_health.txt is 70000 bytes, more than 65536", "oversized"))
    assert [r[0] for r in d.reports] == ["heartbeat-unreadable"]


def test_bots_without_heartbeat_are_judged_on_resources_only():
    c = Clock()
    d = c.check(obs(T0 + 10_000, enabled=False))
    assert d.restart is None and d.reports == () and d.verdict == "up"


def test_memory_above_the_limit_three_checks_in_a_row_restarts_with_the_figure():
    c = Clock()
    big = 512 * MIB
    assert c.check(obs(T0 + 100, beat(T0 + 99), rss=big)).restart is None
    assert c.check(obs(T0 + 105, beat(T0 + 104), rss=big)).restart is None
    assert c.check(obs(T0 + 110, beat(T0 + 109), rss=10 * MIB)).restart is None  # streak broken
    for t in (115, 120):
        assert c.check(obs(T0 + t, beat(T0 + t - 1), rss=big)).restart is None
    d = c.check(obs(T0 + 125, beat(T0 + 124), rss=big))
    assert d.restart == (Cause.MEMORY, "memory 512.0 MB above MAX_MEMORY_MB=400 for 3 checks in a row")
    assert d.verdict == "limit"


def test_cpu_must_stay_high_for_the_whole_window():
    c = Clock()
    t = T0 + 100
    assert c.check(obs(t, beat(t), cpu=95)).restart is None
    assert c.check(obs(t + 200, beat(t + 200), cpu=95)).restart is None
    assert c.check(obs(t + 250, beat(t + 250), cpu=20)).restart is None  # dipped: window restarts
    assert c.check(obs(t + 260, beat(t + 260), cpu=95)).restart is None
    assert c.check(obs(t + 550, beat(t + 550), cpu=95)).restart is None
    d = c.check(obs(t + 561, beat(t + 561), cpu=97))
    assert d.restart == (Cause.CPU, "CPU 97% above MAX_CPU_PERCENT=80 for 301 s")


def test_planned_restart_after_max_uptime_and_zero_disables_it():
    t = T0 + 168 * 3600 + 5
    d = decide(obs(t, beat(t)), Memory(), LIMITS)
    assert d.restart == (Cause.MAX_UPTIME, "planned restart after 168.0 h up (MAX_UPTIME_HOURS=168)")
    assert d.restart[0].planned
    off = Limits(400, 80, 300, 0, 600, cooldown=60)
    assert decide(obs(t, beat(t)), Memory(), off).restart is None


def test_no_second_request_during_the_cooldown_and_new_pid_starts_fresh():
    c = Clock()
    assert c.check(obs(T0 + 200, beat(T0 + 100))).restart  # stale: asked
    for t in (205, 230, 259):  # the supervisor is still stopping the old process
        assert c.check(obs(T0 + t, beat(T0 + 100))).verdict == "cooldown"
    assert c.check(obs(T0 + 261, beat(T0 + 100))).restart  # it did not happen: ask again
    # The restart happened: new pid, old heartbeat -> grace again, no request
    d = c.check(obs(T0 + 300, beat(T0 + 100), pid=7777, started=T0 + 299))
    assert d.restart is None and d.memory.pid == 7777 and d.memory.memory_checks == 0


def test_telegram_unreachable_is_reported_not_restarted_until_the_outage_interval():
    c = Clock()
    down = T0 + 100
    hb = lambda t: beat(t, state="telegram-unreachable", unreachable_since=down, detail="connect timeout")  # noqa: E731
    d = c.check(obs(T0 + 101, hb(T0 + 101)))
    assert d.restart is None and d.reports == (("telegram-unreachable", Cause.TELEGRAM_OUTAGE, "connect timeout"),)
    for t in (200, 400, 699):
        d = c.check(obs(T0 + t, hb(T0 + t)))
        assert d.restart is None and d.reports == ()
    d = c.check(obs(T0 + 701, hb(T0 + 701)))
    assert d.restart[0] == Cause.TELEGRAM_OUTAGE and d.restart[1].startswith("Telegram unreachable for 601 s")
    assert d.verdict == "outage"
    # At most one restart per interval, even past the cool-down.
    for t in (800, 1000, 1300):
        assert c.check(obs(T0 + t, hb(T0 + t))).restart is None
    assert c.check(obs(T0 + 1302, hb(T0 + 1302))).restart
    d = c.check(obs(T0 + 1310, beat(T0 + 1310)))
    assert d.reports == (("telegram-reachable", Cause.TELEGRAM_OUTAGE, "heartbeat state polling"),)


def test_conflict_is_reported_and_never_restarted():
    c = Clock()
    hb = lambda t: beat(t, state="conflict", detail="409 Conflict")  # noqa: E731
    assert c.check(obs(T0 + 10, hb(T0 + 10))).reports == (("conflict", Cause.CONFLICT, "409 Conflict"),)
    for t in range(20, 20_000, 500):
        assert c.check(obs(T0 + t, hb(T0 + t))).restart is None


def test_nothing_to_judge_while_the_bot_is_not_running():
    for state, pid in (("backoff", None), ("stopped", None), ("needs-config", None), ("running", None)):
        d = decide(obs(T0 + 1000, pid=pid, state=state), Memory(), LIMITS)
        assert d.restart is None and d.verdict == "not-running"


# --- auto_recovery ------------------------------------------------------------------------------------
def test_roots_action():
    assert roots_action(False, False, None, 60) == RELAUNCH
    assert roots_action(False, True, None, 60) == RELAUNCH  # new runner waits on the supervisor lock
    assert roots_action(True, True, None, 60) == NOTHING
    assert roots_action(True, False, 5, 60) == WAIT  # the runner is restarting it
    assert roots_action(True, False, 61, 60) == REPLACE_RUNNER


def test_stuck_components_respects_the_supervisors_own_waits_and_user_choices():
    now = 5000.0
    comps = [
        {"name": "bot", "state": "backoff", "next_start_at": now - 10},  # late, within grace
        {"name": "web", "state": "errored", "next_start_at": now - 61},  # late past grace
        {"name": "monitor", "state": "stopped"},  # a user stopped it
        {"name": "x", "state": "needs-config"},  # waits for the user
        {"name": "y", "state": "backoff", "next_start_at": None},
        {"name": "z", "state": "running", "pid": 12},
    ]
    stuck, seen = stuck_components(comps, now, {}, 60)
    assert stuck == [("web", "errored and 61 s past its restart time")]
    stuck, seen = stuck_components(comps, now + 61, seen, 60)
    assert [n for n, _ in stuck] == ["bot", "web", "y"] and "nothing scheduled" in stuck[2][1]
    assert set(seen) == {"bot", "web", "y"}


def test_web_check_counts_connection_failures_only():
    f, r = 0, False
    for _ in range(2):
        f, r = web_check(f, False)
    assert (f, r) == (2, False)
    assert web_check(f, True) == (0, False)  # a 503 is an answer
    f = 2
    assert web_check(f, False) == (3, True)


def test_prune_plan_oldest_first_until_enough_space():
    logs = [("b.log.2", 200.0, 30), ("a.log.1", 300.0, 50), ("c.log.3", 100.0, 40)]
    assert prune_plan(logs, 1000, 500) == []
    assert prune_plan(logs, 450, 500) == ["c.log.3", "b.log.2"]
    assert prune_plan(logs, 0, 500) == ["c.log.3", "b.log.2", "a.log.1"]


def test_older_than():
    assert older_than([("x", 10.0), ("y", 5.0), ("z", 99.0)], 100.0, 50) == ["y", "x"]


def test_a_fresh_heartbeat_saying_disk_full_is_reported_once_and_never_restarted():
    c = Clock()
    late = T0 + 168 * 3600 + 5  # past MAX_UPTIME_HOURS too: a planned restart waits for disk space
    d = c.check(obs(late, beat(late - 1, disk_full=True)))
    assert d.restart is None and d.verdict == "disk-full"
    assert d.reports == (("disk-full", Cause.DISK_FULL, "the bot beats but cannot write files: the disk is full"),)
    d = c.check(obs(late + 5, beat(late + 4, disk_full=True), rss=900 * MIB))
    assert d.restart is None and d.reports == ()  # reported on onset only
    # The disk_full flag does not keep a hung bot alive: a stale beat is still stale.
    d = c.check(obs(late + 200, beat(late + 4, disk_full=True)))
    assert d.verdict == "stale" and d.restart[1].startswith("heartbeat stale for 196 s")


def test_a_loop_its_watchdog_reports_blocked_is_restarted_past_block_limit_not_stale_after():
    c = Clock()
    blocked = {"since": T0 + 100, "handler": "freeze", "frame": "/h/handlers.py:6 freeze", "update_id": 7}
    d = c.check(obs(T0 + 106, beat(T0 + 105.5, blocked=blocked)))  # blocked 6 s: degraded, not yet
    assert d.restart is None
    d = c.check(obs(T0 + 110.5, beat(T0 + 105.5, blocked=blocked)))
    assert d.verdict == "blocked" and d.restart == (Cause.LOOP_BLOCKED,
                                                    "event loop blocked for 10 s in handler freeze (handlers.py:6)")
    # the new bot blocks too (an update not certainly guilty, retried): its own heartbeat says so,
    # so no cooldown is waited out
    d = c.check(obs(T0 + 123, beat(T0 + 122.5, pid=7777, blocked=blocked | {"since": T0 + 112}), pid=7777,
                    started=T0 + 111))
    assert d.restart and d.restart[0] == Cause.LOOP_BLOCKED
    # a SIGSTOPped bot (its watchdog silent too) waits for STALE_AFTER, as before
    c = Clock()
    assert c.check(obs(T0 + 150, beat(T0 + 100))).restart is None
    assert c.check(obs(T0 + 161, beat(T0 + 100))).restart[0] == Cause.STALE_HEARTBEAT
