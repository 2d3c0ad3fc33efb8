"""The control channel: newline-delimited JSON over a Unix socket at run/control.sock.

Request: {"cmd": "status" | "restart" | "start" | "stop" | "shutdown" | "event" | "reload" | "deploy", ...}.
Response: {"ok": true, "data": ...} or {"ok": false, "error": "..."}.

  status                                      -> the supervisor's state (same shape as run/state.json)
  restart  name, cause, reason, by            -> graceful restart, recorded with its cause
  start    name, cause, reason, by            -> start a component that is not running
  stop     name, cause, reason, by            -> stop a component; it stays stopped
  shutdown reason, by                         -> stop every component, then the supervisor exits
  event    component, kind, cause, detail, by -> record an observation (e.g. Telegram unreachable)
  reload   by                                 -> re-read .env/botkeeper.toml; {"error"} if refused, else the plan
  deploy   version, cause, reason, by         -> restart every component (cause deploy/rollback), set the version

`cause` is a botkeeper.causes.Cause value (typed: never read out of `reason`, which is only the
sentence shown beside it); without one, a person asking (by cli/web/telegram) means "operator".
Only the supervisor acts on processes; everyone else asks through here.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from .. import runfiles

MAX_MESSAGE = 1 << 20


class SupervisorUnavailable(Exception):
    """Nobody answers on the control socket: the supervisor is not running (or is stuck)."""


class ControlError(Exception):
    """The supervisor answered and refused the request; the message says why."""


def socket_path(settings_or_path: Any) -> Path:
    return Path(getattr(settings_or_path, "control_socket", settings_or_path))


def call(settings_or_path: Any, cmd: str, timeout: float = 5.0, **args: Any) -> Any:
    path = socket_path(settings_or_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            with runfiles.socket_address(path) as address:
                sock.connect(address)
            sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_MESSAGE:
                    raise SupervisorUnavailable("the supervisor's answer is too large")
        except (OSError, socket.timeout) as exc:
            raise SupervisorUnavailable(f"the supervisor does not answer on {path.name}: {exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(buf)
    except ValueError:
        raise SupervisorUnavailable("the supervisor's answer was cut off") from None
    if not reply.get("ok"):
        raise ControlError(reply.get("error") or "refused")
    return reply.get("data")
