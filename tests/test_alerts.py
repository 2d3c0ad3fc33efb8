"""Incidents and alerts: pure decisions with a fake clock, the Alerter against a real history with
judged snapshots, the outbox against a loopback webhook receiver, and the real supervisor with a
fake bot that crashes on cue."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from botkeeper.alerting.alert_channels import Delivery
from botkeeper.alerting.alerts import Alerter
from botkeeper.causes import Cause
from botkeeper.config import Settings
from botkeeper.emulator import Emulator
from botkeeper.alerting.incidents import DOWN, STOPPED, UNKNOWN, UP, Alert, Close, Failure, Observation, Open, Rules, Tracker, decide, failures_from_events, observe
from botkeeper import fmt
from botkeeper.health.snapshot import Heartbeat, Snapshot
from botkeeper.store import Store
from botkeeper.health.verdict import Limits as VerdictLimits, judge
from conftest import FAKE_TOKEN, bk_env, component, free_port, py_command, wait_for

RULES = Rules(confirm_after=60.0, stable_after=10.0, flap_window=600.0)


def run(steps, rules=RULES, tracker=None):
    """Feed (now, observation, failures) steps through decide(); collect alerts and incidents."""
    tracker = tracker or Tracker()
    sent, opened, closed = [], [], []
    for now, obs, failures in steps:
        tracker, acts = decide(tracker, obs, failures, now, rules)
        for act in acts:
            if isinstance(act, Alert):
                sent.append((now, act.kind, act.text))
            elif isinstance(act, Open):
                opened.append(act.incident)
            elif isinstance(act, Close):
                closed.append((act.incident, act.ended_at, act.end_cause))
    return tracker, sent, opened, closed


def up(at=None):
    return Observation(UP, since=at)


def ev(id, at, kind, cause=None, detail="", by="supervisor"):
    return {"id": id, "at": at, "kind": kind, "cause": cause, "detail": detail, "by": by}


# --- formatting and typed causes -----------------------------------------------------------------
def test_durations_read_like_the_issue_example():
    assert fmt.duration(192, "words") == "3 min 12 s"
    assert fmt.duration(45, "words") == "45 s"
    assert fmt.duration(2.46, "words") == "2.5 s"
    assert fmt.duration(2 * 3600 + 5 * 60, "words") == "2 h 5 min"
    assert fmt.duration(3 * 86400 + 4 * 3600, "words") == "3 d 4 h"


def test_restart_causes_come_from_the_cause_column_never_from_the_sentence():
    events = [
        ev(1, 10.0, "restart", "crash", "crashed: exited with code 1 after 0.1 s (quick failure 1)"),
        ev(2, 20.0, "restart", "stale-heartbeat", "no heartbeat 70 s after start (...)", "monitor"),
        ev(3, 30.0, "restart", "memory", "over the limit", "monitor"),  # no keyword needed
        ev(4, 40.0, "restart", "cpu", "CPU 99% above MAX_CPU_PERCENT=80 for 300 s", "monitor"),
        # A sentence that mentions memory (or a stale heartbeat) is still the crash its cause says.
        ev(5, 50.0, "restart", "crash", "crashed: MemoryError: memory 512.0 MB above MAX_MEMORY_MB=400"),
        # Planned restarts and restarts without a known cause are not failures, whatever they say.
        ev(6, 60.0, "restart", "max-uptime", "planned restart after 168.1 h up (MAX_UPTIME_HOURS=168)", "monitor"),
        ev(7, 70.0, "restart", "operator", "requested from the command line", "cli"),
        ev(8, 80.0, "restart", "operator", "restart from the status page", "web"),
        ev(9, 90.0, "restart", None, "heartbeat stale for 63 s: memory 900 MB above the limit", "monitor"),
        ev(10, 95.0, "restart", "heartbeat stale for 63 s", "a sentence in the cause column", "monitor"),
    ]
    found, pending = failures_from_events(events, None)
    assert [(f.at, f.cause, f.severe) for f in found] == [
        (10.0, Cause.CRASH, False), (20.0, Cause.STALE_HEARTBEAT, True), (30.0, Cause.MEMORY, True),
        (40.0, Cause.CPU, True), (50.0, Cause.CRASH, False)]
    assert all(isinstance(f.cause, Cause) for f in found) and pending is None
    assert found[2].detail == "over the limit"


def test_a_crash_is_dated_by_its_exit_not_its_backed_off_restart():
    events = [
        ev(1, 100.0, "exit", "crash", "exited with code 1 after 0.1 s"),
        ev(2, 104.0, "restart", "crash", "crashed: exited with code 1"),
        ev(3, 110.0, "exit", "crash", "exited with code 0"),
    ]
    found, pending = failures_from_events(events, None)
    assert [(f.at, f.cause) for f in found] == [(100.0, Cause.CRASH)]
    assert pending == 110.0  # its restart comes in a later batch
    found, pending = failures_from_events(
        [ev(4, 111.0, "restart", "operator", "requested from the command line", "cli")], pending)
    assert found == [] and pending is None
    # The fast path records the restart first, with the exit dated earlier; a requested restart is
    # recorded at the request and its exit (by the requester) afterwards.
    found, pending = failures_from_events([
        ev(5, 200.002, "restart", "crash", "crashed: killed by SIGKILL after 50 s"),
        ev(6, 200.0, "exit", "crash", "pid 7 killed by SIGKILL"),
        ev(7, 300.0, "restart", "operator", "smoke", "cli"),
        ev(8, 300.5, "exit", "operator", "pid 8 exited with code 0", "cli"),
        ev(9, 400.0, "restart", "stale-heartbeat", "heartbeat stale for 63 s", "monitor"),
        ev(10, 400.4, "exit", "stale-heartbeat", "pid 9 killed by SIGTERM", "monitor"),
    ], None)
    assert [(f.at, f.cause) for f in found] == [(200.0, Cause.CRASH), (400.0, Cause.STALE_HEARTBEAT)]
    assert pending is None


# --- decisions with a fake clock -----------------------------------------------------------------
def test_crash_loop_gives_one_down_and_one_recovered_alert():
    crash = lambda t: Failure(t, Cause.CRASH, "crashed: exited with code 1", False)  # noqa: E731
    down = Observation(DOWN, Cause.CRASH, "exited with code 1", False, 1000.0)
    steps = [
        (1000.5, down, [crash(1000.0)]),          # first crash: an incident, not yet an alert
        (1001.0, down, [crash(1000.8)]),          # second crash: a crash loop, alert now
        (1002.0, down, [crash(1001.9)]),
        (1004.0, Observation(UNKNOWN), []),       # starting
        (1010.0, up(1010.0), []),                 # up, not yet stable
        (1015.0, up(), []),
        (1020.0, up(), []),                       # stable for 10 s: recovered at 1010
        (1100.0, up(), []),
    ]
    tracker, sent, opened, closed = run(steps)
    assert [k for _, k, _ in sent] == ["down", "recovered"]
    assert "crash loop" in sent[0][2] and sent[0][0] == 1001.0
    assert sent[1][2].startswith("✅ Your bot is back up after 10 s; cause: crash loop (3 restarts")
    assert len(opened) == 1 and closed[0][1] == 1010.0 and closed[0][0].failures == 3
    assert closed[0][0].cause == Cause.CRASH_LOOP and closed[0][2] is None  # recovered, not stopped
    assert tracker.incident is None


def test_single_crash_fixed_quickly_is_recorded_but_not_alerted():
    steps = [(100.0, Observation(UNKNOWN), [Failure(99.0, Cause.CRASH, "crashed", False)]),
             (101.0, up(101.0), []), (112.0, up(), [])]
    _, sent, opened, closed = run(steps)
    assert sent == [] and len(opened) == 1 and closed[0][1] == 101.0


def test_a_down_bot_that_does_not_come_back_is_alerted_after_the_grace():
    down = Observation(DOWN, Cause.SUPERVISOR_DOWN, "", False, 0.0)
    _, sent, _, _ = run([(t, down, []) for t in (0.0, 30.0, 59.0, 60.0, 61.0, 500.0)])
    assert [(t, k) for t, k, _ in sent] == [(60.0, "down")]


def test_serious_causes_alert_at_once_and_upgrade_the_cause():
    steps = [
        (10.0, Observation(DOWN, Cause.CRASH, "", False, 10.0), []),
        (11.0, Observation(DOWN, Cause.NEEDS_CONFIG, "TELEGRAM_BOT_TOKEN rejected", True, 10.0), []),
        (12.0, Observation(DOWN, Cause.CRASH, "", False, 10.0), []),  # a lesser cause does not downgrade it
    ]
    tracker, sent, _, _ = run(steps)
    assert [(t, k) for t, k, _ in sent] == [(11.0, "down")]
    assert "needs configuration" in sent[0][2] and "doctor" in sent[0][2]
    assert tracker.incident.cause == Cause.NEEDS_CONFIG


def test_stale_heartbeat_restart_alerts_and_recovery_names_the_cause():
    steps = [
        (100.0, Observation(UNKNOWN), [Failure(97.0, Cause.STALE_HEARTBEAT, "heartbeat stale for 63 s", True)]),
        (105.0, up(105.0), []), (115.0, up(), []),
    ]
    _, sent, _, _ = run(steps)
    assert [k for _, k, _ in sent] == ["down", "recovered"]
    assert sent[1][2].startswith("✅ Your bot is back up after 8.0 s; cause: heartbeat stale")


def test_an_operators_stop_ends_the_incident_without_a_recovered_alert():
    steps = [
        (100.0, Observation(UNKNOWN), [Failure(97.0, Cause.STALE_HEARTBEAT, "heartbeat stale for 63 s", True)]),
        (110.0, Observation(STOPPED, Cause.OPERATOR, "stopped", since=108.0), []),  # `botkeeper stop bot`
        (120.0, Observation(STOPPED, Cause.OPERATOR, "stopped", since=108.0), []),
        (500.0, up(500.0), []), (600.0, up(), []),  # started again later: nothing to recover from
    ]
    tracker, sent, opened, closed = run(steps)
    assert [k for _, k, _ in sent] == ["down"]
    assert len(opened) == 1 and [(c[1], c[2]) for c in closed] == [(108.0, Cause.OPERATOR)]
    assert tracker.incident is None and tracker.last_end == 108.0


def test_redis_unreachable_alerts_once_it_lasts_past_the_threshold():
    limits = VerdictLimits(heartbeat_interval=10, stale_after=60, heartbeat_grace=60)

    def observed(now):
        beat = {"pid": 1, "written_at": now - 0.1, "state": "standby", "redis_down_since": 1000.0,
                "redis_error": "AuthenticationError"}
        state = {"supervisor": {"pid": 7}, "components": [
            {"name": "bot", "state": "running", "pid": 1, "started_at": 0.0, "heartbeat": True}]}
        snap = Snapshot(now, state, None, True, 7, False, Heartbeat(beat, lineage=(1,)))
        return observe(judge(snap, limits), now, 300.0)

    assert observed(1200.0).condition == UNKNOWN  # degraded on the page, no alert yet
    late = observed(1300.0)
    assert (late.condition, late.cause, late.severe, late.since) == (DOWN, Cause.REDIS_UNREACHABLE, True, 1000.0)
    assert "AuthenticationError" in late.detail


def test_telegram_unreachable_alerts_only_past_the_threshold():
    limits = VerdictLimits(heartbeat_interval=10, stale_after=60, heartbeat_grace=60)

    def observed(now, started=0.0, pid=1, written=None, alive=True, stopping=False):
        beat = {"pid": pid, "written_at": now - 0.1 if written is None else written,
                "state": "telegram-unreachable", "unreachable_since": 1000.0}
        state = {"supervisor": {"pid": 7}, "components": [
            {"name": "bot", "state": "running", "pid": 1, "started_at": started, "heartbeat": True}]}
        snap = Snapshot(now, state if alive else None, None, alive, 7 if alive else None, stopping,
                        Heartbeat(beat, lineage=(pid,)))
        return observe(judge(snap, limits), now, 300.0)

    assert observed(1200.0).condition == UNKNOWN
    late = observed(1300.0)
    assert (late.condition, late.cause, late.severe, late.since) == (DOWN, Cause.TELEGRAM_OUTAGE, True, 1000.0)
    # A heartbeat older than the running process (or from an earlier process) is not this process' heartbeat.
    assert observed(1300.0, started=1299.95, written=1297.0).condition == UNKNOWN
    assert observed(1300.0, started=1299.95, pid=1111).condition == UNKNOWN
    # A deliberate stop is not an outage; a supervisor that died is.
    assert observed(1300.0, alive=False, stopping=True).condition == STOPPED
    gone = observed(1300.0, alive=False)
    assert (gone.condition, gone.cause) == (DOWN, Cause.SUPERVISOR_DOWN)


def test_a_hang_is_alerted_when_judged_from_when_it_went_silent_not_after_the_kill():
    limits = VerdictLimits(heartbeat_interval=10, stale_after=60, heartbeat_grace=60, block_limit=10)
    rules = Rules(confirm_after=60.0, stable_after=5.0, flap_window=600.0)
    state = {"supervisor": {"pid": 7}, "components": [
        {"name": "bot", "state": "running", "pid": 1, "started_at": 800.0, "heartbeat": True}]}
    for beat, began in (({"written_at": 1009.5, "blocked": {"since": 998.0, "handler": "freeze"}}, 998.0),
                        ({"written_at": 939.0}, 939.0)):  # blocked past BLOCK_LIMIT; stale past STALE_AFTER
        snap = Snapshot(1010.0, state, None, True, 7, False,
                        Heartbeat({"pid": 1, "state": "polling"} | beat, lineage=(1,)))
        obs = observe(judge(snap, limits), 1010.0, 300.0)
        assert (obs.condition, obs.severe, obs.since) == (DOWN, True, began)
        tracker, acts = decide(Tracker(), obs, [], 1010.0, rules)  # before any restart event
        assert [a.kind for a in acts if isinstance(a, Alert)] == ["down"] and tracker.incident.started_at == began


def test_flapping_bot_gives_a_summary_not_a_flood():
    rules = Rules(confirm_after=60.0, stable_after=5.0, flap_window=120.0)
    steps, t = [], 0.0
    for i in range(10):  # crashes every 20 s, back up at once
        steps += [(t + 0.5, Observation(UNKNOWN), [Failure(t, Cause.CRASH, "crashed", False)]),
                  (t + 1.0, up(t + 1.0), []), (t + 6.0, up(), [])]
        t += 20.0
    steps += [(t + 100.0, up(), []), (t + 200.0, up(), []), (t + 300.0, up(), [])]
    tracker, sent, opened, closed = run(steps, rules)
    assert len(opened) == 10 and len(closed) == 10
    assert [k for _, k, _ in sent] == ["flapping", "flap-summary"]
    assert "3 outages" in sent[0][2]
    assert "10 outages" in sent[1][2] and "crashed ×10" in sent[1][2]
    assert tracker.flapping is False


def test_flapping_ends_early_when_the_bot_needs_the_owner():
    rules = Rules(confirm_after=60.0, stable_after=5.0, flap_window=600.0)
    steps, t = [], 0.0
    for i in range(3):
        steps += [(t + 0.5, Observation(UNKNOWN), [Failure(t, Cause.CRASH, "crashed", False)]),
                  (t + 1.0, up(t + 1.0), []), (t + 6.0, up(), [])]
        t += 20.0
    cfg = Observation(DOWN, Cause.NEEDS_CONFIG, "token rejected", True, t)
    steps += [(t + 1.0, cfg, []), (t + 30.0, cfg, []), (t + 61.0, cfg, []), (t + 200.0, cfg, [])]
    steps += [(t + 300.0, up(t + 300.0), []), (t + 306.0, up(), [])]
    _, sent, _, _ = run(steps, rules)
    assert [k for _, k, _ in sent] == ["flapping", "down", "recovered"]
    assert sent[1][0] == t + 61.0 and "needs configuration" in sent[1][2] and "Flapping has ended" in sent[1][2]


# --- the Alerter against a real history, with judged snapshots -------------------------------------
LIMITS = VerdictLimits(heartbeat_interval=10, stale_after=60, heartbeat_grace=60)


def judged(now, state="running", **bot):
    """A snapshot of a live supervisor with a bot (no heartbeat: judged on its state) and its verdict."""
    comp = {"name": "bot", "state": state, "pid": 4242 if state in ("running", "starting") else None,
            "started_at": 0.0, "heartbeat": False} | bot
    snap = Snapshot(now, {"supervisor": {"pid": 7}, "components": [comp]}, None, True, 7, False,
                    Heartbeat(None, "bot_health.txt does not exist yet", "missing"))
    return snap, judge(snap, LIMITS)


class Recorder:
    """An alert channel that keeps what it was given."""

    name = "webhook"

    def __init__(self):
        self.sent: list[tuple[str, dict]] = []

    def send(self, text, payload):
        self.sent.append((text, dict(payload)))
        return Delivery(True)

    def kinds(self):
        return [p["event"] for _, p in self.sent]


def make_alerter(home, **env):
    env = {"ALERTS": "on", "MIN_UPTIME": "10", "HEALTH_GRACE": "60", "FLAP_WINDOW": "600"} | env
    alerter = Alerter(Settings.from_env(bk_env(home, **env)))
    return alerter


def step(alerter, now, state="running", **bot):
    return alerter.step(now, *judged(now, state, **bot))


def test_a_restart_for_memory_is_an_incident_with_cause_memory_end_to_end(home):
    alerter = make_alerter(home)
    rec = Recorder()
    alerter.channels = [rec]
    step(alerter, 100.0)
    alerter.store.record("restart", "bot", "over the limit", "monitor", at=101.0, cause=Cause.MEMORY)
    acts = step(alerter, 102.0, "starting")
    [opened] = [a for a in acts if isinstance(a, Open)]
    assert opened.incident.cause is Cause.MEMORY
    [inc] = alerter.store.incidents(0)
    assert (inc["cause"], inc["alerted"], inc["failures"]) == ("memory", True, 1)  # severe: alerted at once
    assert rec.kinds() == ["down"] and rec.sent[0][1]["cause"] == "memory"
    assert "DOWN: memory limit" in rec.sent[0][0]
    [queued] = alerter.store.events(kinds=("alert",))
    assert queued["cause"] == "memory"


def test_a_crash_whose_sentence_mentions_memory_is_a_crash(home):
    alerter = make_alerter(home)
    rec = Recorder()
    alerter.channels = [rec]
    step(alerter, 100.0)
    alerter.store.record("exit", "bot", "exited with code 1", "supervisor", at=100.5, cause=Cause.CRASH)
    alerter.store.record("restart", "bot", "crashed: MemoryError: memory 512.0 MB above MAX_MEMORY_MB=400",
                         "supervisor", at=101.0, cause=Cause.CRASH)
    step(alerter, 102.0, "starting")
    [inc] = alerter.store.incidents(0)
    assert (inc["cause"], inc["started_at"], inc["alerted"]) == ("crash", 100.5, False)  # dated by its exit
    step(alerter, 103.0, started_at=102.5)
    step(alerter, 113.0, started_at=102.5)  # up for MIN_UPTIME: a single crash, fixed, not alerted
    [inc] = alerter.store.incidents(0)
    assert inc["ended_at"] == 103.0 and inc["end_cause"] is None and rec.sent == []


def test_a_stopped_verdict_closes_the_incident_as_the_operators_and_sends_no_recovered_alert(home):
    alerter = make_alerter(home)
    rec = Recorder()
    alerter.channels = [rec]
    step(alerter, 100.0)
    alerter.store.record("restart", "bot", "heartbeat stale for 63 s", "monitor", at=101.0,
                         cause=Cause.STALE_HEARTBEAT)
    step(alerter, 102.0, "starting")
    assert rec.kinds() == ["down"]
    acts = step(alerter, 110.0, "stopped", cause="operator", stopped_at=108.0)
    [close] = [a for a in acts if isinstance(a, Close)]
    assert close.end_cause is Cause.OPERATOR and close.ended_at == 108.0
    [inc] = alerter.store.incidents(0)
    assert (inc["ended_at"], inc["end_cause"], inc["cause"]) == (108.0, "operator", "stale-heartbeat")
    for now in (120.0, 500.0, 520.0, 600.0):  # stopped a while, then started again and stable
        step(alerter, now, "stopped" if now < 500 else "running", cause="operator", stopped_at=108.0,
             started_at=499.0)
    assert rec.kinds() == ["down"]  # no "recovered": the stop was not a recovery
    assert alerter.store.open_incidents() == [] and len(alerter.store.incidents(0)) == 1


def test_an_incident_the_supervisor_closed_on_a_stop_is_not_recovered_by_a_new_alerter(home):
    alerter = make_alerter(home)
    rec = Recorder()
    alerter.channels = [rec]
    step(alerter, 100.0)
    alerter.store.record("restart", "bot", "heartbeat stale for 63 s", "monitor", at=101.0,
                         cause=Cause.STALE_HEARTBEAT)
    step(alerter, 102.0, "starting")
    alerter.close()
    # The operator stops the bot while no alerter runs; the supervisor ends the incident.
    store = Store(home / "data" / "history.db")
    assert store.close_open_incidents(105.0, Cause.OPERATOR) == [store.incidents(0)[0]["id"]]
    again = make_alerter(home)
    rec2 = Recorder()
    again.channels = [rec2]
    for now in (200.0, 215.0, 300.0):
        step(again, now, started_at=199.0)
    assert rec2.sent == [] and again.store.incidents(0)[0]["end_cause"] == "operator"


@pytest.mark.parametrize("env, why", [({}, "no channel configured"), ({"ALERTS": "off"}, "ALERTS=off")])
def test_an_alert_that_cannot_go_out_is_recorded_as_not_sent(home, env, why):
    alerter = make_alerter(home, **env)
    assert alerter.channels == []  # no ADMIN_CHAT_ID, no MONITORING_WEBHOOK
    step(alerter, 100.0)
    acts = step(alerter, 101.0, "needs-config", cause="needs-config", last_exit_at=100.5,
                last_restart_reason="TELEGRAM_BOT_TOKEN is not valid")
    assert [a.kind for a in acts if isinstance(a, Alert)] == ["down"]  # decided ...
    [inc] = alerter.store.incidents(0)
    assert inc["cause"] == "needs-config" and inc["alerted"] is False  # ... but not pretended sent
    [note] = alerter.store.events(kinds=("alert-not-sent", "alert", "alert-sent"))
    assert note["kind"] == "alert-not-sent" and f"(not sent: {why})" in note["detail"]
    assert note["cause"] == "needs-config" and "DOWN: needs configuration" in note["detail"]
    assert alerter.store.alerts() == []


def test_uptime_counts_only_watched_time(home):
    store = Store(home / "data" / "history.db")
    now = 200_000.0
    assert store.summary(now)["uptime"]["24h"] is None  # nothing watched yet: no claim at all
    for t in range(100_000, 101_001, 10):  # watched 1000 s ...
        store.watch(float(t), 25.0)
    for t in range(199_000, 200_001, 10):  # ... the machine was off, then watched 1000 s more
        store.watch(float(t), 25.0)
    assert store.watched(0) == [(100_000.0, 101_000.0), (199_000.0, 200_000.0)]
    # Down from 100 900 to 199 100: 100 s of it watched on each side; the 98 000 s between are not counted.
    first = store.open_incident(Cause.CRASH_LOOP.value, 100_900.0)
    store.close_incident(first, 199_100.0)
    summary = store.summary(now)
    assert summary["observed_seconds"]["24h"] == 1000.0 and summary["observed_seconds"]["7d"] == 2000.0
    assert summary["uptime"]["24h"] == pytest.approx(90.0)  # 100 s down of the 1000 s watched today
    assert summary["uptime"]["7d"] == pytest.approx(90.0)  # 200 s down of 2000 s watched, not 98 % down


# --- the outbox against a loopback webhook receiver ----------------------------------------------
class Receiver:
    """A tiny webhook endpoint on loopback that records JSON bodies; stop/start keep the port."""

    def __init__(self):
        self.port = free_port()
        self.bodies: list[dict] = []
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                bodies.append(json.loads(raw))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def kinds(self) -> list[str]:
        return [b["event"] for b in self.bodies]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def test_unsent_alerts_are_kept_and_delivered_in_order_marked_delayed(home, receiver):
    settings = Settings.from_env(bk_env(home, ALERTS="on", MONITORING_WEBHOOK=receiver.url, ALERT_RETRY_INTERVAL="30"))
    alerter = Alerter(settings, clock=lambda: 1000.0)
    for i, kind in enumerate(("down", "recovered", "down")):
        alerter.enqueue(kind, f"alert {i}", {"cause": "crash-loop"}, None, 1000.0 + i)
    assert alerter.deliver(1003.0) == 0  # receiver down: nothing sent, nothing lost
    pending = alerter.store.pending_alerts("webhook")
    assert [p["attempts"] for p in pending] == [1, 0, 0]  # stopped at the first failure, order kept
    receiver.start()
    assert alerter.deliver(1010.0) == 0  # not yet due (ALERT_RETRY_INTERVAL)
    assert alerter.deliver(1033.0) == 3
    assert [b["text"].splitlines()[-1] for b in receiver.bodies] == ["alert 0", "alert 1", "alert 2"]
    assert all(b["delayed"] and b["text"].startswith("(delayed: raised ") for b in receiver.bodies)
    assert receiver.bodies[0]["content"] == receiver.bodies[0]["text"]
    assert {"event", "cause", "created_at", "sent_at", "host", "source"} <= set(receiver.bodies[0])
    assert all(a["status"] == "sent" and a["delayed"] for a in alerter.store.alerts())


def test_a_permanently_refused_alert_does_not_block_the_ones_after_it(home):
    settings = Settings.from_env(bk_env(home, ALERTS="on", MONITORING_WEBHOOK="http://127.0.0.1:9/x"))
    alerter = Alerter(settings)

    class Picky:
        name = "webhook"
        got: list[str] = []

        def send(self, text, payload):
            if "bad" in text:
                return Delivery(False, "webhook answered HTTP 404", permanent=True)
            self.got.append(text)
            return Delivery(True)

    alerter.channels = [Picky()]
    alerter.enqueue("down", "bad one", {}, None, 3.0)
    alerter.enqueue("recovered", "good one", {}, None, 3.0)
    assert alerter.deliver(3.0) == 1 and Picky.got == ["good one"]
    statuses = [a["status"] for a in reversed(alerter.store.alerts())]
    assert statuses == ["failed", "sent"]


# --- the real supervisor with a fake bot ---------------------------------------------------------
FAKE_BOT = """
    import json, os, sys, time
    home = os.environ["BOTKEEPER_HOME"]
    counter = os.path.join(home, "runs")
    n = int(open(counter).read()) if os.path.exists(counter) else 0
    open(counter, "w").write(str(n + 1))
    crashes, run_for, code = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    if n < crashes and code == 78:
        print("botkeeper: configuration error: TELEGRAM_BOT_TOKEN is not valid", flush=True)
        sys.exit(78)
    start = time.time()
    while True:
        tmp = os.path.join(home, ".hb.tmp")
        with open(tmp, "w") as fh:
            json.dump({"pid": os.getpid(), "written_at": time.time(), "state": "polling", "last_poll_at": time.time()}, fh)
        os.replace(tmp, os.path.join(home, "bot_health.txt"))
        if n < crashes and time.time() - start >= run_for:
            sys.exit(code)
        time.sleep(0.05)
