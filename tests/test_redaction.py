"""The token and other secrets never reach a file under logs/, whatever path they take."""

import logging
from urllib.parse import quote

from botkeeper.logs import Redactor, RedactingFilter
from conftest import FAKE_TOKEN, component, py_command, wait_for

RESTART_SECRET = "correct-horse-battery-staple"
LEAKY = py_command(f"""
    import logging, os, sys
    from urllib.parse import quote
    sys.path.insert(0, {str(__import__('conftest').ROOT)!r})
    from botkeeper import logs
    from botkeeper.config import load_or_exit
    token = os.environ["TELEGRAM_BOT_TOKEN"]
    secret = os.environ["RESTART_TOKEN"]
    print("plain", token, flush=True)
    print("url https://api.telegram.org/bot" + token + "/getUpdates", flush=True)
    print("encoded", quote(token, safe=""), flush=True)
    print("half", token.split(":")[1], flush=True)
    print("restart secret", secret, flush=True)
    sys.stderr.write("stderr " + token + "\\n"); sys.stderr.flush()
    # Bypass the child's own redaction: the supervisor must catch it anyway.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO)
    logging.getLogger("httpx").info("HTTP Request: POST https://x/bot%s/getMe", token)
    try:
        raise RuntimeError("InvalidToken: The token `" + token + "` was rejected by the server.")
    except RuntimeError:
        logging.getLogger("bot").exception("start-up failed")
    sys.stdout.flush()
    # A line without newline at exit, then the config-error exit that puts it in the state file.
    sys.stdout.write("last words " + token)
    sys.exit(78)
""")


def test_token_through_every_log_path_is_in_no_file(home, supervised):
    supervised({"bot": {"command": LEAKY, "heartbeat": False}, "web": {"enabled": False}, "monitor": {"enabled": False}},
               TELEGRAM_BOT_TOKEN=FAKE_TOKEN, RESTART_TOKEN=RESTART_SECRET)
    wait_for(lambda: component(home, "bot").get("state") == "needs-config", message="bot exited 78")
    bot_log = (home / "logs" / "bot.log").read_text()
    assert "last words ***" in bot_log and "start-up failed" in bot_log  # the lines are there...
    secret_half = FAKE_TOKEN.split(":")[1]
    files = [p for p in (home / "logs").rglob("*") if p.is_file()] + [home / "run" / "state.json"]
    files += list((home / "data").glob("*.db*"))
    assert len(files) >= 4
    for path in files:
        data = path.read_bytes()
        for needle in (FAKE_TOKEN, secret_half, quote(FAKE_TOKEN, safe=""), RESTART_SECRET):
            assert needle.encode() not in data, f"{needle!r} leaked into {path}"  # ...the secrets are not


def test_redactor_covers_forms_and_unknown_token_shapes():
    r = Redactor([FAKE_TOKEN, "s3cret-value"])
    assert r(f"/bot{FAKE_TOKEN}/getMe") == "/bot***/getMe"
    assert r(quote(FAKE_TOKEN, safe="")) == "***"
    assert r("pw=s3cret-value;") == "pw=***;"
    other = "555666777:" + "Z" * 35  # a token we were never told about
    assert r(f"x {other} y") == "x 555666777:*** y"
    assert r("nothing secret 12:34 here") == "nothing secret 12:34 here"


def test_redacting_filter_rewrites_args_and_tracebacks():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    logger = logging.getLogger("test.redaction")
    handler = Keep()
    handler.addFilter(RedactingFilter(Redactor([FAKE_TOKEN])))
    logger.addHandler(handler)
    try:
        logger.warning("token %s in args", FAKE_TOKEN)
        try:
            raise ValueError(FAKE_TOKEN)
        except ValueError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    assert all(FAKE_TOKEN not in text for text in records) and "ValueError: ***" in records[1]


# --- every secret kind, by its secret parts (issue 24) -----------------------------------------
HOOK = "https://hooks.example.com/services/T0001ABCD/B0002EFGH/abcdefghijklmnopqrstuvwx?sig=s1gn4ture99"


def redactor_for(**env):
    from botkeeper.config import Settings

    settings = Settings.from_env({"BOTKEEPER_ENV": "test", "DEMO": "off"} | env, home=__import__("pathlib").Path("/"))
    return Redactor(settings.secrets())


