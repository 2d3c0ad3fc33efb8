"""Keep-alive pinger: GET <public URL>/ping every few minutes so an idle VM is not put to sleep.

Replit's editor workspace sleeps without outside traffic; a request through the public URL counts
as traffic. Off by default on a Reserved VM deployment (REPLIT_DEPLOYMENT), see
Settings.self_ping_enabled. Logged once when enabled; failures are logged on change only, so a
long outage does not fill the log.
"""

from __future__ import annotations

import logging
import threading

import requests

log = logging.getLogger(__name__)
TIMEOUT = 10.0


class SelfPinger(threading.Thread):
    def __init__(self, base_url: str, interval: float, stop: threading.Event,
                 session: requests.Session | None = None):
        super().__init__(name="web-selfping", daemon=True)
        self.url = base_url.rstrip("/") + "/ping"
        self.interval = interval
        self._halt = stop
        self._session = session or requests.Session()
        self.ok: bool | None = None  # result of the last ping; None before the first
        self.count = 0

    def ping_once(self) -> bool:
        try:
            resp = self._session.get(self.url, timeout=TIMEOUT)
            good, why = resp.status_code < 400, f"HTTP {resp.status_code}"
        except requests.RequestException as exc:
            good, why = False, type(exc).__name__
        self.count += 1
        if good and self.ok is False:
            log.info("self-ping: %s answers again", self.url)
        elif not good and self.ok is not False:
            log.warning("self-ping: %s failed (%s); will keep trying every %g s", self.url, why, self.interval)
        self.ok = good
        return good

    def run(self) -> None:
        log.info("self-ping: enabled, GET %s every %g s (SELF_PING=off to disable)", self.url, self.interval)
        # First ping after one interval: at start-up the public URL may not route to us yet.
        while not self._halt.wait(self.interval):
            self.ping_once()
