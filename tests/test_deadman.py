"""The dead man's switch (DEADMAN_URL) and alerts through Apprise (ALERT_URLS).

A local HTTP server stands in for healthchecks.io (GET <url>, POST <url>/fail, GET <url>/start) and
for Apprise's json:// target. The decision is tested pure with a fake clock; the monitor's tick with
a real state.json (this test process plays the supervisor) and the real worker thread; and a whole
bundle (supervisor, bot, web, monitor) through a bot that stops for want of configuration and is
restarted: pings while healthy, /fail with the cause, the recovery ping, alerts through Apprise.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, bk_env, component, py_command, wait_for
from botkeeper.alerting.deadman import DeadMan, Memory, Ping, decide, request_for
from botkeeper.alerting.monitor import Monitor
from botkeeper.config import Settings
from botkeeper.supervise import control

SECRET = "s3cret-uuid-0b8e2c51"  # the part of a URL that must never leave the URL
PASSWORD = "hunter2-apprise-pass"


class Service:
    """healthchecks.io and Apprise's json:// target on loopback: records (method, path, body)."""

    def __init__(self):
        self.hits: list[tuple[str, str, bytes]] = []
        seen = self.hits

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append((self.command, self.path, raw))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pings(self, prefix: str) -> list[tuple[str, str, bytes]]:
        return [h for h in list(self.hits) if h[1].startswith(prefix)]

    def alerts(self) -> list[dict]:
        return [json.loads(body) for method, path, body in list(self.hits) if path.startswith("/apprise")]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service():
    s = Service()
    yield s
    s.close()


# --- the decision, pure -----------------------------------------------------------------------------
def run(steps, interval=60.0, want_start=False):
    memory, out = Memory(), []
    for now, overall, cause in steps:
        memory, ping = decide(memory, overall, cause, "the detail", now, interval, want_start)
        out.append(ping and (ping.kind, ping.message))
    return out


def test_pings_every_interval_while_healthy_or_degraded_and_nothing_while_starting_or_stopped():
    got = run([(0, "healthy", None), (30, "healthy", None), (60, "degraded", "memory"), (90, "healthy", None),
               (125, "starting", "starting"), (200, "stopped", "operator"), (201, "healthy", None)])
    assert got == [("ok", ""), None, ("ok", ""), None, None, None, ("ok", "")]


def test_fail_goes_out_on_the_first_tick_that_sees_down_and_the_recovery_on_the_first_healthy_one():
    got = run([(0, "healthy", None), (5, "down", "crash-loop"), (10, "down", "crash-loop"),
               (15, "needs-config", "token-rejected"), (74, "needs-config", "token-rejected"), (75, "needs-config", "token-rejected"),
               (76, "healthy", None), (80, "healthy", None)])
    assert got == [("ok", ""), ("fail", "down: crash-loop: the detail"), None,
                   ("fail", "needs-config: token-rejected: the detail"), None, ("fail", "needs-config: token-rejected: the detail"),
                   ("ok", ""), None]


def test_start_is_sent_once_first_when_asked():
    assert run([(0, "starting", None), (1, "healthy", None), (2, "healthy", None)], want_start=True) == [
        ("start", ""), ("ok", ""), None]


@pytest.mark.parametrize("url,ping,expected", [
    ("https://hc-ping.com/uuid", Ping("ok"), ("GET", "https://hc-ping.com/uuid", None)),
    ("https://hc-ping.com/uuid", Ping("fail", "down", "down: crash"), ("POST", "https://hc-ping.com/uuid/fail", b"down: crash")),
    ("https://hc-ping.com/uuid?rid=1", Ping("start"), ("GET", "https://hc-ping.com/uuid/start?rid=1", None)),
    ("https://uptime.betterstack.com/api/v1/heartbeat/tok", Ping("fail", "down", "x"),
     ("POST", "https://uptime.betterstack.com/api/v1/heartbeat/tok/fail", b"x")),
    ("https://kuma.example/api/push/tok?status=up&msg=OK&ping=", Ping("ok"),
     ("GET", "https://kuma.example/api/push/tok?ping=&status=up&msg=OK", None)),
    ("https://kuma.example/api/push/tok?status=up&msg=OK&ping=", Ping("fail", "down", "down: crash loop"),
     ("GET", "https://kuma.example/api/push/tok?ping=&status=down&msg=down%3A+crash+loop", None)),
    ("https://kuma.example/api/push/tok", Ping("start"), None),
])
def test_request_shapes_per_service(url, ping, expected):
    assert request_for(url, ping) == expected