def test_each_secret_setting_is_masked_by_its_secret_parts():
    r = redactor_for(TELEGRAM_BOT_TOKEN=FAKE_TOKEN, MONITORING_WEBHOOK=HOOK, RESTART_TOKEN=RESTART_SECRET,
                     REDIS_URL="redis://:r3dis-pa55word@redis.internal:6379/0", WEBHOOK_SECRET="hook-secret-42",
                     ALERT_BOT_TOKEN="987654321:" + "Q" * 35)
    seen = {
        "webhook URL": HOOK,
        "its path and query alone": "/services/T0001ABCD/B0002EFGH/abcdefghijklmnopqrstuvwx?sig=s1gn4ture99",
        "its path alone": "POST /services/T0001ABCD/B0002EFGH/abcdefghijklmnopqrstuvwx failed",
        "its query alone": "sig=s1gn4ture99",
        "a query value alone": "signature s1gn4ture99 rejected",
        "a path token alone": "token abcdefghijklmnopqrstuvwx",
        "redis password alone": "AUTH r3dis-pa55word",
        "redis URL": "redis://:r3dis-pa55word@redis.internal:6379/0",
        "webhook secret": "hook-secret-42",
        "restart token": RESTART_SECRET,
        "alert bot token half": "Q" * 35,
        "url-encoded path": quote("/services/T0001ABCD/B0002EFGH/abcdefghijklmnopqrstuvwx", safe=""),
    }
    for what, text in seen.items():
        masked = r(text)
        for needle in ("abcdefghijklmnopqrstuvwx", "s1gn4ture99", "r3dis-pa55word", "hook-secret-42",
                       RESTART_SECRET, "Q" * 35):
            assert needle not in masked, f"{what}: {masked!r}"
    assert r("the services page of hooks.example.com") == "the services page of hooks.example.com"


def test_apprise_style_and_listed_urls_count_item_by_item():
    from botkeeper.config import secret_parts

    parts = secret_parts(("tgram://123456789:AAH-fake-token-for-tests-0123456789/-100123",
                          "discord://1234567890/AbCdEfGhIjKlMnOp"))
    r = Redactor(parts)
    assert "AAH-fake" not in r("sent via 123456789:AAH-fake-token-for-tests-0123456789")
    assert "AbCdEfGhIjKlMnOp" not in r("discord webhook AbCdEfGhIjKlMnOp answered 401")
    joined = secret_parts("json://alerts.example.com/h00k-path9 mailto://me:pw123456@gmail.com")
    assert "pw123456" in joined and "/h00k-path9" in joined


def test_an_operator_reason_is_masked_and_escaped_everywhere(home, supervised):
    import subprocess
    import sys

    from conftest import ROOT, bk_env

    sup = supervised({"bot": {"command": py_command("import time; time.sleep(60)"), "heartbeat": False},
                      "web": {"enabled": False}, "monitor": {"enabled": False}}, RESTART_TOKEN=RESTART_SECRET)
    wait_for(lambda: component(home, "bot").get("state") == "running", message="bot running")
    reason = f"rotated {RESTART_SECRET} and {FAKE_TOKEN}\nFAKE 00:00 INFO supervisor: forged"
    out = subprocess.run([sys.executable, "-m", "botkeeper", "restart", "bot", "--reason", reason], cwd=ROOT,
                         env=bk_env(home, RESTART_TOKEN=RESTART_SECRET), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: "rotated" in str(component(home, "bot").get("last_restart_reason")), message="the reason")
    sup.stop()
    files = [p for p in (home / "logs").rglob("*") if p.is_file()] + [home / "run" / "state.json"]
    files += list((home / "data").glob("*.db*"))
    for path in files:
        data = path.read_bytes()
        for needle in (RESTART_SECRET, FAKE_TOKEN.split(":")[1]):
            assert needle.encode() not in data, f"{needle!r} leaked into {path}"
        assert b"\nFAKE 00:00" not in data, f"a forged line in {path}"


def test_client_values_are_escaped_and_refusals_summarised_once_a_minute():
    from botkeeper.logs import Refusals, escape

    assert escape("/a\nb\r\x1b[31m\\x\u2028") == "/a\\nb\\r\\x1b[31m\\\\x\\u2028"
    assert escape("z" * 500) == "z" * 200 + "...(+300 chars)"
    now = [0.0]
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("test.refusals")
    logger.addHandler(Keep())
    refusals = Refusals(logger, "refused", every=60.0, clock=lambda: now[0])
    for i in range(1000):
        now[0] = i * 0.1  # 1000 refusals over 100 s
        refusals.note(f"latest from 10.0.0.{i % 7}")
    assert len(lines) == 2 and lines[0] == "refused (latest from 10.0.0.0)"
    assert lines[1].startswith("refused: 600 in the last 60 s, 601 in all")
    assert refusals.total == 1000
