"""Packaging: `pip install .` into a fresh virtual environment gives a working `botkeeper` command
that finds its bundle from any directory; its dependencies are requirements.txt's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import ROOT, SLEEPER, bk_env, component, supervised, wait_for  # noqa: F401

import botkeeper


def normalized(requirement: str) -> tuple[str, list[str]]:
    """`name[extra]>=1,<2` and `name[extra]<2,>=1` are the same requirement."""
    name = re.match(r"[A-Za-z0-9_.\-\[\]]+", requirement).group()
    return name.lower(), sorted(part.strip() for part in requirement[len(name):].split(","))


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_pip_install_gives_a_working_botkeeper_command(tmp_path, supervised, home):
    # The sources only (building in the worktree would leave build/ and *.egg-info behind).
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "botkeeper", src / "botkeeper", ignore=shutil.ignore_patterns("__pycache__"))
    # A fresh venv; its .pth reaches this interpreter's packages for the dependencies (offline, fast).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTKEEPER_", "PYTHON", "TELEGRAM_", "DEMO"))}
    res = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
               "--no-index", str(src)], tmp_path, env, timeout=170)
    assert res.returncode == 0, res.stdout + res.stderr
    shutil.rmtree(src)  # the installed copy must stand on its own

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = str(venv / "bin" / "botkeeper")
    res = run([cli, "--version"], elsewhere, env)
    assert res.returncode == 0 and res.stdout.strip() == f"botkeeper {botkeeper.__version__}", res.stderr
    res = run([str(venv / "bin" / "python"), "-c", "import botkeeper, botkeeper.web; print(botkeeper.__file__)"],
              elsewhere, env)
    assert res.stdout.startswith(str(venv)), res.stdout + res.stderr  # the installed copy, not the checkout
    templates = next(venv.glob("lib/python*/site-packages/botkeeper/web/templates/index.html"))
    assert templates.is_file()  # package data shipped
    res = run([str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(*m.requires('botkeeper'), sep=chr(10))"],
              elsewhere, env)
    wanted = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert sorted(map(normalized, res.stdout.split())) == sorted(normalized(w) for w in wanted if w)

    # The installed pytest plugin: by its entry point alone, then also named in a conftest.py (no clash).
    shutil.copytree(ROOT / "examples" / "ptb_bot", elsewhere / "ptb_bot", ignore=shutil.ignore_patterns("__pycache__"))
    (elsewhere / "pytest.ini").write_text("[pytest]\n")
    for conftest in ("", 'pytest_plugins = ["botkeeper.testing"]\n'):
        (elsewhere / "conftest.py").write_text(conftest)
        res = run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--basetemp={tmp_path / 'bt'}", "ptb_bot"], elsewhere, env, timeout=120)
        assert res.returncode == 0 and "3 passed" in res.stdout, res.stdout[-3000:] + res.stderr[-2000:]
    (elsewhere / "conftest.py").unlink()

    # A running bundle, asked from a subdirectory (nearest parent holding the bundle) and via --home.
    supervised(components={"bot": {"command": SLEEPER, "heartbeat": False},
                           "web": {"enabled": False}, "monitor": {"enabled": False}})
    pid = wait_for(lambda: component(home, "bot").get("pid"), 10, message="the bot running")
    deep = home / "mybot" / "src"
    deep.mkdir(parents=True)
    for cwd, args in ((deep, ["status"]), (elsewhere, ["--home", str(home), "status"])):
        res = run([cli, *args], cwd, env)
        assert str(pid) in res.stdout and "running" in res.stdout, (cwd, res.stdout, res.stderr)
    res = run([cli, "status"], elsewhere, env)  # no bundle here or above: says so, exit 3
    assert res.returncode == 3 and f"not running in {elsewhere}" in res.stderr


def test_cli_home_option_and_version(tmp_path):
    env = bk_env(tmp_path)
    res = run([sys.executable, "-m", "botkeeper", "--version"], ROOT, env)
    assert res.stdout.strip() == f"botkeeper {botkeeper.__version__}"
    res = run([sys.executable, "-m", "botkeeper", "--home", str(tmp_path / "nope"), "status"], ROOT, env)
    assert res.returncode == 78 and "--home" in res.stderr and "existing directory" in res.stderr
