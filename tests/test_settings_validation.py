"""Every setting against a table of bad values: refused with the setting named, exit 78 through
the real CLI, and every boundary value accepted. Numbers are also fuzzed with hypothesis."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import requests
from hypothesis import given, settings as hsettings, strategies as st

from botfixtures import emulator  # noqa: F401 - fixture
from botkeeper.config import KNOBS, ConfigError, Number, Settings
from conftest import ROOT, bk_env

DOC_TOKEN = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"  # the Bot API docs' example: 34 after the colon
NUMERIC = {name: knob for name, knob in KNOBS.items() if isinstance(knob.parse, Number)}
# Bad for every number: not numbers, non-ASCII digits, non-finite, huge, empty, a line break.
BAD_NUMBERS = ["abc", "٣", "²", "１０", "0x10", "1,5", "inf", "-inf", "nan", "1e308", "-1", "", "  ", "5\n", "5\r",
               "1_000", "5 s"]
# Values that keep the relations (STALE_AFTER >= 2 x HEARTBEAT_INTERVAL, RESTART_DELAY <= MAX_RESTART_DELAY)
# true while one side sits at its boundary.
COMPANIONS = {
    "heartbeat_interval": {"STALE_AFTER": "86400"},
    "stale_after": {"HEARTBEAT_INTERVAL": "0.05"},
    "restart_delay": {"MAX_RESTART_DELAY": "86400"},
    "max_restart_delay": {"RESTART_DELAY": "0.01"},
}
BAD_OTHERS = {
    "token": ["12345:short", "abc:" + "a" * 35, "123456789:" + "a" * 29, "123456789:" + "a" * 51,
              "123456789:" + "a" * 34 + "!", "١٢٣٤٥٦٧٨٩:" + "a" * 35],
    "api_base_url": ["https://a b c", "ftp://example.com", "http://", "example.com", "https://x:99999", "",
                     "https://exa\tmple.com"],
    "demo": ["maybe", "", "2"],
    "host": ["abc", "", "1.2.3.4.5", "example.com", "0.0.0.0:8080", "localhost\n"],
    "admin_chat_id": ["0", "-0", "me", "١٢٣", "1e5", "12.5", "9" * 20, "9" * 5000, "123\n"],
    "restart_token": ["secret\nline"],
    "trusted_proxies": ["abc", "10.0.0.0/33", "10.0.0.1;10.0.0.2", "localhost"],
    "monitoring_webhook": ["https://a b c", "mailto:me@example.com", "https://", "hooks.slack.com/x"],
    "alert_bot_token": ["12345:short", "123456789:" + "a" * 51],
    "alert_urls": ["discord", "json://", "json://x y", "://x", "a b c", "json://ok, mailto"],
    "deadman_url": ["https://a b c", "hc-ping.com/uuid", "ftp://x/y", "https://"],
    "deadman_start": ["maybe", ""],
    "bot_command": ["python 'x", "a-program-that-does-not-exist-here --x", "./missing.sh", "x\\"],
    "public_url": ["https://a b c", "www.example.com"],
    "log_level": ["verbose", "", "5"],
    "log_format": ["xml", "", "JSONL"],
    "error_alerts": ["all", "", "on"],
    "warm_standby": ["on", "", "yes", "fork"],
    "redis_down_polling": ["poll", "", "yes"],
    "daily_report_at": ["9", "24:00", "09:60", "9:5", "09:00:00", "9am", "٠٩:٠٠", "09:00\n"],
    "alerts": ["maybe", "", "2"],
    "self_ping": ["sometimes", ""],
    "auto_recovery": ["maybe", ""],
    "handlers": ["handlers.txt", "my handlers", "handlers.py\n"],
    "builtin_commands": ["ping,nosuch", "sometimes", "ping;status"],
    "outer": ["docker", "", "systemd,pm2"],
    "crontab_file": ["cron\ntab"],
    "update_command": ["git 'pull", "a-program-that-does-not-exist-here pull", "x\\"],
    "update_trigger": ["run/", ".", "run/update\ntrigger"],
    "telegram_mode": ["webhooks", "", "push"],
    "webhook_url": ["https://a b c", "example.com/telegram", "https://"],
    "webhook_secret": ["has space", "semi;colon", "x" * 257, "ünïcode"],
    "redis_url": ["http://redis:6379", "redis://", "redis://host:99999", "redis://host/db0", "redis://a b"],
}


def refused(env: dict[str, str], home) -> str:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"BOTKEEPER_ENV": "production"} | env, home=home)
    return str(err.value)


def test_every_setting_has_bad_values_in_the_table():
    assert set(NUMERIC) | set(BAD_OTHERS) == set(KNOBS)
    for knob in NUMERIC.values():  # a finite, sane range, defined with the knob
        assert math.isfinite(knob.parse.lo) and math.isfinite(knob.parse.hi) and knob.parse.lo <= knob.parse.hi


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_numbers_refuse_bad_values_and_accept_their_boundaries(name, tmp_path):
    knob = NUMERIC[name]
    rng = knob.parse
    bad = list(BAD_NUMBERS) + [repr(rng.hi * 10 + 1), repr(rng.hi + 1)]
    if rng.lo > 0:
        bad += [repr(rng.lo / 2)] + ([] if rng.zero else ["0"])
    for value in bad:
        message = refused({knob.env: value} | COMPANIONS.get(name, {}), tmp_path)
        assert message.startswith(f"{knob.env}=") and "expected" in message, (value, message)
        assert "\n" not in message
    for value in (rng.lo, rng.hi, knob.default) + ((0,) if rng.zero else ()):
        text = str(int(value)) if rng.whole else repr(float(value))
        s = Settings.from_env({knob.env: text} | COMPANIONS.get(name, {}), home=tmp_path)
        assert getattr(s, name) == value


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_numbers_in_toml_must_be_numbers(name, tmp_path):
    key = name
    for value in ("true", "inf", "nan", "1e308", '"abc"', "[1]", "-inf"):
        (tmp_path / "botkeeper.toml").write_text(f"[settings]\n{key} = {value}\n")
        message = refused({}, tmp_path)
        assert message.startswith(f"botkeeper.toml [settings] {key}=") and "expected" in message, (value, message)


@pytest.mark.parametrize("name", sorted(BAD_OTHERS))
def test_other_settings_refuse_bad_values(name, tmp_path):
    env = KNOBS[name].env
    for value in BAD_OTHERS[name]:
        message = refused({env: value}, tmp_path)
        assert message.startswith(f"{env}=") and "expected" in message, (value, message)
        if KNOBS[name].secret:  # the value is masked, never echoed
            assert message.startswith((f"{env}=***", f"{env}=(not set)")) or ":***" in message, message


@pytest.mark.parametrize("table,named", [
    ("command = 5", "command=5"),
    ("command = []", "command=[]"),
    ("command = [\"python\", 5]", "command="),
    ("command = \"python 'x\"", "command="),
    ("command = \"python w.py\"\nkill_timeout = true", "kill_timeout=True"),
    ("command = \"python w.py\"\nmax_restarts = 1.5", "max_restarts=1.5"),
    ("command = \"python w.py\"\nrestart_delay = 5\nmax_restart_delay = 1", "restart_delay=5"),
    ("command = \"python w.py\"\nenabled = \"maybe\"", "enabled='maybe'"),
])
def test_component_tables_are_checked(table, named, tmp_path):
    (tmp_path / "botkeeper.toml").write_text(f"[components.worker]\n{table}\n")
    message = refused({}, tmp_path)
    assert message.startswith("botkeeper.toml [components.worker]") and named in message, message


def test_relations_and_good_values(tmp_path):
    assert "from 0.05" in refused({"HEARTBEAT_INTERVAL": "0.0001", "STALE_AFTER": "0.001"}, tmp_path)
    assert "2 x HEARTBEAT_INTERVAL" in refused({"HEARTBEAT_INTERVAL": "10", "STALE_AFTER": "15"}, tmp_path)
    s = Settings.from_env({"HOST": " ::1 ", "ADMIN_CHAT_ID": "-1001234567890", "TRUSTED_PROXIES": "10.0.0.1, 172.16.0.0/12",
                           "PORT": " 8081 ", "MONITORING_WEBHOOK": "https://hooks.example.com/x?y=1",
                           "BOT_COMMAND": f"{sys.executable} bot.py", "MAX_UPTIME_HOURS": "0"}, home=tmp_path)
    assert (s.host, s.admin_chat_id, s.port, s.max_uptime_hours) == ("::1", -1001234567890, 8081, 0)
    assert s.trusted_proxies == ("10.0.0.1/32", "172.16.0.0/12")
    assert Settings.from_env({"HOST": "localhost"}, home=tmp_path).host == "localhost"
    # Optional settings: empty means not set.
    assert Settings.from_env({"ADMIN_CHAT_ID": "", "TELEGRAM_BOT_TOKEN": " "}, home=tmp_path).admin_chat_id is None
    script = tmp_path / "bin" / "bot"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    assert "executable" in refused({"BOT_COMMAND": "bin/bot"}, tmp_path)
    script.chmod(0o755)
    assert Settings.from_env({"BOT_COMMAND": "bin/bot --x"}, home=tmp_path).bot_command == ("bin/bot", "--x")
    assert "PATH" in refused({"BOT_COMMAND": "node bot.js", "PATH": str(tmp_path / "empty")}, tmp_path)
    # `python`/`python3` is botkeeper's own interpreter: no alias on PATH is needed (stock Debian has none)
    assert Settings.from_env({"BOT_COMMAND": "python bot.py", "PATH": str(tmp_path / "empty")},
                             home=tmp_path).bot_command == ("python", "bot.py")


def test_token_shapes_from_the_docs_are_accepted_and_cleaned_with_a_notice(tmp_path):
    for token in (DOC_TOKEN, "123456789:" + "a" * 30, "123456789:" + "Z-_9" * 12 + "ab"):
        assert Settings.from_env({"TELEGRAM_BOT_TOKEN": token}, home=tmp_path).token == token
    s = Settings.from_env({"TELEGRAM_BOT_TOKEN": f' "{DOC_TOKEN}" '}, home=tmp_path)
    assert s.token == DOC_TOKEN and len(s.notices) == 1
    assert "TELEGRAM_BOT_TOKEN" in s.notices[0] and "AAHdq" not in s.notices[0]
    clean = Settings.from_env({"TELEGRAM_BOT_TOKEN": DOC_TOKEN}, home=tmp_path)
    assert clean.notices == ()


def test_the_emulator_accepts_what_config_accepts(emulator):  # noqa: F811 - fixture
    ok = requests.post(f"{emulator.url}/bot{DOC_TOKEN}/getMe", timeout=5)
    assert ok.status_code == 200 and ok.json()["ok"]
    assert requests.post(f"{emulator.url}/bot123:short/getMe", timeout=5).status_code == 404


@hsettings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(NUMERIC)), raw=st.one_of(st.text(max_size=12), st.floats(), st.integers(),
                                                            st.booleans()))
def test_a_number_knob_returns_a_finite_value_in_range_or_refuses(name, raw):
    rng = NUMERIC[name].parse
    try:
        value = rng(raw)
    except ValueError as exc:
        assert str(exc) == rng.accepted()
        return
    assert not isinstance(raw, bool)
    assert math.isfinite(value) and (rng.lo <= value <= rng.hi or (rng.zero and value == 0))
    if isinstance(raw, str):
        assert raw.strip(" \t").isascii()


@hsettings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(NUMERIC)), data=st.data())
def test_every_number_in_range_is_accepted(name, data):
    rng = NUMERIC[name].parse
    if rng.whole:
        value = data.draw(st.integers(int(rng.lo), int(rng.hi)))
    else:
        value = data.draw(st.floats(rng.lo, rng.hi))
    assert rng(str(value)) == value and rng(value) == value


# --- the real CLI: `config` and `start` refuse before doing anything, with one line and 78 ------
CLI_CASES = [
    ({"PORT": "٣"}, None, None, "PORT='٣'"),
    ({"MAX_MEMORY_MB": "1e308"}, None, None, "MAX_MEMORY_MB='1e308'"),
    ({"SELF_PING_INTERVAL": "inf"}, None, None, "SELF_PING_INTERVAL='inf'"),
    ({"HOST": "abc"}, None, None, "HOST='abc'"),
    ({"ADMIN_CHAT_ID": "0"}, None, None, "ADMIN_CHAT_ID='0'"),
    ({"MONITORING_WEBHOOK": "https://a b c"}, None, None, "MONITORING_WEBHOOK=***"),
    ({"HEARTBEAT_INTERVAL": "0.0001", "STALE_AFTER": "0.001"}, None, None, "HEARTBEAT_INTERVAL='0.0001'"),
    ({"BOT_COMMAND": "no-such-bot-program"}, None, None, "BOT_COMMAND='no-such-bot-program'"),
    ({}, "[settings]\nmax_memory_mb = true\n", None, "botkeeper.toml [settings] max_memory_mb=True"),
    ({}, "[components.worker]\ncommand = 5\n", None, "[components.worker] command=5"),
    ({}, None, b'PORT=9000\nTELEGRAM_BOT_TOKEN="123456789:abc\nDEMO=off\n', ".env line 2 cannot be parsed"),
    ({}, None, b"PORT=9000\n# caf\xe9\n", ".env line 2 is not UTF-8"),
]


@pytest.mark.parametrize("env,toml,dotenv,named", CLI_CASES)
def test_cli_config_and_start_exit_78_with_one_line(env, toml, dotenv, named, home):
    if toml:
        (home / "botkeeper.toml").write_text(toml)
    if dotenv:
        (home / ".env").write_bytes(dotenv)
    for command in (["config"], ["start", "--detach"]):
        proc = subprocess.run([sys.executable, "-m", "botkeeper", *command], cwd=ROOT, env=bk_env(home, **env),
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 78, (command, proc.stdout, proc.stderr)
        assert named in proc.stderr and "expected" in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not (home / "run").exists()  # `start` refused before it started anything


def test_cli_prints_the_token_notice_without_the_token(home):
    env = bk_env(home, TELEGRAM_BOT_TOKEN=f" '{DOC_TOKEN}' ")
    proc = subprocess.run([sys.executable, "-m", "botkeeper", "config"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "notice: TELEGRAM_BOT_TOKEN" in proc.stderr and "AAHdq" not in proc.stderr + proc.stdout
    assert "110201543:***" in proc.stdout
