"""Webhook mode: the bot's own small HTTP server for Telegram's deliveries (POST /telegram).

Why not python-telegram-bot's webhook server: it needs tornado, and python-telegram-bot imports its
webhook module (so tornado) whenever tornado is installed, polling or not; the polling default must
not pay for that (docs/webhooks.md has the measured cost). This is asyncio's own server, ~1 ms per
update, in the bot's event loop.

The secret header is checked before anything else: a request without it, or with a wrong one, gets
403 and never reaches a handler (nor the JSON parser). A good update is put on the application's
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

log = logging.getLogger("botkeeper.bot")

PATH = "/telegram"
SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_BODY = 1 << 20  # Telegram's updates are a few KiB; anything this large is not from Telegram
MAX_HEAD = 16 * 1024
IDLE = 75.0  # seconds a kept-alive connection may stay silent (Telegram reuses its connections)
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           413: "Payload Too Large", 431: "Request Header Fields Too Large"}


class WebhookServer:
    def __init__(self, application: Application, secret: str, port: int, host: str = "0.0.0.0"):
        self.application, self.port, self.host = application, port, host
        self._secret = secret.encode()
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task] = set()
        self.received = 0
        self.refused = 0
        self.last_received_at: float | None = None

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
                "webhook_last_received_at": self.last_received_at}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(asyncio.current_task())
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._answer(writer, 431, close=True)
                    return
                status, keep = await self._one(head, reader)
                await self._answer(writer, status, close=not keep)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._clients.discard(asyncio.current_task())
            writer.close()

    async def _one(self, head: bytes, reader: asyncio.StreamReader) -> tuple[int, bool]:
        """(status, keep the connection) for one request whose head has been read."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and parts[-1] == "HTTP/1.1"
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            return 400, False
        if len(parts) != 3 or length < 0:
            return 400, False
        if length > MAX_BODY:
            return 413, False
        body = await reader.readexactly(length) if length else b""  # read even when refused: keep-alive
        if parts[1].split("?", 1)[0] != PATH:
            return 404, keep
        if parts[0] != "POST":
            return 405, keep
        if not hmac.compare_digest(headers.get(SECRET_HEADER, "").encode(), self._secret):
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:  # someone probes us: say so, not per request
                log.warning("webhook: %d request(s) without the right secret token refused (403)", self.refused)
            return 403, keep
        try:
            data = json.loads(body)
            update = Update.de_json(data, self.application.bot) if isinstance(data, dict) else None
        except (ValueError, TypeError, KeyError, AttributeError):  # JSON, but not an update
            update = None
        if update is None:
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
