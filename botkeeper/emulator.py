"""A Telegram Bot API emulator on loopback: the offline demo's Telegram, and the tests' Telegram.

Bot side, `/bot<TOKEN>/<method>` (GET or POST, JSON, form or multipart bodies), answers like
api.telegram.org: `{"ok": true, "result": ...}` or `{"ok": false, "error_code", "description",
"parameters"}`. getUpdates long-polls for real and, like Telegram, answers an older poll with 409
when a newer one arrives (two bots on one token). setWebhook registers a webhook like Telegram:
pending updates are then POSTed to it with the X-Telegram-Bot-Api-Secret-Token header (getUpdates
answers 409), and getWebhookInfo reports the pending count and the last delivery error.

Control side, JSON under `/_emulator/` (see `Emulator.control`), only with the per-run control token
(`Authorization: Bearer <token>`; `Emulator.control_token`, and for the demo component the file
run/emulator.token, 0600): inject a user message, read what
the bot sent (optionally waiting), inject faults for the next N calls, restrict accepted tokens,
count calls, enforce Telegram's sending limits (`limits`: 429 with retry_after), report the send
rates the bot reached (`rates`). `Emulator(port=0).start()` runs it in-thread for tests; `main(argv)` is
`python -m botkeeper emulator [--port N] [--demo] [--token T]`.
"""

from __future__ import annotations

import argparse
import collections
import hmac
import json
import os
import secrets
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

if __package__:  # run by file path, this copy only re-imports the package's (see the bottom)
    from .config import TOKEN_RE

log = logging.getLogger("botkeeper.emulator")

BOT_PATH = re.compile(r"^/bot([^/]*)/([A-Za-z]+)/?$")
MAX_KEPT = 2000  # sent messages and pending updates kept; the demo runs for weeks
DEMO_CHAT_ID = 424242
CONTROL_ONLY = ("reply_to_message_id", "sent_at")  # kept for the control side, not sent to the bot
DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
TRUE_METHODS = {
    "deletemycommands", "sendchataction", "answercallbackquery", "close", "logout",
    "setmydescription", "setmyshortdescription", "setmyname", "setchatmenubutton",
}


@dataclass
class Limits:
    """Telegram's sending limits, as the emulator enforces them when switched on (`set_limits`)."""

    per_second: int = 30  # sendMessage calls accepted per second, all chats
    chat_interval: float = 1.0  # seconds between two messages to one private chat
    group_per_minute: int = 20  # messages per minute to one group (negative chat id)
    retry_after: int | None = None  # seconds to tell the bot; None = until the limit would allow it

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Rates:
    """What the bot reached, counted over accepted sendMessage calls (the bench and tests read it)."""

    accepted: int = 0
    rejected: int = 0  # 429s answered because of the limits
    max_per_second: int = 0  # most accepted in any one-second window, all chats
    min_chat_gap: float | None = None  # shortest time between two messages to one private chat
    max_group_per_minute: int = 0
    first_at: float | None = None
    last_at: float | None = None
    recent: collections.deque = field(default_factory=collections.deque)  # accepted times, last second
    per_chat: dict[int, collections.deque] = field(default_factory=dict)  # chat -> times, last minute

    def to_json(self) -> dict[str, Any]:
        span = (self.last_at - self.first_at) if self.first_at is not None and self.last_at else 0.0
        return {"accepted": self.accepted, "rejected": self.rejected, "max_per_second": self.max_per_second,
                "min_chat_gap": self.min_chat_gap, "max_chat_per_second": (1.0 / self.min_chat_gap)
                if self.min_chat_gap else None, "max_group_per_minute": self.max_group_per_minute,
                "first_at": self.first_at, "last_at": self.last_at,
                "sustained_per_second": (self.accepted - 1) / span if span > 0 else None}


class Drop(Exception):
    """Close the connection without an answer (a dropped connection or the end of a hang)."""


