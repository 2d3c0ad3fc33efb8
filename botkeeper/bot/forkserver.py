"""The fork server: a supervised component that keeps a bot warm (WARM_STANDBY=auto).

It imports python-telegram-bot, botkeeper's bot code and the user's handlers once, starts no event
loop and no threads, and forks a ready bot when the supervisor asks (protocol: botkeeper/supervise/warm.py).
A warm start skips the interpreter start and ~600 ms of imports: it begins at the bot's main().

Each fork is a double fork, so the bot is re-parented to the supervisor (a child subreaper) and is
reaped by it like a cold-started bot. The bot then becomes a normal component process: its own
session, stdout+stderr on the supervisor's pipe, stdin /dev/null, the environment the supervisor
sent (BOTKEEPER_COMPONENT, the exit note path, the bot's env), and PR_SET_PDEATHSIG=SIGTERM set
only after the supervisor said "go" (so it is the supervisor's death it follows, not ours).

Before each fork the fork server compares the files it loaded (every module from the bundle home
or botkeeper's checkout, the user's handlers included) with what is on disk: if one changed it
answers "stale" and the supervisor starts that bot cold and restarts this process, which loads the
new code.
"""

from __future__ import annotations

import array
import atexit
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run by file path (the component's command)
    sys.path[0] = str(Path(__file__).resolve().parents[2])  # not botkeeper/bot/: its modules would shadow

from botkeeper import logs, runfiles  # noqa: E402
from botkeeper.config import PACKAGE_ROOT, load_or_exit  # noqa: E402
from botkeeper.supervise.warm import GO, MAX_MESSAGE  # noqa: E402

log = logging.getLogger("forkserver")
GATE_WAIT = 5.0  # seconds a fork waits for the supervisor's go before it gives up
PR_SET_PDEATHSIG = 1


# --- what we loaded, and whether it is still what is on disk ------------------------------------------
def loaded_files(roots: list[Path]) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime_ns) of every loaded module file under one of `roots`."""
    stamps = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not any(_under(path, root) for root in roots):
            continue
        if f"{os.sep}site-packages{os.sep}" in path:  # the project's .venv: libraries, not the user's code
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        stamps[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return stamps


def _under(path: str, root: Path) -> bool:
    return os.path.abspath(path).startswith(str(root) + os.sep)


def changed(stamps: dict[str, tuple[int, int, int]], began_ns: int, stamped_ns: int) -> str | None:
    """The first loaded file that changed since it was stamped, or was written while we were
    loading (between began_ns and stamped_ns: we may hold the older text), else None. A file
    dated in the future (clock skew, an archive) is not stale for that alone."""
    for path, stamp in stamps.items():
        try:
            st = os.stat(path)
        except OSError:
            return f"{path} was removed"
        if (st.st_ino, st.st_size, st.st_mtime_ns) != stamp or began_ns <= st.st_mtime_ns <= stamped_ns:
            return f"{path} changed since the fork server loaded it"
    return None


def preload(settings) -> None:
    """Everything a bot start imports, once: python-telegram-bot, httpx and what their first
    request imports lazily, botkeeper's bot, and the user's handlers (without registering them)."""
    from botkeeper.bot import app, delivery, userhandlers  # noqa: F401 - first: it trims httpx's imports

    import asyncio  # noqa: F401
    import httpx  # noqa: F401
    import telegram  # noqa: F401
    import telegram.ext  # noqa: F401

    from botkeeper.bot import keeper  # noqa: F401

    for lazy in ("httpcore._async.http11", "httpcore._backends.anyio", "anyio._backends._asyncio", "h11",
                 "asyncio.unix_events", "telegram._utils.datetime", "sqlite3", "json.decoder"):
        try:
            __import__(lazy)
        except ImportError:
            pass
    if settings.bot_command is None:  # our main.py: its user handlers too
        try:
            path = userhandlers.preload(settings)
            if path:
                log.info("user handlers preloaded from %s", path)
        except (Exception, SystemExit) as exc:  # the bot reports it properly when it loads them
            log.warning("cannot preload your handlers (each bot start loads them itself): %s", exc)


# --- serving ---------------------------------------------------------------------------------------
def serve(settings) -> int:
    started_ns = time.time_ns()
    preload(settings)
    stamps = loaded_files([settings.home.resolve(), PACKAGE_ROOT])
    stamped_ns = time.time_ns()
    gc.collect()
    gc.freeze()  # the loaded objects stay out of the collector: pages stay shared with the bots
    from botkeeper.supervise.process import release_free_memory

    release_free_memory()  # import-time garbage back to the OS: less to keep, less to copy
    path = runfiles.forkserver_socket(settings)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    old_umask = os.umask(0o077)
    try:
        with runfiles.socket_address(path) as address:
            listener.bind(address)
    finally:
        os.umask(old_umask)
    listener.listen(4)
    log.info("ready: %d modules loaded, %d of them watched for changes", len(sys.modules), len(stamps))
    try:
        while True:
            conn, _ = listener.accept()
            with conn:
                _answer(conn, listener, stamps, (started_ns, stamped_ns))
    finally:
        listener.close()


def _answer(conn: socket.socket, listener: socket.socket, stamps, loading: tuple[int, int]) -> None:
    conn.settimeout(2.0)
    fds: list[int] = []
    try:
        request, fds = _receive(conn)
        if _peer_uid(conn) != os.getuid():
            raise ValueError("the request does not come from our user")
        stale = changed(stamps, *loading)
        if stale:
            log.info("%s: answering stale (the supervisor restarts us to load it)", stale)
            conn.sendall(json.dumps({"stale": stale}).encode() + b"\n")
            return
        if len(fds) != 2:
            raise ValueError("expected two file descriptors")
        pid = _double_fork(request, fds, conn, listener)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("request refused: %s", exc)
        try:
            conn.sendall(json.dumps({"error": str(exc)[:300]}).encode() + b"\n")
        except OSError:
            pass
    finally:
        for fd in fds:
            os.close(fd)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, ancdata, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(2 * array.array("i").itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += array.array("i", payload[: len(payload) - len(payload) % 4]).tolist()
        if not chunk:
            raise ValueError("connection closed before the request")
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise ValueError("request too long")
    request = json.loads(data)
    if not isinstance(request, dict) or not isinstance(request.get("argv"), list) or not request["argv"]:
        raise ValueError("a request needs argv, env, cwd and supervisor")
    return request, fds


def _peer_uid(conn: socket.socket) -> int:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _double_fork(request: dict, fds: list[int], conn: socket.socket, listener: socket.socket) -> int:
    """Fork an intermediate that forks the bot and exits at once: the bot is re-parented to the
    supervisor (the subreaper) before we answer, so the pid we give is the supervisor's to reap."""
    report_r, report_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    middle = os.fork()
    if middle == 0:  # the intermediate: no Python clean-up, no exceptions past this point
        try:
            os.close(report_r)
            bot = os.fork()
            if bot == 0:
                os.close(report_w)
                _become_bot(request, fds, conn, listener)  # never returns
            os.write(report_w, str(bot).encode())
        finally:
            os._exit(0)
    os.close(report_w)
    try:
        os.waitpid(middle, 0)
        with os.fdopen(report_r, "rb") as report:
            text = report.read()
    except OSError:
        text = b""
    if not text.isdigit():
        raise OSError("the fork did not report its pid")
    return int(text)


