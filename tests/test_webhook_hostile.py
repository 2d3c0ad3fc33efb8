"""The webhook server against strangers and broken bodies: the real WebhookServer in its own event
loop on loopback, a real python-telegram-bot Application (never started against Telegram), raw
sockets as clients. Every bad body gets an HTTP answer; a stranger's body is never read."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time

import pytest

pytest.importorskip("telegram")

from telegram.ext import ApplicationBuilder  # noqa: E402

from botkeeper.bot import webhook  # noqa: E402
from conftest import FAKE_TOKEN, wait_for  # noqa: E402

SECRET = "webhook-test-secret"
GOOD = {"update_id": 1000, "message": {"message_id": 1, "date": 1_700_000_000, "text": "hi",
                                        "chat": {"id": 5, "type": "private"}}}


@pytest.fixture
def server():
    loop = asyncio.new_event_loop()
    app = ApplicationBuilder().token(FAKE_TOKEN).updater(None).build()
    srv = webhook.WebhookServer(app, SECRET, 0, host="127.0.0.1")
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(srv.start(), loop).result(5)
    srv.queue = app.update_queue
    srv.loop = loop
    yield srv
    asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def request(port: int, body: bytes, secret: str | None = SECRET, method: str = "POST", path: str = "/telegram",
            extra: str = "", send_body: bool = True) -> int | None:
    """Status of one request on a fresh connection, None when the connection closed unanswered."""
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if secret is not None:
        head += f"X-Telegram-Bot-Api-Secret-Token: {secret}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall((head + extra + "\r\n").encode() + (body if send_body else b""))
        data = b""
        while b"\r\n" not in data:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None


def bad_bodies() -> dict[str, bytes]:
    deep = b"[" * 100_000 + b"]" * 100_000
    date_bomb = dict(GOOD, message=dict(GOOD["message"], date=1e308))
    return {
        "not json": b"{nope",
        "not utf-8": b"\xff\xfe{}",
        "a list": b"[1, 2]",
        "a string": b'"update"',
        "100k-deep json": deep,
        "deep inside an object": b'{"update_id": 1, "message": ' + deep + b"}",
        "no update_id": json.dumps({"message": GOOD["message"]}).encode(),
        "update_id a string": json.dumps(dict(GOOD, update_id="1")).encode(),
        "update_id a float": json.dumps(dict(GOOD, update_id=1.5)).encode(),
        "update_id a bool": json.dumps(dict(GOOD, update_id=True)).encode(),
        "update_id negative": json.dumps(dict(GOOD, update_id=-1)).encode(),
        "update_id absurd": json.dumps(dict(GOOD, update_id=10 ** 30)).encode(),
        "a date of 1e308": json.dumps(date_bomb).encode(),
        "a chat that is a number": json.dumps(dict(GOOD, message=dict(GOOD["message"], chat=7))).encode(),
        "empty": b"",
    }


def test_each_bad_body_gets_400_and_a_good_one_still_gets_200(server, caplog):
    caplog.set_level(logging.ERROR, "botkeeper.bot")
    for name, body in bad_bodies().items():
        assert request(server.port, body) == 400, name
    assert server.bad == len(bad_bodies())
    assert not [r for r in caplog.records if r.exc_info], "a bad body must not cost a traceback"
    assert request(server.port, json.dumps(GOOD).encode()) == 200
    assert server.received == 1 and server.queue.qsize() == 1


def test_strangers_are_refused_before_their_body_is_read(server):
    big = b"x" * webhook.MAX_BODY
    # The head alone (a 1 MiB body announced, never sent) is answered: nothing waits for the body.
    assert request(server.port, big, secret=None, send_body=False) == 403
    assert request(server.port, big, secret="wrong", send_body=False) == 403
    assert request(server.port, big, path="/elsewhere", send_body=False) == 404
    assert request(server.port, big, method="GET", send_body=False) == 405
    assert request(server.port, b"{}", secret="wrong") == 403  # a small body: read, dropped, answered
    # Too large, or chunked: refused from the head, before any byte of the body.
    assert request(server.port, b"x" * (webhook.MAX_BODY + 1), send_body=False) == 413
    assert request(server.port, b"", extra="Transfer-Encoding: chunked\r\n") == 400
    assert server.refused == 3 and server.received == 0


def test_a_slow_client_is_cut_and_a_flood_is_summarised(server, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, "botkeeper.bot")
    monkeypatch.setattr(webhook, "HEAD_TIMEOUT", 0.5)
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    slow.sendall(b"POST /telegram HTTP/1.1\r\nHost: t\r\n")  # never finishes its head
    started = time.monotonic()
    assert slow.recv(100) == b""  # closed by the server
    assert time.monotonic() - started < 5
    slow.close()
    for _ in range(50):
        assert request(server.port, b"{}", secret="wrong") == 403
    lines = [r.getMessage() for r in caplog.records if "secret token refused" in r.getMessage()]
    assert len(lines) == 1, lines  # one line for the first, the rest counted for the minute's summary
    assert server.refused == 50


def test_connections_past_the_cap_are_closed_unread(server, monkeypatch):
    monkeypatch.setattr(webhook, "MAX_CONNECTIONS", 3)
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    try:
        wait_for(lambda: len(server._clients) == 3, 5, message="three connections held")
        assert request(server.port, json.dumps(GOOD).encode()) is None
        assert server.turned_away == 1
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: not server._clients, 5, message="the held connections gone")
    assert request(server.port, json.dumps(GOOD).encode()) == 200


def test_keep_alive_carries_on_after_a_bad_body(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for body, want in ((b"[]", b"400"), (json.dumps(GOOD).encode(), b"200")):
            sock.sendall(b"POST /telegram HTTP/1.1\r\nHost: t\r\nX-Telegram-Bot-Api-Secret-Token: %s\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (SECRET.encode(), len(body), body))
            data = b""
            while not data.endswith((b"ok", b"Bad Request")):
                data += sock.recv(4096)
            assert data.split(b" ")[1] == want
