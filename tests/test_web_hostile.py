"""Hostile clients against the public page: odd query strings, slow-client floods, forged
X-Forwarded-For. The real keep_alive.py on loopback where the server matters; Flask's test client
(the same app) for breadth."""

from __future__ import annotations

import ipaddress
import logging
import socket
import subprocess
import sys

import pytest
import requests

from botkeeper.web import create_app
from botkeeper.web.auth import client_address
from conftest import ROOT, bk_env, wait_for
from web_helpers import TOKEN, healthy_bundle, settings_for

ODD = ["%C2%B2", "%D9%A3", "-1", "0", "1e3", "0x10", "%FF", "%", "", "99999999999999999999", "1.5", "%00", "%20",
       "10%0A"]


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(home, sleepers, clock):
    settings = settings_for(home, RESTART_TOKEN=TOKEN)
    healthy_bundle(settings, sleepers, clock.now)
    (settings.logs_dir).mkdir(exist_ok=True)
    (settings.logs_dir / "bot.log").write_text("one\ntwo\nthree\n")
    return create_app(settings, clock=clock, cache_ttl=0.0).test_client()


def test_bad_query_parameters_are_400_naming_the_parameter(client):
    for value in ODD:
        chart = client.get(f"/chart.svg?w={value}")
        assert chart.status_code == 400, (value, chart.data[:200])
        assert b"w must be a whole number from 1 to 10000" in chart.data
        logs = client.get(f"/api/logs/bot?lines={value}", headers=auth())
        assert logs.status_code == 400, value
        assert logs.get_json() == {"success": False, "error": "lines must be a whole number from 1 to 1000"}
    assert client.get("/chart.svg?w=250").status_code == 200  # a narrow phone: clamped, not refused
    assert b'data-width="1600"' in client.get("/chart.svg?w=10000").data
    assert client.get("/api/logs/bot?lines=2", headers=auth()).get_json()["data"]["lines"] == ["two", "three"]


def test_no_route_answers_500_to_odd_queries_paths_or_headers(client, caplog):
    caplog.set_level(logging.INFO)
    paths = ["/", "/ping", "/health", "/api/health", "/api/status", "/api/metrics", "/metrics", "/chart.svg",
             "/api/logs/bot", "/api/logs/%C2%B2", "/api/logs/..%2f..%2fetc%2fpasswd", "/static/..%2fapp.js",
             "/api/restart/%00", "/%FF", "/static/%C2%B2"]
    headers = [{}, auth(), auth("wrong"), {"Authorization": "Bearer \u00e9\u00e9"}, {"Accept": "\u00ff/\u00ff;q=x"},
               {"X-Forwarded-For": "not an address, ::1"}]
    for path in paths:
        for query in ("", "?w=%C2%B2&lines=%C2%B2", "?%ZZ=1", "?a=%FF%FE", "?w=1&w=%C2%B2"):
            for h in headers:
                for method in ("GET", "HEAD", "POST"):
                    resp = client.open(path + query, method=method, headers=h)
                    assert resp.status_code < 500, (method, path + query, h, resp.status_code, resp.data[:200])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.records[:3]


