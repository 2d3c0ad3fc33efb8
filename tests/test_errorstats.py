"""Error statistics: fingerprints group one bug's different messages and separate two bugs; a real
bot against the emulator records its handler's error, visible in /api/errors, /metrics, the page
and `python -m botkeeper errors`; ERROR_ALERTS=new alerts a new fingerprint once."""

from __future__ import annotations

import json
import subprocess
import sys

from botfixtures import FAKE_TOKEN, ask, bot, emulator, secret_forms  # noqa: F401 - fixtures
from botkeeper.alerting.alerts import Alerter
from botkeeper.config import Settings
from botkeeper.bot.errorstats import ErrorLog, fingerprint
from botkeeper.logs import Redactor
from botkeeper.store import Store
from botkeeper.web import create_app
from conftest import ROOT, bk_env, wait_for


def lookup_user(user_id: int) -> dict:
    users = {1: {"name": "Ann"}}
    return users[user_id]  # KeyError with the id in its message: one bug, many messages


def parse_amount(text: str) -> float:
    return json.loads(text)["amount"]  # the innermost frame is the json library's: skipped


def caught(fn, *args) -> BaseException:
    try:
        fn(*args)
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


def test_two_messages_of_one_bug_group_together_and_two_bugs_stay_apart():
    a, b = caught(lookup_user, 2), caught(lookup_user, 3)
    assert str(a) != str(b)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a).type == "KeyError" and fingerprint(a).location == "test_errorstats.py:lookup_user"
    other = fingerprint(caught(parse_amount, "{"))
    assert other.id != fingerprint(a).id
    assert other.type == "json.decoder.JSONDecodeError"
    assert other.location == "test_errorstats.py:parse_amount"  # the user's line that called json, not json's
    # same function, another exception type: another bug
    assert fingerprint(caught(parse_amount, "[1]")).id not in (other.id, fingerprint(a).id)


def test_the_log_counts_batches_and_records_each_new_fingerprint_once(tmp_path):
    db = tmp_path / "history.db"
    now = [1000.0]
    errors = ErrorLog(db, Redactor([FAKE_TOKEN]), clock=lambda: now[0])
    for user in (2, 3, 4):
        errors.add(caught(lookup_user, user))  # no event loop here: written at once
        now[0] += 60
    errors.add(RuntimeError(f"token {FAKE_TOKEN} refused " + "x" * 500))
    store = Store(db)
    rows = {r["type"]: r for r in store.errors(now=now[0])}
    key = rows["KeyError"]
    assert key["count"] == 3 and key["first_seen"] == 1000.0 and key["last_seen"] == 1120.0
    assert key["last_message"] == "4" and key["per_hour"] == 3.0  # within its first hour: 3 per hour
    runtime = rows["RuntimeError"]
    assert len(runtime["last_message"]) == 300 and not any(s in runtime["last_message"] for s in secret_forms())
    assert runtime["location"] == "(no traceback)"
    events = store.events(kinds=("new-error",))
    assert sorted(e["detail"].split(" in ")[0] for e in events) == ["KeyError", "RuntimeError"]
    assert all(e["cause"] == "new-error" for e in events)


def test_error_alerts_new_sends_one_alert_per_new_fingerprint(home):
    base = dict(ALERTS="on", MONITORING_WEBHOOK="http://127.0.0.1:9/hook")
    quiet = Alerter(Settings.from_env(bk_env(home, **base)))  # ERROR_ALERTS=off, the default
    errors = ErrorLog(quiet.settings.history_db, Redactor())
    errors.add(caught(lookup_user, 5))
    quiet.step(now=2000.0)
    assert not [a for a in quiet.store.alerts() if a["kind"] == "new-error"]
    quiet.close()
    alerter = Alerter(Settings.from_env(bk_env(home, ERROR_ALERTS="new", **base)))
    for user in (6, 7):
        errors.add(caught(lookup_user, user))  # known fingerprint: no new event
    errors.add(caught(parse_amount, "{"))
    alerter.step(now=2001.0)
    alerter.step(now=2002.0)
    sent = [a for a in alerter.store.alerts() if a["kind"] == "new-error"]
    assert len(sent) == 1 and "JSONDecodeError in test_errorstats.py:parse_amount" in sent[0]["text"]
    alerter.close()


HANDLERS = """
from telegram.ext import CommandHandler

async def boom(update, context):
    raise ValueError(f"order {update.effective_message.text!r} failed for {TOKEN}")

def register(application):
    application.add_handler(CommandHandler("boom", boom))
"""


def test_a_real_bots_handler_error_is_recorded_and_shown(home, bot, emulator):
    (home / "boom_handlers.py").write_text(f"TOKEN = {FAKE_TOKEN!r}\n" + HANDLERS)
    proc = bot(HANDLERS="boom_handlers.py")
    proc.wait_polled()
    ask(emulator, "/ping", "pong")
    emulator.inject_message("/boom 1", chat_id=4242)
    emulator.inject_message("/boom 2", chat_id=4242)
    settings = Settings.from_env(bk_env(home, RESTART_TOKEN="t0ken-for-tests"))
    client = create_app(settings, cache_ttl=0.0).test_client()

    def recorded():
        body = client.get("/api/errors").get_json()
        return body["data"]["errors"] and body["data"]["errors"][0]["count"] == 2 and body

    body = wait_for(recorded, 15, 0.1, "two errors in /api/errors")
    assert body["success"] is True and body["data"]["messages"] is False
    row = body["data"]["errors"][0]
    assert row["type"] == "ValueError" and row["location"] == "boom_handlers.py:boom"
    assert "last_message" not in row  # public: no message text
    full = client.get("/api/errors", headers={"Authorization": "Bearer t0ken-for-tests"}).get_json()
    message = full["data"]["errors"][0]["last_message"]
    assert message.startswith("order '/boom 2' failed for ") and not any(s in message for s in secret_forms())
    assert client.get("/api/errors", headers={"Authorization": "Bearer wrong"}).status_code == 401
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'botkeeper_errors_total{{fingerprint="{row["fingerprint"]}"}} 2.0' in metrics
    assert 'botkeeper_errors_total{fingerprint="other"} 0.0' in metrics
    page = client.get("/").get_data(as_text=True)
    assert "Errors in handlers" in page and "boom_handlers.py:boom" in page and "/boom 2" not in page
    out = subprocess.run([sys.executable, "-m", "botkeeper", "errors"], cwd=ROOT, env=bk_env(home),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert row["fingerprint"] in out.stdout and "order '/boom 2'" in out.stdout
    assert not any(s in out.stdout + proc.stderr for s in secret_forms())
