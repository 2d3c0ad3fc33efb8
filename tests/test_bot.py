"""The bot as a real child process (python main.py, python-telegram-bot unmodified) against the
emulator over HTTP: commands, heartbeat, and every classified Telegram failure."""

from __future__ import annotations

import os
import sys
import subprocess
import textwrap
import time
from pathlib import Path

from botfixtures import FAKE_TOKEN, ask, bot, emulator, heartbeat_of, secret_forms, wait_for  # noqa: F401
from conftest import ROOT, SAMPLE_HANDLERS, bk_env, component, supervised, write_components  # noqa: F401

OUTAGE = float(os.environ.get("BOTKEEPER_TEST_OUTAGE", "10"))  # seconds the emulator is down
OTHER_TOKEN = "987654321:BBH-another-token-for-tests-0123456"


def assert_token_absent(*texts: str) -> None:
    for text in texts:
        for secret in secret_forms():
            assert secret not in text, "the bot token leaked"


def logs_text(home: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (home / "logs").rglob("*") if p.is_file())


def test_commands_answered_and_heartbeat_advances(bot, emulator, home):
    proc = bot(ADMIN_CHAT_ID="4242", HANDLERS=str(SAMPLE_HANDLERS))  # ask() writes from chat 4242
    first = proc.wait_polled()
    assert first["pid"] == proc.proc.pid and first["started_at"] <= first["written_at"]

    # The user's /start (in another handler group) wins over the built-in one, and the log says so once.
    assert "the user's own /start" in ask(emulator, "/start", "Welcome")["text"]
    assert proc.stderr.count("built-in commands added: /help /ping /status /uptime (yours kept: /start)") == 1
    assert "round-trip" in ask(emulator, "/ping", "round-trip")["text"]  # pong, then the measured time
    assert ask(emulator, "/hello", "Hello, ")  # from the tests' own sample handlers
    assert "You said: hi" in ask(emulator, "hi", "You said")["text"]
    status = ask(emulator, "/status", "Heartbeat")["text"]
    assert "Bot: up" in status and "Host memory" in status and "Supervisor: not running" in status
    help_text = ask(emulator, "/help", "Commands")["text"]  # the user's descriptions: COMMANDS, docstrings
    assert "/hello - greet the sender by name" in help_text and "/start - welcome from the sample bot" in help_text
    assert "/ping - answer pong" in help_text
    menu = {c["command"]: c["description"] for c in emulator.my_commands(FAKE_TOKEN)}  # setMyCommands
    assert menu["start"] == "welcome from the sample bot" and menu["hello"] == "greet the sender by name"
    assert set(menu) == {"start", "hello", "help", "ping", "status", "uptime"}
    assert "Up " in ask(emulator, "/uptime", "since")["text"]
    assert "admin only" in ask(emulator, "/status", "The bot is up", chat_id=99)["text"]  # not the admin

    later = wait_for(lambda: (hb := proc.heartbeat()).get("last_poll_at", 0) > first["last_poll_at"] + 0.5
                     and hb["updates_handled"] >= 8 and hb, 5, message="a later poll, all 8 updates counted")
    assert later["written_at"] > first["written_at"]
    assert later["state"] == "polling" and later["unreachable_since"] is None

    assert proc.stop() == 0  # SIGTERM: clean exit
    assert proc.heartbeat()["state"] == "stopping"
    assert_token_absent(proc.stderr)


def test_rate_limits_are_waited_out(bot, emulator):
    proc = bot()
    proc.wait_state("polling")
    emulator.add_fault("getUpdates", status=429, retry_after=1, count=1)
    emulator.add_fault("sendMessage", status=429, retry_after=1, count=1)
    started = time.monotonic()
    assert ask(emulator, "/start", "Hello", timeout=15)
    assert time.monotonic() - started >= 1.0  # the bot waited as asked
    # The next poll goes out once the update is handled (botkeeper.bot.work.HeldPolls): wait for it.
    statuses = wait_for(lambda: ("getUpdates", 429) in (st := [(c["method"], c["status"])
                        for c in emulator.calls()["recent"]]) and st, 5, message="the 429 on getUpdates")
    assert ("sendMessage", 429) in statuses
    wait_for(lambda: proc.stderr.count("rate limit (429) on sendMessage") == 1, 5, message="one log line")
    assert proc.stderr.count("rate limit (429) on getUpdates") == 1
    assert proc.alive()


def test_conflict_is_a_state_not_a_crash_loop(bot, emulator):
    proc = bot()
    proc.wait_state("polling")
    emulator.add_fault("getUpdates", status=409, count=None)
    hb = proc.wait_state("conflict", 5)
    assert "409" in hb["detail"]
    wait_for(lambda: sum(1 for c in emulator.calls()["recent"] if c["status"] == 409) >= 3, 10,
             message="three conflicting polls")
    assert proc.alive() and emulator.calls()["counts"]["getMe"] == 1  # same process all along
    assert proc.stderr.count("another program is polling Telegram with this bot token") == 1  # once a minute
    assert "Replit" in proc.stderr
    assert proc.heartbeat()["state"] == "conflict" and proc.heartbeat()["written_at"] > hb["written_at"]

    emulator.clear_faults()
    proc.wait_state("polling", 10)
    assert ask(emulator, "/start", "Hello")


