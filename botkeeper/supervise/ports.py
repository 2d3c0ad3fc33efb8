"""Is a port we are about to listen on already taken, and by which bundle?

`start` asks before it starts anything, so a second bundle in another directory with the same PORT
is refused with one line instead of a web component that crash-loops beside a polling bot. The
owner is found from /proc (the listening socket's inode, the process holding it, that process's
BOTKEEPER_HOME or working directory); where /proc cannot tell, the message just names the port.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

LISTEN = "0A"  # TCP state in /proc/net/tcp


def bind_error(host: str, port: int) -> int | None:
    """The errno binding host:port fails with (what the component would hit), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress does: TIME_WAIT is no owner
            sock.bind((host if host != "localhost" else "127.0.0.1", port))
    except OSError as exc:
        return exc.errno or errno.EINVAL
    return None


def taken(host: str, port: int) -> bool:
    """True if binding host:port fails with EADDRINUSE (what the web component would hit)."""
    return bind_error(host, port) == errno.EADDRINUSE


def check_all(binds: list[tuple[str, int, str, str]]) -> str | None:
    """Every (host, port, setting, what) the bundle will listen on, checked together before anything
    starts: two settings on one port, a HOST that is not an address of this machine, a port in use.
    One line naming the setting, or None."""
    wildcard = ("0.0.0.0", "::", "")
    for i, (host, port, setting, what) in enumerate(binds):
        for other_host, other_port, other_setting, other_what in binds[:i]:
            if port == other_port and (host == other_host or host in wildcard or other_host in wildcard
                                       or {host, other_host} <= {"127.0.0.1", "localhost"}):
                return (f"{setting}={port} is not valid: {other_setting} is the same port ({other_what});"
                        f" expected a different port for the {what}")
    for host, port, setting, what in binds:
        err = bind_error(host, port)
        if err == errno.EADDRNOTAVAIL and setting == "PORT":
            return (f"HOST={host} is not valid: it is not an address of this machine; expected one of its"
                    " addresses, 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
        if err == errno.EADDRINUSE:
            return refusal(host, port, setting, what)
        if err is not None:
            return f"{setting}={port} cannot be used for the {what} on {host}: {os.strerror(err)}"
    return None


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[str]:
    found = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def owner(port: int, proc: Path = Path("/proc")) -> tuple[int, str | None] | None:
    """(pid, its bundle home or working directory) of the process listening on port, if visible."""
    inodes = {f"socket:[{i}]" for i in listening_inodes(port, proc)}
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(entry / "fd" / fd) in inodes:
                    return int(entry.name), _home_of(entry)
            except OSError:
                continue
    return None


def _home_of(entry: Path) -> str | None:
    try:
        for var in (entry / "environ").read_bytes().split(b"\0"):
            if var.startswith(b"BOTKEEPER_HOME="):
                return var.split(b"=", 1)[1].decode(errors="replace")
    except OSError:
        pass
    try:
        return os.readlink(entry / "cwd")
    except OSError:
        return None


def refusal(host: str, port: int, setting: str, what: str) -> str | None:
    """One line saying why we must not start, or None when the port is free."""
    if not taken(host, port):
        return None
    found = owner(port)
    if found is None:
        by = "another program"
    else:
        pid, home = found
        by = f"pid {pid}" + (f" (bundle or directory {home})" if home else "")
    return (f"port {port} ({what}, {setting}) is already in use by {by}: stop that one, or set {setting}"
            " to a free port for this bundle")
