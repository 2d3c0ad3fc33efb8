"""What the bot knows about its own connection to Telegram, and the heartbeat that reports it.

Every Bot API response passes through `ObservingRequest` (a python-telegram-bot request class, used
through its public `request`/`get_updates_request` hooks), so the outcome of each getUpdates is
seen first-hand: a 200 is a good poll, 409 a conflict, 429 a rate limit, 401/404 a rejected token,
5xx or a transport error an unreachable Telegram. `Health` turns those into the heartbeat's state
and a few log lines per episode, never one per retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from telegram.error import Conflict, InvalidToken, NetworkError, TelegramError
from telegram.request import HTTPXRequest

from ..health import heartbeat
from ..causes import Cause

log = logging.getLogger("botkeeper.bot")

# Methods whose failure says something about the token or the link, not about one chat.
CORE_METHODS = {"getUpdates", "getMe", "deleteWebhook", "setWebhook", "getWebhookInfo"}
REMIND_EVERY = 60.0  # seconds between repeated explanations of an ongoing conflict/outage
# python-telegram-bot retries a failing getUpdates with backoff capped at 30 s and reports every
# failure; this long without one (plus a long poll) means polling works again.
QUIET_AFTER_ERRORS = 30.0 + 15.0


class Health:
    """Connection state for the heartbeat. Lives in the event loop; not thread-safe on purpose,
    except `write`: the watchdog thread beats through it while the loop is blocked."""

    def __init__(self, redact: Callable[[str], str], clock: Callable[[], float] = time.time):
        self.clock = clock
        self.redact = redact
        self.started_at = clock()
        self.state = "starting"
        self.detail = "connecting to Telegram"
        self.last_poll_at: float | None = None
        self.unreachable_since: float | None = None
        self.conflict_since: float | None = None
        self.updates_handled = 0
        self.fatal = asyncio.Event()  # set when Telegram rejects the token
        self.fatal_status: int | None = None
        self.cause: Cause | None = None  # set with state "fatal": why the bot is about to exit
        self._reminded_at = 0.0
        self.disk_full = False  # the last beat could only be written in place (see heartbeat.py)
        self._rate_limited: set[str] = set()  # endpoints in a 429 episode
        self._last_poll_error_at: float | None = None
        # More heartbeat fields, each a callable returning a dict merged into every beat (how the bot
        # reports its own work, e.g. updates in flight and event-loop lag).
        self.reporters: list[Callable[[], dict[str, Any]]] = []
        self.mode = "polling"  # or "webhook": how updates arrive, and so what "receiving" is called
        self.receiving = False  # polling, or the webhook registered and served
        self.webhook: dict[str, Any] | None = None  # Telegram's side from getWebhookInfo (webhook mode)
        # Whether a poll has been completed: getUpdates answered and what it brought handled (the
        # next poll answered, or an empty one). Only known where the requests are seen (our bot).
        self.sees_polls = False
        self.polled = False
        self._polls_answered = 0
        self._write_lock = threading.Lock()  # the loop's beats and the watchdog's (work.Watchdog)

    # --- what the request layer reports ----------------------------------------------------------
    def response(self, endpoint: str, code: int, payload: bytes) -> None:
        if 200 <= code <= 299:
            self._rate_limit_over(endpoint)
            if endpoint == "getUpdates":
                self._poll_completed(payload)
                self._polled()
            elif endpoint in ("getMe", "getWebhookInfo", "setWebhook") and self.state == "telegram-unreachable":
                self._reachable_again()
            return
        if code == 429:
            self._rate_limited_by(endpoint, payload)
            return
        if endpoint not in CORE_METHODS:
            return  # a failed send is the handler's business (the error handler logs it)
        if code in (401, 404):
            self.fatal_status = code
            self.fatal.set()
        elif code == 409 and endpoint == "getUpdates":
            self._conflict()
        elif code >= 500:
            self._unreachable(f"Telegram answered {endpoint} with HTTP {code}")

    def transport_error(self, endpoint: str, exc: BaseException) -> None:
        if endpoint in CORE_METHODS:
            self._unreachable(f"{type(exc).__name__}: {exc}")

    def poll_error(self, exc: TelegramError) -> None:
        """python-telegram-bot's polling error callback: the request layer already classified HTTP
        outcomes; this catches what it cannot see (an unparsable answer)."""
        if self.state == "polling":
            log.warning("polling: %s: %s; retrying", type(exc).__name__, self.redact(str(exc)))

    def polling_started(self) -> None:
        """getMe and deleteWebhook worked and the polling loop runs; the first long poll is under way."""
        if self.state == "starting":
            self.state, self.detail = "polling", "polling Telegram for updates"
            log.info("polling Telegram for updates")

    def webhook_started(self, url: str) -> None:
        """setWebhook worked and our server listens: Telegram delivers to us from now on."""
        self.mode, self.receiving = "webhook", True
        if self.state in ("starting", "telegram-unreachable"):
            self.unreachable_since = None
            self.state, self.detail = "webhook", f"receiving updates by webhook ({url})"
            log.info("receiving updates by webhook at %s", url)

    def webhook_seen(self, info: dict[str, Any]) -> None:
        """getWebhookInfo's answer: the verdict judges it (verdict.webhook_check)."""
        self.webhook = info

    def standby(self, holder: str) -> None:
        """Polling with REDIS_URL: another copy holds the poller lock; we wait instead of a 409 fight."""
        redis_down = holder.startswith("nobody known")
        if self.state != "standby":
            if redis_down:
                log.warning("standby: Redis is unreachable, so no copy can hold the poller lock; polling starts"
                            " when it answers (REDIS_DOWN_POLLING=wait)")
            else:
                log.warning("standby: another copy polls Telegram with this token (%s holds the poller lock in"
                            " Redis); taking over when it stops", holder)
        self.receiving = False
        self.state, self.detail = "standby", ("waiting for Redis to hold the poller lock" if redis_down else
                                              f"another copy polls with this token ({holder} holds the lock)")

    def handled(self) -> None:
        self.updates_handled += 1

    # --- an attached Application, whose requests we do not see ------------------------------------
    def polling_failed(self, exc: BaseException) -> None:
        """A getUpdates failure python-telegram-bot passed to the error handlers (update=None)."""
        self._last_poll_error_at = self.clock()
        if isinstance(exc, Conflict):
            self._conflict()
        elif isinstance(exc, InvalidToken):
            self.fatal_status = 401
            self.fatal.set()
            self.state, self.detail = "stopping", "Telegram rejected the bot token"
        elif isinstance(exc, NetworkError):  # TimedOut included
            self._unreachable(f"{type(exc).__name__}: {exc}")

    def polling_seen(self, running: bool) -> None:
        """Each beat of an attached Application: the updater's state, and the end of an error
        episode once python-telegram-bot has stopped reporting failures."""
        if not running:
            return
        self.polling_started()
        quiet = self._last_poll_error_at is not None and self.clock() - self._last_poll_error_at > QUIET_AFTER_ERRORS
        if quiet and self.state in ("conflict", "telegram-unreachable"):
            self._last_poll_error_at = None
            if self.state == "telegram-unreachable":
                self._reachable_again()
            else:
                log.info("conflict over: no failed poll for %.0f s", QUIET_AFTER_ERRORS)
            self.state, self.detail, self.conflict_since = "polling", "polling Telegram for updates", None

    # --- transitions -----------------------------------------------------------------------------
    def _polled(self) -> None:
        now = self.clock()
        if self.state == "telegram-unreachable":
            self._reachable_again()
        elif self.state == "conflict":
            log.info("conflict over: this copy is the only one polling again after %.0f s",
                     now - (self.conflict_since or now))
        self.state, self.detail = "polling", "polling Telegram for updates"
        self.last_poll_at, self.unreachable_since, self.conflict_since = now, None, None

    def _poll_completed(self, payload: bytes) -> None:
        """A retried poison update comes in the first poll after a restart and may block its bot:
        the bot is `starting` (verdict) until a poll is done with, not merely answered."""
        if self.polled:
            return
        self._polls_answered += 1
        if self._polls_answered >= 2:  # with held polls, the first batch is handled by now
            self.polled = True
            return
        try:
            self.polled = json.loads(payload).get("result") == []
        except (ValueError, AttributeError):
            pass

    def _reachable_again(self) -> None:
        since = self.unreachable_since or self.clock()
        log.info("Telegram reachable again after %.1f s", self.clock() - since)
        self.unreachable_since = None
        receiving = self.mode if self.mode == "webhook" and self.receiving else "polling" if self.last_poll_at else "starting"
        self.state, self.detail = receiving, "Telegram reachable again"

    def _unreachable(self, why: str) -> None:
        now = self.clock()
        why = self.redact(why)
        if self.state != "telegram-unreachable":
            self.unreachable_since = now
            self._reminded_at = now
            log.warning("Telegram unreachable (%s): retrying with backoff; a restart would not help", why)
        elif now - self._reminded_at >= REMIND_EVERY:
            self._reminded_at = now
            log.warning("Telegram still unreachable after %.0f s (%s)", now - (self.unreachable_since or now), why)
        self.state, self.detail = "telegram-unreachable", why

    def _conflict(self) -> None:
        now = self.clock()
        if self.state != "conflict":
            self.conflict_since = now
            self._reminded_at = 0.0
        if now - self._reminded_at >= REMIND_EVERY:
            self._reminded_at = now
            log.warning(
                "Conflict: another program is polling Telegram with this bot token (for %.0f s now)."
                " Typically the Replit editor's Run button and a deployment run at the same time, or"
                " a second copy on another machine. Stop the other copy; this one keeps retrying"
                " with backoff and takes over when it is gone.", now - (self.conflict_since or now),
            )
        self.state = "conflict"
        self.detail = "another program polls Telegram with this token (409 Conflict)"

    def _rate_limited_by(self, endpoint: str, payload: bytes) -> None:
        if endpoint in self._rate_limited:
            return
        self._rate_limited.add(endpoint)
        retry_after: Any = "?"
        try:
            retry_after = json.loads(payload)["parameters"]["retry_after"]
        except (ValueError, KeyError, TypeError):
            pass
        log.warning("Telegram rate limit (429) on %s: waiting %s s as asked, then retrying", endpoint, retry_after)

    def _rate_limit_over(self, endpoint: str) -> None:
        if endpoint in self._rate_limited:
            self._rate_limited.discard(endpoint)
            log.info("rate limit on %s over", endpoint)

    # --- the heartbeat ---------------------------------------------------------------------------
    def fields(self) -> dict[str, Any]:
        fields = {
            "started_at": self.started_at, "last_poll_at": self.last_poll_at,
            "updates_handled": self.updates_handled, "state": self.state,
            "unreachable_since": self.unreachable_since, "conflict_since": self.conflict_since,
            "detail": self.detail,
        } | ({"cause": self.cause.value} if self.cause else {}) | ({"webhook": self.webhook} if self.webhook else {}) \
            | ({"polled": self.polled} if self.sees_polls else {})
        for report in self.reporters:
            fields |= report()
        return fields

    def write(self, path: Path, extra: dict[str, Any] | None = None,
              only_if: Callable[[], bool] | None = None) -> bool:
        """One beat; `extra` fields over the usual ones, and `only_if` checked under the lock (the
        watchdog's beat is written only while the loop is still blocked)."""
        with self._write_lock:
            if only_if is not None and not only_if():
                return False
            return self._write(path, self.fields() | (extra or {}))

    def _write(self, path: Path, fields: dict[str, Any]) -> bool:
        try:
            disk_full = bool(heartbeat.write(path, **fields).get("disk_full"))
            if disk_full != self.disk_full:  # say it once when it starts and once when it ends
                self.disk_full = disk_full
                log.log(logging.ERROR if disk_full else logging.INFO, "heartbeat %s: %s", path,
                        "the disk is full: beating in place, marked disk_full" if disk_full else "disk space is back")
            return True
        except OSError as exc:  # a full disk must not kill the bot; the stale file reports it
            log.error("cannot write heartbeat %s: %s", path, exc.strerror or exc)
            return False


async def heartbeat_loop(health: Health, path: Path, interval: float,
                         before_beat: Callable[[], None] | None = None) -> None:
    """Runs inside the bot's event loop: if the loop is blocked, the file goes stale."""
    while True:
        if before_beat is not None:
            before_beat()
        health.write(path)
        await asyncio.sleep(interval)


class ObservingRequest(HTTPXRequest):
    """HTTPXRequest that reports each Bot API outcome to `Health` before python-telegram-bot
    turns it into a result or an exception."""

    def __init__(self, health: Health, **kwargs: Any):
        super().__init__(**kwargs)
        self._health = health
        health.sees_polls = True

    async def do_request(self, url: str, method: str, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        endpoint = url.rsplit("/", 1)[-1]
        try:
            code, payload = await super().do_request(url, method, *args, **kwargs)
        except TelegramError as exc:  # NetworkError / TimedOut: no answer at all
            self._health.transport_error(endpoint, exc)
            raise
        self._health.response(endpoint, code, payload)
        return code, payload
