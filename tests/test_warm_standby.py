"""Warm standby (WARM_STANDBY=auto): the fork server keeps a bot warm, the supervisor starts every
bot from it when it is up and cold otherwise. Real supervisor, real fork server, real bots against
the emulator."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from botfixtures import *  # noqa: F401,F403
from botfixtures import FAKE_TOKEN, ask, emulator, heartbeat_of, wait_for  # noqa: F401
from conftest import bk_env, component, read_state, write_components

from botkeeper.bot import forkserver
from botkeeper.supervise import importscan, warm
from botkeeper.config import Settings

HANDLERS = '''
import os
from telegram.ext import CommandHandler

async def version(update, context):
    await update.effective_message.reply_text("handlers {version}")

async def env(update, context):  # what the bot itself sees (/proc/PID/environ shows the fork server's)
    await update.effective_message.reply_text(
        "env " + os.environ.get("BOTKEEPER_COMPONENT", "-") + " " + os.environ.get("BOTKEEPER_EXIT_NOTE", "-"))

def register(application):
    application.add_handler(CommandHandler("version", version))
    application.add_handler(CommandHandler("env", env))
'''


def write_handlers(home: Path, version: str) -> None:
    path = home / "my_handlers.py"
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(HANDLERS.replace("{version}", version))
    if path.stat().st_mtime_ns == old:  # a coarse clock: make the edit visible
        os.utime(path, ns=(old + 1_000_000, old + 1_000_000))


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode()


def warm_started(pid: int) -> bool:
    """A forked bot still shows the fork server's command line; a cold one runs main.py."""
    return "forkserver.py" in cmdline(pid)


def stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as fh:
        text = fh.read()
    return text[text.rfind(")") + 2:].split()  # state ppid pgrp session ...


def fork_server_ready(home: Path, times: int = 1) -> bool:
    """The fork server said "ready" `times` times in its log (once per start)."""
    try:
        return (home / "logs" / "forkserver.log").read_text().count("ready:") >= times
    except OSError:
        return False


def healthy_bot(home: Path, after_pid: int | None = None) -> dict:
    """The bot polling with its own heartbeat (a new pid when `after_pid` is given)."""
    def check():
        bot = component(home, "bot")
        beat = heartbeat_of(home)
        return (bot.get("pid") and bot["pid"] != after_pid and beat.get("pid") == bot["pid"]
                and beat.get("last_poll_at") and bot)
    return wait_for(check, 20, message="a polling bot with its own heartbeat")


@pytest.fixture
def warm_bundle(supervised, emulator, home):
    write_components(home, web={"enabled": False}, monitor={"enabled": False})
    write_handlers(home, "v1")

    def start(**env: str):
        return supervised(TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, WARM_STANDBY="auto",
                          HANDLERS="my_handlers.py", MIN_UPTIME="0.3", **env)
    return start


