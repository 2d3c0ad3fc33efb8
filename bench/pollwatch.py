"""bench/chaos.py's oracle for the real bot (not a test): who polls the Bot API emulator, and which
processes belong to the bundle.

A bot forked by the fork server shows the fork server's start-up environment in /proc/PID/environ
(its os.environ is right), so bots cannot be told by environ. Instead:

- `RecordingEmulator`: botkeeper's emulator, run in the bench's process, whose request handler
  notes (for this bench only, the product is not changed) which client connections (peer port)
  carried a getUpdates, whether each is still open, and every getUpdates ended by a newer one
  (the emulator's 409, like Telegram's) while the older connection was still open.
- `Census.sample()`: one scan of /proc: the bundle's processes (BOTKEEPER_HOME in the environ,
  which a fork keeps from the fork server, read once per process), their parents, and the
  pollers = living processes holding an ESTABLISHED TCP connection to the emulator's port on which
  a getUpdates was made and which the emulator still holds open.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from botkeeper.emulator import Emulator


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in ticks) of a living, non-zombie process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text[text.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _environ_home(pid: int) -> tuple[str | None, str | None]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None, None
    home = comp = None
    for item in raw.split(b"\0"):
        if item.startswith(b"BOTKEEPER_HOME="):
            home = item[15:].decode(errors="replace")
        elif item.startswith(b"BOTKEEPER_COMPONENT="):
            comp = item[20:].decode(errors="replace")
    return home, comp


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                found.add(int(link[8:-1]))
    except OSError:
        pass
    return found


def client_sockets(port: int) -> dict[int, int]:
    """{inode: local port} of ESTABLISHED IPv4 TCP client sockets connected to 127.0.0.1:`port`."""
    found = {}
    want = f":{port:04X}"
    try:
        with open("/proc/net/tcp") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                if f[3] == "01" and f[2].endswith(want):
                    found[int(f[9])] = int(f[1].rsplit(":", 1)[1], 16)
    except OSError:
        pass
    return found


class RecordingEmulator(Emulator):
    """The emulator, with a note of every getUpdates connection (by the client's port)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.watch_lock = threading.Lock()
        self.poll_conns: dict[int, float] = {}  # open connections that carried a getUpdates: port -> first poll
        self.getupdates = 0
        self.preempted = 0  # getUpdates ended by a newer one (409)
        self.live_preemptions: list[dict] = []  # ... while the older connection was still open
        self.owner_of = None  # callable(port) -> pid or None, set by the census

    def start(self) -> str:
        url = super().start()
        base = self._server.RequestHandlerClass
        watch = self

        class Recording(base):
            def _dispatch(self, verb: str) -> None:
                if not urlsplit(self.path).path.lower().endswith("/getupdates"):
                    return super()._dispatch(verb)
                port = self.client_address[1]
                with watch.watch_lock:
                    watch.getupdates += 1
                    watch.poll_conns.setdefault(port, time.time())
                self._bench_status = None
                super()._dispatch(verb)
                if self._bench_status == 409:
                    watch.note_preempted(self.connection, port)

            def _note(self, method: str, status) -> None:
                self._bench_status = status
                super()._note(method, status)

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with watch.watch_lock:
                        watch.poll_conns.pop(self.client_address[1], None)

        self._server.RequestHandlerClass = Recording
        return url

    def note_preempted(self, conn: socket.socket, port: int) -> None:
        with self.watch_lock:
            self.preempted += 1
        try:
            alive = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""  # b"": the client is gone
        except BlockingIOError:
            alive = True  # open, nothing to read: its process still holds it
        except OSError:
            alive = False
        if alive:
            pid = self.owner_of(port) if self.owner_of else None
            with self.watch_lock:
                self.live_preemptions.append({"at": time.time(), "port": port, "pid": pid})

    def open_poll_ports(self) -> set[int]:
        with self.watch_lock:
            return set(self.poll_conns)


class Census:
    """The bundle's processes and the emulator's pollers, one /proc scan per sample()."""

    def __init__(self, home: Path, emulator: RecordingEmulator | None, roots_cmd=("run_24_7.sh", " supervise",
                                                                                 "auto_recovery.py", "botkeeper start")):
        self.home, self.emulator, self.roots_cmd = str(home), emulator, roots_cmd
        self.me = os.getpid()
        self.known: dict[tuple[int, int], tuple[bool, str | None, str]] = {}  # (pid, start) -> (ours, comp, cmd)
        self.inode_pid: dict[int, int] = {}
        self.procs: dict[int, dict] = {}
        self.lock = threading.Lock()
        if emulator is not None:
            emulator.owner_of = self.owner_of

    def sample(self) -> dict[int, dict]:
        """{pid: {"ppid", "comp", "cmd", "root"}} of the bundle's living processes."""
        procs = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid == self.me:
                continue
            st = _stat(pid)
            if st is None:
                continue
            key = (pid, st[1])
            info = self.known.get(key)
            if info is None:
                home, comp = _environ_home(pid)
                cmd = _cmdline(pid)
                if not cmd:  # between fork and exec or exiting: look again next time
                    continue
                info = self.known[key] = (home == self.home, comp, cmd)
            if info[0]:
                procs[pid] = {"ppid": st[0], "comp": info[1] or "root", "cmd": info[2],
                              "root": any(r in info[2] for r in self.roots_cmd)}
        with self.lock:
            self.procs = procs
        return procs

    def owner_of(self, port: int) -> int | None:
        """The bundle process holding the client end of the emulator connection from `port`."""
        socks = client_sockets(self.emulator.port)
        inode = next((i for i, p in socks.items() if p == port), None)
        if inode is None:
            return None
        return self._pid_of(inode)

    def _pid_of(self, inode: int) -> int | None:
        pid = self.inode_pid.get(inode)
        if pid is not None and _stat(pid) is not None:
            return pid
        with self.lock:
            pids = list(self.procs)
        for pid in pids:
            if inode in _socket_inodes(pid):
                self.inode_pid[inode] = pid
                return pid
        return None

    def pollers(self) -> dict[int, list[int]]:
        """{pid: [client ports]} of living processes holding an open getUpdates connection."""
        if self.emulator is None:
            return {}
        polled = self.emulator.open_poll_ports()
        found: dict[int, list[int]] = {}
        socks = client_sockets(self.emulator.port)
        for inode, port in socks.items():
            if port not in polled:
                continue
            pid = self._pid_of(inode)
            if pid is not None:
                found.setdefault(pid, []).append(port)
        live = set(socks)
        self.inode_pid = {i: p for i, p in self.inode_pid.items() if i in live}
        return found
