"""`python -m botkeeper doctor` against the emulator: passes with a valid setup and names each
broken thing in turn, with a fix, never printing the token."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest
import requests

from botkeeper.ops import doctor
from botfixtures import emulator  # noqa: F401 - fixture
from conftest import FAKE_TOKEN, ROOT, bk_env

OTHER_TOKEN = "987654321:BBH-another-token-for-tests-01234567"
SECRET_HALF = FAKE_TOKEN.split(":", 1)[1]


@pytest.fixture
def env(home, emulator):
    return bk_env(home, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, TELEGRAM_API_BASE_URL=emulator.url, ADMIN_CHAT_ID="555")


def run_doctor(env, capsys, monkeypatch) -> tuple[int, str, dict[str, str]]:
    monkeypatch.setattr(doctor, "CONFLICT_PROBE", 1.0)
    code = doctor.main([], environ=env)
    out = capsys.readouterr().out
    assert SECRET_HALF not in out
    statuses = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0] in ("ok", "warn", "FAIL"):
            statuses.setdefault(parts[1] if parts[1] != "port" else "port", parts[0])
    return code, out, statuses


def failing(statuses: dict[str, str]) -> list[str]:
    return sorted(name for name, status in statuses.items() if status == "FAIL")


def test_valid_setup_passes_through_the_real_command(env):
    proc = subprocess.run([sys.executable, "-m", "botkeeper", "doctor"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "everything looks good" in proc.stdout
    assert "is @botkeeper_demo_bot (getMe works)" in proc.stdout and "123456789:***" in proc.stdout
    assert SECRET_HALF not in proc.stdout + proc.stderr


def test_rejected_token_is_named_with_a_fix(env, emulator, capsys, monkeypatch):
    emulator.set_tokens([OTHER_TOKEN])  # the emulator now accepts only another token
    code, out, statuses = run_doctor(env, capsys, monkeypatch)
    assert code == 1 and failing(statuses) == ["token"]
    assert "Telegram rejected the token 123456789:*** (HTTP 401" in out and "@BotFather" in out


def test_malformed_token_is_named_and_the_other_checks_still_run(env, capsys, monkeypatch):
    env["TELEGRAM_BOT_TOKEN"] = "not-a-token-" + SECRET_HALF
    code, out, statuses = run_doctor(env, capsys, monkeypatch)
    assert code == 1 and failing(statuses) == ["token"]
    assert "TELEGRAM_BOT_TOKEN=*** is not valid" in out
    assert statuses["logs"] == "ok" and statuses["disk"] == "ok"


def test_no_token_with_the_demo_off_is_named_not_a_traceback(env, capsys, monkeypatch):
    del env["TELEGRAM_BOT_TOKEN"]
    env["DEMO"] = "off"
    code, out, statuses = run_doctor(env, capsys, monkeypatch)
    assert code == 1 and failing(statuses) == ["token"]
    assert "TELEGRAM_BOT_TOKEN is not set and DEMO=off" in out and "@BotFather" in out


def test_port_in_use_is_named(env, capsys, monkeypatch):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("0.0.0.0", int(env["PORT"])))
        taken.listen(1)
        code, out, statuses = run_doctor(env, capsys, monkeypatch)
    assert code == 1 and failing(statuses) == ["port"]
    assert f"port {env['PORT']} (status page) is already taken" in out and "set PORT" in out


def test_unwritable_logs_are_named(env, home, capsys, monkeypatch):
    (home / "logs").write_text("a file where the logs directory should be")  # even root cannot write in it
    code, out, statuses = run_doctor(env, capsys, monkeypatch)
    assert code == 1 and failing(statuses) == ["logs"]
    assert "logs is a file, not a directory" in out


def test_unreachable_admin_chat_is_named(env, emulator, capsys, monkeypatch):
    emulator.add_fault("sendChatAction", "error", count=1, status=400, description="Bad Request: chat not found")
    code, out, statuses = run_doctor(env, capsys, monkeypatch)
    assert code == 1 and failing(statuses) == ["admin"]
    assert "chat 555 is not reachable (HTTP 400 Bad Request: chat not found)" in out and "/start" in out


def test_another_copy_polling_is_named(env, emulator, capsys, monkeypatch):
    stop = threading.Event()

    def other_copy():  # polls with the same token, like a second deployment
        while not stop.is_set():
            try:
                requests.post(f"{emulator.url}/bot{FAKE_TOKEN}/getUpdates", json={"timeout": 1}, timeout=5)
            except requests.RequestException:
                pass

    poller = threading.Thread(target=other_copy, daemon=True)
    poller.start()
    try:
        code, out, statuses = run_doctor(env, capsys, monkeypatch)
    finally:
        stop.set()
        poller.join(5)
    assert code == 1 and failing(statuses) == ["conflict"]
    assert "another program is polling Telegram with this token (409 Conflict)" in out


def test_clock_skew_from_the_date_header():
    api = doctor.Api("http://x", FAKE_TOKEN, str)
    api.server_date, api.local_date = 1000.0, 1100.0
    result = doctor.check_clock(api)
    assert result.status == doctor.FAIL and "100 s ahead of" in result.message and "ntp" in result.fix
    api.local_date = 1001.0
    assert doctor.check_clock(api).status == doctor.OK


def test_dependency_versions_are_compared_with_requirements():
    assert doctor.satisfies("22.8", ">=22.0,<23")
    assert not doctor.satisfies("23.0", ">=22.0,<23")
    assert not doctor.satisfies("2.0", ">=2.31,<3")
    assert doctor.check_packages().status == doctor.OK


def test_bot_python_must_import_telegram(env, home, tmp_path, capsys, monkeypatch):
    """BOT_COMMAND with another interpreter: doctor asks that one, not its own."""
    import venv

    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # a Python without python-telegram-bot
    bot = home / "bot.py"
    bot.write_text("from telegram.ext import ApplicationBuilder\n")
    env["BOT_COMMAND"] = f"{bare / 'bin' / 'python'} bot.py"
    code, out, statuses = run_doctor(env, capsys, monkeypatch)
    assert statuses["bot-python"] == "FAIL" and "cannot import telegram" in out
    env["BOT_COMMAND"] = "python bot.py"  # botkeeper's own interpreter
    code, out, statuses = run_doctor(env, capsys, monkeypatch)
    assert statuses["bot-python"] == "ok"
