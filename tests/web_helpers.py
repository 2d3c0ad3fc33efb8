"""Helpers for the web tests: a bundle home with a real state.json / heartbeat written by hand.

The "processes" in the state are real sleeping children, so the supervisor-liveness check and the
psutil numbers run for real; nothing in botkeeper is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from botkeeper import runfiles
from botkeeper.config import Settings
from botkeeper.fsutil import atomic_write

TOKEN = "test-restart-token-0123456789abcdef"


class Clock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, now: float | None = None):
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleepers:
    """Real child processes that stand in for the supervisor and the components."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def spawn(self) -> tuple[int, float]:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.procs.append(proc)
        return proc.pid, psutil.Process(proc.pid).create_time()

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(5)


def settings_for(home: Path, **env: str) -> Settings:
    base = {"BOTKEEPER_ENV": "test", "DEMO": "off"}
    return Settings.from_env(base | env, home=home)


def component(name: str, pid_ct: tuple[int, float] | None, now: float, state: str = "running",
              started_ago: float = 50.0, restarts: int = 0, **extra) -> dict:
    pid, ct = pid_ct or (None, None)
    return {
        "name": name, "state": state, "pid": pid, "create_time": ct,
        "started_at": now - started_ago, "restarts": restarts, "last_exit_code": None,
        "last_exit_signal": None, "last_exit": None, "last_exit_at": None,
        "last_restart_reason": None, "last_restart_at": None, "next_start_at": None,
        "heartbeat": name == "bot", "command": ["python", f"{name}.py"],
    } | extra


def write_state(settings: Settings, supervisor: tuple[int, float], components: list[dict], now: float,
                restarts: list[dict] | None = None) -> dict:
    state = {
        "version": 1, "updated_at": now,
        "supervisor": {"pid": supervisor[0], "create_time": supervisor[1], "started_at": now - 100,
                       "demo": settings.demo_active, "home": str(settings.home)},
        "components": components,
        "recent_restarts": restarts or [],
    }
    atomic_write(settings.state_file, json.dumps(state))
    # The supervisor's own PID file is what proves it alive (run/supervisor.pid, as it writes it).
    atomic_write(runfiles.pidfile(settings, "supervisor"), json.dumps({"pid": supervisor[0],
                                                                        "create_time": supervisor[1]}))
    return state


def write_heartbeat(settings: Settings, now: float, **fields) -> dict:
    """A beat from the current bot process (the pid state.json names), as the real bot writes it."""
    try:
        state = json.loads(settings.state_file.read_text())
        pid = next(c["pid"] for c in state["components"] if c["name"] == "bot")
    except (OSError, ValueError, KeyError, StopIteration):
        pid = os.getpid()
    beat = {"pid": pid, "written_at": now, "started_at": now - 50, "last_poll_at": now - 1,
            "updates_handled": 7, "state": "polling", "unreachable_since": None, "detail": ""} | fields
    atomic_write(settings.heartbeat_file, json.dumps(beat))
    return beat


def healthy_bundle(settings: Settings, sleepers: Sleepers, now: float, restarts: list[dict] | None = None) -> dict:
    """state.json + heartbeat for a bundle where everything is fine; returns the state."""
    sup, bot, mon = sleepers.spawn(), sleepers.spawn(), sleepers.spawn()
    me = (os.getpid(), psutil.Process().create_time())
    comps = [component("bot", bot, now, restarts=len(restarts or [])), component("web", me, now),
             component("monitor", mon, now)]
    state = write_state(settings, sup, comps, now, restarts)
    write_heartbeat(settings, now)
    return state
