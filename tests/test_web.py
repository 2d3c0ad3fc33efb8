"""The status page and health API through Flask's test client, fed by real files and processes.

The "right token restarts through the supervisor" test runs the real supervisor.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from botkeeper.web import chart, create_app
from botkeeper.web.auth import TokenGate
from botkeeper.web.history import Sample
from botkeeper.web.logtail import tail
from botkeeper.web.reasons import REASONS, RestartCounter, reason_label
from conftest import SLEEPER, wait_for
from web_helpers import TOKEN, healthy_bundle, settings_for, write_heartbeat

GET_ROUTES = ["/", "/ping", "/health", "/api/health", "/api/status", "/api/metrics", "/metrics", "/chart.svg",
              "/static/style.css", "/static/app.js"]


@pytest.fixture
def bundle(home, sleepers, clock):
    """(settings, app, client) for a healthy bundle with RESTART_TOKEN set."""
    settings = settings_for(home, RESTART_TOKEN=TOKEN)
    restarts = [
        {"at": clock.now - 3000, "component": "bot", "cause": "crash", "detail": "exited with code 1 after 2.0 s",
         "by": "supervisor"},
        {"at": clock.now - 60, "component": "bot", "cause": "stale-heartbeat", "detail": "heartbeat stale for 63 s",
         "by": "monitor"},
    ]
    healthy_bundle(settings, sleepers, clock.now, restarts)
    app = create_app(settings, clock=clock, cache_ttl=0.0)
    return settings, app, app.test_client()


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- every route, GET and HEAD ---------------------------------------------------------------------
@pytest.mark.parametrize("path", GET_ROUTES)
def test_every_get_route_answers_get_and_head(bundle, path):
    _, _, client = bundle
    got = client.get(path)
    assert got.status_code == 200, got.data[:300]
    head = client.head(path)
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Type"] == got.headers["Content-Type"]


def test_ping_is_pong_even_without_any_state(home):
    client = create_app(settings_for(home)).test_client()
    resp = client.get("/ping")
    assert (resp.status_code, resp.data, resp.mimetype) == (200, b"pong", "text/plain")
    assert client.head("/ping").status_code == 200


def test_health_healthy_then_stale_then_bot_down(bundle, clock):
    settings, _, client = bundle
    resp = client.get("/health")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "healthy" and body["failing"] == []
    assert {c["name"] for c in body["checks"]} >= {"supervisor", "component:bot", "heartbeat"}

    clock.advance(settings.stale_after + 1)  # no new heartbeat: stale
    resp = client.get("/health")
    assert resp.status_code == 503
    body = resp.get_json()
    assert (body["status"], body["cause"]) == ("down", "stale-heartbeat")
    failing = {c["name"]: c["detail"] for c in body["failing"]}
    assert "stale" in failing["heartbeat"]
    assert client.head("/health").status_code == 503

    write_heartbeat(settings, clock.now)
    assert client.get("/health").status_code == 200
    state = json.loads(settings.state_file.read_text())
    state["components"][0] |= {"state": "backoff", "pid": None, "last_exit": "exited with code 1"}
    settings.state_file.write_text(json.dumps(state))
    body = client.get("/health").get_json()
    assert (body["status"], body["cause"]) == ("down", "crash")
    assert "component:bot" in {c["name"] for c in body["failing"]}


def test_health_down_when_supervisor_gone(home, sleepers, clock):
    settings = settings_for(home)
    client = create_app(settings, clock=clock).test_client()
    resp = client.get("/health")  # no state.json at all
    assert resp.status_code == 503
    assert resp.get_json()["failing"][0]["name"] == "supervisor"
    healthy_bundle(settings, sleepers, clock.now)
    assert client.get("/health").status_code == 200
    sleepers.procs[0].kill()  # the first sleeper stands in for the supervisor
    sleepers.procs[0].wait(5)
    resp = client.get("/health")
    assert resp.status_code == 503
    assert resp.get_json()["failing"][0]["detail"] == "the supervisor is not running"
    assert resp.get_json()["cause"] == "supervisor-down"


def test_degraded_when_telegram_unreachable_and_since_is_timed(bundle, clock):
    settings, _, client = bundle
    assert client.get("/api/health").get_json()["data"]["status"] == "healthy"
    clock.advance(5)
    write_heartbeat(settings, clock.now, state="telegram-unreachable", unreachable_since=clock.now - 3)
    data = client.get("/api/health").get_json()["data"]
    assert (data["status"], data["cause"]) == ("degraded", "telegram-outage")
    assert client.get("/health").status_code == 503
    # Seen changing since the last look; the bot's unreachable_since dates it exactly.
    assert data["since"] == clock.now - 3 and data["since_estimated"] is False
    telegram = next(c for c in data["checks"] if c["name"] == "telegram")
    assert telegram["ok"] is False and telegram["for_seconds"] == 3.0
    clock.advance(1.5)
    write_heartbeat(settings, clock.now, state="telegram-unreachable", unreachable_since=clock.now - 4.5)
    assert client.get("/api/health").get_json()["data"]["for_seconds"] == 4.5
    write_heartbeat(settings, clock.now)  # back: no file names the moment, so "now" it is
    data = client.get("/api/health").get_json()["data"]
    assert (data["status"], data["since"], data["since_estimated"]) == ("healthy", clock.now, False)


# --- JSON API --------------------------------------------------------------------------------------
def test_api_status_shape_and_no_secrets(bundle, clock):
    settings, _, client = bundle
    body = client.get("/api/status").get_json()
    assert body["success"] is True
    data = body["data"]
    assert data["status"] == "healthy" and data["demo"] is False
    names = [c["name"] for c in data["components"]]
    assert names == ["bot", "web", "monitor"]
    bot = data["components"][0]
    assert bot["state"] == "running" and bot["alive"] and bot["memory_bytes"] > 1_000_000
    assert bot["uptime"] == 50.0 and bot["restarts"] == 2
    assert "command" not in bot
    assert data["heartbeat"]["age"] == 0.0 and data["heartbeat"]["last_poll_age"] == 1.0
    assert data["heartbeat"]["updates_handled"] == 7
    assert [r["detail"] for r in data["recent_restarts"]] == ["heartbeat stale for 63 s", "exited with code 1 after 2.0 s"]
    assert [r["cause"] for r in data["recent_restarts"]] == ["stale-heartbeat", "crash"]
    assert data["host"]["memory_total"] > 0 and data["host"]["disk_free"] > 0
    # the healthy state was first seen now, so "since" is estimated from the newest component start
    assert data["since_estimated"] is True and data["since"] == pytest.approx(clock.now - 50)


def test_api_status_redacts_secrets_from_reasons(home, sleepers, clock):
    bot_token = "123456789:AAH-fake-token-for-tests-0123456789"
    settings = settings_for(home, TELEGRAM_BOT_TOKEN=bot_token, RESTART_TOKEN=TOKEN)
    state = healthy_bundle(settings, sleepers, clock.now, [
        {"at": clock.now - 5, "component": "bot", "cause": "crash", "detail": f"crash with {bot_token} and {TOKEN}",
         "by": "supervisor"}])
    state["components"][0]["last_restart_reason"] = f"crash with {bot_token}"
    settings.state_file.write_text(json.dumps(state))
    client = create_app(settings, clock=clock).test_client()
    for path in ("/api/status", "/", "/chart.svg", "/metrics", "/api/metrics", "/health"):
        text = client.get(path).get_data(as_text=True)
        assert bot_token.split(":")[1] not in text and TOKEN not in text, path
    assert "crash with ***" in client.get("/").get_data(as_text=True)


def test_api_health_and_metrics_envelopes(bundle):
    _, _, client = bundle
    health = client.get("/api/health").get_json()
    assert health["success"] is True and health["data"]["healthy"] is True
    assert all({"name", "ok", "detail", "for_seconds"} <= set(c) for c in health["data"]["checks"])
    metrics = client.get("/api/metrics").get_json()
    assert metrics["success"] is True
    data = metrics["data"]
    assert data["events"]["updates_handled"] == 7
    assert data["events"]["restarts_by_reason"] == {"crash": 1, "stale-heartbeat": 1}
    assert data["components"]["bot"]["memory_bytes"] > 0
    assert data["host"]["cpu_count"] >= 1


# --- Prometheus ------------------------------------------------------------------------------------
def test_metrics_parse_with_prometheus_parser(bundle):
    _, _, client = bundle
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(resp.get_data(as_text=True))}
    expected = {
        "botkeeper_healthy", "botkeeper_status", "botkeeper_supervisor_up", "botkeeper_component_up",
        "botkeeper_restarts", "botkeeper_heartbeat_age_seconds", "botkeeper_last_poll_age_seconds",
        "botkeeper_updates_handled", "botkeeper_process_memory_bytes", "botkeeper_process_cpu_percent",
        "botkeeper_host_memory_used_bytes", "botkeeper_host_memory_total_bytes", "botkeeper_host_disk_free_bytes",
        "botkeeper_host_cpu_percent", "botkeeper_component_uptime_seconds",
    }
    assert expected <= set(families), expected - set(families)
    up = {s.labels["component"]: s.value for s in families["botkeeper_component_up"].samples}
    assert up == {"bot": 1.0, "web": 1.0, "monitor": 1.0}
    restarts = {(s.labels["component"], s.labels["reason"]): s.value
                for s in families["botkeeper_restarts"].samples if s.name.endswith("_total")}
    assert restarts[("bot", "stale-heartbeat")] == 1 and restarts[("bot", "crash")] == 1
    assert {r for _, r in restarts} == set(REASONS)  # bounded label values: restart causes only
    status = {s.labels["status"]: s.value for s in families["botkeeper_status"].samples}
    assert status == {"healthy": 1.0, "starting": 0.0, "degraded": 0.0, "down": 0.0, "needs-config": 0.0,
                      "stopped": 0.0}
    assert families["botkeeper_updates_handled"].type == "counter"
    assert families["botkeeper_healthy"].samples[0].value == 1.0


def test_restart_counter_is_monotonic_as_the_window_slides():
    counter = RestartCounter()
    window = [{"at": i, "component": "bot", "cause": "crash", "detail": "exited with code 1", "by": "supervisor"}
              for i in range(50)]
    counter.update(window)
    counter.update(window)  # seen again: not counted twice
    assert counter.counts() == {("bot", "crash"): 50}
    slid = window[10:] + [{"at": 50 + i, "component": "bot", "cause": "memory", "detail": "500 MB over 400 MB",
                           "by": "monitor"} for i in range(10)]
    counter.update(slid)
    assert counter.counts() == {("bot", "crash"): 50, ("bot", "memory"): 10}


@pytest.mark.parametrize("cause,expected", [
    ("crash", "crash"), ("stale-heartbeat", "stale-heartbeat"), ("memory", "memory"), ("operator", "operator"),
    ("max-uptime", "max-uptime"),
    ("heartbeat stale for 63 s", "unknown"),  # a sentence is never read for keywords
    ("conflict", "unknown"),  # not a restart cause: the label stays bounded
    (None, "unknown"),
])
def test_reason_label_takes_typed_restart_causes_only(cause, expected):
    assert reason_label(cause) == expected


# --- auth ------------------------------------------------------------------------------------------
def test_no_token_configured_means_403_with_how_to(home, sleepers, clock):
    settings = settings_for(home)
    healthy_bundle(settings, sleepers, clock.now)
    client = create_app(settings, clock=clock).test_client()
    for resp in (client.post("/api/restart/bot", headers=auth()), client.get("/api/logs/bot", headers=auth()),
                 client.post("/api/restart/bot")):
        assert resp.status_code == 403
        body = resp.get_json()
        assert body["success"] is False and "RESTART_TOKEN" in body["error"]


def test_wrong_token_401_then_429_per_client_then_window_passes(bundle, clock):
    _, _, client = bundle
    assert client.get("/api/logs/bot").status_code == 401  # no header: told how to send it
    for _ in range(5):
        resp = client.get("/api/logs/bot", headers=auth("wrong"))
        assert resp.status_code == 401
        assert resp.get_json()["error"] == "wrong token"
    resp = client.get("/api/logs/bot", headers=auth())  # even the right token waits
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) == 60
    assert client.post("/api/restart/bot", headers=auth()).status_code == 429
    other = client.get("/api/logs/bot", headers=auth("wrong"), environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 401  # another client is not locked out
    clock.advance(30)
    assert int(client.get("/api/logs/bot", headers=auth()).headers["Retry-After"]) == 30
    clock.advance(30)
    assert client.get("/api/logs/bot", headers=auth()).status_code in (200, 404)  # 404: no log file yet


def test_token_gate_compares_whole_token():
    gate = TokenGate("abc123", clock=lambda: 0.0)
    assert gate.check("c", "Bearer abc123") is None
    assert gate.check("c", "bearer abc123") is None
    assert gate.check("c", "Bearer abc1234").status == 401
    assert gate.check("c", "Bearer abc12").status == 401
    assert gate.check("c", "Basic abc123").status == 401


def test_logs_with_token_are_redacted_and_bounded(bundle):
    settings, _, client = bundle
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"line {i}" for i in range(300)] + [f"oops the token is {TOKEN}", "last line"]
    (settings.logs_dir / "bot.log").write_text("\n".join(lines) + "\n")
    body = client.get("/api/logs/bot?lines=3", headers=auth()).get_json()
    assert body["success"] is True
    assert body["data"]["lines"] == ["line 299", "oops the token is ***", "last line"]
    assert len(client.get("/api/logs/bot", headers=auth()).get_json()["data"]["lines"]) == 100
    for bad in ("0", "-1", "abc", "100000", "1.5"):
        assert client.get(f"/api/logs/bot?lines={bad}", headers=auth()).status_code == 400
    assert client.get("/api/logs/nosuch", headers=auth()).status_code == 404
    assert client.get("/api/logs/monitor", headers=auth()).status_code == 404  # known, no file yet
    for evil in ("..%2F..%2Fetc%2Fpasswd", "..", "%2Fetc%2Fpasswd", "BOT", "bot.log"):
        resp = client.get(f"/api/logs/{evil}", headers=auth())
        assert resp.status_code == 404, evil
        assert "root:" not in resp.get_data(as_text=True)


def test_restart_without_supervisor_is_503_json(bundle):
    settings, _, client = bundle
    resp = client.post("/api/restart/bot", headers=auth())  # nothing listens on run/control.sock
    assert resp.status_code == 503
    assert "supervisor" in resp.get_json()["error"]
    assert client.post("/api/restart/nosuch", headers=auth()).status_code == 404
    assert client.get("/api/restart/bot").status_code == 405


def test_right_token_restarts_through_the_real_supervisor(home, supervised):
    sup = supervised(components={"bot": {"command": SLEEPER, "heartbeat": False},
                                 "web": {"command": SLEEPER}, "monitor": {"enabled": False}},
                     RESTART_TOKEN=TOKEN)
    from conftest import component as comp_of

    first = wait_for(lambda: comp_of(home, "bot").get("state") == "running" and comp_of(home, "bot"),
                     10, message="bot running")
    settings = settings_for(home, RESTART_TOKEN=TOKEN)
    client = create_app(settings).test_client()
    resp = client.post("/api/restart/bot", headers=auth())
    assert resp.status_code == 200, resp.data
    assert resp.get_json()["data"]["component"] == "bot"
    again = wait_for(lambda: (c := comp_of(home, "bot")).get("pid") not in (None, first["pid"])
                     and c.get("state") == "running" and c, 10, message="bot restarted")
    assert again["restarts"] == first["restarts"] + 1
    assert (again["cause"], again["last_restart_reason"]) == ("operator", "requested from the web page")
    recent = client.get("/api/status").get_json()["data"]["recent_restarts"][0]
    assert (recent["component"], recent["by"], recent["cause"], recent["planned"]) == ("bot", "web", "operator", True)
    assert sup.proc.poll() is None


# --- errors and limits -----------------------------------------------------------------------------
def test_404_is_small_json_or_html_never_a_traceback(bundle):
    _, _, client = bundle
    api = client.get("/api/nope")
    assert api.status_code == 404 and api.get_json() == {"success": False, "error": "not found"}
    page = client.get("/nope", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Traceback" not in page.get_data(as_text=True) and len(page.data) < 1000
    assert client.get("/nope", headers={"Accept": "application/json"}).get_json()["success"] is False
    assert client.head("/nope").status_code == 404


def test_oversized_and_malformed_requests_are_4xx(bundle):
    _, _, client = bundle
    big = client.post("/api/restart/bot", data=b"x" * (200 * 1024), headers=auth())
    assert big.status_code == 413 and big.get_json()["success"] is False
    assert client.post("/health").status_code == 405
    assert client.get("/api/logs/bot?lines=%ff", headers=auth()).status_code == 400


def test_internal_error_is_one_line_json(bundle):
    settings, app, client = bundle

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret internals")

    resp = client.get("/api/boom")
    assert resp.status_code == 500
    assert "secret internals" not in resp.get_data(as_text=True)
    assert resp.get_json()["success"] is False


def test_security_headers(bundle):
    _, _, client = bundle
    headers = client.get("/").headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"


# --- the page --------------------------------------------------------------------------------------
def test_page_shows_the_one_glance_facts(bundle):
    _, app, client = bundle
    app.extensions["botkeeper"].source.take_sample()
    html = client.get("/").get_data(as_text=True)
    assert re.search(r'<h1 id="state-word">healthy</h1>', html)
    for text in ("bot", "web", "monitor", "heartbeat stale for 63 s", "Last successful poll", "<svg",
                 'http-equiv="refresh"', "Host", "memory-line" if False else "<circle"):
        assert text in html, text
    assert "DEMO" not in html
    assert "https://" not in html.replace("http://www.w3.org/2000/svg", "")  # no CDN, nothing external
    assert "chat_id" not in html


def test_demo_mode_banner_and_state_word(home, sleepers, clock):
    settings = settings_for(home, DEMO="on")
    healthy_bundle(settings, sleepers, clock.now)
    client = create_app(settings, clock=clock).test_client()
    html = client.get("/").get_data(as_text=True)
    assert 'class="demo-banner"' in html and "TELEGRAM_BOT_TOKEN" in html and "Replit Secrets" in html
    assert '<h1 id="state-word">healthy</h1>' in html and "DEMO: offline emulator" in html  # the health heads
    data = client.get("/api/status").get_json()["data"]
    assert (data["state"], data["status"], data["demo"]) == ("healthy", "healthy", True)
    assert "TELEGRAM_BOT_TOKEN" in data["demo_message"]
    assert client.get("/health").get_json()["demo"] is True


def test_chart_draws_memory_restarts_and_bands_and_escapes():
    now = 100_000.0
    samples = [Sample(now - 3600 + i * 60, (50 + i) * 1024 * 1024, 1.0, "down" if 20 <= i < 25 else "healthy")
               for i in range(60)]
    restarts = [{"at": now - 1800, "component": "bot", "cause": "crash", "detail": "<script>alert(1)</script>",
                 "planned": False}]
    svg = chart.render(now, samples, restarts, limit_bytes=400 * 1024 * 1024, gap=180)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert 'class="memory-line"' in svg and 'class="restart-marker"' in svg and 'class="band-down"' in svg
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "-1h" in svg and "now" in svg
    empty = chart.render(now, [], [], None)
    assert "collecting samples" in empty


def test_chart_breaks_the_line_at_gaps():
    now = 10_000.0
    mb = 1024 * 1024
    samples = [Sample(now - 1000 + i, 40 * mb, 0.0, "healthy") for i in range(0, 100, 10)]
    samples += [Sample(now - 300 + i, 60 * mb, 0.0, "healthy") for i in range(0, 100, 10)]
    svg = chart.render(now, samples, [], None, gap=30)
    assert svg.count('class="memory-line"') == 2


def test_sampler_fills_the_chart(bundle, clock):
    _, app, client = bundle
    source = app.extensions["botkeeper"].source
    for _ in range(5):
        sample = source.take_sample()
        clock.advance(60)
    assert sample.bot_memory > 0 and sample.overall in ("healthy", "down")
    assert 'data-samples="5"' in client.get("/chart.svg").get_data(as_text=True)


def test_log_tail_reads_from_the_end(tmp_path):
    path = tmp_path / "big.log"
    with path.open("w") as fh:
        for i in range(200_000):
            fh.write(f"line number {i}\n")
    started = time.perf_counter()
    assert tail(path, 3) == ["line number 199997", "line number 199998", "line number 199999"]
    assert len(tail(path, 1000)) == 1000
    assert time.perf_counter() - started < 0.5
    (tmp_path / "short.log").write_text("a\nb")
    assert tail(tmp_path / "short.log", 10) == ["a", "b"]


def test_everything_answers_without_any_bundle_files(home):
    """A web started before the supervisor ever ran: no state.json, no heartbeat, no logs."""
    app = create_app(settings_for(home))
    client = app.test_client()
    for path in GET_ROUTES:
        assert client.get(path).status_code == (503 if path == "/health" else 200), path
    assert "has not written run/state.json" in client.get("/").get_data(as_text=True)
    families = {f.name for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    assert {"botkeeper_healthy", "botkeeper_supervisor_up", "botkeeper_host_memory_total_bytes"} <= families


def test_background_sampler_runs_and_stops(bundle):
    from botkeeper.web import start_background, stop_background

    _, app, _ = bundle
    ctx = start_background(app)  # test profile: a sample a second, self-ping off
    assert [t.name for t in ctx.threads] == ["web-sampler"]
    wait_for(lambda: ctx.source.history.since(0), 5, message="first sample")
    stop_background(app)
    assert not any(t.is_alive() for t in ctx.threads)


@pytest.mark.parametrize("content", ['{"components": "x", "supervisor": 5, "recent_restarts": {}}', "[1, 2]",
                                     '{"components": [1, "a", null]}', "{not json", ""])
def test_malformed_state_file_is_down_not_a_500(home, content):
    settings = settings_for(home)
    settings.run_dir.mkdir(parents=True)
    settings.state_file.write_text(content)
    client = create_app(settings).test_client()
    for path in GET_ROUTES:
        assert client.get(path).status_code == (503 if path == "/health" else 200), path
