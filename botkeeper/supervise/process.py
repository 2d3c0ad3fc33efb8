"""One child process: spawn in its own session, signal its whole group, stop it with grace.

The OS seam of the supervisor: decisions live in policy.py, this module only does what it is told.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from ..fsutil import verified_process

if TYPE_CHECKING:
    import psutil

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

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


def become_subreaper() -> bool:
    """Orphans from our subtree are re-parented to us, not to init: a bot double-forked by the fork
    server (botkeeper/bot/forkserver.py) is then ours to waitpid. False when the kernel refuses."""
    return _libc is not None and _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise); a long-lived small process."""
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


_SETPRIV: list[str] | None | bool = False  # False: not looked up yet


def _pdeathsig_prefix() -> list[str] | None:
    """`setpriv --pdeathsig TERM --` (util-linux >= 2.33) when this machine has it: it sets the
    parent-death signal and execs the command, so no Python code runs between fork and exec and
    subprocess starts the child by vfork: about 4.5 ms less of the supervisor's time per start
    here (a restart's critical path). Without it, the preexec_fn does the same."""
    global _SETPRIV
    if _SETPRIV is False:
        _SETPRIV = None
        path = shutil.which("setpriv") if sys.platform.startswith("linux") else None
        if path:
            try:
                helptext = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.SubprocessError):
                helptext = ""
            if "--pdeathsig" in helptext:
                _SETPRIV = [path, "--pdeathsig", "TERM", "--"]
    return _SETPRIV


def _check_program(program: str, env: Mapping[str, str], cwd: Path) -> None:
    """What exec would say about a program that is not there, said before a helper execs it."""
    if "/" in program:
        path = Path(cwd) / program
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if path.is_dir() or not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def spawn(command: Sequence[str], env: Mapping[str, str], cwd: Path, die_with_parent: bool = True) -> subprocess.Popen:
    """Start a child in a new session with stdout+stderr on one pipe for the supervisor to read."""
    argv, preexec = list(command), None
    if die_with_parent:
        prefix = _pdeathsig_prefix()
        if prefix is not None:
            _check_program(argv[0], env, cwd)
            argv = prefix + argv
        else:
            preexec = _die_with_parent(os.getpid())
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(cwd),
        env=dict(env),
        start_new_session=True,
        preexec_fn=preexec,
    )


def spawn_detached(command: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path,
                   parent_death_signal: int | None = None) -> int:
    """Start a long-lived root (run_24_7.sh, auto_recovery.py) outside our session and tree.

    parent_death_signal: sent to it when we die (even by SIGKILL); the foreground start uses it so
    that its roots follow it, a detached start does not.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    preexec = None
    if parent_death_signal is not None and _libc is not None:
        parent, sig = os.getpid(), parent_death_signal

        def preexec() -> None:
            _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
            if os.getppid() != parent:  # we died before prctl took effect
                os.kill(os.getpid(), sig)

    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=str(cwd), env=dict(env), start_new_session=True, preexec_fn=preexec,
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
    """True while a process of the group still runs. Zombies do not count: they are dead, and
    whether their parent (often init) reaps them soon is not ours to wait for."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _live_member(pgid)


def _live_member(pgid: int) -> bool:
    """Scan /proc for a member of the group that is not a zombie (the leader is checked first)."""
    if _running_in_group(str(pgid), pgid):
        return True
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit() and name != str(pgid)]
    except OSError:
        return True  # cannot tell: assume alive, the caller's deadline still holds
    return any(_running_in_group(pid, pgid) for pid in pids)


