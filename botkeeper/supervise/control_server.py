"""The supervisor's end of the control channel: run/control.sock, one request per connection.

The protocol (newline-delimited JSON) is botkeeper/supervise/control.py's. This serves it from inside the
supervisor's single-threaded loop: the socket and each client are registered with the loop's
selector, and `handle(request) -> data` (the supervisor) answers; nothing here acts on processes.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
from pathlib import Path
from typing import Any, Callable

from . import control
from .. import runfiles

ACCEPT, CLIENT = "accept", "client"


class ControlServer:
    def __init__(self, path: Path, selector: selectors.BaseSelector, handle: Callable[[dict[str, Any]], Any]):
        self.path, self.selector, self.handle = Path(path), selector, handle
        self._server: socket.socket | None = None
        self._clients: dict[socket.socket, bytearray] = {}

    def open(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with runfiles.socket_address(self.path) as address:  # a deep home is longer than sun_path
            server.bind(address)
        os.chmod(self.path, 0o600)
        server.listen(16)
        server.setblocking(False)
        self._server = server
        self.selector.register(server, selectors.EVENT_READ, (ACCEPT, None))

    def on_event(self, kind: str, fileobj: Any) -> None:
        if kind == ACCEPT:
            self._accept()
        elif fileobj in self._clients:
            self._on_client(fileobj)

    def close(self) -> None:
        for conn in list(self._clients):
            self._drop(conn)
        if self._server is not None:
            self._server.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept(self) -> None:
        try:
            conn, _ = self._server.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._clients[conn] = bytearray()
        self.selector.register(conn, selectors.EVENT_READ, (CLIENT, None))

    def _on_client(self, conn: socket.socket) -> None:
        buf = self._clients.get(conn)
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data or buf is None:
            self._drop(conn)
            return
        buf += data
        if b"\n" not in buf and len(buf) < control.MAX_MESSAGE:
            return
        line = bytes(buf).split(b"\n", 1)[0]
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
            reply = {"ok": True, "data": self.handle(request)}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": str(exc)}
        try:
            conn.setblocking(True)
            conn.settimeout(2.0)
            conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
        except OSError:
            pass  # the asker went away; the action (if any) still happened
        self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self._clients.pop(conn, None)
        try:
            self.selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()
