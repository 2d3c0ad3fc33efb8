"""Where alerts go: a Telegram chat, a webhook (Slack/Discord/any JSON receiver), and any service
Apprise speaks (ALERT_URLS: discord://, slack://, ntfys://, mailto://, json://, ...), one channel per URL.

Each channel's `send()` returns a `Delivery` saying whether it worked and whether retrying can
help. Texts and errors pass through the log redactor: a token or webhook URL never leaves here.
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..config import ConfigError, Settings, mask_secret, url_scheme
from .. import fmt
from .incidents import fmt_time
from ..logs import Redactor

HTTP_TIMEOUT = (3.05, 5.0)  # connect, read: a dead network must not stall the monitor for long


# --- channels ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    ok: bool
    error: str = ""
    permanent: bool = False  # retrying will not help (bad token, chat not found, 4xx)
    retry_after: float | None = None


def http_error(exc: Exception, redact: Callable[[str], str]) -> str:
    import requests

    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        inner = str(exc)
        for words, label in (("refused", "connection refused"), ("Name or service", "host not found"),
                             ("resolve", "host not found"), ("unreachable", "network unreachable")):
            if words in inner:
                return label
        return "connection failed"
    return redact(f"{type(exc).__name__}: {exc}")[:200]


class TelegramChannel:
    name = "telegram"

    def __init__(self, base_url: str, token: str, chat_id: int, redact: Callable[[str], str]):
        self.base_url, self._token, self.chat_id, self.redact = base_url.rstrip("/"), token, chat_id, redact

    def describe(self) -> str:
        return f"Telegram message to chat {self.chat_id} via {mask_secret(self._token)}"

    def send(self, text: str, payload: Mapping[str, Any]) -> Delivery:
        import requests

        try:
            resp = requests.post(f"{self.base_url}/bot{self._token}/sendMessage",
                                 json={"chat_id": self.chat_id, "text": text[:4000], "disable_web_page_preview": True},
                                 timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            return Delivery(False, http_error(exc, self.redact))
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code == 200 and body.get("ok"):
            return Delivery(True)
        desc = self.redact(str(body.get("description") or resp.reason or ""))[:200]
        error = f"Telegram answered HTTP {resp.status_code}: {desc}"
        if resp.status_code == 429:
            retry = (body.get("parameters") or {}).get("retry_after")
            return Delivery(False, error, retry_after=float(retry) if isinstance(retry, (int, float)) else None)
        return Delivery(False, error, permanent=400 <= resp.status_code < 500)


class WebhookChannel:
    """JSON POST. Payload: see `webhook_payload()` and docs/alerts.md."""

    name = "webhook"

    def __init__(self, url: str, redact: Callable[[str], str]):
        self._url, self.redact = url, redact

    def describe(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self._url)
        port = f":{parts.port}" if parts.port else ""
        return f"webhook POST to {parts.scheme}://{parts.hostname}{port}/***"

    def send(self, text: str, payload: Mapping[str, Any]) -> Delivery:
        import requests

        try:
            resp = requests.post(self._url, json=dict(payload), timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            return Delivery(False, http_error(exc, self.redact))
        if 200 <= resp.status_code < 300:
            return Delivery(True)
        error = f"webhook answered HTTP {resp.status_code}"
        if resp.status_code == 429:
            retry = resp.headers.get("Retry-After", "")
            return Delivery(False, error, retry_after=float(retry) if retry.isdigit() else None)
        return Delivery(False, error, permanent=400 <= resp.status_code < 500 and resp.status_code != 408)


class _Captured(logging.Handler):
    """Apprise says why a notification failed only in its log: keep its warnings for the Delivery."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except (TypeError, ValueError):  # a bad %-format in a library's record: its template still says why
            self.lines.append(str(record.msg))


URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+|/\S{6,}")  # a URL or a path may carry the token
NOTIFY_TYPES = {"down": "failure", "flapping": "failure", "recovered": "success", "test": "info",
                "daily-report": "info", "flap-summary": "info"}


def apprise_module():
    """Apprise, imported on first use only (45 ms, plus 120 ms and 15 MB at the first alert:
    bench/apprise_cost.py). Its own
    log lines stop at its logger: they reach us only as a Delivery's error, scrubbed and redacted."""
    import apprise

    logger = logging.getLogger("apprise")
    if logger.propagate:
        logger.propagate = False
        logger.addHandler(logging.NullHandler())  # not Python's last resort (stderr) either
    return apprise


