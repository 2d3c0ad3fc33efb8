"""Incidents and alerts: pure decisions with a fake clock, the outbox against a loopback webhook
receiver, and the real supervisor with a fake bot that crashes on cue."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from botkeeper import alerts
from botkeeper.alerts import (CRASH_LOOP, CRASHED, DOWN, NEEDS_CONFIG, STALE, UNKNOWN, UP, UNREACHABLE, Alerter,
                              Failure, Observation, Rules, classify_restart, decide, failures_from_events,
                              fmt_duration, new_tracker, observe)
from botkeeper.config import Settings
from botkeeper.emulator import Emulator
from botkeeper.store import Store
from conftest import FAKE_TOKEN, bk_env, component, free_port, py_command, wait_for

RULES = Rules(confirm_after=60.0, stable_after=10.0, flap_window=600.0)


def run(steps, rules=RULES, tracker=None):
    """Feed (now, observation, failures) steps through decide(); collect alerts and incidents."""
    tracker = tracker or new_tracker()
    sent, opened, closed = [], [], []
    for now, obs, failures in steps:
        tracker, acts = decide(tracker, obs, failures, now, rules)
        for act in acts:
            if act[0] == "alert":
                sent.append((now, act[1], act[2]))
            elif act[0] == "open":
                opened.append(dict(act[1]))
            elif act[0] == "close":
                closed.append((dict(act[1]), act[2]))
    return tracker, sent, opened, closed


def up(at=None):
    return Observation(UP, since=at)


# --- formatting and classification ---------------------------------------------------------------
def test_durations_read_like_the_issue_example():
    assert fmt_duration(192) == "3 min 12 s"
    assert fmt_duration(45) == "45 s"
    assert fmt_duration(2.46) == "2.5 s"
    assert fmt_duration(2 * 3600 + 5 * 60) == "2 h 5 min"
    assert fmt_duration(3 * 86400 + 4 * 3600) == "3 d 4 h"


def test_restart_reasons_are_classified():
    assert classify_restart("crashed: exited with code 1 after 0.1 s (quick failure 1)", "supervisor") == (CRASHED, False)
    assert classify_restart("heartbeat stale for 63 s (STALE_AFTER=60)", "monitor") == (STALE, True)
    assert classify_restart("no heartbeat 70 s after start (...)", "monitor") == (STALE, True)
    assert classify_restart("memory 512.0 MB above MAX_MEMORY_MB=400", "monitor") == (alerts.MEMORY, True)
    assert classify_restart("CPU 99% above MAX_CPU_PERCENT=80 for 300 s", "monitor") == (alerts.CPU, True)
    assert classify_restart("planned restart after 168.1 h up (MAX_UPTIME_HOURS=168)", "monitor") is None
    assert classify_restart("requested from the command line", "cli") is None
    assert classify_restart("restart from the status page", "web") is None


def test_a_crash_is_dated_by_its_exit_not_its_backed_off_restart():
    events = [
        {"id": 1, "at": 100.0, "kind": "exit", "detail": "exited with code 1 after 0.1 s", "by": "supervisor"},
        {"id": 2, "at": 104.0, "kind": "restart", "detail": "crashed: exited with code 1", "by": "supervisor"},
        {"id": 3, "at": 110.0, "kind": "exit", "detail": "exited with code 0", "by": "supervisor"},
    ]
    found, pending = failures_from_events(events, None)
    assert [(f.at, f.cause) for f in found] == [(100.0, CRASHED)]
    assert pending == 110.0  # its restart comes in a later batch
    found, pending = failures_from_events(
        [{"id": 4, "at": 111.0, "kind": "restart", "detail": "requested from the command line", "by": "cli"}], pending)
    assert found == [] and pending is None
    # The fast path records the restart first, with the exit dated earlier; a requested restart is
    # recorded at the request and its exit (by the requester) afterwards.
    found, pending = failures_from_events([
        {"id": 5, "at": 200.002, "kind": "restart", "detail": "crashed: killed by SIGKILL after 50 s", "by": "supervisor"},
        {"id": 6, "at": 200.0, "kind": "exit", "detail": "pid 7 killed by SIGKILL", "by": "supervisor"},
        {"id": 7, "at": 300.0, "kind": "restart", "detail": "smoke", "by": "cli"},
        {"id": 8, "at": 300.5, "kind": "exit", "detail": "pid 8 exited with code 0", "by": "cli"},
        {"id": 9, "at": 400.0, "kind": "restart", "detail": "heartbeat stale for 63 s", "by": "monitor"},
        {"id": 10, "at": 400.4, "kind": "exit", "detail": "pid 9 killed by SIGTERM", "by": "monitor"},
    ], None)
    assert [(f.at, f.cause) for f in found] == [(200.0, CRASHED), (400.0, STALE)] and pending is None


# --- decisions with a fake clock -----------------------------------------------------------------
def test_crash_loop_gives_one_down_and_one_recovered_alert():
    crash = lambda t: Failure(t, CRASHED, "crashed: exited with code 1", False)  # noqa: E731
    down = Observation(DOWN, CRASHED, "exited with code 1", False, 1000.0)
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
    assert len(opened) == 1 and closed[0][1] == 1010.0 and closed[0][0]["failures"] == 3
    assert tracker["incident"] is None


def test_single_crash_fixed_quickly_is_recorded_but_not_alerted():
    steps = [(100.0, Observation(UNKNOWN), [Failure(99.0, CRASHED, "crashed", False)]),
             (101.0, up(101.0), []), (112.0, up(), [])]
    _, sent, opened, closed = run(steps)
    assert sent == [] and len(opened) == 1 and closed[0][1] == 101.0


def test_a_down_bot_that_does_not_come_back_is_alerted_after_the_grace():
    down = Observation(DOWN, alerts.NOT_RUNNING, "", False, 0.0)
    _, sent, _, _ = run([(t, down, []) for t in (0.0, 30.0, 59.0, 60.0, 61.0, 500.0)])
    assert [(t, k) for t, k, _ in sent] == [(60.0, "down")]


def test_serious_causes_alert_at_once_and_upgrade_the_cause():
    steps = [
        (10.0, Observation(DOWN, CRASHED, "", False, 10.0), []),
        (11.0, Observation(DOWN, NEEDS_CONFIG, "needs configuration: TELEGRAM_BOT_TOKEN rejected", True, 10.0), []),
        (12.0, Observation(DOWN, CRASHED, "", False, 10.0), []),  # a lesser cause does not downgrade it
    ]
    tracker, sent, _, _ = run(steps)
    assert [(t, k) for t, k, _ in sent] == [(11.0, "down")]
    assert "needs configuration" in sent[0][2] and "doctor" in sent[0][2]
    assert tracker["incident"]["cause"] == NEEDS_CONFIG


def test_stale_heartbeat_restart_alerts_and_recovery_names_the_cause():
    steps = [
        (100.0, Observation(UNKNOWN), [Failure(97.0, STALE, "heartbeat stale for 63 s", True)]),
        (105.0, up(105.0), []), (115.0, up(), []),
    ]
    _, sent, _, _ = run(steps)
    assert [k for _, k, _ in sent] == ["down", "recovered"]
    assert sent[1][2].startswith("✅ Your bot is back up after 8.0 s; cause: heartbeat stale")


def test_telegram_unreachable_alerts_only_past_the_threshold():
    settings = Settings.from_env({"BOTKEEPER_ENV": "test", "DEMO": "off", "UNREACHABLE_ALERT_AFTER": "300"}, home="/tmp/x")
    state = {"supervisor": {"pid": 1}, "components": [
        {"name": "bot", "state": "running", "started_at": 0.0, "heartbeat": True}]}
    hb = lambda now: {"written_at": now - 0.1, "state": "telegram-unreachable", "unreachable_since": 1000.0}  # noqa: E731
    assert observe(state, True, hb(1200.0), 1200.0, settings).condition == UNKNOWN
    late = observe(state, True, hb(1300.0), 1300.0, settings)
    assert (late.condition, late.cause, late.severe, late.since) == (DOWN, UNREACHABLE, True, 1000.0)
    # A heartbeat older than the running process is not this process' heartbeat.
    state["components"][0]["started_at"] = 1299.95
    assert observe(state, True, hb(1300.0), 1300.0, settings).condition == UNKNOWN
    # A deliberate stop is not an outage.
    assert observe(None, False, None, 1300.0, settings, stopping=True).condition == UNKNOWN
    assert observe(None, False, None, 1300.0, settings).condition == DOWN


def test_flapping_bot_gives_a_summary_not_a_flood():
    rules = Rules(confirm_after=60.0, stable_after=5.0, flap_window=120.0)
    steps, t = [], 0.0
    for i in range(10):  # crashes every 20 s, back up at once
        steps += [(t + 0.5, Observation(UNKNOWN), [Failure(t, CRASHED, "crashed", False)]),
                  (t + 1.0, up(t + 1.0), []), (t + 6.0, up(), [])]
        t += 20.0
    steps += [(t + 100.0, up(), []), (t + 200.0, up(), []), (t + 300.0, up(), [])]
    tracker, sent, opened, closed = run(steps, rules)
    assert len(opened) == 10 and len(closed) == 10
    assert [k for _, k, _ in sent] == ["flapping", "flap-summary"]
    assert "3 outages" in sent[0][2]
    assert "10 outages" in sent[1][2] and "crashed ×10" in sent[1][2]
    assert tracker["flapping"] is False


def test_flapping_ends_early_when_the_bot_needs_the_owner():
    rules = Rules(confirm_after=60.0, stable_after=5.0, flap_window=600.0)
    steps, t = [], 0.0
    for i in range(3):
        steps += [(t + 0.5, Observation(UNKNOWN), [Failure(t, CRASHED, "crashed", False)]),
                  (t + 1.0, up(t + 1.0), []), (t + 6.0, up(), [])]
        t += 20.0
    cfg = Observation(DOWN, NEEDS_CONFIG, "token rejected", True, t)
    steps += [(t + 1.0, cfg, []), (t + 30.0, cfg, []), (t + 61.0, cfg, []), (t + 200.0, cfg, [])]
    steps += [(t + 300.0, up(t + 300.0), []), (t + 306.0, up(), [])]
    _, sent, _, _ = run(steps, rules)
    assert [k for _, k, _ in sent] == ["flapping", "down", "recovered"]
    assert sent[1][0] == t + 61.0 and "needs configuration" in sent[1][2] and "Flapping has ended" in sent[1][2]


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
        alerter.enqueue(kind, f"alert {i}", {"cause": "crash loop"}, None, 1000.0 + i)
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
                return alerts.Delivery(False, "webhook answered HTTP 404", permanent=True)
            self.got.append(text)
            return alerts.Delivery(True)

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
    drive(alerter, lambda: False or component(home, "bot").get("state") == "running", 5, "bot running")
    for _ in range(10):  # a few more ticks: nothing else is sent
        alerter.step()
    assert receiver.kinds() == ["down", "recovered"]
    down, back = receiver.bodies
    assert down["cause"] == CRASH_LOOP and "DOWN: crash loop" in down["text"] and not down["delayed"]
    incident = Store(home / "data" / "history.db").incidents(0)[0]
    assert incident["cause"] == CRASH_LOOP and incident["failures"] == 3 and incident["alerted"]
    assert 0.3 < incident["duration_seconds"] < 8
    assert back["text"].startswith(f"✅ Your bot is back up after {fmt_duration(incident['duration_seconds'])};"
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
    store.record("restart", "bot", "crashed: exited with code 1 after 0.1 s", "supervisor", at=now - 600)
    store.record("restart", "bot", "heartbeat stale for 63 s (STALE_AFTER=60)", "monitor", at=now - 300)
    store.record("restart", "bot", "ancient", "monitor", at=now - 3 * 86400)
    first = store.open_incident(CRASH_LOOP, now - 600)
    store.close_incident(first, now - 600 + 192)
    store.open_incident(STALE, now - 300)
    store.close()
    proc = subprocess.run([sys.executable, "-m", "botkeeper", "history", "--since", "24h"], cwd=ROOT,
                          env=bk_env(home), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "OPEN INCIDENT: heartbeat stale" in out and "uptime: 24h" in out
    assert out.index("ongoing") < out.index("3 min 12 s  crash loop")  # newest first
    assert out.index("heartbeat stale for 63 s") < out.index("crashed: exited with code 1")
    assert "[by monitor]" in out and "ancient" not in out


def test_status_table_shows_uptime_and_the_open_incident():
    from botkeeper.cli import render_table

    status = {
        "components": [], "overall": "down", "demo": False, "heartbeat_age_seconds": None, "checks": [],
        "supervisor": {"pid": 1, "running": True}, "runner": {"running": False}, "auto_recovery": {"running": False},
        "history": {"uptime": {"24h": 97.5, "7d": 99.04, "30d": None},
                    "open_incident": {"cause": CRASH_LOOP, "duration_seconds": 192.0}},
    }
    text = render_table(status)
    assert "uptime:  24h 97.50%   7d 99.04%   30d -" in text
    assert "! open incident: crash loop for 3m 12s" in text
