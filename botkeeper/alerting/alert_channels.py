"""Where alerts go: a Telegram chat and/or a webhook (Slack/Discord/any JSON receiver).

Each channel's `send()` returns a `Delivery` saying whether it worked and whether retrying can
help. Texts and errors pass through the log redactor: a token or webhook URL never leaves here.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..config import Settings, mask_secret
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