# --- the monitor's tick, with the real sender thread ------------------------------------------------
def write_state(home, bot_state, pid):
    from botkeeper.fsutil import atomic_write_json, create_time, write_pidfile

    write_pidfile(home / "run" / "supervisor.pid")
    atomic_write_json(home / "run" / "state.json", {"supervisor": {"pid": __import__("os").getpid()}, "components": [{
        "name": "bot", "state": bot_state, "pid": pid if bot_state == "running" else None,
        "create_time": create_time(pid), "started_at": time.time() - 100, "heartbeat": True,
        "last_exit": "exited with code 78", "cause": "needs-config" if bot_state == "needs-config" else None}]})
    (home / "bot_health.txt").write_text(json.dumps({"pid": pid, "written_at": time.time(), "state": "polling",
                                                     "last_poll_at": time.time()}))


def test_monitor_pings_while_healthy_sends_fail_within_one_tick_and_a_recovery_ping(home, service):
    import os

    (home / "run").mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{service.port}/ping/{SECRET}"
    settings = Settings.from_env(bk_env(home, DEADMAN_URL=url, DEADMAN_INTERVAL="60", DEADMAN_START="on"))

    def call(settings, cmd, **args):
        raise control.SupervisorUnavailable("no supervisor in this test")

    mon = Monitor(settings, call=call)
    mon.deadman = DeadMan(settings, lambda text: text)
    pid = os.getpid()  # a living process the bot's entry points at; its heartbeat is fresh
    write_state(home, "running", pid)
    mon.step()  # the first tick: /start
    mon.step()  # then the "I am alive" ping
    wait_for(lambda: len(service.pings("/ping/")) == 2, 10, message="start and ok pings")
    assert [(m, p) for m, p, _ in service.pings("/ping/")] == [("GET", f"/ping/{SECRET}/start"), ("GET", f"/ping/{SECRET}")]
    mon.step()  # within the interval: nothing more
    write_state(home, "needs-config", pid)
    mon.step()  # one tick that sees the bot down
    fail = wait_for(lambda: [h for h in service.pings("/ping/") if h[1].endswith("/fail")], 10, message="/fail")
    assert len(service.pings("/ping/")) == 3
    method, _, body = fail[0]
    assert method == "POST" and body.decode().startswith("needs-config: needs-config: "), body
    write_state(home, "running", pid)
    mon.step()  # the recovery
    wait_for(lambda: len(service.pings("/ping/")) == 4, 10, message="recovery ping")
    assert service.pings("/ping/")[-1][:2] == ("GET", f"/ping/{SECRET}")
    # What the page and `status` read: the same figures, through the snapshot.
    from botkeeper.health.snapshot import deadman_view, read_snapshot

    view = wait_for(lambda: (v := deadman_view(read_snapshot(settings).deadman, time.time()))["sent"] == 4 and v, 5)
    assert view["last_ok"] is True and view["last_answer"] == "HTTP 200" and view["failed"] == 0
    assert SECRET not in (home / "run" / "deadman.json").read_text()


def test_a_dead_service_never_blocks_the_tick_and_failures_are_counted(home):
    import socket

    (home / "run").mkdir(exist_ok=True)
    hole = socket.socket()  # accepts connections, never answers: a hanging network
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    try:
        settings = Settings.from_env(bk_env(home, DEADMAN_URL=f"http://127.0.0.1:{hole.getsockname()[1]}/{SECRET}",
                                            DEADMAN_INTERVAL="0.1"))
        dm = DeadMan(settings, lambda text: text)

        class Verdict:
            overall, cause, detail = "healthy", None, ""

        began = time.monotonic()
        for i in range(20):  # 20 ticks while the first ping hangs: the queue fills, the rest are dropped
            dm.step(1000.0 + i, Verdict())
        assert time.monotonic() - began < 0.5  # the loop was never held by the network
        from botkeeper.health.snapshot import read_deadman

        doc = wait_for(lambda: (d := read_deadman(settings)) and d["dropped"] >= 15 and d, 5, message="drops counted")
        assert doc["sent"] == 0  # still waiting for the hanging one
    finally:
        hole.close()
    doc = wait_for(lambda: (d := read_deadman(settings)) and d["failed"] >= 1 and d, 15, message="failure counted")
    assert doc["last_failed"]["ok"] is False and SECRET not in json.dumps(doc)