@dataclass
class Fault:
    method: str  # lower-case method name, or "*" for every Bot API method
    kind: str  # error | drop | hang | delay
    count: int | None = 1  # calls left; None = until cleared
    status: int = 500
    retry_after: int | None = None
    seconds: float = 0.0  # delay length, or how long a hang holds the connection
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class State:
    """Everything the emulator knows; guarded by `cond`."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    tokens: set[str] | None = None  # None = accept any token-shaped value
    updates: collections.deque = field(default_factory=lambda: collections.deque(maxlen=MAX_KEPT))
    next_update_id: int = 1
    next_message_id: int = 1
    sent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=MAX_KEPT))
    faults: list[Fault] = field(default_factory=list)
    calls: collections.Counter = field(default_factory=collections.Counter)
    recent_calls: collections.deque = field(default_factory=lambda: collections.deque(maxlen=500))
    commands: dict = field(default_factory=dict)  # token -> the menu set by setMyCommands
    poll_generation: dict[str, int] = field(default_factory=dict)
    closing: bool = False
    fault_epoch: int = 0  # bumped by clear_faults: ends hangs in progress
    limits: Limits | None = None  # None = no sending limits enforced
    blocked: set[int] = field(default_factory=set)  # chats whose user blocked the bot: 403
    rates: Rates = field(default_factory=Rates)
    webhooks: dict[str, "Webhook"] = field(default_factory=dict)  # token -> its registered webhook


@dataclass
class Webhook:
    """A webhook set with setWebhook: where updates go, with the secret header Telegram sends."""

    url: str
    secret: str | None = None
    last_error_date: int | None = None
    last_error_message: str | None = None
    delivered: int = 0

    def info(self, pending: int) -> dict[str, Any]:
        info: dict[str, Any] = {"url": self.url, "has_custom_certificate": False, "pending_update_count": pending,
                                "max_connections": 40}
        if self.last_error_date is not None:
            info |= {"last_error_date": self.last_error_date, "last_error_message": self.last_error_message}
        return info


def _now() -> int:
    return int(time.time())


def _bot_user(token: str) -> dict[str, Any]:
    bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1
    return {
        "id": bot_id, "is_bot": True, "first_name": "botkeeper demo", "username": "botkeeper_demo_bot",
        "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False,
    }


def _chat(chat_id: int) -> dict[str, Any]:
    if chat_id < 0:
        return {"id": chat_id, "type": "supergroup", "title": "Demo group"}
    return {"id": chat_id, "type": "private", "first_name": "Demo", "username": "demo_user"}


def _as_json_value(value: Any) -> Any:
    """Form fields carry JSON-encoded values for structured parameters (python-telegram-bot does this)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class ApiError(Exception):
    def __init__(self, status: int, description: str | None = None, retry_after: int | None = None):
        text = description or DESCRIPTIONS.get(status, "Error").format(retry_after=retry_after)
        super().__init__(text)
        self.status, self.description, self.retry_after = status, text, retry_after

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            data["parameters"] = {"retry_after": self.retry_after}
        return data


