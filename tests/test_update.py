"""`botkeeper update` against real git repositories in temp dirs: a copy of the project committed into
an "origin" (bare) repository, the bundle home a clone of it, new commits pushed from a second clone.
The bot is the real main.py against the project's emulator."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from botfixtures import FAKE_TOKEN, ask, emulator  # noqa: F401 - fixture
from conftest import ROOT, SLEEPER, bk_env, component, read_state, wait_for

from botkeeper.config import Settings
from botkeeper.supervise.recovery import Recovery
from botkeeper.store import Store

FILES = ("main.py", "keep_alive.py", "bot_monitor.py", "auto_recovery.py", "start_24_7.sh", "run_24_7.sh",
         "requirements.txt", ".gitignore")


def git(cwd: Path, *args: str) -> str:
    res = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.fixture
def repos(tmp_path: Path):
    """(home, dev): the bundle home and a second clone to push new versions from."""
    src = tmp_path / "src"
    src.mkdir()
    for name in FILES:
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "botkeeper", src / "botkeeper", ignore=shutil.ignore_patterns("__pycache__"))
    git(src, "init", "-q", "-b", "main")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "v1")
    git(tmp_path, "clone", "-q", "--bare", str(src), "origin.git")
    git(tmp_path, "clone", "-q", "origin.git", "home")
    git(tmp_path, "clone", "-q", "origin.git", "dev")
    return tmp_path / "home", tmp_path / "dev"


def push(dev: Path, path: str, text: str, message: str) -> str:
    (dev / path).write_text(text)
    git(dev, "commit", "-q", "-am", message)
    git(dev, "push", "-q", "origin", "main")
    return git(dev, "rev-parse", "--short", "HEAD")


class Bundle:
    """A supervisor run from the home's own copy of the code (as a checkout runs), stopped at the end."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home, self.env = home, env
        self.proc = subprocess.Popen([sys.executable, "-m", "botkeeper", "supervise"], cwd=home, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: (home / "run" / "control.sock").exists(), 10, message="control socket")

    def update(self) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "botkeeper", "update"], cwd=self.home, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def bundles():
    started: list[Bundle] = []

    def make(home: Path, env: dict[str, str]) -> Bundle:
        started.append(Bundle(home, env))
        return started[-1]

    yield make
    for b in started:
        b.stop()


def events(home: Path, kind: str) -> list[dict]:
    store = Store(home / "data" / "history.db", readonly=True)
    try:
        return [e for e in store.events(kinds=(kind,), limit=1000)]
    finally:
        store.close()


def test_a_dirty_tree_or_a_non_fast_forward_is_refused_and_nothing_changes(repos, bundles):
    home, dev = repos
    (home / "botkeeper.toml").write_text("[components.bot]\ncommand = " + json.dumps(SLEEPER) + "\nheartbeat = false\n"
                                         "[components.web]\nenabled = false\n[components.monitor]\nenabled = false\n")
    b = bundles(home, bk_env(home))
    pid = wait_for(lambda: component(home, "bot").get("pid"), 10, message="the bot")
    before = git(home, "rev-parse", "HEAD")
    assert read_state(home)["supervisor"]["version"] == before[:7]
    push(dev, "main.py", "raise SystemExit(3)\n", "v2")

    (home / "main.py").write_text((home / "main.py").read_text() + "# a local edit\n")
    res = b.update()
    assert res.returncode == 4 and "refused (dirty-tree)" in res.stdout and "main.py" in res.stdout, res.stdout + res.stderr
    assert git(home, "rev-parse", "HEAD") == before and "# a local edit" in (home / "main.py").read_text()

    git(home, "checkout", "-q", "main.py")
    (home / "NOTES.md").write_text("local\n")
    git(home, "add", "NOTES.md")
    git(home, "commit", "-q", "-m", "a local commit")
    local = git(home, "rev-parse", "HEAD")
    res = b.update()
    assert res.returncode == 4 and "refused (non-fast-forward)" in res.stdout, res.stdout + res.stderr
    assert git(home, "rev-parse", "HEAD") == local
    assert component(home, "bot")["pid"] == pid and not events(home, "deploy")