# --- Apprise -----------------------------------------------------------------------------------------
def apprise_url(port: int) -> str:
    return f"json://botkeeper:{PASSWORD}@127.0.0.1:{port}/apprise/{SECRET}"


def test_alerts_reach_apprise_json_with_retries_and_nothing_secret(home, service, caplog):
    from botkeeper.alerting.alerts import Alerter
    from test_alerts import judged

    caplog.set_level("DEBUG")
    port = service.port
    settings = Settings.from_env(bk_env(home, ALERTS="on", ALERT_URLS=f"{apprise_url(port)} json://127.0.0.1:9/{SECRET}",
                                        ALERT_RETRY_INTERVAL="30"))
    alerter = Alerter(settings)
    assert [ch.name for ch in alerter.channels] == ["json", "json-2"]
    alerter.step(100.0, *judged(100.0))
    alerter.store.record("restart", "bot", "over the limit", "monitor", at=101.0, cause=__import__(
        "botkeeper.causes", fromlist=["Cause"]).Cause.MEMORY)
    alerter.step(102.0, *judged(102.0, "starting"))
    alerter.step(140.0, *judged(140.0))
    alerter.step(141.0, *judged(141.0))  # the recovered alert is queued; the first URL delivers both
    bodies = service.alerts()
    assert [b["type"] for b in bodies] == ["failure", "success"]
    assert "DOWN: memory limit" in bodies[0]["message"] and bodies[0]["title"].startswith("botkeeper down")
    # The second URL refuses connections: kept in its own outbox, retried, never blocking the first.
    pending = alerter.store.pending_alerts("json-2")
    assert len(pending) == 2 and pending[0]["attempts"] >= 1
    assert pending[0]["last_error"].startswith("Apprise json:// not delivered")
    # urllib3 logs request paths at DEBUG: every botkeeper process keeps it at WARNING (logs.py).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))
    everything = json.dumps(alerter.store.alerts()) + json.dumps(alerter.store.events()) + logged
    assert SECRET not in everything and PASSWORD not in everything


def run_cli(home, *argv, **env):
    return subprocess.run([sys.executable, "-m", "botkeeper", *argv], cwd=ROOT, env=bk_env(home, **env),
                          capture_output=True, text=True, timeout=60)


def test_alert_test_covers_apprise_and_a_bad_url_is_78_naming_only_the_scheme(home, service):
    done = run_cli(home, "alert-test", ALERT_URLS=apprise_url(service.port))
    assert done.returncode == 0, done.stderr
    assert "ok    Apprise json://*** (json)" in done.stdout and SECRET not in done.stdout + done.stderr
    [body] = service.alerts()
    assert "test alert" in body["message"]
    for argv in (["alert-test"], ["start", "--detach"]):
        bad = run_cli(home, *argv, ALERT_URLS=f"json://127.0.0.1/ok dicsord://{SECRET}/{PASSWORD}")
        assert bad.returncode == 78, (argv, bad.stdout, bad.stderr)
        assert "ALERT_URLS entry 2 (dicsord://***)" in bad.stderr
        assert SECRET not in bad.stdout + bad.stderr and PASSWORD not in bad.stdout + bad.stderr
    assert not (home / "run" / "supervisor.pid").exists()  # refused before anything started


# --- a whole bundle ----------------------------------------------------------------------------------
BOT = py_command("""
    import os, sys, time
    from botkeeper import heartbeat
    start = time.time()
    while True:
        if os.path.exists(os.path.join(os.environ["BOTKEEPER_HOME"], "misconfigured")):
            sys.exit(78)
        heartbeat.beat(state="polling", started_at=start, last_poll_at=time.time(), updates_handled=1, loop_lag=0.01, in_flight=[])
        time.sleep(0.1)
""")


def dashboard_metrics() -> set[str]:
    doc = json.loads((ROOT / "deploy" / "grafana" / "botkeeper.json").read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel.get("targets", [])]
    names = set()
    for expr in exprs:
        names |= set(re.findall(r"\b(botkeeper_[a-z_]+)\b", expr))
    assert exprs and names
    return names


