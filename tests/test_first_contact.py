"""A new user's first contact (issue 26): the README's first command, verbatim, in a fresh copy of the
project under a PEP 668 python3 with no virtual environment active (Debian 12 / Ubuntu 24.04's),
reaches /ping; the test command is the line .ci/run runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from conftest import ROOT, component, free_port, wait_for

SYSTEM_PYTHON = Path("/usr/bin/python3")


def readme_line(marker: str) -> str:
    """The README command on the line ending in `# marker`, as .ci/run extracts it."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if re.search(rf"#\s*{re.escape(marker)}$", line):
            return line.split("#", 1)[0].strip()
    raise AssertionError(f"README.md has no line ending in '# {marker}'")


def pep668_reason() -> str | None:
    """Why this machine cannot run the test (None: /usr/bin/python3 is externally managed, has venv)."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} does not exist"
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sysconfig, pathlib, venv, ensurepip;"
                            "print(pathlib.Path(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED').exists())"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} has no venv/ensurepip (python3-venv is not installed)"
    if probe.stdout.strip() != "True":
        return f"{SYSTEM_PYTHON} is not externally managed (PEP 668)"
    return None


def fresh_copy(dest: Path) -> Path:
    """The project's files as a clone has them (tracked and new, never ignored ones such as .venv)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True, timeout=30).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_readme_lines_need_no_python_alias_and_ci_runs_the_test_line():
    start, tests = readme_line("install and start (no token = offline demo)"), readme_line("run the tests")
    assert start == "bash start_24_7.sh" and tests == "bash run_tests.sh"
    for line in (start, tests):
        assert not re.search(r"(^|[\s;&|])(python|pip)\s", line), line  # PEP 668 / no alias: scripts decide
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 -E '# run the tests$' README.md" in ci and 'eval "$test_command"' in ci
    assert "pip install" not in ci  # the README line installs, once