# --- the real server ---------------------------------------------------------------------------------
@pytest.fixture
def web(home):
    """`python keep_alive.py` on loopback with env overrides; stopped after the test."""
    procs: list[subprocess.Popen] = []

    def start(**env: str) -> tuple[int, str]:
        full = bk_env(home, HOST="127.0.0.1", **env)
        # What the supervisor would write to logs/web.log is the process's stderr: kept in a file.
        with open(home / "web-output.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, str(ROOT / "keep_alive.py")], cwd=ROOT, env=full,
                                    stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        base = f"http://127.0.0.1:{full['PORT']}"
        wait_for(lambda: _get(f"{base}/ping") == 200, 15, 0.05, "web up")
        return int(full["PORT"]), base

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _get(url: str, timeout: float = 2, **kw) -> int | None:
    try:
        return requests.get(url, timeout=timeout, **kw).status_code
    except requests.RequestException:
        return None


def test_client_errors_leave_no_traceback_in_web_log(web, home):
    _, base = web(RESTART_TOKEN=TOKEN)
    for _ in range(20):
        assert _get(f"{base}/chart.svg?w=%C2%B2") == 400
        assert _get(f"{base}/api/logs/bot?lines=%C2%B2", headers=auth()) == 400
    assert _get(f"{base}/chart.svg?w=300") == 200
    log = (home / "web-output.log").read_text()
    assert "status page on" in log  # the right file: the server's own start-up line is there
    assert "Traceback" not in log and "ERROR" not in log
    assert len(log) < 4000  # a few start-up lines, nothing per bad request


def test_health_and_ping_answer_while_300_slow_clients_hold_connections(web):
    port, base = web()
    slow = []
    try:
        for i in range(300):  # above the old limit of 200 connections, each one mid-request
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(f"GET /?n={i} HTTP/1.1\r\nHost: slow\r\nX-Slow: 1\r\n".encode())
            slow.append(sock)
        for _ in range(5):
            assert requests.get(f"{base}/ping", timeout=5).text == "pong"
            assert requests.get(f"{base}/health", timeout=5).status_code == 503  # no supervisor here
        for sock in slow:  # still open and waiting: the server answered beside them, not instead
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in slow:
            sock.close()


def test_forwarded_for_is_believed_only_from_trusted_proxies(web):
    _, base = web(RESTART_TOKEN=TOKEN, TRUSTED_PROXIES="127.0.0.1")

    def logs(token: str, client: str) -> int | None:
        return _get(f"{base}/api/logs/bot", headers=auth(token) | {"X-Forwarded-For": client})

    assert [logs("wrong", "203.0.113.7") for _ in range(5)] == [401] * 5
    assert logs(TOKEN, "203.0.113.7") == 429  # the guesser is locked out...
    assert logs(TOKEN, "198.51.100.2") == 404  # ...the operator behind the same proxy is not (no log yet)


def test_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(client):
    for n in range(5):
        client.get("/api/logs/bot", headers=auth("wrong") | {"X-Forwarded-For": f"203.0.113.{n}"})
    assert client.get("/api/logs/bot", headers=auth() | {"X-Forwarded-For": "198.51.100.2"}).status_code == 429


def test_client_address_reads_forwarded_for_from_the_right():
    trusted = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert client_address("192.0.2.1", "198.51.100.2", trusted) == "192.0.2.1"  # peer not a proxy
    assert client_address("10.0.0.1", None, trusted) == "10.0.0.1"
    assert client_address("10.0.0.1", "198.51.100.2", trusted) == "198.51.100.2"
    # A client may prepend anything; the proxies append: the nearest untrusted hop is the client.
    assert client_address("10.0.0.1", "1.1.1.1, 198.51.100.2, 10.0.0.2", trusted) == "198.51.100.2"
    assert client_address("::1", "2001:db8::5", trusted) == "2001:db8::5"
    assert client_address("10.0.0.1", "198.51.100.2, garbage", trusted) == "10.0.0.1"
    assert client_address("10.0.0.1", "10.0.0.3, 10.0.0.2", trusted) == "10.0.0.3"


# --- what a stranger may learn, and what reaches the log (issue 24) ------------------------------
def test_locked_out_guessers_cannot_forge_log_lines_and_cost_one_line(client, caplog):
    caplog.set_level(logging.WARNING)
    forged = "/api/logs/bot%0A2026-01-01 00:00:00,000 INFO    supervisor: all fine%1B[31m"
    for _ in range(30):
        client.get(forged, headers=auth("wrong-token-value"))
    lines = [r.getMessage() for r in caplog.records if "wrong tokens" in r.getMessage()]
    assert len(lines) == 1, lines  # 25 locked-out answers, one line until the minute has passed
    assert "\n" not in lines[0] and "\x1b" not in lines[0]
    assert "bot\\n2026-01-01" in lines[0] and "\\x1b[31m" in lines[0]


def test_public_surfaces_show_no_chat_or_user_ids(home, sleepers, clock):
    from web_helpers import write_heartbeat

    from botkeeper.fsutil import atomic_write_json

    settings = settings_for(home, RESTART_TOKEN=TOKEN)
    healthy_bundle(settings, sleepers, clock.now)
    write_heartbeat(settings, clock.now, in_flight=[{"update_id": 31, "chat": 987654321, "user": 123123123,
                                                     "kind": "message", "handler": "echo"}],
                    blocked={"what": "handler echo (update 31, chat 987654321)", "for": 3.0})
    atomic_write_json(settings.data_dir / "poison.json", {"quarantined": [
        {"update_id": 30, "chat": 555444333, "user": 222111000, "kind": "/crash", "quarantined_at": clock.now}],
        "quarantined_total": 1})
    client = create_app(settings, clock=clock, cache_ttl=0.0).test_client()
    page = client.get("/").get_data(as_text=True)
    public = client.get("/api/status").get_data(as_text=True)
    health = client.get("/api/health").get_data(as_text=True)
    for text in (page, public, health):
        for secret_id in ("987654321", "123123123", "555444333", "222111000"):
            assert secret_id not in text
    assert "update 30" in page and "chat (hidden)" in page  # the fact stays, the id does not
    status = client.get("/api/status", headers=auth()).get_json()["data"]
    assert status["work"]["in_flight"][0]["chat"] == 987654321
    assert status["quarantined_updates"]["latest"][0]["user"] == 222111000
    assert client.get("/api/status", headers=auth("wrong-token-value")).status_code == 401