def test_a_bundle_pings_fails_recovers_alerts_through_apprise_and_serves_every_dashboard_metric(
        home, service, supervised):
    sup = supervised({"bot": {"command": BOT}}, HOST="127.0.0.1", ALERTS="on", HEALTH_GRACE="0.5",
                     DEADMAN_URL=f"http://127.0.0.1:{service.port}/ping/{SECRET}", DEADMAN_INTERVAL="0.5",
                     ALERT_URLS=apprise_url(service.port))
    base = f"http://127.0.0.1:{sup.env['PORT']}"
    wait_for(lambda: len(service.pings("/ping/")) >= 2, 20, message="pings while healthy")
    assert {m for m, _, _ in service.pings("/ping/")} == {"GET"}
    # Every metric the Grafana dashboard queries exists on this running bundle.
    families = wait_for(lambda: (f := metric_names(base)) and "botkeeper_deadman_pings" in f and f, 10,
                        message="/metrics with the dead man's switch")
    missing = {name for name in dashboard_metrics() if name not in families and
               name.removesuffix("_total") not in families and name.removesuffix("_bucket") not in families}
    assert missing == set()
    page = requests.get(base + "/", timeout=5).text
    assert 'id="deadman-text"' in page and "ping answered: HTTP 200" in page and SECRET not in page
    (home / "misconfigured").write_text("")
    fail = wait_for(lambda: [h for h in service.pings("/ping/") if h[1].endswith("/fail")], 20, message="/fail")
    assert fail[0][2].decode().startswith("needs-config: needs-config"), fail[0][2]
    wait_for(lambda: [a for a in service.alerts() if a["type"] == "failure"], 20, message="down alert via Apprise")
    (home / "misconfigured").unlink()
    control.call(home / "run" / "control.sock", "restart", name="bot", reason="fixed", by="test")
    wait_for(lambda: service.pings("/ping/")[-1][1] == f"/ping/{SECRET}", 20, message="recovery ping")
    wait_for(lambda: [a for a in service.alerts() if a["type"] == "success"], 20, message="recovered alert")
    status = run_cli(home, "status", "--json", **{k: v for k, v in sup.env.items() if k in (
        "DEADMAN_URL", "ALERT_URLS", "PORT")})
    doc = json.loads(status.stdout)
    assert doc["deadman"]["sent"] >= 3 and doc["deadman"]["last_answer"] == "HTTP 200"
    logs = "".join(p.read_text(errors="replace") for p in (home / "logs").glob("*.log"))
    everything = logs + status.stdout + json.dumps(service.alerts())
    assert SECRET not in everything and PASSWORD not in everything
    assert component(home, "monitor")["restarts"] == 0


def metric_names(base: str) -> set[str] | None:
    try:
        text = requests.get(base + "/metrics", timeout=5).text
    except requests.RequestException:
        return None
    return {f.name for f in text_string_to_metric_families(text)}


def test_apprise_is_imported_only_when_alert_urls_is_set(home):
    code = ("import sys; from botkeeper.config import Settings; from botkeeper.alerting.alerts import Alerter;"
            " from botkeeper.alerting.monitor import Monitor; s = Settings.from_env();"
            " a = Alerter(s); m = Monitor(s); print('apprise' in sys.modules)")
    for env, loaded in (({}, "False"), ({"ALERT_URLS": "json://127.0.0.1:9/x"}, "False")):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=bk_env(home, **env), capture_output=True,
                             text=True, timeout=30)
        assert out.stdout.strip() == loaded, out.stderr  # with ALERT_URLS: at the first alert, not before


def test_the_redactor_masks_both_urls_in_every_form_and_config_shows_schemes_only(home):
    from botkeeper.logs import Redactor

    token = "AbCdEf0123456789_webhook-token-xyz"
    uuid = "0b8e2c51-aaaa-bbbb-cccc-1234567890ab"
    settings = Settings.from_env(bk_env(home, ALERT_URLS=f"discord://1234567890/{token}, mailto://me:{PASSWORD}@x.org",
                                        DEADMAN_URL=f"https://hc-ping.com/{uuid}"))
    redact = Redactor(settings.secrets())
    for text in (f"POST https://discord.com/api/webhooks/1234567890/{token}", f"check {uuid} failed",
                 f"login as me with {PASSWORD}", f"GET https://hc-ping.com/{uuid}/fail"):
        out = redact(text)
        assert token not in out and uuid not in out and PASSWORD not in out, out
    shown = dict((k, v) for k, v, _ in settings.describe())
    assert shown["ALERT_URLS"] == "discord://***, mailto://***" and shown["DEADMAN_URL"] == "***"