def test_a_good_update_is_kept_and_a_bad_one_rolled_back_with_one_alert(repos, bundles, emulator, capsys,  # noqa: F811
                                                                        monkeypatch):  # noqa: F811
    home, dev = repos
    (home / "botkeeper.toml").write_text("[components.web]\nenabled = false\n")
    # HEALTH_GRACE long: a crash the rollback repairs within it is no incident alert of its own.
    env = bk_env(home, TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, UPDATE_HEALTH_TIMEOUT="30",
                 HEALTH_GRACE="30")
    b = bundles(home, env)
    ask(emulator, "/ping", "round-trip", timeout=30)
    v1 = git(home, "rev-parse", "--short", "HEAD")

    # A good update, through the trigger file as auto_recovery runs it: kept, the version shown.
    v2 = push(dev, "main.py", (home / "main.py").read_text() + "# v2\n", "v2")
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # what auto_recovery's environment would be
    recovery = Recovery(Settings.from_env(env, home=home))
    t0 = time.monotonic()
    (home / "run" / "update.trigger").touch()
    assert recovery.check_update_trigger() == ["update"] and not (home / "run" / "update.trigger").exists()
    log = home / "logs" / "update.log"
    wait_for(lambda: log.exists() and f"updated to {v2}" in log.read_text(), 60, message="the triggered update")
    good = time.monotonic() - t0
    assert git(home, "rev-parse", "--short", "HEAD") == v2 and read_state(home)["supervisor"]["version"] == v2
    ask(emulator, "/ping", "round-trip", timeout=30)

    # A bad one: the bot crashes at import. Rolled back, and the bot answers again.
    v3 = push(dev, "main.py", "import no_such_module_for_botkeeper_tests\n" + (dev / "main.py").read_text(), "v3")
    t0 = time.monotonic()
    res = b.update()
    assert res.returncode == 1 and f"rolled back to {v2}: healthy again" in res.stdout, res.stdout + res.stderr
    ask(emulator, "/ping", "round-trip", timeout=30)
    bad = time.monotonic() - t0
    assert git(home, "rev-parse", "--short", "HEAD") == v2 and read_state(home)["supervisor"]["version"] == v2

    deploys, rollbacks = events(home, "deploy"), events(home, "rollback")
    assert [e["cause"] for e in deploys] == ["deploy", "deploy"] and f"{v2} -> {v3}" in deploys[0]["detail"]
    assert len(rollbacks) == 1 and rollbacks[0]["cause"] == "rollback"
    assert rollbacks[0]["detail"].startswith(f"update to {v3} rolled back: crash")
    # One alert (ALERTS=off in the test profile: the history says it was not sent, and why).
    alerts = wait_for(lambda: events(home, "alert-not-sent"), 15, message="the rollback alert")
    assert len(alerts) == 1 and alerts[0]["cause"] == "rollback" and f"update to {v3} rolled back" in alerts[0]["detail"]
    with capsys.disabled():
        print(f"\n  trigger file to a healthy new bot: {good:.2f} s;"
              f" bad update to the rolled-back bot answering: {bad:.2f} s")
    assert v1 != v2


def test_an_update_of_botkeepers_own_code_re_executes_the_supervisor_and_restarts_the_bot_once(repos, bundles):
    home, dev = repos
    (home / "botkeeper.toml").write_text("[components.bot]\ncommand = " + json.dumps(SLEEPER) + "\nheartbeat = false\n"
                                         "[components.web]\nenabled = false\n[components.monitor]\nenabled = false\n")
    b = bundles(home, bk_env(home, UPDATE_HEALTH_TIMEOUT="30"))
    first_bot = wait_for(lambda: component(home, "bot").get("pid"), 10, message="the bot")
    started = read_state(home)["supervisor"]["started_at"]
    v2 = push(dev, "botkeeper/fmt.py", (dev / "botkeeper" / "fmt.py").read_text() + "\nUPDATED_MARK = 2\n", "v2")
    res = b.update()
    assert res.returncode == 0 and "re-executes" in res.stdout and f"updated to {v2}" in res.stdout, \
        res.stdout + res.stderr
    state = read_state(home)
    assert state["supervisor"]["pid"] == b.proc.pid and b.proc.poll() is None  # the same process, exec'd
    assert state["supervisor"]["started_at"] != started and state["supervisor"]["version"] == v2
    bot = component(home, "bot")
    assert bot["pid"] != first_bot and bot["restarts"] == 0  # one new bot, no second restart
    log = (home / "logs" / "supervisor.log").read_text()
    assert log.count("bot started") == 2, log  # the first supervisor's bot, then the re-executed one's
