"""Settings: every knob, its default, and validation, read once from the environment.

Sources, strongest first: the process environment (Replit Secrets arrive there), then `.env` in the
bundle's home, then `[settings]` in `botkeeper.toml`, then the defaults of the chosen BOTKEEPER_ENV
profile. Bad values raise ConfigError naming the variable, its (masked) value and what is accepted;
entry points turn that into exit code 78 (EX_CONFIG) and one line on stderr, never a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

EX_CONFIG = 78
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # where main.py and friends live

TOKEN_RE = re.compile(r"^\d{3,20}:[A-Za-z0-9_-]{35}$")
# A token-shaped value that must never be used against the real Telegram: the offline demo's.
DEMO_TOKEN = "123456789:DEMO-botkeeper-offline-demo-token00"  # token-shaped: 35 after the colon
BUILTIN_COMPONENTS = ("bot", "web", "monitor")


class ConfigError(Exception):
    """A setting is missing or invalid. The message is safe to print (secrets masked)."""


def mask_secret(value: str | None) -> str:
    """Show that a secret is set without showing it. Tokens keep only their public bot id."""
    if not value:
        return "(not set)"
    if TOKEN_RE.match(value):
        return value.split(":", 1)[0] + ":***"
    return "***"


# --- profiles -------------------------------------------------------------------------------------
# Each profile is a coherent set of defaults; every value can still be overridden one by one.
PRODUCTION: dict[str, Any] = {
    "log_level": "INFO",
    "heartbeat_interval": 10.0,
    "stale_after": 60.0,
    "heartbeat_grace": 60.0,
    "monitor_interval": 5.0,
    "recovery_interval": 30.0,
    "health_grace": 60.0,
    "min_uptime": 10.0,
    "start_seconds": 1.0,
    "restart_delay": 0.5,
    "max_restart_delay": 60.0,
    "max_restarts": 10,
    "restart_window": 900.0,
    "errored_retry": 300.0,
    "kill_timeout": 10.0,
    "start_timeout": 30.0,
    "alerts": True,
    "self_ping": "auto",
    "self_ping_interval": 240.0,
    "sample_interval": 60.0,
    "demo_interval": 5.0,
    "unreachable_alert_after": 300.0,
    "outage_restart_interval": 600.0,
    "cpu_window": 300.0,
    "alert_retry_interval": 30.0,
    "flap_window": 600.0,
}
DEVELOPMENT = PRODUCTION | {
    "log_level": "DEBUG",
    "heartbeat_interval": 5.0,
    "stale_after": 30.0,
    "heartbeat_grace": 30.0,
    "recovery_interval": 10.0,
    "health_grace": 20.0,
    "min_uptime": 5.0,
    "max_restart_delay": 10.0,
    "errored_retry": 60.0,
    "kill_timeout": 5.0,
    "self_ping": "off",
}
TEST = PRODUCTION | {
    "log_level": "DEBUG",
    "heartbeat_interval": 0.2,
    "stale_after": 2.0,
    "heartbeat_grace": 4.0,
    "monitor_interval": 0.25,
    "recovery_interval": 0.5,
    "health_grace": 1.5,
    "min_uptime": 1.0,
    "start_seconds": 0.2,
    "restart_delay": 0.1,
    "max_restart_delay": 1.0,
    "max_restarts": 5,
    "restart_window": 60.0,
    "errored_retry": 3.0,
    "kill_timeout": 3.0,
    "start_timeout": 30.0,
    "alerts": False,
    "self_ping": "off",
    "sample_interval": 1.0,
    "demo_interval": 1.0,
    "unreachable_alert_after": 2.0,
    "outage_restart_interval": 30.0,
    "cpu_window": 3.0,
    "alert_retry_interval": 0.5,
    "flap_window": 30.0,
    "poll_timeout": 1.0,
}
PROFILES = {"production": PRODUCTION, "development": DEVELOPMENT, "test": TEST}


# --- parsers: each returns the value or raises ValueError(what is accepted) ----------------------
def _float(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    def parse(raw: Any) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = float("nan")
        ok = value == value and value not in (float("inf"), float("-inf"))
        if ok and lo is not None:
            ok = value > lo if lo_open else value >= lo
        if ok and hi is not None:
            ok = value <= hi
        if not ok:
            low = f"greater than {lo:g}" if lo_open else f"at least {lo:g}"
            raise ValueError(f"a number of seconds {low}" + (f" and at most {hi:g}" if hi else ""))
        return value

    return parse


def _int(lo: int, hi: int | None = None, what: str = "a whole number"):
    def parse(raw: Any) -> int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            raise ValueError(f"{what} from {lo}" + (f" to {hi}" if hi is not None else " up"))
        return value

    return parse


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("one of on/off, true/false, yes/no, 1/0")


def _choice(*choices: str):
    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return text

    return parse


def _url(raw: Any) -> str:
    text = str(raw).strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+", text):
        raise ValueError("an http:// or https:// URL")
    return text


def _token(raw: Any) -> str:
    text = str(raw).strip()
    if not TOKEN_RE.match(text):
        raise ValueError(
            "a token from @BotFather shaped like 123456789:ABCdef... (digits, a colon, 35 letters,"
            " digits, - or _)"
        )
    return text


def _chat_id(raw: Any) -> int:
    try:
        return int(str(raw).strip())
    except ValueError:
        raise ValueError("a numeric Telegram chat id such as 123456789 or -1001234567890") from None


def _command(raw: Any) -> tuple[str, ...]:
    parts = tuple(raw) if isinstance(raw, (list, tuple)) else tuple(shlex.split(str(raw)))
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise ValueError('a command line such as "python my_bot.py"')
    return parts


def _log_level(raw: Any) -> str:
    text = str(raw).strip().upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
    return text


def _text(raw: Any) -> str:
    return str(raw)


@dataclass(frozen=True)
class Knob:
    """One setting: its environment variable, parser, whether it is secret, and what it is for."""

    env: str
    parse: Callable[[Any], Any]
    default: Any = None
    secret: bool = False
    help: str = ""


# field name -> Knob. Profile defaults override `default` where the profile names the field.
KNOBS: dict[str, Knob] = {
    "token": Knob("TELEGRAM_BOT_TOKEN", _token, None, True, "bot token from @BotFather; unset = offline demo"),
    "api_base_url": Knob("TELEGRAM_API_BASE_URL", _url, "https://api.telegram.org", False, "Bot API server"),
    "demo": Knob("DEMO", _choice("auto", "on", "off"), "auto", False, "offline demo: auto = when no token"),
    "emulator_port": Knob("EMULATOR_PORT", _int(1, 65535, "a port number"), 8099, False, "demo emulator port (loopback)"),
    "host": Knob("HOST", _text, "0.0.0.0", False, "address the status page listens on"),
    "port": Knob("PORT", _int(1, 65535, "a port number"), 8080, False, "status page port"),
    "admin_chat_id": Knob("ADMIN_CHAT_ID", _chat_id, None, False, "your chat id: alerts and /status go there"),
    "restart_token": Knob("RESTART_TOKEN", _text, None, True, "Bearer token for restart/log endpoints"),
    "monitoring_webhook": Knob("MONITORING_WEBHOOK", _url, None, True, "URL that receives alert JSON"),
    "alert_bot_token": Knob("ALERT_BOT_TOKEN", _token, None, True, "separate bot token for alerts"),
    "bot_command": Knob("BOT_COMMAND", _command, None, False, "run this bot program instead of main.py"),
    "public_url": Knob("PUBLIC_URL", _url, None, False, "public URL of the page, for self-ping"),
    "log_level": Knob("LOG_LEVEL", _log_level, "INFO", False, "DEBUG, INFO, WARNING or ERROR"),
    "log_max_bytes": Knob("LOG_MAX_BYTES", _int(10_000, None, "a size in bytes"), 10 * 1024 * 1024, False, "rotate a log at this size"),
    "log_backups": Knob("LOG_BACKUPS", _int(1, 100), 5, False, "rotated files kept per log"),
    "log_retention_days": Knob("LOG_RETENTION_DAYS", _int(1, 3650), 7, False, "days archived logs are kept"),
    "min_free_disk_mb": Knob("MIN_FREE_DISK_MB", _int(0, None), 200, False, "prune old logs below this free space"),
    "heartbeat_interval": Knob("HEARTBEAT_INTERVAL", _float(0, 3600, True), 10.0, False, "seconds between heartbeats"),
    "stale_after": Knob("STALE_AFTER", _float(0, 86400, True), 60.0, False, "heartbeat age that means hung"),
    "heartbeat_grace": Knob("HEARTBEAT_GRACE", _float(0, 86400), 60.0, False, "seconds after bot start before a missing heartbeat counts"),
    "monitor_interval": Knob("MONITOR_INTERVAL", _float(0, 3600, True), 5.0, False, "seconds between monitor checks"),
    "recovery_interval": Knob("RECOVERY_INTERVAL", _float(0, 3600, True), 30.0, False, "seconds between auto_recovery checks"),
    "health_grace": Knob("HEALTH_GRACE", _float(0, 3600), 60.0, False, "seconds a component may be down before recovery steps in"),
    "max_memory_mb": Knob("MAX_MEMORY_MB", _float(0, None, True), 400.0, False, "bot memory limit (process tree)"),
    "max_cpu_percent": Knob("MAX_CPU_PERCENT", _float(0, 100 * 64, True), 80.0, False, "bot CPU limit, sustained"),
    "cpu_window": Knob("CPU_WINDOW", _float(0, 86400, True), 300.0, False, "seconds CPU must stay high"),
    "max_uptime_hours": Knob("MAX_UPTIME_HOURS", _float(0, None), 168.0, False, "planned restart after this; 0 = never"),
    "outage_restart_interval": Knob("OUTAGE_RESTART_INTERVAL", _float(0, None, True), 600.0, False, "at most one restart this often during a Telegram outage"),
    "min_uptime": Knob("MIN_UPTIME", _float(0), 10.0, False, "a run shorter than this is a quick failure"),
    "start_seconds": Knob("START_SECONDS", _float(0), 1.0, False, "seconds up before starting becomes running"),
    "restart_delay": Knob("RESTART_DELAY", _float(0), 0.5, False, "first backoff delay"),
    "max_restart_delay": Knob("MAX_RESTART_DELAY", _float(0), 60.0, False, "backoff cap"),
    "max_restarts": Knob("MAX_RESTARTS", _int(1, 10_000), 10, False, "quick failures before errored"),
    "restart_window": Knob("RESTART_WINDOW", _float(0, None, True), 900.0, False, "window in which quick failures count"),
    "errored_retry": Knob("ERRORED_RETRY", _float(0, None, True), 300.0, False, "retry interval once errored"),
    "kill_timeout": Knob("KILL_TIMEOUT", _float(0, 3600, True), 10.0, False, "SIGTERM grace before SIGKILL"),
    "start_timeout": Knob("START_TIMEOUT", _float(0, 3600, True), 30.0, False, "how long --detach waits for health"),
    "alerts": Knob("ALERTS", _bool, True, False, "send alerts at all"),
    "self_ping": Knob("SELF_PING", _choice("auto", "on", "off"), "auto", False, "ping PUBLIC_URL to keep the VM awake"),
    "self_ping_interval": Knob("SELF_PING_INTERVAL", _float(1), 240.0, False, "seconds between self-pings"),
    "sample_interval": Knob("SAMPLE_INTERVAL", _float(0, None, True), 60.0, False, "seconds between resource samples"),
    "demo_interval": Knob("DEMO_INTERVAL", _float(0, None, True), 5.0, False, "seconds between demo user messages"),
    "unreachable_alert_after": Knob("UNREACHABLE_ALERT_AFTER", _float(0), 300.0, False, "alert when Telegram is unreachable this long"),
    "alert_retry_interval": Knob("ALERT_RETRY_INTERVAL", _float(0, None, True), 30.0, False, "seconds between retries of unsent alerts"),
    "auto_recovery": Knob("AUTO_RECOVERY", _bool, True, False, "supervisor relaunches auto_recovery.py if it is gone"),
    "flap_window": Knob("FLAP_WINDOW", _float(0, None, True), 600.0, False, "restarts within this make one incident"),
    "poll_timeout": Knob("POLL_TIMEOUT", _float(0, 60), 10.0, False, "getUpdates long-poll timeout (seconds)"),
    "outer": Knob("BOTKEEPER_OUTER", _choice("auto", "none", "systemd", "container", "pm2"), "auto", False,
                  "outer supervisor; auto = detected. Under one, start runs the supervisor alone in the foreground"),
    "crontab_file": Knob("CRONTAB_FILE", _text, None, False,
                         "`install cron` edits this file instead of the user's crontab (crontab -l / -)"),
}
SECRET_FIELDS = tuple(name for name, knob in KNOBS.items() if knob.secret)

COMPONENT_KEYS = {
    "command": _command,
    "enabled": _bool,
    "heartbeat": _bool,
    "min_uptime": _float(0),
    "start_seconds": _float(0),
    "restart_delay": _float(0),
    "max_restart_delay": _float(0),
    "max_restarts": _int(1, 10_000),
    "restart_window": _float(0, None, True),
    "errored_retry": _float(0, None, True),
    "kill_timeout": _float(0, 3600, True),
}


@dataclass(frozen=True)
class ComponentSpec:
    """One supervised program: what to run and its restart limits."""

    name: str
    command: tuple[str, ...]
    min_uptime: float
    start_seconds: float
    restart_delay: float
    max_restart_delay: float
    max_restarts: int
    restart_window: float
    errored_retry: float
    kill_timeout: float
    heartbeat: bool = False  # does this component write bot_health.txt?
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Settings:
    home: Path
    env_name: str
    token: str | None
    api_base_url: str
    demo: str
    emulator_port: int
    host: str
    port: int
    admin_chat_id: int | None
    restart_token: str | None
    monitoring_webhook: str | None
    alert_bot_token: str | None
    bot_command: tuple[str, ...] | None
    public_url: str | None
    log_level: str
    log_max_bytes: int
    log_backups: int
    log_retention_days: int
    min_free_disk_mb: int
    heartbeat_interval: float
    stale_after: float
    heartbeat_grace: float
    monitor_interval: float
    recovery_interval: float
    health_grace: float
    max_memory_mb: float
    max_cpu_percent: float
    cpu_window: float
    max_uptime_hours: float
    outage_restart_interval: float
    min_uptime: float
    start_seconds: float
    restart_delay: float
    max_restart_delay: float
    max_restarts: int
    restart_window: float
    errored_retry: float
    kill_timeout: float
    start_timeout: float
    alerts: bool
    self_ping: str
    self_ping_interval: float
    sample_interval: float
    demo_interval: float
    unreachable_alert_after: float
    alert_retry_interval: float
    flap_window: float
    auto_recovery: bool
    poll_timeout: float = 10.0
    outer: str = "auto"
    crontab_file: str | None = None
    replit_dev_domain: str | None = None
    replit_deployment: bool = False
    components: tuple[ComponentSpec, ...] = field(default=())

    # --- derived -------------------------------------------------------------------------------
    @property
    def demo_active(self) -> bool:
        return self.demo == "on" or (self.demo == "auto" and not self.token)

    @property
    def bot_token(self) -> str | None:
        """The token the bot uses: the real one, or the demo's when the demo runs."""
        return DEMO_TOKEN if self.demo_active else self.token

    @property
    def bot_api_base_url(self) -> str:
        if self.demo_active:
            return f"http://127.0.0.1:{self.emulator_port}"
        return self.api_base_url

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def archive_dir(self) -> Path:
        return self.home / "logs_archive"

    @property
    def heartbeat_file(self) -> Path:
        return self.home / "bot_health.txt"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def history_db(self) -> Path:
        return self.data_dir / "history.db"

    @property
    def self_ping_url(self) -> str | None:
        if self.public_url:
            return self.public_url
        if self.replit_dev_domain:
            return f"https://{self.replit_dev_domain}"
        return None

    @property
    def self_ping_enabled(self) -> bool:
        if self.self_ping == "off":
            return False
        if self.self_ping == "on":
            return self.self_ping_url is not None
        return self.self_ping_url is not None and not self.replit_deployment

    def secrets(self) -> list[str]:
        """Every configured secret value, for the log redaction filter."""
        return [v for v in (getattr(self, f) for f in SECRET_FIELDS) if v]

    def component(self, name: str) -> ComponentSpec | None:
        return next((c for c in self.components if c.name == name), None)

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, effective value with secrets masked, help) for `botkeeper config`."""
        rows = [("BOTKEEPER_HOME", str(self.home), "bundle directory"), ("BOTKEEPER_ENV", self.env_name, "profile")]
        for name, knob in KNOBS.items():
            value = getattr(self, name)
            if knob.secret:
                shown = mask_secret(value)
            elif isinstance(value, tuple):
                shown = shlex.join(value)
            else:
                shown = "(not set)" if value is None else str(value)
            rows.append((knob.env, shown, knob.help))
        for comp in self.components:
            rows.append((f"component {comp.name}", shlex.join(comp.command), f"kill_timeout={comp.kill_timeout:g}s"))
        return rows

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, home: Path | str | None = None) -> "Settings":
        environ = dict(os.environ if environ is None else environ)
        home_path = Path(home or environ.get("BOTKEEPER_HOME") or PACKAGE_ROOT).resolve()
        env_name = environ.get("BOTKEEPER_ENV", "production").strip().lower() or "production"
        if env_name not in PROFILES:
            raise ConfigError(
                f"BOTKEEPER_ENV={env_name!r} is not valid: expected one of production, development, test"
            )
        toml_data = _read_toml(home_path / "botkeeper.toml")
        toml_settings = toml_data.get("settings", {})
        dotenv = _read_dotenv(home_path / ".env")
        profile = PROFILES[env_name]

        values: dict[str, Any] = {}
        for name, knob in KNOBS.items():
            raw: Any = None
            source = knob.env
            for src_name, src in (("environment", environ), (".env", dotenv)):
                if src.get(knob.env, "").strip() != "":
                    raw = src[knob.env]
                    break
            else:
                key = name if name in toml_settings else knob.env.lower()
                if key in toml_settings:
                    raw, source = toml_settings[key], f"botkeeper.toml [settings] {key}"
            if raw is None:
                values[name] = profile.get(name, knob.default)
                continue
            try:
                values[name] = knob.parse(raw)
            except ValueError as exc:
                shown = mask_secret(str(raw)) if knob.secret else repr(str(raw))
                raise ConfigError(f"{source}={shown} is not valid: expected {exc}") from None

        _check_relations(values)
        known = set(KNOBS) | {k.env.lower() for k in KNOBS.values()}
        unknown = sorted(set(toml_settings) - known)
        if unknown:
            raise ConfigError(
                f"botkeeper.toml [settings] has unknown key {unknown[0]!r}: expected one of "
                + ", ".join(sorted(KNOBS))
            )
        extra = sorted(set(toml_data) - {"settings", "components"})
        if extra:
            raise ConfigError(
                f"botkeeper.toml has unknown section [{extra[0]}]: expected [settings] or [components.NAME]"
            )
        settings = cls(
            home=home_path,
            env_name=env_name,
            replit_dev_domain=environ.get("REPLIT_DEV_DOMAIN") or None,
            replit_deployment=bool(environ.get("REPLIT_DEPLOYMENT")),
            **values,
        )
        comps = _components(settings, toml_data.get("components", {}))
        return dataclasses.replace(settings, components=comps)


def _check_relations(values: dict[str, Any]) -> None:
    if values["heartbeat_interval"] >= values["stale_after"]:
        raise ConfigError(
            f"HEARTBEAT_INTERVAL={values['heartbeat_interval']:g} is not valid: expected less than"
            f" STALE_AFTER ({values['stale_after']:g}), or every heartbeat would look stale"
        )
    if values["restart_delay"] > values["max_restart_delay"]:
        raise ConfigError(
            f"RESTART_DELAY={values['restart_delay']:g} is not valid: expected at most MAX_RESTART_DELAY"
            f" ({values['max_restart_delay']:g})"
        )
    if values["demo"] == "on" and values["token"]:
        raise ConfigError("DEMO='on' is not valid together with TELEGRAM_BOT_TOKEN: expected DEMO=auto or off")


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    import tomllib  # only when there is a file: keeps the supervisor small

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"botkeeper.toml is not valid TOML: {exc}") from None
    for section in ("settings", "components"):
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"botkeeper.toml [{section}] is not valid: expected a table")
    return data


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        from dotenv import dotenv_values
    except ImportError:  # python-dotenv is in requirements.txt; a bare checkout still starts
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _builtin_commands(settings: Settings) -> dict[str, tuple[str, ...]]:
    py, root = sys.executable, PACKAGE_ROOT
    return {
        "bot": settings.bot_command or (py, str(root / "main.py")),
        "web": (py, str(root / "keep_alive.py")),
        "monitor": (py, str(root / "bot_monitor.py")),
    }


def _components(settings: Settings, table: dict[str, Any]) -> tuple[ComponentSpec, ...]:
    defaults = {k: getattr(settings, k) for k in COMPONENT_KEYS if k not in ("command", "enabled", "heartbeat")}
    builtin = _builtin_commands(settings)
    names = list(builtin)
    if settings.demo_active:
        names.insert(0, "emulator")
        # By path, like the others: children run with cwd=home, where `-m botkeeper` is not importable.
        builtin["emulator"] = (sys.executable, str(PACKAGE_ROOT / "botkeeper" / "emulator.py"), "--demo")
    names += [n for n in table if n not in names]
    specs = []
    for name in names:
        raw = table.get(name, {})
        where = f"botkeeper.toml [components.{name}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} is not valid: expected a table")
        if not re.match(r"^[a-z][a-z0-9_-]{0,31}$", name):
            raise ConfigError(f"{where} has an invalid name: expected lower-case letters, digits, - or _")
        unknown = sorted(set(raw) - set(COMPONENT_KEYS))
        if unknown:
            raise ConfigError(
                f"{where} has unknown key {unknown[0]!r}: expected one of " + ", ".join(sorted(COMPONENT_KEYS))
            )
        parsed: dict[str, Any] = {}
        for key, value in raw.items():
            try:
                parsed[key] = COMPONENT_KEYS[key](value)
            except ValueError as exc:
                raise ConfigError(f"{where} {key}={value!r} is not valid: expected {exc}") from None
        if not parsed.pop("enabled", True):
            continue
        command = parsed.pop("command", None) or builtin.get(name)
        if command is None:
            raise ConfigError(f"{where} needs a command: expected command = \"python worker.py\"")
        heartbeat = parsed.pop("heartbeat", name == "bot")
        specs.append(ComponentSpec(name=name, command=tuple(command), heartbeat=heartbeat, **(defaults | parsed)))
    return tuple(specs)


def load_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """For entry points: the settings, or one clear line on stderr and exit 78."""
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        print(f"botkeeper: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None