def _running_in_group(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
    return len(fields) > 2 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid


def stop_verified(pid: int | None, create_time: float | None, kill_timeout: float, written_at: float | None = None,
                  poll: float = 0.02) -> bool:
    """Blocking stop of a process we recorded earlier (and its group, if it leads one).

    Used for what a previous, killed supervisor left behind, and by `botkeeper stop`. Only acts when
    the PID still belongs to the process we recorded. Returns True if something was stopped.
    """
    return bool(stop_all([(pid, create_time, kill_timeout, written_at)], poll))


def stop_all(targets: Sequence[tuple], poll: float = 0.02) -> list[int]:
    """Stop several recorded processes at once: SIGTERM (+SIGCONT) to all of them first, then wait
    for all with each one's own deadline, SIGKILL whoever outlives it. Overlapping the graceful stops
    makes the whole stop as long as the slowest one, not their sum.

    targets: (pid, create_time, kill_timeout[, written_at]). Returns the pids that were stopped.
    Our own exited children are reaped while waiting: a zombie still counts in its process group,
    and waiting on it would only wait out the timeout.
    """
    live = []
    start = time.monotonic()
    for pid, ctime, timeout, *rest in targets:
        proc = verified_process(pid, ctime, rest[0] if rest else None)
        if proc is None:
            continue
        try:
            leads_group = os.getpgid(proc.pid) == proc.pid
        except OSError:
            continue
        if leads_group:
            terminate_group(proc.pid)
        else:
            _signal_one(proc, signal.SIGTERM)
            _signal_one(proc, signal.SIGCONT)
        live.append((proc, leads_group, start + timeout, timeout))
    stopped = [proc.pid for proc, *_ in live]
    killed_at: dict[int, float] = {}
    while live:
        now = time.monotonic()
        waiting = []
        for proc, leads_group, deadline, timeout in live:
            _reap_own(proc.pid)
            if not _exists(proc) and not (leads_group and group_alive(proc.pid)):
                continue
            if now >= deadline and proc.pid not in killed_at:
                log.warning("pid %s did not stop within %.1f s of SIGTERM: sending SIGKILL", proc.pid, timeout)
                if leads_group:
                    signal_group(proc.pid, signal.SIGKILL)
                else:
                    _signal_one(proc, signal.SIGKILL)
                killed_at[proc.pid] = now
            if proc.pid in killed_at and now - killed_at[proc.pid] > 5:
                continue  # SIGKILLed 5 s ago (unkillable, D state): nothing more we can do
            waiting.append((proc, leads_group, deadline, timeout))
        live = waiting
        if live:
            time.sleep(poll)
    return stopped


def _reap_own(pid: int) -> None:
    """waitpid a process if it is our own child (the foreground start spawned the roots)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent reaps it


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
    """Collect every exited child without blocking: [(pid, wait status)]. waitpid(-1) also reaps
    the orphans a PID 1 (the supervisor in a container) adopts, so none of them stays a zombie."""
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


class OS:
    """Everything the supervisor does to the operating system, in one object a test can replace
    (honcho's `Env` is the model): spawn, signal, reap, look up a start time. The clocks are
    passed to the supervisor beside it, so restart, backoff and timer behaviour run under a fake
    clock without a single real process."""

    def spawn(self, command: Sequence[str], env: Mapping[str, str], cwd: Path) -> subprocess.Popen:
        return spawn(command, env, cwd)

    def spawn_detached(self, command: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> int:
        return spawn_detached(command, env, cwd, log_path)

    def become_subreaper(self) -> bool:
        return become_subreaper()

    def spawn_warm(self, sock_path: Path, argv: Sequence[str], env: Mapping[str, str], cwd: Path):
        """A bot forked by the fork server (a WarmProcess: pid, stdout, returncode); raises
        warm.WarmRefused when there is none to have (the caller then spawns cold)."""
        from . import warm

        return warm.request(sock_path, argv, env, cwd)

    def signal_group(self, pgid: int, sig: int) -> bool:
        return signal_group(pgid, sig)

    def terminate_group(self, pgid: int) -> bool:
        return terminate_group(pgid)

    def reap(self) -> list[tuple[int, int]]:
        return reap_any()

    def create_time(self, pid: int) -> float | None:
        from ..fsutil import create_time

        return create_time(pid)

    def stop_all(self, targets: Sequence[tuple]) -> list[int]:
        return stop_all(targets)