def test_rejected_token_at_start_exits_78(bot, emulator):
    emulator.set_tokens([OTHER_TOKEN])
    proc = bot()
    assert proc.wait_exit(15) == 78
    assert "Telegram rejected the bot token 123456789:***" in proc.stderr
    assert emulator.calls()["counts"]["getMe"] == 1  # no retries against Telegram
    assert_token_absent(proc.stderr, logs_text(proc.home))


def test_missing_token_with_demo_off_exits_78(home):
    env = bk_env(home)
    res = subprocess.run([sys.executable, str(ROOT / "main.py")], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 78
    assert "TELEGRAM_BOT_TOKEN is not set: add it in Replit Secrets or .env" in res.stderr


def test_token_rejected_mid_run_needs_config(supervised, emulator, home):
    """Under the real supervisor: polling works, then Telegram starts answering 401."""
    write_components(home, web={"enabled": False}, monitor={"enabled": False})
    supervised(TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN)
    wait_for(lambda: heartbeat_of(home).get("state") == "polling", 20, message="bot polling")
    pid = component(home, "bot")["pid"]
    status = ask(emulator, "/status", "Restarts today")["text"]
    assert "Restarts today: 0 (total 0)" in status and "Supervisor: not running" not in status
    emulator.set_tokens([OTHER_TOKEN])  # the token was revoked
    bot_state = wait_for(lambda: (c := component(home, "bot")).get("state") == "needs-config" and c, 15,
                         message="needs-config")
    assert bot_state["last_exit_code"] == 78
    # The bot said why (its exit note), so the reason is its own, not its last log line.
    assert bot_state["cause"] == "token-rejected"
    assert bot_state["last_restart_reason"].startswith("Telegram rejected the bot token 123456789:***")
    assert bot_state["next_start_at"] is None  # nothing scheduled: no restart loop
    assert emulator.calls()["counts"]["getMe"] == 1  # started once, never again
    assert pid and not os.path.exists(f"/proc/{pid}")
    text = logs_text(home)
    assert "Telegram rejected the bot token 123456789:***" in text
    assert_token_absent(text)


def test_telegram_outage_reported_not_fatal(bot, emulator):
    proc = bot()
    proc.wait_polled()
    emulator.stop()
    down_at = time.time()
    hb = proc.wait_state("telegram-unreachable", 10)
    assert down_at - 1 <= hb["unreachable_since"] <= time.time() and hb["last_poll_at"] <= hb["unreachable_since"]
    wait_for(lambda: time.time() - down_at >= OUTAGE and proc.alive(), OUTAGE + 2, 0.2, "the outage to last")
    hb = proc.heartbeat()
    assert hb["state"] == "telegram-unreachable" and time.time() - hb["written_at"] < 1.0  # fresh while down
    emulator.start()
    assert ask(emulator, "/start", "Hello", timeout=40)  # PTB's backoff is capped; it comes back alone
    assert proc.wait_state("polling", 5)["unreachable_since"] is None
    assert emulator.calls()["counts"]["getMe"] == 1 and proc.alive()
    assert "Telegram unreachable" in proc.stderr and "reachable again" in proc.stderr


def test_a_blocked_event_loop_is_told_in_the_heartbeat_by_the_watchdog(bot, emulator, home):
    (home / "handlers.py").write_text(textwrap.dedent("""
        import time
        from telegram.ext import CommandHandler

        async def block(update, context):
            time.sleep(120)  # the classic mistake: a blocking call inside an async handler

        async def boom(update, context):
            raise ValueError("user code bug")

        def register(application):
            application.add_handler(CommandHandler("block", block))
            application.add_handler(CommandHandler("boom", boom))
    """))
    proc = bot(HANDLERS="handlers.py")
    proc.wait_state("polling")
    # The user's handlers.py in BOTKEEPER_HOME is loaded and gets our error handling.
    emulator.inject_message("/boom")
    assert ask(emulator, "/start", "Hello")
    wait_for(lambda: "handler failed on update" in proc.stderr and "ValueError: user code bug" in proc.stderr, 5,
             message="the handler error logged")
    assert str(proc.home / "handlers.py") in proc.stderr and proc.alive()
    # In /start's chat: one chat's updates run in order, so /start has finished when /block begins.
    sent = emulator.inject_message("/block", chat_id=4242)
    # The loop is blocked, the watchdog thread beats for it (by BLOCK_LIMIT, 2 s in the test profile):
    # since when, which update, which handler, at which line of the user's file.
    hb = wait_for(lambda: (hb := proc.heartbeat()).get("blocked") and hb, 10, 0.1, "the watchdog's blocked beat")
    blocked = hb["blocked"]
    assert (blocked["handler"], blocked["update_id"], blocked["in_flight"]) == ("block", sent["update_id"], 1)
    assert blocked["frame"].startswith(f"{proc.home / 'handlers.py'}:6 ") and blocked["frame"].endswith(" block")
    assert hb["in_flight"][0]["frame"] == blocked["frame"] and hb["in_flight"][0]["update_id"] == sent["update_id"]
    first = hb["written_at"]
    later = wait_for(lambda: (hb := proc.heartbeat())["written_at"] > first + 0.3 and hb, 5, 0.1, "a second beat")
    assert later["blocked"]["since"] == blocked["since"] <= first - 1.0 and proc.alive()
    proc.kill()
