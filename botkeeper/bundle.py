"""The bundle as a whole: find its roots by our PID files and locks, stop it, start it.

Roots: run_24_7.sh (runner), the supervisor it keeps alive, and auto_recovery.py. They are found
only through files under run/ that they wrote themselves, never by process name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import process
from .config import PACKAGE_ROOT, Settings
from .fsutil import read_json, read_pidfile

ROOTS = ("runner", "supervisor", "recovery")


def pidfile(settings: Settings, root: str) -> Path:
    return settings.run_dir / f"{root}.pid"


def lock_held(path: Path) -> bool:
    """True if some process holds an flock on path (we probe without keeping it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)


def root_process(settings: Settings, root: str):
    """The live process of a root, verified by its PID file's create time, or None."""
    return read_pidfile(pidfile(settings, root))


def is_running(settings: Settings) -> bool:
    return any(root_process(settings, r) for r in ROOTS) or lock_held(settings.run_dir / "supervisor.lock")


@contextmanager
def start_lock(settings: Settings, timeout: float) -> Iterator[None]:
    """Serialises starts and stops: two racing starts run one after the other."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.run_dir / "start.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("another start or stop of this bundle is still in progress") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def stop(settings: Settings, say=print) -> bool:
    """Stop every process of the bundle and leave none behind. True if anything was running."""
    run = settings.run_dir
    run.mkdir(parents=True, exist_ok=True)
    (run / "stopping").write_text(str(time.time()))  # relaunchers stand down from here on
    grace = max([c.kill_timeout for c in settings.components] + [settings.kill_timeout]) + 5
    # All roots at once: the supervisor starts stopping its components the moment we ask, instead
    # of after auto_recovery and the runner have gone (their stops overlap with the components').
    targets = []
    for root, timeout in (("supervisor", grace), ("runner", grace), ("recovery", 5.0)):
        proc = root_process(settings, root)
        if proc is not None:
            say(f"stopping {root} (pid {proc.pid})")
            targets.append((proc.pid, proc.create_time(), timeout))
    stopped = bool(process.stop_all(targets))
    # Whatever the last supervisor recorded and did not stop itself (it was killed, say).
    state = read_json(settings.state_file) or {}
    leftovers, names = [], {}
    for comp in state.get("components", []) if isinstance(state, dict) else []:
        pid, ctime = comp.get("pid"), comp.get("create_time")
        if isinstance(pid, int) and isinstance(ctime, (int, float)):
            leftovers.append((pid, ctime, grace))
            names[pid] = comp.get("name")
    for pid in process.stop_all(leftovers):
        say(f"stopped leftover {names[pid]} (pid {pid})")
        stopped = True
    return stopped


def clear_stopping(settings: Settings) -> None:
    """A start lifts the marker a stop left: relaunchers may act again."""
    try:
        (settings.run_dir / "stopping").unlink()
    except FileNotFoundError:
        pass


def spawn_roots(settings: Settings, follow_us: bool = False) -> tuple[int, int | None]:
    """Start run_24_7.sh and auto_recovery.py, each in its own session, outside our tree.

    follow_us (the foreground start): if this process dies, even by SIGKILL, the runner gets SIGHUP
    (it marks the bundle stopping and stops the supervisor) and auto_recovery SIGTERM.
    """
    import signal

    env = os.environ | {"BOTKEEPER_HOME": str(settings.home), "BOTKEEPER_PYTHON": sys.executable}
    clear_stopping(settings)
    logs = settings.logs_dir
    runner = spawn_runner(settings, env, signal.SIGHUP if follow_us else None)
    recovery = None
    script = PACKAGE_ROOT / "auto_recovery.py"
    if settings.auto_recovery and script.exists():
        recovery = process.spawn_detached([sys.executable, str(script)], env, PACKAGE_ROOT, logs / "auto_recovery.out",
                                          signal.SIGTERM if follow_us else None)
    return runner, recovery


def spawn_runner(settings: Settings, env: dict[str, str] | None = None, parent_death_signal: int | None = None) -> int:
    """Start run_24_7.sh in its own session, outside our tree (start and auto_recovery both do)."""
    env = env or os.environ | {"BOTKEEPER_HOME": str(settings.home), "BOTKEEPER_PYTHON": sys.executable}
    return process.spawn_detached(["bash", str(PACKAGE_ROOT / "run_24_7.sh")], env, PACKAGE_ROOT,
                                  settings.logs_dir / "runner.log", parent_death_signal)