class Emulator:
    """The emulator's logic plus an HTTP server around it. Thread-safe."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tokens: list[str] | None = None,
                 limits: Limits | None = None, keep: int = MAX_KEPT, control_token: str | None = None,
                 id_file: str | Path | None = None):
        self.host, self.port = host, port
        # Loopback is shared by every user of the machine: the control side (inject, read what the
        # bot sent, faults) answers only to whoever holds this. In-process callers need none.
        self.control_token = control_token or secrets.token_urlsafe(24)
        self.state = State(tokens=set(tokens) if tokens else None, limits=limits)
        # Like Telegram, update ids keep growing across the emulator's restarts: a bot still polling
        # with the old offset would otherwise never see the new, lower ids (the demo after a restart).
        self.id_file = Path(id_file) if id_file else None
        self._ids_reserved = 0  # ids below this are promised by the file: no write until then
        if self.id_file is not None:
            self.state.next_update_id = max(1, _read_next_id(self.id_file))
        self.state.sent = collections.deque(maxlen=keep)  # the bench keeps every message
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._pusher: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def control_headers(self) -> dict[str, str]:
        """Headers for an HTTP client of the control side."""
        return {"Authorization": f"Bearer {self.control_token}"}

    def control_allowed(self, authorization: str | None) -> bool:
        scheme, _, presented = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(),
                                                                  self.control_token.encode())

    def start(self) -> str:
        """Listen (again, on the same port after stop(): state is kept) and serve in a thread."""
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        with self.state.cond:
            self.state.closing = False
        self._server = _Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="emulator-http", daemon=True)
        self._thread.start()
        self._pusher = threading.Thread(target=self._push_webhooks, name="emulator-webhook", daemon=True)
        self._pusher.start()
        return self.url

    def stop(self) -> None:
        """Stop listening and cut every open connection, like a crashed Telegram."""
        if self._server is None:
            return
        with self.state.cond:
            self.state.closing = True
            self.state.cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        with self._conn_lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server = None
        if self._thread:
            self._thread.join(timeout=5)
        if self._pusher:
            self._pusher.join(timeout=5)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    # --- the user side (control) -----------------------------------------------------------------
    def inject_message(self, text: str, chat_id: int = DEMO_CHAT_ID, user_id: int | None = None,
                       username: str = "demo_user", first_name: str = "Demo") -> dict[str, int]:
        """A user writes to the bot. Returns the update_id and message_id."""
        st = self.state
        with st.cond:
            update = self.new_message_update(text, chat_id, user_id, username, first_name)
            st.updates.append(update)
            st.cond.notify_all()
        return {"update_id": update["update_id"], "message_id": update["message"]["message_id"]}

    def new_message_update(self, text: str, chat_id: int = DEMO_CHAT_ID, user_id: int | None = None,
                           username: str = "demo_user", first_name: str = "Demo") -> dict[str, Any]:
        """A user's message as the update Telegram would deliver (ids taken), not queued: for a test
        that POSTs it to a webhook itself, as Telegram does."""
        st = self.state
        with st.cond:
            message_id = st.next_message_id
            st.next_message_id += 1
            update_id = self._take_update_id()
            message: dict[str, Any] = {
                "message_id": message_id, "date": _now(), "chat": _chat(chat_id), "text": text,
                "from": {"id": user_id or abs(chat_id), "is_bot": False, "first_name": first_name,
                         "username": username, "language_code": "en"},
            }
            command = re.match(r"^/[A-Za-z0-9_]+(@\w+)?", text)
            if command:
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": command.end()}]
            return {"update_id": update_id, "message": message}

    def _take_update_id(self) -> int:
        """The next update id (holds state.cond); with an id file, a block of ids is reserved in it
        before any of them is used, so the ids after a restart (even a SIGKILL) are higher."""
        st = self.state
        update_id = st.next_update_id
        st.next_update_id += 1
        if self.id_file is not None and st.next_update_id > self._ids_reserved:
            self._ids_reserved = st.next_update_id + ID_BLOCK
            _write_next_id(self.id_file, self._ids_reserved)
        return update_id

    def set_next_update_id(self, value: int) -> int:
        """Telegram's quirk on demand: after a week without updates its next id is random, and may be
        lower. The bench and the tests restart ids lower with it."""
        with self.state.cond:
            self.state.next_update_id = max(1, int(value))
            self._ids_reserved = 0
            return self.state.next_update_id

    def inject_callback(self, data: str, chat_id: int = DEMO_CHAT_ID, message_id: int | None = None) -> dict[str, Any]:
        st = self.state
        with st.cond:
            update_id = self._take_update_id()
            user = {"id": abs(chat_id), "is_bot": False, "first_name": "Demo"}
            query: dict[str, Any] = {"id": str(update_id), "from": user, "chat_instance": str(chat_id), "data": data}
            if message_id is not None:
                query["message"] = {"message_id": message_id, "date": _now(), "chat": _chat(chat_id)}
                sent = next((m for m in st.sent if m["message_id"] == message_id and m["chat"]["id"] == chat_id), None)
                if sent is not None:  # the message the button belongs to, as Telegram sends it
                    query["message"] = {k: v for k, v in sent.items() if k not in CONTROL_ONLY}
            st.updates.append({"update_id": update_id, "callback_query": query})
            st.cond.notify_all()
        return {"update_id": update_id}

    def sent_messages(self, chat_id: int | None = None, after: int = 0, contains: str | None = None,
                      wait: float = 0.0) -> list[dict[str, Any]]:
        """Messages the bot sent (edits update them in place), newer than message_id `after`."""
        st = self.state
        deadline = time.monotonic() + wait

        def matching() -> list[dict[str, Any]]:
            return [
                dict(m) for m in st.sent
                if m["message_id"] > after and (chat_id is None or m["chat"]["id"] == chat_id)
                and (contains is None or contains in m.get("text", ""))
            ]

        with st.cond:
            while True:
                found = matching()
                remaining = deadline - time.monotonic()
                if found or remaining <= 0 or st.closing:
                    return found
                st.cond.wait(remaining)

    def add_fault(self, method: str = "*", kind: str = "error", count: int | None = 1, status: int = 500,
                  retry_after: int | None = None, seconds: float = 0.0, description: str | None = None) -> Fault:
        if kind not in ("error", "drop", "hang", "delay"):
            raise ValueError("kind must be one of error, drop, hang, delay")
        if kind == "error" and status == 429 and retry_after is None:
            retry_after = 1
        if kind == "hang" and not seconds:
            seconds = 3600.0
        fault = Fault(method.lower(), kind, count, int(status), retry_after, float(seconds), description)
        with self.state.cond:
            self.state.faults.append(fault)
        return fault

    def snapshot_faults(self) -> list[Fault]:
        """The faults still waiting to be served (a fault with a count leaves once it is used up)."""
        with self.state.cond:
            return list(self.state.faults)

    def clear_faults(self) -> None:
        with self.state.cond:
            self.state.faults.clear()
            self.state.fault_epoch += 1
            self.state.cond.notify_all()  # ends hangs

    def set_tokens(self, tokens: list[str] | None) -> None:
        with self.state.cond:
            self.state.tokens = set(tokens) if tokens else None

    def set_limits(self, limits: Limits | None) -> None:
        with self.state.cond:
            self.state.limits = limits

    def set_blocked(self, chat_ids: list[int]) -> None:
        with self.state.cond:
            self.state.blocked = {int(c) for c in chat_ids}

    def rates(self, reset: bool = False) -> dict[str, Any]:
        with self.state.cond:
            out = self.state.rates.to_json()
            if reset:
                self.state.rates = Rates()
            return out

    def calls(self) -> dict[str, Any]:
        with self.state.cond:
            return {"counts": dict(self.state.calls), "recent": list(self.state.recent_calls)}

    def webhooks(self) -> dict[str, dict[str, Any]]:
        """The registered webhooks by bot id (never the token): url, whether a secret is set, errors."""
        with self.state.cond:
            return {t.split(":", 1)[0]: {"url": w.url, "secret_set": bool(w.secret), "delivered": w.delivered,
                                         "last_error_date": w.last_error_date,
                                         "last_error_message": w.last_error_message}
                    for t, w in self.state.webhooks.items()}

    def _push_webhooks(self) -> None:
        """Like Telegram: pending updates are POSTed, in order, to the registered webhook with the
        secret header; an update is dropped from the queue only on a 2xx answer, else retried."""
        import urllib.error
        import urllib.request

        st = self.state
        while True:
            with st.cond:
                while not st.closing and not (st.updates and st.webhooks):
                    st.cond.wait(1.0)
                if st.closing:
                    return
                hook = next(iter(st.webhooks.values()))
                update = st.updates[0]
            request = urllib.request.Request(hook.url, data=json.dumps(update).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            if hook.secret:
                request.add_header("X-Telegram-Bot-Api-Secret-Token", hook.secret)
            error = None
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    answer.read()
            except urllib.error.HTTPError as exc:
                error = f"Wrong response from the webhook: {exc.code} {exc.reason}"
            except (OSError, ValueError) as exc:
                error = "Connection refused" if isinstance(exc, ConnectionRefusedError) else type(exc).__name__
            with st.cond:
                if error is None:
                    if st.updates and st.updates[0] is update:
                        st.updates.popleft()
                    hook.delivered += 1
                    continue
                hook.last_error_date, hook.last_error_message = _now(), error
                st.cond.wait(0.5)  # Telegram backs off too; the queue keeps the update

    def my_commands(self, token: str | None = None) -> list[dict[str, str]]:
        """The command menu a bot set with setMyCommands (the only bot's, without a token)."""
        with self.state.cond:
            menus = self.state.commands
            if token is None:
                return list(next(iter(menus.values()), [])) if len(menus) <= 1 else []
            return list(menus.get(token, []))

    def snapshot(self) -> dict[str, Any]:
        st = self.state
        with st.cond:
            return {
                "pending_updates": len(st.updates), "sent": len(st.sent), "next_update_id": st.next_update_id,
                "tokens_restricted": st.tokens is not None, "faults": [f.to_json() for f in st.faults],
                "calls": dict(st.calls),
            }

    def control(self, verb: str, action: str, params: dict[str, Any]) -> tuple[int, Any]:
        """The `/_emulator/<action>` JSON API. Returns (HTTP status, body)."""
        if action == "messages" and verb == "POST":
            return 200, self.inject_message(
                str(params.get("text", "")), int(params.get("chat_id", DEMO_CHAT_ID)),
                int(params["user_id"]) if params.get("user_id") else None,
                str(params.get("username", "demo_user")), str(params.get("first_name", "Demo")),
            )
        if action == "callback" and verb == "POST":
            msg = params.get("message_id")
            return 200, self.inject_callback(str(params.get("data", "")), int(params.get("chat_id", DEMO_CHAT_ID)),
                                             int(msg) if msg else None)
        if action == "sent":
            chat = params.get("chat_id")
            return 200, {"messages": self.sent_messages(
                int(chat) if chat not in (None, "") else None, int(params.get("after", 0) or 0),
                params.get("contains") or None, min(float(params.get("wait", 0) or 0), 120.0),
            )}
        if action == "faults" and verb == "POST":
            count = params.get("count", 1)
            try:
                fault = self.add_fault(
                    str(params.get("method", "*")), str(params.get("kind", "error")),
                    None if count in (None, "", "always") else int(count), int(params.get("status", 500)),
                    int(params["retry_after"]) if params.get("retry_after") not in (None, "") else None,
                    float(params.get("seconds", 0) or 0), params.get("description"),
                )
            except ValueError as exc:
                return 400, {"error": str(exc)}
            return 200, {"fault": fault.to_json()}
        if (action == "faults" and verb == "DELETE") or (action == "faults/clear" and verb == "POST"):
            self.clear_faults()
            return 200, {"faults": []}
        if action == "tokens" and verb == "POST":
            tokens = params.get("tokens")
            self.set_tokens([str(t) for t in tokens] if tokens else None)
            return 200, {"tokens_restricted": bool(tokens)}
        if action == "limits" and verb == "POST":
            if params.get("enabled") in (False, "false", "0", "off"):
                self.set_limits(None)
            else:
                known = {k: params[k] for k in ("per_second", "chat_interval", "group_per_minute", "retry_after")
                         if params.get(k) not in (None, "")}
                self.set_limits(Limits(**{k: (float if k == "chat_interval" else int)(v) for k, v in known.items()}))
            return 200, {"limits": self.state.limits.to_json() if self.state.limits else None}
        if action == "limits":
            return 200, {"limits": self.state.limits.to_json() if self.state.limits else None}
        if action == "blocked" and verb == "POST":
            self.set_blocked(list(params.get("chat_ids") or []))
            return 200, {"blocked": sorted(self.state.blocked)}
        if action == "rates":
            return 200, self.rates(reset=verb == "POST" and params.get("reset") not in (None, "", False))
        if action == "calls":
            return 200, self.calls()
        if action == "updates/new" and verb == "POST":  # an update for the caller to deliver itself
            return 200, self.new_message_update(str(params.get("text", "")), int(params.get("chat_id", DEMO_CHAT_ID)))
        if action == "ids" and verb == "POST":
            try:
                return 200, {"next_update_id": self.set_next_update_id(int(params.get("next_update_id")))}
            except (TypeError, ValueError):
                return 400, {"error": "next_update_id must be a whole number"}
        if action == "webhook":
            return 200, {"webhooks": self.webhooks()}
        if action in ("", "state"):
            return 200, self.snapshot()
        return 404, {"error": f"unknown control action {verb} /_emulator/{action}"}

    # --- the bot side (Bot API) ------------------------------------------------------------------
    def api(self, token: str, method: str, params: dict[str, Any]) -> Any:
        """One Bot API call: the result, or raises ApiError / Drop."""
        st = self.state
        name = method.lower()
        with st.cond:
            st.calls[method] += 1
            fault = self._take_fault(name)
        if fault is not None:
            self._apply_fault(fault)
        if not TOKEN_RE.match(token):
            raise ApiError(404)
        with st.cond:
            if st.tokens is not None and token not in st.tokens:
                raise ApiError(401)
        handler = getattr(self, f"_m_{name}", None)
        if handler is not None:
            return handler(token, params)
        if name in TRUE_METHODS:
            return True
        raise ApiError(404)

    def _take_fault(self, name: str) -> Fault | None:
        for fault in self.state.faults:
            if fault.method in (name, "*"):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.state.faults.remove(fault)
                return fault
        return None

    def _apply_fault(self, fault: Fault) -> None:
        st = self.state
        if fault.kind == "delay":
            time.sleep(fault.seconds)
            return
        if fault.kind == "drop":
            raise Drop()
        if fault.kind == "hang":
            deadline = time.monotonic() + fault.seconds
            with st.cond:  # held until the time is up, the faults are cleared or we stop
                epoch = st.fault_epoch
                while not st.closing and st.fault_epoch == epoch and time.monotonic() < deadline:
                    st.cond.wait(max(0.0, deadline - time.monotonic()))
            raise Drop()
        raise ApiError(fault.status, fault.description, fault.retry_after)

    def _m_getme(self, token: str, params: dict[str, Any]) -> Any:
        return _bot_user(token)

    def _m_getmycommands(self, token: str, params: dict[str, Any]) -> Any:
        with self.state.cond:
            return list(self.state.commands.get(token, []))

    def _m_setmycommands(self, token: str, params: dict[str, Any]) -> Any:
        menu = params.get("commands", [])
        try:
            menu = json.loads(menu) if isinstance(menu, str) else menu
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse commands JSON object") from None
        if not isinstance(menu, list) or not all(isinstance(c, dict) and c.get("command") and c.get("description")
                                                 for c in menu):
            raise ApiError(400, "Bad Request: commands must be a list of {command, description}")
        with self.state.cond:
            self.state.commands[token] = [{"command": c["command"], "description": c["description"]} for c in menu]
        return True

    def _m_getwebhookinfo(self, token: str, params: dict[str, Any]) -> Any:
        with self.state.cond:
            pending = len(self.state.updates)
            hook = self.state.webhooks.get(token)
            if hook is not None:
                return hook.info(pending)
        return {"url": "", "has_custom_certificate": False, "pending_update_count": pending}

    def _m_setwebhook(self, token: str, params: dict[str, Any]) -> Any:
        url = str(params.get("url") or "")
        if not url:
            return self._m_deletewebhook(token, params)
        if not url.startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token") or None
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        with self.state.cond:
            if str(params.get("drop_pending_updates", "")).lower() in ("true", "1"):
                self.state.updates.clear()
            old = self.state.webhooks.get(token)
            hook = Webhook(url, str(secret) if secret else None)
            if old is not None and old.url == url:  # the same URL again (another replica): keep its history
                hook.last_error_date, hook.last_error_message, hook.delivered = (
                    old.last_error_date, old.last_error_message, old.delivered)
            self.state.webhooks[token] = hook
            self.state.poll_generation[token] = self.state.poll_generation.get(token, 0) + 1  # ends a long poll
            self.state.cond.notify_all()
        return True

    def _m_deletewebhook(self, token: str, params: dict[str, Any]) -> Any:
        with self.state.cond:
            self.state.webhooks.pop(token, None)
            if str(params.get("drop_pending_updates", "")).lower() in ("true", "1"):
                self.state.updates.clear()
        return True

    def _m_getupdates(self, token: str, params: dict[str, Any]) -> Any:
        st = self.state
        offset = int(params.get("offset") or 0)
        limit = max(1, min(int(params.get("limit") or 100), 100))
        timeout = max(0.0, min(float(params.get("timeout") or 0), 50.0))
        deadline = time.monotonic() + timeout
        with st.cond:
            if token in st.webhooks:  # like Telegram: the two ways of receiving updates exclude each other
                raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active;"
                                    " use deleteWebhook to delete the webhook first")
            # Like Telegram: a newer getUpdates ends an older one still waiting with 409.
            generation = st.poll_generation.get(token, 0) + 1
            st.poll_generation[token] = generation
            st.cond.notify_all()
            if offset > 0:
                while st.updates and st.updates[0]["update_id"] < offset:
                    st.updates.popleft()
            elif offset < 0:
                keep = list(st.updates)[offset:]
                st.updates.clear()
                st.updates.extend(keep)
            while True:
                if st.poll_generation.get(token) != generation:
                    raise ApiError(409)
                if st.updates or st.closing:
                    return list(st.updates)[:limit]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                st.cond.wait(remaining)

    def _new_message(self, token: str, params: dict[str, Any], text: str) -> dict[str, Any]:
        try:
            chat_id = int(params.get("chat_id"))
        except (TypeError, ValueError):
            raise ApiError(400, "Bad Request: chat not found") from None
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        st = self.state
        with st.cond:
            if chat_id in st.blocked:
                raise ApiError(403)
            self._count_send(chat_id)  # raises 429 when the limits are on and exceeded
            message = {
                "message_id": st.next_message_id, "date": _now(), "chat": _chat(chat_id),
                "from": _bot_user(token), "text": text, "sent_at": time.time(),
            }
            reply = _as_json_value(params.get("reply_parameters"))
            reply_id = reply.get("message_id") if isinstance(reply, dict) else params.get("reply_to_message_id")
            if reply_id:
                message["reply_to_message_id"] = int(reply_id)  # for the control side only
            markup = _as_json_value(params.get("reply_markup"))
            if isinstance(markup, dict):  # an inline keyboard: /sent shows it, a test can press its buttons
                message["reply_markup"] = markup
            st.next_message_id += 1
            st.sent.append(message)
            st.cond.notify_all()
            return {k: v for k, v in message.items() if k not in CONTROL_ONLY}

    def _count_send(self, chat_id: int) -> None:
        """Check the sending limits (429 when over), then count the send. Holds state.cond."""
        st, now = self.state, time.monotonic()
        r, lim = st.rates, st.limits
        while r.recent and r.recent[0] <= now - 1.0:
            r.recent.popleft()
        times = r.per_chat.get(chat_id, collections.deque())
        while times and times[0] <= now - 60.0:
            times.popleft()
        if lim is not None:
            wait = 0.0
            if len(r.recent) >= lim.per_second:
                wait = r.recent[len(r.recent) - lim.per_second] + 1.0 - now
            if chat_id < 0 and len(times) >= lim.group_per_minute:
                wait = max(wait, times[len(times) - lim.group_per_minute] + 60.0 - now)
            elif chat_id >= 0 and times and now - times[-1] < lim.chat_interval:
                wait = max(wait, times[-1] + lim.chat_interval - now)
            if wait > 0:
                r.rejected += 1
                raise ApiError(429, retry_after=lim.retry_after or max(1, int(wait + 0.999)))
        if chat_id >= 0 and times:
            gap = now - times[-1]
            r.min_chat_gap = gap if r.min_chat_gap is None else min(r.min_chat_gap, gap)
        times.append(now)
        r.per_chat[chat_id] = times
        r.recent.append(now)
        r.accepted += 1
        r.max_per_second = max(r.max_per_second, len(r.recent))
        if chat_id < 0:
            r.max_group_per_minute = max(r.max_group_per_minute, len(times))
        r.first_at = now if r.first_at is None else r.first_at
        r.last_at = now

    def _m_sendmessage(self, token: str, params: dict[str, Any]) -> Any:
        return self._new_message(token, params, str(params.get("text", "")))

    def _m_editmessagetext(self, token: str, params: dict[str, Any]) -> Any:
        st = self.state
        try:
            chat_id, message_id = int(params.get("chat_id")), int(params.get("message_id"))
        except (TypeError, ValueError):
            raise ApiError(400, "Bad Request: message to edit not found") from None
        with st.cond:
            for message in st.sent:
                if message["message_id"] == message_id and message["chat"]["id"] == chat_id:
                    if message["text"] == params.get("text"):
                        raise ApiError(400, "Bad Request: message is not modified")
                    message["text"] = str(params.get("text", ""))
                    message["edit_date"] = _now()
                    markup = _as_json_value(params.get("reply_markup"))
                    if isinstance(markup, dict):
                        message["reply_markup"] = markup
                    else:  # Telegram drops the keyboard of an edit that sends none
                        message.pop("reply_markup", None)
                    st.cond.notify_all()
                    return {k: v for k, v in message.items() if k not in CONTROL_ONLY}
        raise ApiError(400, "Bad Request: message to edit not found")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 - stdlib signature
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a killed bot or a cut connection: normal life for a Telegram server
        log.exception("emulator: error while serving %s", client_address[0])