"""


def fake_bot(crashes: int, run_for: float, code: int = 1) -> dict:
    return {"command": py_command(FAKE_BOT) + [str(crashes), str(run_for), str(code)]}


def only_bot(bot: dict) -> dict:
    return {"bot": bot, "web": {"enabled": False}, "monitor": {"enabled": False}}


def drive(alerter: Alerter, until, timeout: float, message: str):
    def check():
        alerter.step()
        return until()
    return wait_for(check, timeout, interval=0.05, message=message)


def test_crash_loop_on_the_real_supervisor_gives_one_down_and_one_recovered_alert(supervised, home, receiver):
    receiver.start()
    sup = supervised(only_bot(fake_bot(crashes=3, run_for=0.1)), ALERTS="on", MONITORING_WEBHOOK=receiver.url)
    alerter = Alerter(Settings.from_env(sup.env))
    drive(alerter, lambda: "recovered" in receiver.kinds(), 20, "the recovered alert")
    drive(alerter, lambda: component(home, "bot").get("state") == "running", 5, "bot running")
    for _ in range(10):  # a few more ticks: nothing else is sent
        alerter.step()
    assert receiver.kinds() == ["down", "recovered"]
    down, back = receiver.bodies
    assert down["cause"] == "crash-loop" and "DOWN: crash loop" in down["text"] and not down["delayed"]
    incident = Store(home / "data" / "history.db").incidents(0)[0]
    assert incident["cause"] == "crash-loop" and incident["failures"] == 3 and incident["alerted"]
    # The supervisor wrote each restart's cause as a value; that is what the incident was built from.
    restarts = Store(home / "data" / "history.db").events(kinds=("restart",), component="bot")
    assert len(restarts) == 3 and {r["cause"] for r in restarts} <= {"crash", "crash-loop"}
    assert 0.3 < incident["duration_seconds"] < 8
    assert back["text"].startswith(f"✅ Your bot is back up after {fmt.duration(incident['duration_seconds'], 'words')};"
                                   " cause: crash loop")
    assert back["duration_seconds"] == pytest.approx(incident["duration_seconds"], abs=0.1)
    assert back["incident_id"] == down["incident_id"] == incident["id"]


def test_a_flapping_bot_on_the_real_supervisor_does_not_flood(supervised, home, receiver):
    receiver.start()
    sup = supervised(only_bot(fake_bot(crashes=10, run_for=1.0)), ALERTS="on", MONITORING_WEBHOOK=receiver.url,
                     MIN_UPTIME="0.5", START_SECONDS="0.1", FLAP_WINDOW="3", HEALTH_GRACE="5")
    alerter = Alerter(Settings.from_env(sup.env))
    drive(alerter, lambda: "flap-summary" in receiver.kinds(), 40, "the flapping summary")
    assert int((home / "runs").read_text()) == 11  # ten crashes happened
    assert receiver.kinds().count("flapping") == 1
    assert len(receiver.bodies) <= 4, receiver.kinds()  # not 10 (or 20)
    summary = receiver.bodies[-1]["text"]
    assert "stable again after flapping" in summary and "crashed ×" in summary


def test_admin_telegram_alert_arrives_through_the_emulator_while_the_bot_is_stopped(supervised, home, receiver):
    emulator = Emulator(port=0)
    emulator.start()
    try:
        sup = supervised(only_bot(fake_bot(crashes=100, run_for=0, code=78)), ALERTS="on", ADMIN_CHAT_ID="555",
                         TELEGRAM_BOT_TOKEN=FAKE_TOKEN, TELEGRAM_API_BASE_URL=emulator.url,
                         MONITORING_WEBHOOK=receiver.url)  # the receiver is down for now
        wait_for(lambda: component(home, "bot").get("state") == "needs-config", 10, message="needs-config")
        alerter = Alerter(Settings.from_env(sup.env))
        drive(alerter, lambda: emulator.sent_messages(chat_id=555), 10, "the Telegram alert")
        bot = component(home, "bot")
        assert bot["state"] == "needs-config" and bot["pid"] is None  # no bot process is running
        [msg] = emulator.sent_messages(chat_id=555)
        assert "DOWN: needs configuration" in msg["text"]
        assert FAKE_TOKEN not in msg["text"] and FAKE_TOKEN.split(":")[1] not in msg["text"]
        # The webhook could not be reached; once it is back, the same alert arrives, marked delayed.
        webhook = alerter.store.alerts(channel="webhook")[0]
        assert webhook["status"] == "pending" and webhook["attempts"] >= 1
        receiver.start()
        drive(alerter, lambda: receiver.bodies, 10, "the delayed webhook alert")
        [body] = receiver.bodies
        assert body["delayed"] and body["event"] == "down" and "needs configuration" in body["text"]
        assert FAKE_TOKEN.split(":")[1] not in json.dumps(body)
        assert len(emulator.sent_messages(chat_id=555)) == 1  # still one alert per incident
    finally:
        emulator.stop()


# --- the operator's view: history and status -----------------------------------------------------
def test_history_lists_incidents_and_restarts_newest_first(home):
    import subprocess
    import sys
    import time

    from conftest import ROOT

    store = Store(home / "data" / "history.db")
    now = time.time()
    store.record("restart", "bot", "crashed: exited with code 1 after 0.1 s", "supervisor", at=now - 600,
                 cause=Cause.CRASH)
    store.record("restart", "bot", "heartbeat stale for 63 s (STALE_AFTER=60)", "monitor", at=now - 300,
                 cause=Cause.STALE_HEARTBEAT)
    store.record("restart", "bot", "ancient", "monitor", at=now - 3 * 86400, cause=Cause.CRASH)
    store.record("alert-not-sent", "bot", "down: ... (not sent: no channel configured)", "alerts", at=now - 290,
                 cause=Cause.STALE_HEARTBEAT)
    store.watch(now - 900, 1000.0)
    store.watch(now - 1, 1000.0)
    first = store.open_incident(Cause.CRASH_LOOP.value, now - 600)
    store.close_incident(first, now - 600 + 192)
    store.open_incident(Cause.STALE_HEARTBEAT.value, now - 300)
    store.close()
    proc = subprocess.run([sys.executable, "-m", "botkeeper", "history", "--since", "24h"], cwd=ROOT,
                          env=bk_env(home), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "OPEN INCIDENT: heartbeat stale" in out and "uptime: 24h" in out and "watched)" in out
    assert out.index("ongoing") < out.index("3 min 12 s  crash loop")  # newest first
    assert out.index("heartbeat stale for 63 s") < out.index("crashed: exited with code 1")
    assert "stale-heartbeat: heartbeat stale for 63 s" in out and "crash: crashed: exited with code 1" in out
    assert "alert-not-sent" in out and "not sent: no channel configured" in out
    assert "[by monitor]" in out and "ancient" not in out


def test_status_table_shows_uptime_and_the_open_incident():
    from botkeeper.ops.cli import render_table

    status = {
        "components": [], "overall": "down", "demo": False, "heartbeat_age_seconds": None, "checks": [],
        "supervisor": {"pid": 1, "running": True}, "runner": {"running": False}, "auto_recovery": {"running": False},
        "history": {"uptime": {"24h": 97.5, "7d": 99.04, "30d": None},
                    "observed_seconds": {"24h": 86400.0, "7d": 86400.0, "30d": 86400.0},
                    "open_incident": {"cause": Cause.CRASH_LOOP.value, "duration_seconds": 192.0}},
    }
    text = render_table(status)
    assert "uptime:  24h 97.5%" in text and "7d 99.04%" in text and "30d –" in text
    assert "! open incident: crash-loop for 3m 12s" in text
