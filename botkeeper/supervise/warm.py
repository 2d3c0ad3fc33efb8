"""The supervisor's end of the fork server (botkeeper/bot/forkserver.py): ask it for a warm bot.

Stdlib only: the supervisor imports this, never telegram. One request per start, over the fork
server's Unix socket (run/forkserver.sock):

    supervisor -> fork server: one JSON line {"argv", "env", "cwd", "supervisor"} and, with
                               SCM_RIGHTS, two fds: the write end of the output pipe (becomes the
                               bot's stdout+stderr) and the read end of the "go" gate
    fork server -> supervisor: one JSON line {"pid": N} | {"stale": why} | {"error": why}

The supervisor creates both pipes: it keeps the output pipe's read end exactly as it does for a
cold spawn (one code path for reading children), and the fork server never holds a pipe it could
leak. The forked bot waits on the gate before it does anything: the supervisor writes one byte
only once it has taken the pid; if it gave up (timeout, bad answer) it closes the gate unwritten
and the bot exits at once. So a fork the supervisor does not know about never polls.

The bot is double-forked by the fork server and so re-parented to the supervisor, which is a
child subreaper (process.become_subreaper): the supervisor reaps it with waitpid like any child.
"""

from __future__ import annotations

import array
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Mapping, Sequence

from .. import runfiles

REQUEST_TIMEOUT = 1.0  # a fork takes milliseconds; a fork server this slow is restarted
MAX_MESSAGE = 1 << 20
GO = b"g"


class WarmProcess:
    """What the supervisor keeps of a warm-started child: the same three attributes as a Popen."""

    def __init__(self, pid: int, stdout):
        self.pid, self.stdout, self.returncode = pid, stdout, None


class WarmRefused(Exception):
    """No warm start this time; `stale` = the fork server's code is older than the files."""

    def __init__(self, why: str, stale: bool = False, unresponsive: bool = False):
        super().__init__(why)
        self.stale, self.unresponsive = stale, unresponsive


def python_argv(command: Sequence[str], executable: str, path: str | None = None) -> list[str] | None:
    """The arguments a fork of our interpreter can run in place of `command`: [script.py, args...]
    or ["-m", module, args...]; None when the command is not that interpreter running a script or a
    module (another interpreter has other packages: it keeps the cold path)."""
    if len(command) < 2:
        return None
    program = shutil.which(command[0], path=path) if os.sep not in command[0] else command[0]
    if program is None or os.path.abspath(program) != os.path.abspath(executable):
        return None
    rest = list(command[1:])
    if rest[0] == "-m" and len(rest) >= 2 and not rest[1].startswith("-"):
        return rest
    if rest[0].endswith(".py") and not rest[0].startswith("-"):
        return rest
    return None


def request(sock_path: Path, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
            timeout: float = REQUEST_TIMEOUT) -> WarmProcess:
    """Ask the fork server for a bot; raises WarmRefused (then the caller starts it cold)."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
    keep = False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            try:
                with runfiles.socket_address(sock_path) as address:
                    sock.connect(address)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise WarmRefused(f"the fork server is not listening ({exc.strerror})") from None
            message = json.dumps({"argv": list(argv), "env": dict(env), "cwd": str(cwd),
                                  "supervisor": os.getpid()}).encode() + b"\n"
            try:
                sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [out_w, gate_r]))])
                reply = _read_line(sock)
            except socket.timeout:
                raise WarmRefused(f"the fork server did not answer within {timeout:g} s", unresponsive=True) from None
            except OSError as exc:
                raise WarmRefused(f"the fork server hung up ({exc.strerror or exc})") from None
        try:
            answer = json.loads(reply)
        except ValueError:
            raise WarmRefused("the fork server's answer is not JSON", unresponsive=True) from None
        if isinstance(answer, dict) and answer.get("stale"):
            raise WarmRefused(str(answer["stale"])[:300], stale=True)
        pid = answer.get("pid") if isinstance(answer, dict) else None
        if not isinstance(pid, int) or pid <= 1:
            why = answer.get("error") if isinstance(answer, dict) else None
            raise WarmRefused(f"the fork server refused: {str(why or answer)[:300]}")
        os.write(gate_w, GO)  # the pid is ours now: let the bot run
        keep = True
        return WarmProcess(pid, os.fdopen(out_r, "rb", buffering=0))
    finally:
        for fd in (out_w, gate_r, gate_w) if keep else (out_w, gate_r, gate_w, out_r):
            os.close(fd)  # closing the gate unwritten tells a fork we gave up on to exit


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed before the answer")
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise OSError("answer too long")
    return data