def kill_bot(home: Path) -> int:
    pid = component(home, "bot")["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


def test_warm_started_bot_is_a_normal_component(warm_bundle, emulator, home):
    sup = warm_bundle()
    first = healthy_bot(home)
    assert not warm_started(first["pid"])  # the first start is cold: the fork server was still loading
    wait_for(lambda: fork_server_ready(home), 20, message="the fork server ready")
    old = kill_bot(home)
    bot = healthy_bot(home, after_pid=old)
    pid = bot["pid"]
    assert warm_started(pid)
    assert ask(emulator, "/ping", "pong", chat_id=1)
    assert ask(emulator, "/version", "handlers v1", chat_id=2)  # the user's handlers, preloaded
    assert heartbeat_of(home)["pid"] == pid  # its own heartbeat, not the fork server's
    state, ppid, pgrp, session = stat_fields(pid)[:4]
    assert int(ppid) == sup.proc.pid  # adopted by the supervisor (a subreaper), which reaps it
    assert int(pgrp) == pid and int(session) == pid  # its own session and process group
    assert ask(emulator, "/env", "env bot ", chat_id=8)["text"].endswith("exit-note.bot.json")
    # Its output reaches the supervisor's pipe, so logs/bot.log.
    wait_for(lambda: f"pid {pid}" in (home / "logs" / "supervisor.log").read_text(), 5, message="restart logged")
    # Its exit is reaped by the supervisor like a cold bot's: the next start sees the exit.
    kill_bot(home)
    again = healthy_bot(home, after_pid=pid)
    assert component(home, "bot")["last_exit"] == "killed by SIGKILL" and again["restarts"] == 2
    assert not os.path.exists(f"/proc/{pid}")  # no zombie left behind


def test_changed_handlers_are_picked_up_by_the_next_start(warm_bundle, emulator, home):
    warm_bundle()
    healthy_bot(home)
    wait_for(lambda: fork_server_ready(home), 20, message="the fork server ready")
    server = component(home, "forkserver")
    write_handlers(home, "v2")
    old = kill_bot(home)
    bot = healthy_bot(home, after_pid=old)
    assert not warm_started(bot["pid"])  # the fork server holds v1: this start is cold
    assert ask(emulator, "/version", "handlers v2", chat_id=3)
    # ...and the fork server is restarted to load v2 (cause: deploy), then forks v2 bots.
    restarted = wait_for(lambda: (c := component(home, "forkserver")).get("pid") not in (None, server["pid"]) and c,
                         10, message="the fork server restarted")
    assert restarted["restarts"] == 1 and restarted["last_restart_reason"].endswith("changed since the fork server loaded it")
    wait_for(lambda: fork_server_ready(home, 2), 20, message="the fork server ready again")
    old = kill_bot(home)
    bot = healthy_bot(home, after_pid=old)
    assert warm_started(bot["pid"])
    assert ask(emulator, "/version", "handlers v2", chat_id=4)


def test_killed_fork_server_means_cold_starts_until_it_is_back(warm_bundle, emulator, home):
    warm_bundle()
    healthy_bot(home)
    wait_for(lambda: fork_server_ready(home), 20, message="the fork server ready")
    server = component(home, "forkserver")["pid"]
    os.kill(server, signal.SIGKILL)
    old = kill_bot(home)
    bot = healthy_bot(home, after_pid=old)
    assert not warm_started(bot["pid"])
    assert ask(emulator, "/ping", "pong", chat_id=5)
    restarted = wait_for(lambda: (c := component(home, "forkserver")).get("pid") not in (None, server) and c, 10,
                         message="the fork server restarted")
    assert restarted["restarts"] == 1 and restarted["last_exit"] == "killed by SIGKILL"
    wait_for(lambda: fork_server_ready(home, 2), 20, message="the fork server ready again")
    old = kill_bot(home)
    assert warm_started(healthy_bot(home, after_pid=old)["pid"])
    assert ask(emulator, "/ping", "pong", chat_id=6)


def test_attach_based_module_bot_is_warm_started(supervised, emulator, home):
    """A bot of its own (examples/ptb_bot: ApplicationBuilder + botkeeper.attach) run as `-m coffee`:
    forked by the fork server with python-telegram-bot preloaded, its module run fresh in the fork."""
    write_components(home, web={"enabled": False}, monitor={"enabled": False})
    (home / "coffee.py").write_text((Path(__file__).parent.parent / "examples" / "ptb_bot" / "bot.py").read_text())
    supervised(TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, WARM_STANDBY="auto",
               MIN_UPTIME="0.3", BOT_COMMAND=f"{sys.executable} -m coffee")
    def polling_bot(after_pid: int | None = None) -> dict:  # an attached bot's heartbeat has no poll times
        return wait_for(lambda: (b := component(home, "bot")).get("pid") not in (None, after_pid)
                        and heartbeat_of(home).get("pid") == b["pid"] and heartbeat_of(home).get("state") == "polling"
                        and b, 20, message="the attached bot polling")
    first = polling_bot()
    wait_for(lambda: fork_server_ready(home), 20, message="the fork server ready")
    os.kill(first["pid"], signal.SIGKILL)
    bot = polling_bot(after_pid=first["pid"])
    assert warm_started(bot["pid"])
    assert ask(emulator, "/price", "2.50 EUR", chat_id=9)  # its own handler
    assert ask(emulator, "/ping", "pong", chat_id=10)  # attach()'s


def test_warm_standby_off_is_todays_behaviour(supervised, emulator, home):
    write_components(home, web={"enabled": False}, monitor={"enabled": False})
    supervised(TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, WARM_STANDBY="off",
               MIN_UPTIME="0.3")
    first = healthy_bot(home)
    assert [c["name"] for c in read_state(home)["components"]] == ["bot"]
    os.kill(first["pid"], signal.SIGKILL)
    bot = healthy_bot(home, after_pid=first["pid"])
    assert not warm_started(bot["pid"]) and "main.py" in cmdline(bot["pid"])
    assert ask(emulator, "/ping", "pong", chat_id=7)


# --- which bots can be warm, and when the fork server's code is stale (no processes) -------------------
def test_only_our_interpreter_running_a_script_or_module_is_warm_capable(tmp_path):
    py = sys.executable
    assert warm.python_argv([py, "main.py"], py) == ["main.py"]
    assert warm.python_argv([py, "-m", "mybot", "--x"], py) == ["-m", "mybot", "--x"]
    assert warm.python_argv([py, "-u", "bot.py"], py) is None  # interpreter options: cold
    assert warm.python_argv(["node", "bot.js"], py) is None
    assert warm.python_argv(["/usr/bin/python3-other", "bot.py"], py) is None  # another interpreter
    assert warm.python_argv([py], py) is None


def test_fork_server_component_only_where_it_helps(home):
    names = lambda **env: [c.name for c in Settings.from_env(bk_env(home, **env), home=home).components]  # noqa: E731
    assert "forkserver" in names(WARM_STANDBY="auto")
    assert "forkserver" not in names(WARM_STANDBY="off")
    assert "forkserver" not in names()  # the test profile: off unless asked for
    assert "forkserver" not in names(WARM_STANDBY="auto", BOT_COMMAND="/bin/sleep 100")
    (home / "mybot.py").write_text("import botkeeper\nbotkeeper.attach(application)\n")
    assert "forkserver" in names(WARM_STANDBY="auto", BOT_COMMAND=f"{sys.executable} -m mybot")
    (home / "plainbot.py").write_text("import asyncio\nfrom botkeeper import heartbeat\n")
    assert "forkserver" not in names(WARM_STANDBY="auto", BOT_COMMAND=f"{sys.executable} plainbot.py")


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("files, argv, expected", [
    ({"bot.py": "from telegram.ext import Application\n"}, ["bot.py"], True),
    ({"bot.py": "import asyncio, json\n"}, ["bot.py"], False),
    ({"bot.py": "def main():\n    import telegram\n"}, ["bot.py"], True),  # an import inside a function
    # its own modules are followed: bot -> helpers -> telegram
    ({"bot.py": "import helpers\n", "helpers.py": "from telegram import Update\n"}, ["bot.py"], True),
    ({"bot.py": "from lib import tools\n", "lib/__init__.py": "", "lib/tools.py": "import telegram.ext\n"},
     ["bot.py"], True),
    # -m package: its __main__, relative imports from there
    ({"mybot/__init__.py": "", "mybot/__main__.py": "from .app import run\n",
      "mybot/app.py": "from telegram.ext import ApplicationBuilder\n"}, ["-m", "mybot"], True),
    ({"mybot/__init__.py": "", "mybot/__main__.py": "from . import app\n", "mybot/app.py": "import aiohttp\n"},
     ["-m", "mybot"], False),
    # botkeeper.attach(), spelled either way; botkeeper's heartbeat alone is not python-telegram-bot
    ({"bot.py": "import botkeeper\nbotkeeper.attach(app)\n"}, ["bot.py"], True),
    ({"bot.py": "from botkeeper import attach\n"}, ["bot.py"], True),
    ({"bot.py": "from botkeeper import heartbeat\n",  # botkeeper next to it (a checkout) is not followed
      "botkeeper/__init__.py": "def __getattr__(n):\n    from .keeper import attach\n"}, ["bot.py"], False),
    ({"a.py": "import b\n", "b.py": "import a\n"}, ["a.py"], False),  # a cycle ends
    ({"bot.py": "import helpers\n", "helpers.py": "def broken(:\n"}, ["bot.py"], False),  # its own error
    ({}, ["missing.py"], True),  # cannot tell: the fork server runs as before
    ({"bot.py": "def broken(:\n"}, ["bot.py"], True),
])
def test_fork_server_only_for_a_bot_that_imports_telegram(tmp_path, files, argv, expected):
    assert importscan.imports_telegram(argv, write_tree(tmp_path, files)) is expected


def test_changed_reports_an_edited_or_removed_file(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("x = 1\n")
    st = path.stat()
    stamps = {str(path): (st.st_ino, st.st_size, st.st_mtime_ns)}
    after = (st.st_mtime_ns + 1, st.st_mtime_ns + 2)  # loading began and ended after the last edit
    assert forkserver.changed(stamps, *after) is None
    assert forkserver.changed(stamps, st.st_mtime_ns - 5, st.st_mtime_ns + 5) is not None  # edited while loading
    assert forkserver.changed(stamps, st.st_mtime_ns - 10, st.st_mtime_ns - 5) is None  # a future mtime: not stale
    os.utime(path, ns=(st.st_mtime_ns + 10**9, st.st_mtime_ns + 10**9))
    assert "changed" in forkserver.changed(stamps, *after)
    path.unlink()
    assert "removed" in forkserver.changed(stamps, *after)


def test_a_bot_with_more_files_than_are_read_counts_as_importing_telegram(tmp_path):
    count = importscan.MAX_FILES + 6
    for i in range(count):  # m0 -> m1 -> ... -> the last imports telegram, past what is read
        (tmp_path / f"m{i}.py").write_text(f"import m{i + 1}\n" if i < count - 1 else "import telegram\n")
    assert importscan.imports_telegram(["m0.py"], tmp_path) is True
    (tmp_path / f"m{count - 1}.py").write_text("import json\n")
    (tmp_path / "m10.py").write_text("import json\n")  # a short chain, all read: no
    assert importscan.imports_telegram(["m0.py"], tmp_path) is False
