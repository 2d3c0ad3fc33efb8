"""Shared test helpers: an isolated bundle home per test, env builders, deadline waits.

Tests run real processes; every wait is a condition polled until a deadline, never a bare sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

pytest_plugins = ["botkeeper.testing"]  # the plugin users get with `pip install botkeeper` (chat, telegram_bot)

FAKE_TOKEN = "123456789:AAH-fake-token-for-tests-0123456789"  # shaped like a token, never valid
SAMPLE_HANDLERS = ROOT / "tests" / "sample_handlers.py"  # the tests' own user handlers


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll predicate until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {message} (last value: {last!r})")


def bk_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a bundle in `home` with the test profile (tiny intervals, no alerts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
    env.update({"BOTKEEPER_HOME": str(home), "BOTKEEPER_ENV": "test", "DEMO": "off", "PYTHONUNBUFFERED": "1",
                "AUTO_RECOVERY": "off", "PORT": str(free_port()),
                # The project's tests never load the user's handlers.py (they replace it): a test
                # that wants handlers names its own, e.g. HANDLERS=str(SAMPLE_HANDLERS).
                "HANDLERS": "none",
                "BOTKEEPER_OUTER": "none"})  # this machine has /.dockerenv: tests of the plain layers say so
    env.update(extra)
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_components(home: Path, **components: dict) -> None:
    """botkeeper.toml with [components.NAME] tables; values are TOML-encoded simply."""
    lines = []
    for name, table in components.items():
        lines.append(f"[components.{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {json.dumps(value)}")
    (home / "botkeeper.toml").write_text("\n".join(lines) + "\n")


def py_command(code: str) -> list[str]:
    """A component command running a small Python program."""
    return [sys.executable, "-c", textwrap.dedent(code)]


SLEEPER = py_command("""
    import signal, sys, time
    print("up", flush=True)
    while True:
        time.sleep(3600)
""")


def read_state(home: Path) -> dict:
    try:
        return json.loads((home / "run" / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def component(home: Path, name: str) -> dict:
    return next((c for c in read_state(home).get("components", []) if c["name"] == name), {})


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


class Supervised:
    """A real `python -m botkeeper supervise` in a temp home, stopped at teardown."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home, self.env = home, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Supervised":
        self.proc = subprocess.Popen([sys.executable, "-m", "botkeeper", "supervise"], cwd=ROOT, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:  # generous: a first start compiles every module, and CI machines are busy
            wait_for(lambda: (self.home / "run" / "control.sock").exists() or self.proc.poll() is not None, 30,
                     message="control socket")
        except AssertionError:
            self.proc.kill()
            raise AssertionError(f"no control socket; supervisor said: {self.proc.communicate()[0][-2000:]!r}") from None
        if self.proc.poll() is not None:
            raise AssertionError(f"the supervisor exited {self.proc.returncode}: {self.proc.communicate()[0][-2000:]!r}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def output(self) -> str:
        return self.proc.stdout.read().decode() if self.proc and self.proc.stdout else ""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "bk"
    h.mkdir()
    return h


@pytest.fixture
def supervised(home: Path):
    """Factory: supervised(components={...}, **env) starts a supervisor; all are stopped after."""
    started: list[Supervised] = []

    def make(components: dict | None = None, **env: str) -> Supervised:
        if components is not None:
            write_components(home, **components)
        sup = Supervised(home, bk_env(home, **env)).start()
        started.append(sup)
        return sup

    yield make
    for sup in started:
        sup.stop()
    # Nothing a test started may outlive it.
    state = read_state(home)
    for comp in state.get("components", []):
        if comp.get("pid") and pid_alive(comp["pid"]):
            try:
                os.killpg(comp["pid"], signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def sleepers():
    """Real sleeping processes standing in for components (web tests); ended after the test."""
    from web_helpers import Sleepers

    s = Sleepers()
    yield s
    s.close()


@pytest.fixture
def clock():
    """A settable clock for code that takes one (web tests)."""
    from web_helpers import Clock

    return Clock()
