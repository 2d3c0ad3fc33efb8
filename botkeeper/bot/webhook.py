"""Webhook mode: the bot's own small HTTP server for Telegram's deliveries (POST /telegram).

Why not python-telegram-bot's webhook server: it needs tornado, and python-telegram-bot imports its
webhook module (so tornado) whenever tornado is installed, polling or not; the polling default must
not pay for that (docs/webhooks.md has the measured cost). This is asyncio's own server, ~1 ms per
update, in the bot's event loop.

The secret header is checked before the body is read: a request without it, or with a wrong one,
gets 403, its connection is closed and its body never leaves the kernel's buffer (a flood of
strangers' 1 MiB bodies costs a few KiB each). Connections, the bytes in flight and the time a
request may take are capped; a body the Bot API would never send gets 400, never a dropped
connection. A good update is put on the application's
update queue and confirmed with 200 at once, as Telegram expects; which replica handles it is
decided by the claim in Redis (botkeeper/bot/shared.py), in the group that runs before every handler.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any

from telegram import Update
from telegram.ext import Application

from .. import logs

log = logging.getLogger("botkeeper.bot")

PATH = "/telegram"
SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_BODY = 1 << 20  # Telegram's updates are a few KiB; anything this large is not from Telegram
MAX_HEAD = 8 * 1024  # request line + headers; the reader pauses the socket at twice this
READ_CHUNK = 8 * 1024  # bytes taken from the socket per read (asyncio's default is 256 KiB)
MAX_CONNECTIONS = 1000  # open at once; past it a new connection is closed unread (fds, memory)
MAX_IN_FLIGHT = 8 << 20  # body bytes being read at once, all (authenticated) requests together
HEAD_TIMEOUT = 10.0  # seconds for the first request's head (a slowloris client is cut after this)
BODY_TIMEOUT = 10.0  # seconds for a body once its head was accepted
DRAIN_MAX = 64 * 1024  # a refused body up to this size is read and dropped, a larger one never read
DRAIN_TIMEOUT = 2.0
IDLE = 75.0  # seconds a kept-alive connection may stay silent (Telegram reuses its connections)
MAX_UPDATE_ID = 1 << 53  # Telegram's ids fit in 52 bits; past that a body is not from Telegram
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


class Refused(Exception):
    """The request is answered with this status and the connection closed (its body, if any, is
    never read)."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


async def _discard(reader: asyncio.StreamReader, length: int) -> bool:
    """Read and drop a small refused body (so the answer is not lost to a reset and the connection
    can be kept), a chunk at a time; False when it did not come in time or is too large."""
    if length > DRAIN_MAX:
        return False

    async def drain(left: int) -> bool:
        while left > 0:
            chunk = await reader.read(min(left, READ_CHUNK))
            if not chunk:
                return False
            left -= len(chunk)
        return True

    try:
        return await asyncio.wait_for(drain(length), DRAIN_TIMEOUT)  # (asyncio.timeout is 3.11+)
    except asyncio.TimeoutError:
        return False


