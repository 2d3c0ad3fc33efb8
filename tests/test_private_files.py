"""Private by default on a shared machine: the real supervisor in a home other users can walk to;
a second local user (created here when the tests run as root) tries to read the logs and databases
and to take the bundle's locks, and cannot."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from botkeeper.fsutil import make_private
from conftest import wait_for

PROBE = r"""
import fcntl, json, os, sys
home = sys.argv[1]
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except OSError as exc:
        out[name] = type(exc).__name__
def read(rel):
    with open(os.path.join(home, rel), "rb") as fh:
        fh.read(1)
for rel in ("logs/bot.log", "logs/supervisor.log", "data/history.db", "data/outbox.db", ".env"):
    attempt("read " + rel, lambda rel=rel: read(rel))
for name in ("supervisor", "runner", "start"):
    def lock(name=name):
        fd = os.open(os.path.join(home, "run", name + ".lock"), os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    attempt("lock " + name, lock)
attempt("list run", lambda: os.listdir(os.path.join(home, "run")))
print(json.dumps(out))
"""


@pytest.fixture
def home():
    """A bundle home under a directory everyone may walk through (pytest's own tmp is 0700, which
    would hide everything and prove nothing)."""
    top = Path(tempfile.mkdtemp(prefix="bk-private-", dir="/tmp"))
    top.chmod(0o755)
    h = top / "bk"
    h.mkdir(mode=0o755)
    h.chmod(0o755)
    yield h
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def stranger():
    """uid/gid of a throwaway local user, removed after the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second local user (useradd) and act as it (setpriv)")
    if not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("useradd/setpriv are not installed")
    name = f"bk24{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        import pwd

        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], check=False)


def as_user(uid: int, gid: int, home: Path) -> dict:
    out = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3",
                          "-c", PROBE, str(home)], capture_output=True, text=True, timeout=30, cwd="/")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def legacy_files(home: Path) -> None:
    """What an earlier version (umask 022) left: world-readable logs, databases and locks."""
    for rel in ("logs/bot.log", "data/outbox.db", "run/supervisor.lock", "run/start.lock"):
        path = home / rel
        path.parent.mkdir(mode=0o755, exist_ok=True)
        path.parent.chmod(0o755)
        path.write_text("user message: my one-time code is 123456\n")
        path.chmod(0o644)
    (home / ".env").write_text("RESTART_TOKEN=a-long-restart-token-value\n")
    (home / ".env").chmod(0o644)


def test_a_second_user_can_read_nothing_and_lock_nothing(home, supervised, stranger):
    legacy_files(home)
    uid, gid = stranger
    before = as_user(uid, gid, home)
    assert before["read logs/bot.log"] == "allowed"  # the probe works: the old files were readable
    sup = supervised(components={"web": {"enabled": False}, "monitor": {"enabled": False}})
    wait_for(lambda: (home / "data" / "history.db").exists() and (home / "logs" / "supervisor.log").exists(), 15,
             message="the supervisor's files")
    after = as_user(uid, gid, home)
    assert {k: v for k, v in after.items() if k != "read .env"} == {
        k: "PermissionError" for k in after if k != "read .env"}, after
    # Every file and directory the bundle has is the owner's alone; the notice said so once.
    for top in ("run", "logs", "data"):
        for path in [home / top, *(home / top).rglob("*")]:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode):
                assert mode & 0o077 == 0, f"{path} is {oct(mode & 0o777)}"
    sup.stop()
    text = (home / "logs" / "supervisor.log").read_text()
    assert text.count("private files:") == 1, text


def test_doctor_names_a_readable_env_and_the_chmod_that_fixes_it(home):
    (home / ".env").write_text("RESTART_TOKEN=a-long-restart-token-value\n")
    (home / ".env").chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
    env |= {"BOTKEEPER_HOME": str(home), "BOTKEEPER_OUTER": "none", "DEMO": "on"}
    out = subprocess.run([sys.executable, "-m", "botkeeper", "doctor"], capture_output=True, text=True, env=env,
                         timeout=60)
    text = out.stdout + out.stderr
    assert f"chmod 600 {home / '.env'}" in text, text
    (home / ".env").chmod(0o600)
    out = subprocess.run([sys.executable, "-m", "botkeeper", "doctor"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert "chmod 600" not in out.stdout + out.stderr


def test_make_private_leaves_links_and_others_files_alone(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    (tmp_path / "d" / "f").chmod(0o644)
    outside = tmp_path / "outside"
    outside.write_text("y")
    outside.chmod(0o644)
    (tmp_path / "d" / "link").symlink_to(outside)
    changed = make_private(tmp_path / "d")
    assert (tmp_path / "d" / "f").stat().st_mode & 0o777 == 0o600
    assert outside.stat().st_mode & 0o777 == 0o644  # the link's target is not ours to change
    assert set(changed) >= {tmp_path / "d" / "f"}