def _become_bot(request: dict, fds: list[int], conn: socket.socket, listener: socket.socket) -> None:
    code = 1
    try:
        out_w, gate_r = fds
        os.setsid()  # its own session and process group: the supervisor signals the group
        conn.close()
        listener.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.close(null)
        os.close(out_w)
        if not _go(gate_r, int(request["supervisor"])):
            os._exit(0)  # the supervisor gave up on this fork: it must never poll
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        os.chdir(request["cwd"])
        code = _run(list(request["argv"]))
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:  # noqa: BLE001 - a process boundary: say what happened, exit 1
        try:
            traceback.print_exc()
        except OSError:  # stderr is gone: nowhere is left to tell, and exit 1 still says it
            pass
    try:
        atexit._run_exitfuncs()  # what a normal interpreter exit would run (logging's flush)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _go(gate_r: int, supervisor: int) -> bool:
    """Wait for the supervisor's go, then follow the supervisor's death (not ours)."""
    import select

    ready, _, _ = select.select([gate_r], [], [], GATE_WAIT)
    go = bool(ready) and os.read(gate_r, 1) == GO
    os.close(gate_r)
    if not go:
        return False
    from botkeeper.supervise.process import _libc

    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == supervisor  # not adopted by it (it died meanwhile): do not run


def _run(argv: list[str]) -> int:
    """Run `python ARGV...` inside this already warm interpreter: a script or `-m module`."""
    from botkeeper.bot.launch import run

    for entry in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(1, entry)
    run(argv)
    return 0


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """`python -m botkeeper forkserver`: the fork server component (the supervisor runs it)."""
    settings = load_or_exit()
    logs.setup(settings, "forkserver")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave through finally: the socket closes
    try:
        return serve(settings)
    except KeyboardInterrupt:
        return 0
    finally:
        try:
            runfiles.forkserver_socket(settings).unlink()
        except OSError:
            pass


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
