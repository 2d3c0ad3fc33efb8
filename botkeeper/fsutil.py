"""Small file-system helpers shared by every process: the bundle's directories, atomic writes and
verified PID files."""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


EX_CANTCREAT = 73  # sysexits.h: a file cannot be created (here: the disk is full; retried with backoff)
EX_CONFIG = 78  # sysexits.h: fix the set-up (here: a directory is a file or not writable; not retried)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
PROBE_BYTES = 4096  # written by the directory probe: one block


class UnusableDirectory(Exception):
    """One of the bundle's directories cannot be used; the message names it and says what to do."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def ensure_dirs(*dirs: Path) -> None:
    """Create each directory if needed and prove it is writable (a file is created and removed).

    Raises UnusableDirectory instead of a FileExistsError/PermissionError traceback."""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in (d, *d.parents) if p.exists() and not p.is_dir()), d)
            raise UnusableDirectory(f"{blocker} is a file, but botkeeper needs {d} to be a directory:"
                                    " move or delete that file", EX_CONFIG) from None
        except OSError as exc:
            raise _unusable(d, "cannot be created", exc) from None
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=d)
            try:
                os.write(fd, b"\0" * PROBE_BYTES)  # a full disk still creates empty files (free inodes)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            raise _unusable(d, "is not writable", exc) from None


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding path (the disk a message should name)."""
    path = Path(path).resolve()
    try:
        dev = os.stat(path).st_dev
        while path != path.parent and os.stat(path.parent).st_dev == dev:
            path = path.parent
    except OSError:
        pass
    return path


def _unusable(d: Path, what: str, exc: OSError) -> UnusableDirectory:
    if exc.errno in NO_SPACE:
        return UnusableDirectory(f"{d} {what}: the disk is full ({exc.strerror}: the file system mounted at"
                                 f" {mount_point(d)}); free some space", EX_CANTCREAT)
    return UnusableDirectory(f"{d} {what} ({exc.strerror or exc}): give the user running botkeeper"
                             f" (uid {os.getuid()}) write access to it, or set BOTKEEPER_HOME to a writable"
                             " directory", EX_CONFIG)


# --- private by default --------------------------------------------------------------------------
# The bundle's files hold user messages (logs), queued codes (outbox.db), tokens' hiding places:
# on a shared machine nobody else may read them, nor open run/*.lock to hold our locks.
PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """From here on this process and its children create files 0600 and directories 0700."""
    os.umask(PRIVATE_UMASK)


def make_private(*dirs: Path) -> list[Path]:
    """Take group and other permissions off each directory and everything under it (not following
    symbolic links; only what this user owns): the paths changed, for one notice."""
    uid = os.getuid()
    changed: list[Path] = []

    def tighten(path: Path, st: os.stat_result) -> None:
        if st.st_uid == uid and st.st_mode & 0o077:
            try:
                os.chmod(path, st.st_mode & 0o7700, follow_symlinks=False)
                changed.append(path)
            except OSError:
                pass  # gone meanwhile, or a file system without modes: nothing to tighten

    for top in dirs:
        try:
            tighten(top, top.lstat())
        except OSError:
            continue
        for root, dirnames, files in os.walk(top):
            for name in dirnames + files:
                path = Path(root) / name
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if not os.path.islink(path):
                    tighten(path, st)
    return changed


def ensure_dirs_or_exit(*dirs: Path) -> None:
    """For entry points: the directories, or one line on stderr and exit 78 (73 when the disk is full)."""
    try:
        ensure_dirs(*dirs)
    except UnusableDirectory as exc:
        print(f"botkeeper: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


def atomic_write(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, separators=(",", ":"), default=str))


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


_BOOT_TIME: float | None = None


def create_time(pid: int) -> float | None:
    """A process's start time exactly as psutil reports it, read from /proc without importing
    psutil (the supervisor stays small). None if the process is gone."""
    global _BOOT_TIME
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        if _BOOT_TIME is None:
            with open("/proc/stat", "rb") as fh:
                _BOOT_TIME = float(next(l for l in fh if l.startswith(b"btime")).split()[1])
        ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        return ticks / os.sysconf("SC_CLK_TCK") + _BOOT_TIME
    except FileNotFoundError:
        return None
    except (OSError, ValueError, StopIteration):  # not Linux: ask psutil
        import psutil

        try:
            return psutil.Process(pid).create_time()
        except psutil.Error:
            return None


def write_pidfile(path: Path, pid: int | None = None) -> None:
    pid = pid or os.getpid()
    atomic_write_json(path, {"pid": pid, "create_time": create_time(pid)})


def verified_process(pid: int | None, create_time: float | None = None, written_at: float | None = None):
    """psutil.Process for pid if it is still the process we recorded, else None.

    A PID can be reused by an unrelated program, so identity is checked by create time: exactly
    when we recorded it, or (for PID files written by shell scripts) no later than the file itself.
    """
    import psutil

    if not pid or pid <= 0 or pid == os.getpid():
        return None
    try:
        proc = psutil.Process(pid)
        created = proc.create_time()
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.Error, OSError):
        return None
    if create_time is not None and abs(created - create_time) > 0.05:
        return None
    if create_time is None and written_at is not None and created > written_at + 1.0:
        return None
    return proc


def read_pidfile(path: Path):
    """The live, verified process a PID file names, or None. Accepts JSON or a bare number."""
    try:
        text = path.read_text(encoding="utf-8").strip()
        mtime = path.stat().st_mtime
    except OSError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, int):
        return verified_process(data, written_at=mtime)
    if isinstance(data, dict) and isinstance(data.get("pid"), int):
        return verified_process(data["pid"], data.get("create_time"), written_at=mtime)
    return None