@pytest.mark.skipif(pep668_reason() is not None, reason=pep668_reason() or "")
def test_readme_start_line_verbatim_under_pep668_python_reaches_ping(tmp_path):
    clone = fresh_copy(tmp_path / "botkeeper")
    port, emulator = free_port(), free_port()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(SYSTEM_PYTHON)  # the only python3 on PATH; no `python`, no pip
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
            "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_CACHE_DIR", "PIP_CONFIG_FILE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({"PATH": f"{bindir}:/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "BOTKEEPER_ENV": "test",
                "PORT": str(port), "EMULATOR_PORT": str(emulator), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen(["bash", "-c", readme_line("install and start (no token = offline demo)")], cwd=clone,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()

    def pong():
        if proc.poll() is not None:
            raise AssertionError("the start ended:\n" + "".join(lines[-40:]))
        try:
            return requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).text == "pong"
        except requests.RequestException:
            return False

    try:
        wait_for(pong, 150, 0.2, "/ping from the bundle started by the README's line")
        venv_python = clone / ".venv" / "bin" / "python"
        assert venv_python.exists(), "".join(lines)
        assert any("creating a virtual environment in .venv" in line for line in lines)
        assert any("status      : .venv/bin/python -m botkeeper status" in line for line in lines)  # no `python` here
        ran = subprocess.run([str(venv_python), "-c", "import sys; print(sys.base_prefix)"], capture_output=True,
                             text=True, timeout=30).stdout.strip()
        assert ran == subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.prefix)"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
        assert wait_for(lambda: any("botkeeper: healthy" in line for line in lines) or proc.poll() is not None, 60,
                        0.2, "the healthy banner") and proc.poll() is None, "".join(lines[-40:])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl+C: the foreground start stops everything
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        stop = clone / "stop_24_7.sh"  # whatever is left (a failed assertion above): stopped by PID files
        subprocess.run(["bash", str(stop)], cwd=clone, env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, "".join(lines[-40:])
    assert any("botkeeper: stopped" in line for line in lines)


def bk(home, *args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "botkeeper", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_demo_foreground_streams_only_this_run_and_ctrl_c_stops_the_bot_before_its_emulator(home):
    from conftest import bk_env

    (home / "logs").mkdir()
    (home / "logs" / "combined.log").write_text("12:00:00 bot       | OLD-LINE-OF-AN-EARLIER-RUN\n" * 50)
    env = bk_env(home, DEMO="on", EMULATOR_PORT=str(free_port()), HOST="127.0.0.1", DEMO_INTERVAL="0.3")
    proc = subprocess.Popen([sys.executable, "-m", "botkeeper", "start"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        wait_for(lambda: any("botkeeper: healthy" in line for line in lines) or proc.poll() is not None, 60, 0.1,
                 "the healthy banner")
        wait_for(lambda: any("polling Telegram for updates" in line for line in lines), 10, 0.1, "this run's lines")
        assert not any("OLD-LINE-OF-AN-EARLIER-RUN" in line for line in lines)
        base = f"http://127.0.0.1:{env['PORT']}"

        def conversation():
            chat = requests.get(base + "/api/status", timeout=5).json()["data"]["demo_chat"]
            return {m["from"] for m in chat} == {"user", "bot"} and chat
        chat = wait_for(conversation, 20, 0.2, "the demo conversation on the page's data")
        assert any(m["from"] == "bot" and "pong" in m["text"].lower() for m in chat), chat
        page = requests.get(base + "/", timeout=5).text
        assert "Demo conversation" in page and "demo user" in page
        assert '<h1 id="state-word">healthy</h1>' in page  # the headline is the health, not "demo"
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        assert proc.wait(30) == 0, "".join(lines[-30:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        bk(home, "stop", env=env)
    supervisor = (home / "logs" / "supervisor.log").read_text()
    assert supervisor.index("bot stopped") < supervisor.index("emulator stopping"), supervisor[-2000:]
    bot_log = (home / "logs" / "bot.log").read_text()
    assert "Traceback" not in bot_log and "bot stopped" in bot_log, bot_log[-3000:]
    errors = bk(home, "errors", "--json", env=env)
    assert errors.returncode == 0 and "NetworkError" not in errors.stdout


def test_status_exit_codes_hold_in_a_crash_loop(home, supervised):
    from conftest import bk_env, py_command

    env = bk_env(home)
    assert bk(home, "status", env=env).returncode == 3  # not running
    crash = py_command("import sys; print('boom', flush=True); sys.exit(1)")
    supervised(components={"bot": {"command": crash}, "web": {"enabled": False}, "monitor": {"enabled": False}})
    wait_for(lambda: component(home, "bot").get("restarts", 0) >= 2, 20, 0.1, "a crash loop")
    table = bk(home, "status", env=env)
    assert table.returncode == 1, table.stdout  # never 0 while the table says it is not healthy
    assert "overall: HEALTHY" not in table.stdout
    as_json = bk(home, "status", "--json", env=env)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["healthy"] is False


def test_dockerignore_keeps_secrets_out_and_the_settings_in():
    lines = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert {".env", ".venv", "run", "data", "logs"} <= lines
    assert "botkeeper.toml" not in lines  # settings and components (no secrets): the image runs what it says


def test_detach_on_a_crash_loop_returns_early_and_says_the_bundle_keeps_retrying(home):
    from conftest import bk_env, py_command, write_components

    write_components(home, bot={"command": py_command("import sys; sys.exit(1)")}, web={"enabled": False},
                     monitor={"enabled": False})
    env = bk_env(home, START_TIMEOUT="60")
    try:
        res = bk(home, "start", "--detach", env=env, timeout=90)
        assert res.returncode == 1 and "crash-loop" in res.stderr, res.stderr
        assert "keeps running and retrying" in res.stderr and "stop_24_7.sh" in res.stderr
        assert "not healthy after 60 s" not in res.stderr  # named well before START_TIMEOUT
        assert bk(home, "status", env=env).returncode == 1  # and it is still there, as it said
    finally:
        bk(home, "stop", env=env)
