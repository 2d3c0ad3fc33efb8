"""Settings: defaults, profiles, precedence, and bad input failing fast with exit 78."""

import subprocess
import sys

import pytest

from botkeeper.config import ConfigError, Settings, mask_secret
from conftest import FAKE_TOKEN, ROOT, bk_env


def test_defaults_are_the_documented_production_values(tmp_path):
    s = Settings.from_env({}, home=tmp_path)
    assert (s.port, s.stale_after, s.heartbeat_interval, s.recovery_interval) == (8080, 60.0, 10.0, 30.0)
    assert (s.min_uptime, s.restart_delay, s.max_restart_delay, s.max_restarts, s.errored_retry) == (10, 0.5, 60, 10, 300)
    assert s.kill_timeout == 10 and s.log_max_bytes == 10 * 1024 * 1024 and s.log_backups == 5
    assert s.api_base_url == "https://api.telegram.org" and s.demo_active
    assert [c.name for c in s.components] == ["emulator", "bot", "web", "monitor", "forkserver"]


def test_token_turns_the_demo_off_and_profiles_change_defaults(tmp_path):
    s = Settings.from_env({"TELEGRAM_BOT_TOKEN": FAKE_TOKEN, "BOTKEEPER_ENV": "test"}, home=tmp_path)
    assert not s.demo_active and s.bot_token == FAKE_TOKEN
    assert [c.name for c in s.components] == ["bot", "web", "monitor"]
    assert s.heartbeat_interval == 0.2 and not s.alerts and s.self_ping == "off"
    dev = Settings.from_env({"BOTKEEPER_ENV": "development", "STALE_AFTER": "45"}, home=tmp_path)
    assert dev.log_level == "DEBUG" and dev.stale_after == 45.0  # each knob still overridable


def test_environment_beats_dotenv_beats_toml(tmp_path):
    (tmp_path / ".env").write_text("PORT=9001\nSTALE_AFTER=90\n")
    (tmp_path / "botkeeper.toml").write_text("[settings]\nport = 9002\nstale_after = 99\nheartbeat_interval = 7\n")
    s = Settings.from_env({"PORT": "9000"}, home=tmp_path)
    assert (s.port, s.stale_after, s.heartbeat_interval) == (9000, 90.0, 7.0)


def test_user_components_and_overrides_come_from_toml(tmp_path):
    (tmp_path / "botkeeper.toml").write_text(
        '[components.worker]\ncommand = "python worker.py --fast"\nkill_timeout = 3\n'
        "[components.monitor]\nenabled = false\n[components.bot]\nmin_uptime = 2\n"
    )
    s = Settings.from_env({"TELEGRAM_BOT_TOKEN": FAKE_TOKEN}, home=tmp_path)
    assert [c.name for c in s.components] == ["bot", "web", "forkserver", "worker"]
    worker = s.component("worker")
    assert worker.command == (sys.executable, "worker.py", "--fast") and worker.kill_timeout == 3 and not worker.heartbeat
    assert s.component("bot").min_uptime == 2 and s.component("bot").heartbeat


def test_bot_command_replaces_main_py(tmp_path):
    s = Settings.from_env({"TELEGRAM_BOT_TOKEN": FAKE_TOKEN, "BOT_COMMAND": "sh bot.sh --x 'a b'"}, home=tmp_path)
    assert s.component("bot").command == ("sh", "bot.sh", "--x", "a b")


@pytest.mark.parametrize("env,toml,names", [
    ({"PORT": "abc"}, "", ["PORT='abc'", "port number from 1 to 65535"]),
    ({"PORT": "70000"}, "", ["PORT='70000'", "1 to 65535"]),
    ({"STALE_AFTER": "-1"}, "", ["STALE_AFTER='-1'", "from 0.1 to 86400"]),
    ({"TELEGRAM_BOT_TOKEN": "12345:short"}, "", ["TELEGRAM_BOT_TOKEN", "BotFather"]),
    ({"HEARTBEAT_INTERVAL": "90"}, "", ["HEARTBEAT_INTERVAL", "STALE_AFTER"]),
    ({"BOTKEEPER_ENV": "staging"}, "", ["BOTKEEPER_ENV='staging'", "production, development, test"]),
    ({}, "[settings]\nprot = 1\n", ["botkeeper.toml [settings]", "'prot'"]),
    ({}, "[components.worker]\ncommand = 'x'\nrestart = 'always'\n", ["[components.worker]", "'restart'"]),
    ({}, "[components.worker]\nkill_timeout = 1\n", ["[components.worker]", "command"]),
    ({}, "not toml [", ["botkeeper.toml is not valid TOML"]),
    ({"ADMIN_CHAT_ID": "me"}, "", ["ADMIN_CHAT_ID", "numeric"]),
])
def test_bad_config_exits_78_naming_the_setting(tmp_path, env, toml, names):
    if toml:
        (tmp_path / "botkeeper.toml").write_text(toml)
    run_env = bk_env(tmp_path, **env)
    if "BOTKEEPER_ENV" in env:
        run_env["BOTKEEPER_ENV"] = env["BOTKEEPER_ENV"]
    for command in (["-m", "botkeeper", "config"], ["-m", "botkeeper", "supervise"], ["main.py"]):
        if command == ["main.py"] and not (ROOT / "main.py").exists():
            continue
        proc = subprocess.run([sys.executable, *command], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 78, (command, proc.stdout, proc.stderr)
        for name in names:
            assert name in proc.stderr, (command, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") <= 2


def test_secrets_are_masked_in_errors_and_in_config_output(tmp_path):
    secret = "987654321:" + "S" * 51  # too long: rejected, and must not be echoed
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"TELEGRAM_BOT_TOKEN": secret}, home=tmp_path)
    assert "S" * 30 not in str(err.value)
    env = bk_env(tmp_path, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, RESTART_TOKEN="hunter2-restart-secret")
    out = subprocess.run([sys.executable, "-m", "botkeeper", "config"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=30).stdout
    assert FAKE_TOKEN not in out and "hunter2" not in out
    assert "123456789:***" in out and "RESTART_TOKEN" in out
    assert mask_secret(None) == "(not set)"
