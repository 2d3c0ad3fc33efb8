"""The one owner of `run/`: locks, the stopping marker, PID files, exit notes, leftover cleanup.

Everything that asks "is X running here?" or "may I act?" goes through this module, so the rules
(flock probes, verified PIDs, the stopping marker) are written once. Processes are found only by
files we wrote ourselves, never by name.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from .causes import Cause
from .fsutil import atomic_write_json, read_json, read_pidfile

LOCKS = ("start", "supervisor", "runner", "recovery", "alerter", "update")
EXIT_NOTE_ENV = "BOTKEEPER_EXIT_NOTE"
MAX_NOTE_BYTES = 4096


def run_dir(settings: Any) -> Path:
    return Path(settings.run_dir)


# --- locks ----------------------------------------------------------------------------------------
def lock_path(settings: Any, name: str) -> Path:
    return run_dir(settings) / f"{name}.lock"


def try_lock(settings: Any, name: str) -> int | None:
    """Take run/<name>.lock without waiting: the open fd (keep it to hold the lock), or None when
    another process holds it."""
    path = lock_path(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def wait_lock(settings: Any, name: str, timeout: float, poll: float = 0.02) -> int | None:
    """Take run/<name>.lock, waiting up to `timeout` seconds: the fd, or None if still held."""
    deadline = time.monotonic() + timeout
    while True:
        fd = try_lock(settings, name)
        if fd is not None or time.monotonic() > deadline:
            return fd
        time.sleep(poll)


def lock_held(settings: Any, name: str) -> bool:
    """True if some process holds run/<name>.lock (probed without keeping it)."""
    try:
        fd = os.open(lock_path(settings, name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # closing drops a probe lock we may have taken


# --- Unix socket paths -------------------------------------------------------------------------
UNIX_PATH_MAX = 107  # sun_path is 108 bytes with its NUL: a deep BOTKEEPER_HOME does not fit


@contextmanager
def socket_address(path: Path | str) -> Iterator[str]:
    """An address to bind or connect a Unix socket at `path`, however deep the bundle home is:
    past the kernel's limit, the same file through /proc/self/fd/<fd of its directory>/<name>."""
    path = Path(path)
    if len(os.fsencode(str(path))) <= UNIX_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# --- the stopping marker --------------------------------------------------------------------------
def stopping_path(settings: Any) -> Path:
    return run_dir(settings) / "stopping"


def mark_stopping(settings: Any) -> None:
    """From now on the relaunchers (runner, auto_recovery, the supervisor's watch) stand down."""
    path = stopping_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(time.time()))


def clear_stopping(settings: Any) -> None:
    try:
        stopping_path(settings).unlink()
    except FileNotFoundError:
        pass


def is_stopping(settings: Any) -> bool:
    return stopping_path(settings).exists()


# --- PID files ------------------------------------------------------------------------------------
def pidfile(settings: Any, root: str) -> Path:
    return run_dir(settings) / f"{root}.pid"


def root_process(settings: Any, root: str):
    """The live process a root's PID file names (verified by create time), or None."""
    return read_pidfile(pidfile(settings, root))


def read_pid_record(settings: Any, root: str) -> dict[str, Any] | None:
    data = read_json(pidfile(settings, root))
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


# --- exit notes: a component states why it exits, nobody guesses from its last log line ----------
def forkserver_socket(settings: Any) -> Path:
    """The fork server's request socket (botkeeper/bot/forkserver.py listens, botkeeper/supervise/warm.py asks)."""
    return run_dir(settings) / "forkserver.sock"


def deadman_file(settings: Any) -> Path:
    """run/deadman.json: the monitor's dead man's switch pings (alerting/deadman.py), read by the snapshot."""
    return run_dir(settings) / "deadman.json"


def exit_note_path(settings: Any, component: str) -> Path:
    return run_dir(settings) / f"exit-note.{component}.json"


def write_exit_note(cause: Cause, detail: str, path: str | os.PathLike | None = None) -> bool:
    """Called by a component just before it exits for a reason of its own (the bot before exit 78).
    The path comes from $BOTKEEPER_EXIT_NOTE, set by the supervisor. False when there is none."""
    target = path or os.environ.get(EXIT_NOTE_ENV)
    if not target:
        return False
    try:
        atomic_write_json(Path(target), {"cause": Cause(cause).value, "detail": str(detail)[:1000],
                                         "pid": os.getpid(), "at": time.time()})
        return True
    except OSError:
        return False


def take_exit_note(path: Path, pid: int | None) -> tuple[Cause, str] | None:
    """(cause, detail) a process left before exiting, or None; the note is removed either way.
    A note from another pid (an earlier run) is ignored."""
    try:
        raw = path.read_bytes()[:MAX_NOTE_BYTES]
    except OSError:
        return None
    try:
        path.unlink()
    except OSError:
        pass
    try:
        note = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(note, dict) or (pid is not None and note.get("pid") != pid):
        return None
    cause = Cause.parse(note.get("cause"))
    return cause, str(note.get("detail") or cause.label)[:1000]


# --- leftovers ------------------------------------------------------------------------------------
def stop_leftovers(settings: Any, timeout_for: Callable[[str], float],
                   stop_all: Callable[[list[tuple[int, float, float]]], Iterable[int]]) -> list[tuple[str, int]]:
    """Stop every process a (dead) supervisor recorded in run/state.json, verified by PID + create
    time, all at once (process.stop_all); [(name, pid)] of those that were still there. Used by a
    new supervisor and by `stop`."""
    state = read_json(Path(settings.state_file))
    components = state.get("components") if isinstance(state, dict) else None
    names: dict[int, str] = {}
    targets = []
    for comp in components if isinstance(components, list) else []:
        if not isinstance(comp, Mapping):
            continue
        pid, ctime, name = comp.get("pid"), comp.get("create_time"), str(comp.get("name") or "?")
        if isinstance(pid, int) and not isinstance(pid, bool) and isinstance(ctime, (int, float)):
            names[pid] = name
            targets.append((pid, float(ctime), timeout_for(name)))
    return [(names[pid], pid) for pid in stop_all(targets)]


# --- our own files in odd states ------------------------------------------------------------------
def write_fault_cause(exc: OSError | None) -> Cause:
    """Why one of our files cannot be written, as a cause: the disk (or quota) is full, or not."""
    if exc is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Cause.DISK_FULL
    return Cause.STATE_UNWRITABLE


def move_aside_if_not_file(path: Path, moved: Callable[[Path, Path], None] | None = None) -> Path | None:
    """A file of ours that is a directory (or a socket, a fifo...) is renamed to
    <name>.not-a-file-<time> so that the real one can be written again; the new name, or None."""
    import stat as statmod

    try:
        st = os.lstat(path)
    except OSError:
        return None
    if statmod.S_ISREG(st.st_mode):
        return None
    target = path.with_name(f"{path.name}.not-a-file-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, target)
    if moved is not None:
        moved(path, target)
    return target