def parse_update(body: bytes) -> dict[str, Any] | None:
    """The update's JSON object, or None for any body the Bot API would never send: not JSON, too
    deep, not an object, an update_id that is not a whole number in Telegram's range."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
        return None
    if not isinstance(data, dict):
        return None
    uid = data.get("update_id")
    if not isinstance(uid, int) or isinstance(uid, bool) or not 0 <= uid < MAX_UPDATE_ID:
        return None
    return data


class WebhookServer:
    """Order of the checks, cheapest first, so that a stranger costs a few KiB and one answer:
    request line, path, method, secret header (403, connection closed, body never read), size,
    the bytes-in-flight budget (503: Telegram retries), then the body within BODY_TIMEOUT."""

    def __init__(self, application: Application, secret: str, port: int, host: str = "0.0.0.0"):
        self.application, self.port, self.host = application, port, host
        self._secret = secret.encode()
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task] = set()
        self._in_flight = 0
        self.received = 0
        self.refusals = logs.Refusals(log, "webhook: requests without the right secret token refused (403)")
        self.turned_away = 0  # connections closed unread at MAX_CONNECTIONS
        self.bad = 0
        self.last_received_at: float | None = None

    @property
    def refused(self) -> int:
        return self.refusals.total

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def report(self) -> dict[str, Any]:
        """Heartbeat fields (health.reporters)."""
        return {"webhook_received": self.received, "webhook_refused": self.refused,
                "webhook_bad": self.bad, "webhook_turned_away": self.turned_away,
                "webhook_last_received_at": self.last_received_at}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        if hasattr(transport, "max_size"):  # small reads: a 1 MiB body is never pulled in at once
            transport.max_size = READ_CHUNK
        if len(self._clients) >= MAX_CONNECTIONS:
            self.turned_away += 1
            transport.abort()
            return
        self._clients.add(asyncio.current_task())
        peer = writer.get_extra_info("peername")
        peer = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        wait = HEAD_TIMEOUT  # a first request must come at once; later ones may wait IDLE
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._answer(writer, 431, close=True)
                    return
                try:
                    status, keep = await self._one(head, reader, peer)
                except Refused as exc:
                    status, keep = exc.status, False
                except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                    status, keep = 408, False
                except Exception:  # noqa: BLE001 - one request's bug must not drop the connection unanswered
                    log.exception("webhook: error while handling a delivery")
                    status, keep = 500, False
                await self._answer(writer, status, close=not keep)
                if not keep:
                    return
                wait = IDLE
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._clients.discard(asyncio.current_task())
            writer.close()

    async def _one(self, head: bytes, reader: asyncio.StreamReader, peer: str) -> tuple[int, bool]:
        """(status, keep the connection) for one request whose head has been read. Raises Refused
        for an answer after which the connection is closed without reading the body."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise Refused(400)
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and parts[2] == "HTTP/1.1"
        if "transfer-encoding" in headers:  # Telegram sends Content-Length; chunked is not for us
            raise Refused(400)
        raw_length = headers.get("content-length") or "0"
        if not raw_length.isdigit() or len(raw_length) > 9:
            raise Refused(400)
        length = int(raw_length)
        refusal = None
        if parts[1].split("?", 1)[0] != PATH:
            refusal = 404
        elif parts[0] != "POST":
            refusal = 405
        elif not hmac.compare_digest(headers.get(SECRET_HEADER, "").encode(), self._secret):
            self.refusals.note(f"latest from {peer}")
            refusal = 403
        if refusal is not None:
            if keep and await _discard(reader, length):
                return refusal, True
            raise Refused(refusal)
        if length > MAX_BODY:
            raise Refused(413)
        if self._in_flight + length > MAX_IN_FLIGHT:
            raise Refused(503)
        self._in_flight += length
        try:
            body = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT) if length else b""
        finally:
            self._in_flight -= length
        data = parse_update(body)
        update = None
        if data is not None:
            try:
                update = Update.de_json(data, self.application.bot)
            except Exception:  # noqa: BLE001 - any value PTB cannot take (a date of 1e308 ...) is a bad body
                update = None
        if update is None:
            self.bad += 1
            return 400, keep
        self.received += 1
        self.last_received_at = time.time()
        await self.application.update_queue.put(update)
        return 200, keep

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, close: bool) -> None:
        body = b"ok" if status == 200 else REASONS.get(status, "Error").encode()
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s" % (
            status, REASONS.get(status, "Error").encode(), len(body),
            b"Connection: close\r\n" if close else b"", body))
        if close and writer.can_write_eof():
            writer.write_eof()  # the answer goes out before the close, even with a body left unread
        await writer.drain()


async def watch_webhook_info(application: Application, health: Any, url: str, interval: float) -> None:
    """Telegram's side of the link, every `interval` seconds: getWebhookInfo (pending updates, the
    last delivery error and its time, whether our URL is the one registered) into the heartbeat.
    Failures of the call itself are seen by the request layer (an outage, a rejected token)."""
    from telegram.error import TelegramError

    while True:
        try:
            info = await application.bot.get_webhook_info()
        except TelegramError:
            pass
        else:
            error_at = info.last_error_date.timestamp() if info.last_error_date else None
            health.webhook_seen({"url_ok": info.url == url, "pending": info.pending_update_count,
                                 "last_error_at": error_at, "last_error": info.last_error_message,
                                 "checked_at": time.time()})
        await asyncio.sleep(interval)