class _Handler(BaseHTTPRequestHandler):
    emulator: Emulator
    protocol_version = "HTTP/1.1"  # keep-alive, as python-telegram-bot's httpx pool expects
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server_version = "botkeeper-emulator"

    def setup(self) -> None:
        super().setup()
        self.emulator._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.emulator._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # request lines carry the token; errors are reported by the caller instead

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _params(self) -> dict[str, Any]:
        url = urlsplit(self.path)
        params: dict[str, Any] = dict(parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").lower()
        if not body:
            return params
        if "json" in ctype:
            data = json.loads(body.decode("utf-8"))
            if isinstance(data, dict):
                params.update(data)
        elif "multipart/form-data" in ctype:
            params.update(_parse_multipart(body, ctype))
        else:
            params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        return params

    def _dispatch(self, verb: str) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/_emulator") and not self.emulator.control_allowed(self.headers.get("Authorization")):
            self.close_connection = True  # its body is not read
            self._send(401, {"error": "the emulator's control side needs 'Authorization: Bearer <token>'"
                                      " (the demo writes it to run/emulator.token)"})
            return
        try:
            params = self._params()
        except (ValueError, UnicodeDecodeError):
            self._send(400, {"ok": False, "error_code": 400, "description": "Bad Request: can't parse request body"})
            return
        if path.startswith("/_emulator"):
            action = path[len("/_emulator"):].strip("/")
            try:
                status, body = self.emulator.control(verb, action, params)
            except (ValueError, TypeError, KeyError) as exc:
                status, body = 400, {"error": f"bad parameters: {exc}"}
            self._send(status, body)
            return
        match = BOT_PATH.match(path)
        if not match:
            self._send(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        token, method = match.groups()
        try:
            result = self.emulator.api(token, method, params)
        except Drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._note(method, "dropped")
            return
        except ApiError as exc:
            self._note(method, exc.status)
            self._send(exc.status, exc.body())
            return
        self._note(method, 200)
        self._send(200, {"ok": True, "result": result})

    def _note(self, method: str, status: Any) -> None:
        with self.emulator.state.cond:
            self.emulator.state.recent_calls.append({"at": time.time(), "method": method, "status": status})

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except OSError:  # the client went away (a killed bot, a cancelled long poll)
            self.close_connection = True


def _parse_multipart(body: bytes, ctype: str) -> dict[str, str]:
    """Text fields of a multipart/form-data body (files are not emulated)."""
    match = re.search(r'boundary="?([^";]+)"?', ctype)
    if not match:
        return {}
    fields: dict[str, str] = {}
    for part in body.split(b"--" + match.group(1).encode()):
        head, sep, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head)
        if sep and name and b"filename=" not in head:
            fields[name.group(1).decode()] = value.rstrip(b"\r\n").decode("utf-8", "replace")
    return fields


ID_BLOCK = 100  # update ids reserved per write of the id file


def _read_next_id(path: Path) -> int:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("next_update_id")
    except (OSError, ValueError, AttributeError):
        return 1
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _write_next_id(path: Path, value: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"next_update_id": value}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # ids then restart lower after a restart: said, not fatal
        log.warning("cannot write %s: %s", path, exc.strerror or exc)


# --- the demo user ---------------------------------------------------------------------------------
DEMO_TEXTS = ("Hello from the demo user!", "How is the bot doing?", "Still here, still chatting.")


TRANSCRIPT_KEPT = 12  # lines of the demo conversation the status page shows


def demo_user(emulator: Emulator, interval: float, stop: threading.Event, transcript=None) -> None:
    """Talk to the bot every `interval` seconds so the page shows real traffic; with `transcript`
    (run/demo_chat.json), write the conversation there after each round for the status page."""
    n = 0
    mine: list[dict[str, Any]] = []
    while not stop.wait(interval):
        for text in ("/ping", DEMO_TEXTS[n % len(DEMO_TEXTS)]):
            sent = emulator.inject_message(text)
            mine.append({"message_id": sent["message_id"], "from": "user", "text": text, "at": time.time()})
        del mine[:-TRANSCRIPT_KEPT]
        n += 1
        if transcript is not None:
            # The answers, given a moment (they usually take milliseconds), then the page's copy.
            emulator.sent_messages(DEMO_CHAT_ID, after=mine[-1]["message_id"], wait=min(2.0, interval / 2))
            write_transcript(emulator, transcript, mine)


def write_transcript(emulator: Emulator, path, mine: list[dict[str, Any]]) -> None:
    from .fsutil import atomic_write_json

    bot = [{"message_id": m["message_id"], "from": "bot", "text": str(m.get("text", ""))[:300],
            "at": m.get("sent_at") or m.get("date")} for m in emulator.sent_messages(DEMO_CHAT_ID)[-TRANSCRIPT_KEPT:]]
    lines = sorted(mine + bot, key=lambda m: (m["at"] or 0, m["message_id"]))[-TRANSCRIPT_KEPT:]
    try:
        atomic_write_json(path, {"chat_id": DEMO_CHAT_ID, "messages": lines})
    except OSError:
        pass  # the page just shows no conversation


def write_private(path: Any, text: str) -> None:
    """The control token, readable by this user only (whatever the umask), replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


# --- command line ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from .config import load_or_exit
    from .logs import setup

    settings = load_or_exit()
    logger = setup(settings, "emulator")
    parser = argparse.ArgumentParser(prog="python -m botkeeper emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=settings.emulator_port, help="loopback port (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--demo", action="store_true", help="also run a demo user that talks to the bot")
    parser.add_argument("--token", action="append", help="accept only this token (repeatable); others get 401")
    parser.add_argument("--id-file", default=None,
                        help="keep update ids growing across restarts in this file (default with --demo:"
                             " data/emulator-ids.json)")
    parser.add_argument("--limits", action="store_true",
                        help="enforce Telegram's sending limits strictly (429 with retry_after); off in the demo,"
                             " where Telegram's tolerance of short bursts matters more than strictness")
    args = parser.parse_args(argv)

    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:  # only sets a flag; the main thread acts
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    id_file = args.id_file or (settings.data_dir / "emulator-ids.json" if args.demo else None)
    emulator = Emulator(args.host, args.port, tokens=args.token,
                        limits=Limits() if args.limits else None, id_file=id_file)
    token_file = settings.run_dir / "emulator.token"
    try:
        write_private(token_file, emulator.control_token)
    except OSError as exc:
        logger.error("cannot write %s: %s", token_file, exc.strerror or exc)
        return 1
    try:
        url = emulator.start()
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", args.host, args.port, exc.strerror or exc)
        return 1
    logger.info("control API at %s/_emulator/ with the token in %s (new on every start)", url, token_file)
    logger.info("Telegram Bot API emulator listening on %s (bot API at %s/bot<TOKEN>/<method>)", url, url)
    demo = None
    if args.demo:
        demo = threading.Thread(target=demo_user, args=(emulator, settings.demo_interval, stopping,
                                                        settings.run_dir / "demo_chat.json"),
                                name="demo-user", daemon=True)
        demo.start()
        logger.info("DEMO: a demo user sends /ping and a message every %g s", settings.demo_interval)
    while not stopping.wait(1.0):
        pass
    logger.info("emulator stopping")
    emulator.stop()
    return 0


if __name__ == "__main__":
    if not __package__:  # run by file path (the demo component): import ourselves as part of the package
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
        from botkeeper.emulator import main as package_main

        raise SystemExit(package_main(sys.argv[1:]))
    raise SystemExit(main())