class AppriseChannel:
    """One Apprise URL. The URL is the secret: only its scheme is ever shown."""

    def __init__(self, url: str, name: str, redact: Callable[[str], str]):
        self._url, self.name, self.redact = url, name, redact
        self.scheme = url_scheme(url)
        self._app: Any = None

    def describe(self) -> str:
        return f"Apprise {self.scheme}://*** ({self.name})"

    def _apprise(self) -> Any:
        if self._app is None:
            apprise = apprise_module()
            app = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
            self._app = app if app.add(self._url) else False
        return self._app

    def send(self, text: str, payload: Mapping[str, Any]) -> Delivery:
        app = self._apprise()
        if not app:
            return Delivery(False, f"Apprise does not accept the {self.scheme}:// URL in ALERT_URLS", permanent=True)
        kind = str(payload.get("event") or "alert")
        title = f"botkeeper {kind}" + (f" on {payload['host']}" if payload.get("host") else "")
        captured = _Captured()
        logger = logging.getLogger("apprise")
        logger.addHandler(captured)
        try:
            ok = app.notify(body=text, title=title, notify_type=NOTIFY_TYPES.get(kind, "warning"))
        except Exception as exc:  # a plugin's bug must not take the monitor down; the alert is retried
            ok, captured.lines = False, captured.lines + [type(exc).__name__]
        finally:
            logger.removeHandler(captured)
        if ok:
            return Delivery(True)
        why = URL_LIKE.sub("…", captured.lines[-1]) if captured.lines else "no reason given"
        return Delivery(False, self.redact(f"Apprise {self.scheme}:// not delivered: {why}")[:200])


def apprise_names(urls: tuple[str, ...]) -> list[str]:
    """Outbox channel names, stable while ALERT_URLS keeps its order: `discord`, `discord-2`, `json`."""
    names, seen = [], {}
    for url in urls:
        scheme = url_scheme(url)
        seen[scheme] = seen.get(scheme, 0) + 1
        names.append(scheme if seen[scheme] == 1 else f"{scheme}-{seen[scheme]}")
    return names


def check_alert_urls(settings: Settings) -> None:
    """ConfigError naming the entry and its scheme when Apprise does not accept an ALERT_URLS entry
    (an unknown service, a missing part). Imports Apprise only when ALERT_URLS is set."""
    if not settings.alert_urls:
        return
    apprise = apprise_module()
    for n, url in enumerate(settings.alert_urls, 1):
        if apprise.Apprise.instantiate(url) is None:
            scheme = url_scheme(url)
            raise ConfigError(f"ALERT_URLS entry {n} ({scheme}://***) is not valid: expected a URL Apprise accepts;"
                              f" {scheme!r} is not a service it knows, or the URL lacks a part that service needs"
                              " (see https://github.com/caronc/apprise/wiki)")


def make_redactor(settings: Settings) -> Redactor:
    return Redactor(settings.secrets() + [settings.bot_token or ""])


def channels(settings: Settings, redact: Callable[[str], str] | None = None) -> list[Any]:
    """Every configured alert channel."""
    redact = redact or make_redactor(settings)
    found: list[Any] = []
    token = settings.alert_bot_token or settings.bot_token
    if settings.admin_chat_id is not None and token:
        found.append(TelegramChannel(settings.bot_api_base_url, token, settings.admin_chat_id, redact))
    if settings.monitoring_webhook:
        found.append(WebhookChannel(settings.monitoring_webhook, redact))
    urls = settings.alert_urls or ()
    found.extend(AppriseChannel(url, name, redact) for url, name in zip(urls, apprise_names(urls)))
    return found


def webhook_payload(kind: str, text: str, data: Mapping[str, Any], created_at: float, now: float,
                    delayed: bool, incident_id: int | None, demo: bool = False) -> dict[str, Any]:
    """The documented JSON body: `text` (Slack), `content` (Discord) and the facts."""
    return {
        "text": text, "content": text[:2000], "source": "botkeeper", "event": kind,
        "incident_id": incident_id, "created_at": created_at, "sent_at": now, "delayed": delayed,
        "host": socket.gethostname(), "demo": demo,
        **{k: v for k, v in data.items() if k in ("cause", "started_at", "ended_at", "duration_seconds", "outages")},
    }


def with_delay_note(text: str, created_at: float, now: float) -> str:
    return f"(delayed: raised {fmt_time(created_at)}, sent {fmt.duration(now - created_at, 'words')} later)\n{text}"
