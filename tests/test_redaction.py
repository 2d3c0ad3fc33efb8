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
