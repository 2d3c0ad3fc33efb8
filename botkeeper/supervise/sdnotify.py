"""systemd's notify protocol (sd_notify) with the stdlib socket module: READY, WATCHDOG, STOPPING.

Active only when systemd gave us NOTIFY_SOCKET (a Type=notify unit). READY=1 goes out once the
bundle is healthy, or after START_TIMEOUT in any case with the reason in STATUS= (a bundle that
waits for a token must not be killed and restarted in a loop by TimeoutStartSec). WATCHDOG=1 goes
out from the supervisor's own loop at half of WATCHDOG_USEC, so a hung loop is what systemd sees.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Callable, MutableMapping

log = logging.getLogger(__name__)
READY_POLL = 0.5  # seconds between health checks until READY


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None, clock: Callable[[], float],
                 start_timeout: float):
        self.address = address
        self.clock = clock
        now = clock()
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self.ready = False
        self.ready_deadline = now + start_timeout
        self.next_ready_check = now
        self.next_pet = now
        self._warned = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str], clock: Callable[[], float],
                     start_timeout: float) -> "Notifier":
        """Takes the variables out of environ, as sd_notify(unset_environment=1) does: children
        must not inherit them (systemd would ignore them, and they would look like systemd's)."""
        address = environ.pop("NOTIFY_SOCKET", None) or None
        usec, pid = environ.pop("WATCHDOG_USEC", None), environ.pop("WATCHDOG_PID", None)
        watchdog = None
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog, clock, start_timeout)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address  # abstract socket
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), target)
            return True
        except OSError as exc:
            if not self._warned:  # once: the loop sends often
                log.warning("sd_notify: cannot send to NOTIFY_SOCKET %s: %s", self.address, exc)
                self._warned = True
            return False

    def due(self) -> float | None:
        """The next monotonic time tick() has something to do, or None."""
        if not self.enabled:
            return None
        times = [] if self.ready else [self.next_ready_check]
        if self.watchdog_interval:
            times.append(self.next_pet)
        return min(times) if times else None

    def tick(self, healthy: Callable[[], tuple[bool, str]]) -> None:
        """healthy() -> (is healthy, one-line status); called only while READY is not sent yet."""
        if not self.enabled:
            return
        now = self.clock()
        if not self.ready and now >= self.next_ready_check:
            ok, status = healthy()
            if ok or now >= self.ready_deadline:
                self.send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")
                self.ready = True
            else:
                self.next_ready_check = now + READY_POLL
        if self.watchdog_interval and now >= self.next_pet:
            self.send("WATCHDOG=1")
            self.next_pet = now + self.watchdog_interval

    def stopping(self, status: str) -> None:
        self.send(f"STOPPING=1\nSTATUS={status}")


def health_line(settings, state: dict, redact: Callable[[str], str]) -> tuple[bool, str]:
    """(healthy, STATUS= line) from the state the supervisor holds right now."""
    from ..health.verdict import read_and_judge  # the one snapshot and verdict /health and `status` use

    _, verdict = read_and_judge(settings, answered_state=state)
    if verdict.healthy:
        return True, "healthy"
    cause = verdict.cause.value if verdict.cause else "-"
    return False, redact(f"{verdict.overall} ({cause}): {verdict.detail}")[:300].replace("\n", " ")
