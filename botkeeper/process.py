"""One child process: spawn in its own session, signal its whole group, stop it with grace.

The OS seam of the supervisor: decisions live in policy.py, this module only does what it is told.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from .fsutil import verified_process

if TYPE_CHECKING:
    import psutil

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1

try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # no libc handle: children still die through the next supervisor's cleanup
    _libc = None


def _die_with_parent(parent: int):
    """preexec_fn: the child gets SIGTERM when the supervisor dies, even by SIGKILL."""

    def preexec() -> None:
        if _libc is not None:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise); a long-lived small process."""
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


def spawn(command: Sequence[str], env: Mapping[str, str], cwd: Path, die_with_parent: bool = True) -> subprocess.Popen:
    """Start a child in a new session with stdout+stderr on one pipe for the supervisor to read."""
    return subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(cwd),
        env=dict(env),
        start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()) if die_with_parent else None,
    )


def spawn_detached(command: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> int:
    """Start a long-lived root (run_24_7.sh, auto_recovery.py) outside our session and tree."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=str(cwd), env=dict(env), start_new_session=True,
        )
    return proc.pid


def signal_group(pgid: int, sig: int) -> bool:
    """Send sig to a whole process group; False if the group is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("group %s: not allowed to send %s", pgid, signal.Signals(sig).name)
        return False


def terminate_group(pgid: int) -> bool:
    """SIGTERM, plus SIGCONT so that a stopped (SIGSTOPped) process can act on it."""
    alive = signal_group(pgid, signal.SIGTERM)
    if alive:
        signal_group(pgid, signal.SIGCONT)
    return alive


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_verified(pid: int | None, create_time: float | None, kill_timeout: float, written_at: float | None = None,
                  poll: float = 0.02) -> bool:
    """Blocking stop of a process we recorded earlier (and its group, if it leads one).

    Used for what a previous, killed supervisor left behind, and by `botkeeper stop`. Only acts when
    the PID still belongs to the process we recorded. Returns True if something was stopped.
    """
    proc = verified_process(pid, create_time, written_at)
    if proc is None:
        return False
    try:
        leads_group = os.getpgid(proc.pid) == proc.pid
    except OSError:
        return False
    if leads_group:
        terminate_group(proc.pid)
    else:
        _signal_one(proc, signal.SIGTERM)
        _signal_one(proc, signal.SIGCONT)
    deadline = time.monotonic() + kill_timeout
    while time.monotonic() < deadline:
        if not _exists(proc) and not (leads_group and group_alive(proc.pid)):
            return True
        time.sleep(poll)
    log.warning("pid %s did not stop within %.1f s of SIGTERM: sending SIGKILL", proc.pid, kill_timeout)
    if leads_group:
        signal_group(proc.pid, signal.SIGKILL)
    else:
        _signal_one(proc, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (_exists(proc) or (leads_group and group_alive(proc.pid))):
        time.sleep(poll)
    return True


def _signal_one(proc: "psutil.Process", sig: int) -> None:
    import psutil

    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass  # already gone: that is what we wanted


def _exists(proc: "psutil.Process") -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reap_any() -> list[tuple[int, int]]:
    """Collect every exited child without blocking: [(pid, wait status)]."""
    out = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        if pid == 0:
            return out
        out.append((pid, status))
