"""keep_alive.py for real: waitress on loopback, run by the real supervisor or on its own."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from botkeeper.supervise import control
from botkeeper.web.selfping import SelfPinger
from conftest import ROOT, bk_env, free_port, py_command, wait_for
from web_helpers import settings_for

HEARTBEAT_BOT = py_command("""
    import time
    from botkeeper import heartbeat
    start = time.time()
    while True:
        heartbeat.beat(state="polling", started_at=start, last_poll_at=time.time(), updates_handled=3)
        time.sleep(0.1)
""")


def get(url: str, method: str = "GET") -> requests.Response | None:
    try:
        return requests.request(method, url, timeout=2)
    except requests.RequestException:
        return None


def status_is(url: str, code: int):
    """Predicate for wait_for; a Response is falsy when >= 400, so it is wrapped in a list."""
    return lambda: (r := get(url)) is not None and r.status_code == code and [r]


@pytest.fixture
def standalone(home):
    """Start `python keep_alive.py` (no supervisor) with env overrides; stopped after the test."""
    procs: list[subprocess.Popen] = []

    def start(**env: str) -> tuple[subprocess.Popen, str]:
        full = bk_env(home, HOST="127.0.0.1", **env)
        proc = subprocess.Popen([sys.executable, str(ROOT / "keep_alive.py")], cwd=ROOT, env=full,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc, f"http://127.0.0.1:{full['PORT']}"

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_health_flips_with_the_bot_under_the_real_supervisor(home, supervised):
    port = free_port()
    supervised(components={"bot": {"command": HEARTBEAT_BOT}, "monitor": {"enabled": False}},
               PORT=str(port), HOST="127.0.0.1", PYTHONPATH=str(ROOT))
    base = f"http://127.0.0.1:{port}"
    body = wait_for(status_is(f"{base}/health", 200), 20, 0.1, "/health 200")[0].json()
    assert body["status"] == "healthy"
    assert {c["name"] for c in body["checks"]} >= {"component:bot", "component:web", "heartbeat"}
    assert get(f"{base}/health", "HEAD").status_code == 200
    assert get(f"{base}/ping").text == "pong"

    settings = settings_for(home)
    control.call(settings, "stop", name="bot", cause="operator", reason="test stops the bot", by="test")
    down = wait_for(lambda: (r := status_is(f"{base}/health", 503)()) and r[0].json()["status"] == "stopped" and r,
                    10, 0.05, "/health 503, stopped")[0].json()
    assert (down["status"], down["cause"]) == ("stopped", "operator")  # on purpose: not "down"
    assert "component:bot" in {c["name"] for c in down["failing"]}
    assert get(f"{base}/health", "HEAD").status_code == 503

    control.call(settings, "start", name="bot", reason="test starts the bot", by="test")
    back = wait_for(status_is(f"{base}/health", 200), 10, 0.05, "/health 200 again")[0].json()
    assert back["status"] == "healthy"

    status = get(f"{base}/api/status").json()["data"]
    web = next(c for c in status["components"] if c["name"] == "web")
    assert web["alive"] and web["memory_bytes"] > 10_000_000  # the web process measures itself
    bot = next(c for c in status["components"] if c["name"] == "bot")
    assert bot["alive"] and bot["memory_bytes"] > 0


def test_standalone_serves_head_and_stops_cleanly_on_sigterm(standalone):
    proc, base = standalone()
    wait_for(status_is(f"{base}/ping", 200), 15, 0.05, "web up")
    head = get(f"{base}/", "HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Server"] == "botkeeper"
    assert get(f"{base}/health").status_code == 503  # no supervisor here
    assert get(f"{base}/nope").status_code == 404
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert time.monotonic() - started < 5
    out = proc.stdout.read()
    assert "web: stopped" in out and "Traceback" not in out


def test_port_in_use_exits_1_with_one_clear_line(standalone):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc, _ = standalone(PORT=str(port))
        assert proc.wait(15) == 1
    out = proc.stdout.read()
    assert f"port {port}" in out and "PORT=" in out and "already in use" in out
    assert "Traceback" not in out


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_waitress_refuses_oversized_and_malformed_requests(standalone):
    proc, base = standalone()
    port = int(base.rsplit(":", 1)[1])
    wait_for(status_is(f"{base}/ping", 200), 15, 0.05, "web up")
    big_header = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    assert big_header.split(b"\r\n")[0].endswith(b" 431 Request Header Fields Too Large")
    big_body = raw(port, b"POST /api/restart/bot HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n"
                         b"Connection: close\r\n\r\n" + b"x" * 1000)
    assert b" 413 " in big_body.split(b"\r\n")[0]
    garbage = raw(port, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.") and b" 400 " in garbage.split(b"\r\n")[0]
    assert get(f"{base}/ping").status_code == 200  # still serving
    assert b"Traceback" not in big_header + big_body + garbage


def test_self_pinger_pings_and_logs_only_changes(standalone, caplog):
    proc, base = standalone()
    wait_for(status_is(f"{base}/ping", 200), 15, 0.05, "web up")
    caplog.set_level(logging.INFO, logger="botkeeper.web.selfping")
    stop = threading.Event()
    pinger = SelfPinger(base, 0.05, stop)
    assert pinger.ping_once() is True
    dead = SelfPinger(f"http://127.0.0.1:{free_port()}", 0.05, stop)
    assert [dead.ping_once() for _ in range(3)] == [False, False, False]
    assert sum("failed" in r.message for r in caplog.records) == 1  # logged once, not per ping
    pinger.start()
    wait_for(lambda: pinger.count >= 3, 5, message="three pings from the thread")
    stop.set()
    pinger.join(2)
    assert not pinger.is_alive() and pinger.ok is True
    assert sum("enabled" in r.message for r in caplog.records) == 1


def test_self_ping_setting_rules(home):
    assert not settings_for(home).self_ping_enabled  # test profile: off
    on = settings_for(home, SELF_PING="auto", REPLIT_DEV_DOMAIN="abc.repl.co")
    assert on.self_ping_enabled and on.self_ping_url == "https://abc.repl.co"
    deployed = settings_for(home, SELF_PING="auto", PUBLIC_URL="https://x.example", REPLIT_DEPLOYMENT="1")
    assert not deployed.self_ping_enabled
