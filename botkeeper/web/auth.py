"""Bearer-token gate for the endpoints that act (restart) or reveal (log lines).

Never open by default: with no RESTART_TOKEN configured they answer 403 and say how to enable
them. Tokens are compared in constant time; a client that sends 5 wrong tokens within a minute
gets 429 (even with the right token) until the minute has passed, so guessing is slow.

"A client" is the TCP peer, unless that peer is one of TRUSTED_PROXIES: then it is the address
the proxies wrote into X-Forwarded-For, so one visitor's wrong tokens do not lock out everyone
behind the same proxy. The header is believed only from those proxies: anyone can send it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..logs import Refusals

log = logging.getLogger("botkeeper.web.api")

HOW_TO_ENABLE = (
    "Restart and log endpoints are disabled because RESTART_TOKEN is not set. Set RESTART_TOKEN to a "
    "long random value in Replit Secrets or .env (e.g. python -c \"import secrets; "
    "print(secrets.token_urlsafe(32))\"), restart the bundle, then send 'Authorization: Bearer <token>'."
)
MAX_CLIENTS = 10_000  # bounds memory if many addresses send wrong tokens


@dataclass(frozen=True)
class Denial:
    status: int
    error: str
    headers: dict[str, str] = field(default_factory=dict)


def client_address(peer: str, forwarded_for: str | None,
                   trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """Who sent the request: the peer, or, when the peer is a trusted proxy, the nearest address in
    X-Forwarded-For (read from the right) that is not itself a trusted proxy."""
    trusted = tuple(trusted)

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    client = peer
    if not forwarded_for or not is_trusted(peer):
        return client
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client  # garbage in the header: stop at the last proxy that we trust wrote it
        client = hop
        if not is_trusted(hop):
            return client
    return client


class TokenGate:
    def __init__(self, token: str | None, clock: Callable[[], float], max_failures: int = 5,
                 window: float = 60.0, trusted_proxies: Iterable[str] = ()):
        self._token = token.encode() if token else None
        self.trusted_proxies = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self._clock = clock
        self.max_failures = max_failures
        self.window = window
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.locked_out = Refusals(log, "auth: requests refused for too many wrong tokens (429)", clock=clock)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        return client_address(peer, forwarded_for, self.trusted_proxies)

    def check(self, client: str, authorization: str | None) -> Denial | None:
        """None when the request may proceed, else why not."""
        if self._token is None:
            return Denial(403, HOW_TO_ENABLE)
        now = self._clock()
        locked_for = self._locked_for(client, now)
        if locked_for:
            return Denial(429, f"too many wrong tokens from this client; try again in {locked_for} s",
                          {"Retry-After": str(locked_for)})
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return Denial(401, "send the token as 'Authorization: Bearer <RESTART_TOKEN>'",
                          {"WWW-Authenticate": 'Bearer realm="botkeeper"'})
        if hmac.compare_digest(presented.strip().encode(), self._token):
            return None
        self._fail(client, now)
        return Denial(401, "wrong token", {"WWW-Authenticate": 'Bearer realm="botkeeper", error="invalid_token"'})

    def _locked_for(self, client: str, now: float) -> int:
        with self._lock:
            times = self._failures.get(client)
            if not times:
                return 0
            while times and now - times[0] >= self.window:
                times.popleft()
            if not times:
                del self._failures[client]
                return 0
            if len(times) < self.max_failures:
                return 0
            return max(1, int(times[0] + self.window - now + 0.999))

    def _fail(self, client: str, now: float) -> None:
        with self._lock:
            times = self._failures.setdefault(client, deque(maxlen=self.max_failures))
            self._failures.move_to_end(client)
            times.append(now)
            while len(self._failures) > MAX_CLIENTS:
                self._failures.popitem(last=False)
