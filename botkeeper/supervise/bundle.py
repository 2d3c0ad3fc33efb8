"""The bundle as a whole: find its roots by our PID files and locks, stop it, start it.

Roots: run_24_7.sh (runner), the supervisor it keeps alive, and auto_recovery.py. They are found
only through files under run/ that they wrote themselves, never by process name.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from . import process
from .. import runfiles
from ..config import PACKAGE_ROOT, Settings
from ..runfiles import root_process

ROOTS = ("runner", "supervisor", "recovery")
RECOVERY_SCRIPT = PACKAGE_ROOT / "auto_recovery.py"


def is_running(settings: Settings) -> bool:
    return any(root_process(settings, r) for r in ROOTS) or runfiles.lock_held(settings, "supervisor")


@contextmanager
def start_lock(settings: Settings, timeout: float) -> Iterator[None]:
    """Serialises starts and stops: two racing starts run one after the other."""
    fd = runfiles.wait_lock(settings, "start", timeout, poll=0.05)
    if fd is None:
        raise TimeoutError("another start or stop of this bundle is still in progress")
    try:
        yield
    finally:
        os.close(fd)


def stop(settings: Settings, say=print) -> bool:
    """Stop every process of the bundle and leave none behind. True if anything was running."""
    runfiles.mark_stopping(settings)  # relaunchers stand down from here on
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
    for name, pid in runfiles.stop_leftovers(settings, lambda _: grace, process.stop_all):
        say(f"stopped leftover {name} (pid {pid})")
        stopped = True
    return stopped


def ports_busy(settings: Settings) -> str | None:
    """Why the ports this bundle will listen on are not free (another bundle, say), or None."""
    from . import ports

    checks = []
    if settings.component("web") is not None:
        checks.append((settings.host, settings.port, "PORT", "status page"))
    if settings.component("emulator") is not None:
        checks.append(("127.0.0.1", settings.emulator_port, "EMULATOR_PORT", "demo emulator"))
    if settings.telegram_mode == "webhook" and settings.component("bot") is not None:
        checks.append(("0.0.0.0", settings.webhook_port, "WEBHOOK_PORT", "webhook"))  # bot/webhook.py binds all
    return ports.check_all(checks)


def spawn_roots(settings: Settings, follow_us: bool = False) -> tuple[int, int | None]:
    """Start run_24_7.sh and auto_recovery.py, each in its own session, outside our tree.

    follow_us (the foreground start): if this process dies, even by SIGKILL, the runner gets SIGHUP
    (it marks the bundle stopping and stops the supervisor) and auto_recovery SIGTERM.
    """
    import signal

    env = os.environ | {"BOTKEEPER_HOME": str(settings.home), "BOTKEEPER_PYTHON": sys.executable}
    runfiles.clear_stopping(settings)
    logs = settings.logs_dir
    runner = spawn_runner(settings, env, signal.SIGHUP if follow_us else None)
    recovery = None
    if settings.auto_recovery and RECOVERY_SCRIPT.exists():
        recovery = process.spawn_detached([sys.executable, str(RECOVERY_SCRIPT)], env, PACKAGE_ROOT,
                                          logs / "auto_recovery.out", signal.SIGTERM if follow_us else None)
    return runner, recovery


def relaunch_recovery(settings: Settings, spawn_detached=process.spawn_detached) -> int | None:
    """The supervisor's half of "every piece watched by another": auto_recovery.py again when its
    lock is free (it is gone) and nobody is stopping the bundle; its pid, or None."""
    if not settings.auto_recovery or not RECOVERY_SCRIPT.exists() or runfiles.is_stopping(settings):
        return None
    if runfiles.lock_held(settings, "recovery"):
        return None  # alive
    env = os.environ | {"BOTKEEPER_HOME": str(settings.home)}
    return spawn_detached([sys.executable, str(RECOVERY_SCRIPT)], env, settings.home,
                          settings.logs_dir / "auto_recovery.out")


def spawn_runner(settings: Settings, env: dict[str, str] | None = None, parent_death_signal: int | None = None) -> int:
    """Start run_24_7.sh in its own session, outside our tree (start and auto_recovery both do)."""
    env = env or os.environ | {"BOTKEEPER_HOME": str(settings.home), "BOTKEEPER_PYTHON": sys.executable}
    return process.spawn_detached(["bash", str(PACKAGE_ROOT / "run_24_7.sh")], env, PACKAGE_ROOT,
                                  settings.logs_dir / "runner.log", parent_death_signal)
