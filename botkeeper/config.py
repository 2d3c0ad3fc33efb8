"""Settings: every knob, its default, and validation, read once from the environment.

Sources, strongest first: the process environment (Replit Secrets arrive there), then `.env` in the
bundle's home, then `[settings]` in `botkeeper.toml`, then the defaults of the chosen BOTKEEPER_ENV
profile. Bad values raise ConfigError naming the variable, its (masked) value and what is accepted;
entry points turn that into exit code 78 (EX_CONFIG) and one line on stderr, never a traceback.
"""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import math
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

EX_CONFIG = 78
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # where main.py and friends live

# Token shape as Telegram documents it: the bot id, a colon, a run of URL-safe characters. Real ones
# have 35 after the colon, the Bot API docs' example 34; Telegram's own answer decides the rest.
TOKEN_SECRET_MIN, TOKEN_SECRET_MAX = 30, 50
TOKEN_PATTERN = rf"[0-9]{{3,20}}:[A-Za-z0-9_-]{{{TOKEN_SECRET_MIN},{TOKEN_SECRET_MAX}}}"
TOKEN_RE = re.compile(rf"^{TOKEN_PATTERN}$")
# A token-shaped value that must never be used against the real Telegram: the offline demo's.
DEMO_TOKEN = "123456789:DEMO-botkeeper-offline-demo-token00"  # token-shaped: 35 after the colon
BUILTIN_COMPONENTS = ("bot", "web", "monitor")


class ConfigError(Exception):
    """A setting is missing or invalid. The message is safe to print (secrets masked)."""


def is_bundle(path: Path) -> bool:
    """A bundle home: has botkeeper.toml, a supervisor lock from an earlier start, or is a checkout."""
    return ((path / "botkeeper.toml").is_file() or (path / "run" / "supervisor.lock").exists()
            or all((path / f).is_file() for f in ("main.py", "keep_alive.py", "start_24_7.sh")))


def importable_env() -> dict[str, str]:
    """PYTHONPATH for a bot run from a checkout (not pip-installed), so `import botkeeper` works in it."""
    if not is_bundle(PACKAGE_ROOT):
        return {}
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}


def discover_home(cwd: Path | None = None) -> Path:
    """The home when neither --home nor BOTKEEPER_HOME says: the nearest directory from cwd upwards
    that holds a bundle, else the checkout this package runs from, else cwd (a pip install)."""
    start = (cwd or Path.cwd()).resolve()
    for candidate in (start, *start.parents):
        if is_bundle(candidate):
            return candidate
    return PACKAGE_ROOT if is_bundle(PACKAGE_ROOT) else start


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
    "block_limit": 2.0,  # as STALE_AFTER: a loaded test machine may starve a loop for a second
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
    "outbox_chat_interval": 0.1,  # other tests' quick replies; outbox tests set the real 1 s
    "outbox_max_backoff": 2.0,
    "outbox_poll_interval": 0.2,
    "warm_standby": "off",  # a test that wants the fork server asks for it (one process less per test)
    "webhook_check_interval": 0.5,
}
PROFILES = {"production": PRODUCTION, "development": DEVELOPMENT, "test": TEST}


# --- parsers: each returns the value or raises ValueError(what is accepted) ----------------------
# Numbers are ASCII only: float("٣") and int("²")-style surprises must not become a port or a limit.
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Number:
    """A bounded number parser; the range is part of the knob and shown in `config` and the README."""

    lo: float
    hi: float
    whole: bool = False
    unit: str = ""  # "s", "MB", ... shown after the range
    what: str = ""  # replaces "a number" in the message, e.g. "a port number"
    zero: str = ""  # when set, 0 is also accepted and means this (e.g. "never")

    @property
    def range_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        text = f"{_num(self.lo)}–{_num(self.hi)}{unit}"
        return f"0 ({self.zero}) or {text}" if self.zero else text

    def accepted(self) -> str:
        kind = self.what or ("a whole number" if self.whole else "a number")
        unit = f" {self.unit}" if self.unit and self.unit != "s" else ""  # "s" is in `what`
        text = f"{kind} from {_num(self.lo)} to {_num(self.hi)}{unit}"
        return f"0 ({self.zero}) or {text}" if self.zero else text

    def __call__(self, raw: Any) -> int | float:
        value = self._number(raw)
        if value is None or not (self.lo <= value <= self.hi or (self.zero and value == 0)):
            raise ValueError(self.accepted())
        return value

    def _number(self, raw: Any) -> int | float | None:
        if isinstance(raw, bool):  # TOML `true` is an int to Python, not a number to anyone
            return None
        if isinstance(raw, int):
            return raw if self.whole else float(raw)
        if isinstance(raw, float):  # TOML `inf`, `nan` and 1.5 for a count are refused here
            if not math.isfinite(raw) or (self.whole and not raw.is_integer()):
                return None
            return int(raw) if self.whole else raw
        if not isinstance(raw, str):
            return None
        text = raw.strip(" \t")
        if self.whole:
            return int(text) if _INT_TEXT.fullmatch(text) and len(text) < 20 else None
        if not _FLOAT_TEXT.fullmatch(text):
            return None
        value = float(text)
        return value if math.isfinite(value) else None


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _seconds(lo: float, hi: float, zero: str = "") -> Number:
    return Number(lo, hi, unit="s", what="a number of seconds", zero=zero)


def _port() -> Number:
    return Number(1, 65535, whole=True, what="a port number")


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = raw.strip().lower() if isinstance(raw, str) else ""
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("one of on/off, true/false, yes/no, 1/0")


def _choice(*choices: str):
    def parse(raw: Any) -> str:
        text = raw.strip().lower() if isinstance(raw, str) else ""
        if text not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return text

    return parse


def _plain_text(raw: Any) -> str:
    """A string without the blanks around it; anything else (a TOML number, a list) is refused.
    Line breaks never get here: `_parse` refuses them for every knob."""
    if not isinstance(raw, str):
        raise ValueError("a string")
    return raw.strip()


def _url(raw: Any) -> str:
    accepted = "an http:// or https:// URL such as https://example.com/path (no spaces)"
    try:
        text = _plain_text(raw)
    except ValueError:
        raise ValueError(accepted) from None
    text = text.rstrip("/")
    try:
        parts = urlsplit(text)
        parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(accepted) from None
    if (parts.scheme not in ("http", "https") or not parts.hostname
            or any(ch.isspace() or not ch.isprintable() for ch in text)):
        raise ValueError(accepted)
    return text


APPRISE_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://")
ALERT_URLS_ACCEPTED = ("Apprise URLs such as discord://…, slack://…, ntfys://…, mailto://…, json://…,"
                       " separated by spaces or commas")


def url_scheme(url: str) -> str:
    """The scheme of an Apprise URL (`discord`), the only part of it any message may show."""
    m = APPRISE_SCHEME.match(url)
    return m.group(0)[:-3].lower() if m else ""


def url_secret_parts(url: str) -> list[str]:
    """What an Apprise or dead man's switch URL holds that may turn up without the URL around it:
    the part after the scheme (discord://ID/TOKEN is sent to https://discord.com/api/webhooks/ID/TOKEN),
    its password and its long path segments (a webhook token, a check's UUID)."""
    rest = url.split("://", 1)[-1]
    parts = [rest] if len(rest) >= 8 else []
    user, _, host_path = rest.rpartition("@")
    if ":" in user and len(user.split(":", 1)[1]) >= 6:
        parts.append(user.split(":", 1)[1])
    parts += [seg for seg in re.split(r"[/?&=#]", host_path) if len(seg) >= 16]
    return parts


def _alert_urls(raw: Any) -> tuple[str, ...]:
    """ALERT_URLS: one or more Apprise URLs. A comma or blank starts a new URL only before
    `scheme://`, so the commas inside one (mailto://…?to=a@x.org,b@y.org) stay. Errors name the
    entry and its scheme, never the rest (it holds the webhook token or the password)."""
    if isinstance(raw, list):
        if not all(isinstance(item, str) for item in raw):
            raise ValueError(ALERT_URLS_ACCEPTED)
        items = [item.strip() for item in raw]
    else:
        text = _plain_text(raw) if isinstance(raw, str) else None
        if text is None:
            raise ValueError(ALERT_URLS_ACCEPTED)
        items = re.split(r"[\s,]+(?=[A-Za-z][A-Za-z0-9+.-]{0,31}://)", text)
    urls = []
    for n, item in enumerate((i.strip().rstrip(",") for i in items), 1):
        if not item:
            continue
        scheme = url_scheme(item)
        if not scheme or len(item) <= len(scheme) + 3 or any(ch.isspace() or not ch.isprintable() for ch in item):
            what = f"{scheme}://…" if scheme else "no scheme://"
            raise ValueError(f"{ALERT_URLS_ACCEPTED}; entry {n} ({what}) is not one")
        urls.append(item)
    if not urls:
        raise ValueError(ALERT_URLS_ACCEPTED)
    return tuple(urls)


def _host(raw: Any) -> str:
    """An address to listen on: an IP literal or `localhost`. Names would need DNS at start-up,
    and a typo there turned into a web component crash-looping on a resolver error."""
    accepted = "an IP address such as 0.0.0.0 (every interface), 127.0.0.1 (this machine only) or ::, or localhost"
    try:
        text = _plain_text(raw)
    except ValueError:
        raise ValueError(accepted) from None
    if text.lower() == "localhost":
        return "localhost"
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ValueError(accepted) from None


def _networks(raw: Any) -> tuple[str, ...]:
    """Comma- or space-separated IP addresses or networks (CIDR), normalized."""
    accepted = "IP addresses or networks separated by commas, such as 10.0.0.1, 172.16.0.0/12"
    items = raw if isinstance(raw, (list, tuple)) else None
    if items is None:
        try:
            items = _plain_text(raw).replace(",", " ").split()
        except ValueError:
            raise ValueError(accepted) from None
    try:
        return tuple(str(ipaddress.ip_network(str(item).strip(), strict=False)) for item in items)
    except ValueError:
        raise ValueError(accepted) from None


TOKEN_QUOTES = " \t'\"`"


def strip_token(raw: str) -> str:
    """A pasted token without the spaces and quotes around it (Secrets editors keep them)."""
    return raw.strip(TOKEN_QUOTES)


def _token(raw: Any) -> str:
    text = strip_token(raw) if isinstance(raw, str) else None
    if text is None or not TOKEN_RE.match(text):
        raise ValueError(
            "a token from @BotFather shaped like 110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw (digits, a"
            f" colon, then {TOKEN_SECRET_MIN} to {TOKEN_SECRET_MAX} letters, digits, - or _)"
        )
    return text


# Telegram ids: users and bots up to 2^52, groups/channels as -100xxxxxxxxxx; 0 is nobody.
CHAT_ID_LIMIT = 10**16


def _chat_id(raw: Any) -> int:
    accepted = "a numeric Telegram chat id such as 123456789 or -1001234567890 (not 0)"
    if isinstance(raw, bool):
        raise ValueError(accepted)
    text = str(raw).strip() if isinstance(raw, (int, str)) else ""
    if not (_INT_TEXT.fullmatch(text) and len(text) <= 20) or not 0 < abs(int(text)) < CHAT_ID_LIMIT:
        raise ValueError(accepted)
    return int(text)


def _command(raw: Any) -> tuple[str, ...]:
    accepted = 'a command line such as "python my_bot.py" (a string, or a list of strings in botkeeper.toml)'
    if isinstance(raw, (list, tuple)):
        parts = tuple(raw)
    elif isinstance(raw, str):
        try:
            parts = tuple(shlex.split(raw))
        except ValueError as exc:  # an unbalanced quote or a trailing backslash
            raise ValueError(f"{accepted}; it cannot be split into words ({exc})") from None
    else:
        raise ValueError(accepted)
    if not parts or not all(isinstance(p, str) and p and "\x00" not in p for p in parts):
        raise ValueError(accepted)
    return parts


def _log_level(raw: Any) -> str:
    text = _plain_text(raw).upper() if isinstance(raw, str) else ""
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
    return text


def _clock_time(raw: Any) -> str | None:
    """HH:MM on a 24-hour clock (the machine's local time), normalized to two digits each; off = none."""
    accepted = "a time of day as HH:MM on a 24-hour clock (the machine's local time) such as 09:00, or off"
    text = _plain_text(raw).lower() if isinstance(raw, str) else None
    if text in ("off", "none"):
        return None
    match = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", text or "")
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(accepted)
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("a string")
    return raw


def _file_path(raw: Any) -> str:
    """A file's path: absolute, or relative to the bundle home."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not text or text.endswith("/") or text in (".", "..") or "\x00" in text:
        raise ValueError("a file's path, absolute or relative to BOTKEEPER_HOME (not a directory)")
    return text


def _webhook_secret(raw: Any) -> str:
    """Telegram's secret_token: 1-256 characters A-Z, a-z, 0-9, _ and - (it travels in a header)."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", text):
        raise ValueError("1 to 256 characters: letters, digits, _ or - (Telegram's secret_token)")
    return text


def _redis_url(raw: Any) -> str:
    """redis://[user:password@]host[:port][/db] or rediss:// (TLS), as the redis client takes it."""
    accepted = "a URL such as redis://:password@redis:6379/0 or rediss://... (TLS)"
    text = raw.strip() if isinstance(raw, str) else ""
    try:
        parts = urlsplit(text)
        parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(accepted) from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname or any(ch.isspace() for ch in text):
        raise ValueError(accepted)
    if parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(accepted + " (the database is a number)")
    return text


# Schemes whose host is a public server name; in any other URL-valued secret (an Apprise URL such
# as tgram://<bot token>/<chat> or discord://<id>/<token>) the host part is itself a secret.
PUBLIC_HOST_SCHEMES = frozenset({"http", "https", "redis", "rediss", "json", "jsons", "xml", "xmls", "form", "forms"})


def secret_parts(value: Any) -> list[str]:
    """One secret setting's value and every part of it that may be printed alone, for the one
    redaction filter (logs.Redactor adds the URL-encoded forms). A list/tuple, or a string holding
    several URLs (comma or space separated), counts item by item. For a URL: the whole URL, its
    password, the path with the query, the query, each query value of 6+ characters, each path
    segment of 8+ characters that holds a digit (or of 20+), and for a scheme outside
    PUBLIC_HOST_SCHEMES its user and host part and every path segment of 6+ characters too."""
    if not value:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return [part for item in value for part in secret_parts(item)]
    text = str(value)
    if text.count("://") > 1:
        return [text] + [part for item in re.split(r"[\s,]+", text) if item for part in secret_parts(item)]
    parts = [text]
    try:
        url = urlsplit(text)
        password = url.password
    except ValueError:
        return parts
    if not (url.scheme and url.netloc):
        return parts
    if password:
        parts.append(password)
    if url.scheme.lower() not in PUBLIC_HOST_SCHEMES:
        parts += [p for p in (url.netloc, url.netloc.rpartition("@")[2], url.username) if p and len(p) >= 6]
    tail = url.path + (f"?{url.query}" if url.query else "")
    if len(tail) >= 8:
        parts.append(tail)
    if len(url.path) >= 8:
        parts.append(url.path)
    if url.query:
        parts.append(url.query)
        parts += [v for _, v in parse_qsl(url.query) if len(v) >= 6]
    public_host = url.scheme.lower() in PUBLIC_HOST_SCHEMES
    parts += [seg for seg in url.path.split("/") if len(seg) >= 20 or (len(seg) >= 8 and any(
        ch.isdigit() for ch in seg)) or (not public_host and len(seg) >= 6)]
    return list(dict.fromkeys(parts))


def redis_password(url: str | None) -> str | None:
    """The password inside REDIS_URL: a secret of its own for the redactor (it may appear alone)."""
    return urlsplit(url).password if url else None


BUILTIN_COMMAND_NAMES = ("start", "help", "ping", "status", "uptime")


def _builtin_commands_choice(raw: Any) -> tuple[str, ...]:
    """`all`, `none`, or a comma-separated subset of BUILTIN_COMMAND_NAMES (leading / allowed)."""
    text = str(raw).strip().lower()
    if text == "all":
        return BUILTIN_COMMAND_NAMES
    if text in ("none", ""):
        return ()
    names = [n.strip().lstrip("/") for n in text.split(",") if n.strip()]
    if not names or any(n not in BUILTIN_COMMAND_NAMES for n in names):
        raise ValueError("all, none, or a comma-separated list of " + ", ".join(BUILTIN_COMMAND_NAMES))
    return tuple(dict.fromkeys(names))


def _handlers_path(raw: Any) -> str:
    text = str(raw).strip()
    if not text or (text.lower() != "none" and not (text.endswith(".py") or "/" in text or text.isidentifier())):
        raise ValueError("a .py file or a package directory (relative to BOTKEEPER_HOME), or none")
    return "none" if text.lower() == "none" else text


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
    "emulator_port": Knob("EMULATOR_PORT", _port(), 8099, False, "demo emulator port (loopback)"),
    "host": Knob("HOST", _host, "0.0.0.0", False, "address the status page listens on: an IP address or localhost"),
    "port": Knob("PORT", _port(), 8080, False, "status page port"),
    "admin_chat_id": Knob("ADMIN_CHAT_ID", _chat_id, None, False, "your chat id: alerts and /status go there"),
    "restart_token": Knob("RESTART_TOKEN", _text, None, True, "Bearer token for restart/log endpoints"),
    "trusted_proxies": Knob("TRUSTED_PROXIES", _networks, (), False, "proxy addresses/networks whose X-Forwarded-For is believed"),
    "monitoring_webhook": Knob("MONITORING_WEBHOOK", _url, None, True, "URL that receives alert JSON"),
    "alert_bot_token": Knob("ALERT_BOT_TOKEN", _token, None, True, "separate bot token for alerts"),
    "alert_urls": Knob("ALERT_URLS", _alert_urls, None, True, "Apprise URLs every alert, recovery and daily report also goes to (discord://, slack://, ntfys://, mailto://, json://, ...)"),
    "deadman_url": Knob("DEADMAN_URL", _url, None, True, "dead man's switch (healthchecks.io, Uptime Kuma push, Better Stack heartbeat): pinged while the bot is healthy or degraded, <url>/fail when it is down"),
    "deadman_interval": Knob("DEADMAN_INTERVAL", _seconds(0.1, 86400), 60.0, False, "seconds between dead man's switch pings"),
    "deadman_start": Knob("DEADMAN_START", _bool, False, False, "also GET <DEADMAN_URL>/start when the monitor starts (healthchecks.io)"),
    "bot_command": Knob("BOT_COMMAND", _command, None, False, "run this bot program instead of main.py"),
    "warm_standby": Knob("WARM_STANDBY", _choice("auto", "off"), "auto", False, "auto = a fork server keeps a python-telegram-bot bot warm (imports done) for restarts in tens of ms (about 25 MiB); off = every start is a cold start"),
    "handlers": Knob("HANDLERS", _handlers_path, "handlers.py", False, "your handlers for main.py: a .py file or package directory in BOTKEEPER_HOME, or none"),
    "builtin_commands": Knob("BUILTIN_COMMANDS", _builtin_commands_choice, BUILTIN_COMMAND_NAMES, False, "built-in commands added where your bot has none: all, none, or a list such as ping,status"),
    "public_url": Knob("PUBLIC_URL", _url, None, False, "public URL of the page, for self-ping"),
    "log_level": Knob("LOG_LEVEL", _log_level, "INFO", False, "DEBUG, INFO, WARNING or ERROR"),
    "log_format": Knob("LOG_FORMAT", _choice("text", "json"), "text", False, "logs/<component>.log as text lines or one JSON object per line (combined.log stays text)"),
    "log_max_bytes": Knob("LOG_MAX_BYTES", Number(10_000, 1_000_000_000, whole=True, what="a size in bytes"), 10 * 1024 * 1024, False, "rotate a log at this size"),
    "log_backups": Knob("LOG_BACKUPS", Number(1, 100, whole=True), 5, False, "rotated files kept per log"),
    "log_retention_days": Knob("LOG_RETENTION_DAYS", Number(1, 3650, whole=True, unit="days"), 7, False, "days archived logs are kept"),
    "min_free_disk_mb": Knob("MIN_FREE_DISK_MB", Number(0, 1_000_000, whole=True, unit="MB"), 200, False, "prune old logs below this free space"),
    "heartbeat_interval": Knob("HEARTBEAT_INTERVAL", _seconds(0.05, 3600), 10.0, False, "seconds between heartbeats"),
    "stale_after": Knob("STALE_AFTER", _seconds(0.1, 86400), 60.0, False, "heartbeat age that means hung (at least 2 x HEARTBEAT_INTERVAL)"),
    "quarantine_after": Knob("QUARANTINE_AFTER", Number(1, 100, whole=True, what="a number of strikes"), 2, False, "skip an update that was in flight when this many bots hung or died"),
    "block_limit": Knob("BLOCK_LIMIT", _seconds(0.5, 86400), 10.0, False, "restart the bot once its event loop has been blocked this long (its watchdog thread reports it; STALE_AFTER stays for a bot silent as a whole)"),
    "blocked_warn": Knob("BLOCKED_WARN", _seconds(0.1, 3600), 5.0, False, "log the bot's stack once its event loop has been blocked this long"),
    "update_concurrency": Knob("UPDATE_CONCURRENCY", Number(1, 1000, whole=True, what="a number of updates"), 32, False, "updates of different chats handled at once (one chat's always in order; 1 = one at a time)"),
    "redis_down_polling": Knob("REDIS_DOWN_POLLING", _choice("wait", "alone"), "wait", False, "REDIS_URL and polling, Redis unreachable at start: wait = stand by until Redis answers (never two pollers); alone = poll from this copy anyway (only when it is the one copy)"),
    "send_retry_for": Knob("SEND_RETRY_FOR", _seconds(0, 3600), 30.0, False, "seconds a handler's send is retried after 5xx, timeouts and dropped connections, then it fails"),
    "heartbeat_grace": Knob("HEARTBEAT_GRACE", _seconds(0, 86400), 60.0, False, "seconds after bot start before a missing heartbeat counts"),
    "monitor_interval": Knob("MONITOR_INTERVAL", _seconds(0.05, 3600), 5.0, False, "seconds between monitor checks"),
    "recovery_interval": Knob("RECOVERY_INTERVAL", _seconds(0.1, 3600), 30.0, False, "seconds between auto_recovery checks"),
    "health_grace": Knob("HEALTH_GRACE", _seconds(0, 3600), 60.0, False, "seconds a component may be down before recovery steps in"),
    "max_memory_mb": Knob("MAX_MEMORY_MB", Number(16, 1_000_000, unit="MB"), 400.0, False, "bot memory limit (process tree)"),
    "max_cpu_percent": Knob("MAX_CPU_PERCENT", Number(1, 6400, unit="%"), 80.0, False, "bot CPU limit, sustained (100 = one core)"),
    "cpu_window": Knob("CPU_WINDOW", _seconds(0.5, 86400), 300.0, False, "seconds CPU must stay high"),
    "max_uptime_hours": Knob("MAX_UPTIME_HOURS", Number(0.01, 8760, unit="h", zero="never"), 168.0, False, "planned restart after this; 0 = never"),
    "outage_restart_interval": Knob("OUTAGE_RESTART_INTERVAL", _seconds(1, 86400), 600.0, False, "at most one restart this often during a Telegram outage"),
    "min_uptime": Knob("MIN_UPTIME", _seconds(0, 86400), 10.0, False, "a run shorter than this is a quick failure"),
    "start_seconds": Knob("START_SECONDS", _seconds(0, 600), 1.0, False, "seconds up before starting becomes running"),
    "restart_delay": Knob("RESTART_DELAY", _seconds(0.01, 3600), 0.5, False, "first backoff delay"),
    "max_restart_delay": Knob("MAX_RESTART_DELAY", _seconds(0.01, 86400), 60.0, False, "backoff cap (at least RESTART_DELAY)"),
    "max_restarts": Knob("MAX_RESTARTS", Number(1, 10_000, whole=True), 10, False, "quick failures before errored"),
    "restart_window": Knob("RESTART_WINDOW", _seconds(1, 604800), 900.0, False, "window in which quick failures count"),
    "errored_retry": Knob("ERRORED_RETRY", _seconds(0.1, 86400), 300.0, False, "retry interval once errored"),
    "kill_timeout": Knob("KILL_TIMEOUT", _seconds(0.1, 3600), 10.0, False, "SIGTERM grace before SIGKILL"),
    "start_timeout": Knob("START_TIMEOUT", _seconds(1, 3600), 30.0, False, "how long --detach waits for health"),
    "alerts": Knob("ALERTS", _bool, True, False, "send alerts at all"),
    "self_ping": Knob("SELF_PING", _choice("auto", "on", "off"), "auto", False, "ping PUBLIC_URL to keep the VM awake"),
    "self_ping_interval": Knob("SELF_PING_INTERVAL", _seconds(10, 86400), 240.0, False, "seconds between self-pings"),
    "sample_interval": Knob("SAMPLE_INTERVAL", _seconds(0.1, 3600), 60.0, False, "seconds between resource samples"),
    "demo_interval": Knob("DEMO_INTERVAL", _seconds(0.1, 3600), 5.0, False, "seconds between demo user messages"),
    "unreachable_alert_after": Knob("UNREACHABLE_ALERT_AFTER", _seconds(0, 86400), 300.0, False, "alert when Telegram is unreachable this long"),
    "error_alerts": Knob("ERROR_ALERTS", _choice("off", "new"), "off", False, "new = one alert when a handler error of a new kind (fingerprint) appears"),
    "daily_report_at": Knob("DAILY_REPORT_AT", _clock_time, None, False, "HH:MM (local time) the admin chat/webhook gets a daily report; off = none"),
    "alert_retry_interval": Knob("ALERT_RETRY_INTERVAL", _seconds(0.1, 86400), 30.0, False, "seconds between retries of unsent alerts"),
    "auto_recovery": Knob("AUTO_RECOVERY", _bool, True, False, "supervisor relaunches auto_recovery.py if it is gone"),
    "flap_window": Knob("FLAP_WINDOW", _seconds(1, 86400), 600.0, False, "restarts within this make one incident"),
    "poll_timeout": Knob("POLL_TIMEOUT", _seconds(0, 60), 10.0, False, "getUpdates long-poll timeout (seconds)"),
    "outbox_rate": Knob("OUTBOX_RATE", Number(1, 1000, whole=True, unit="/s"), 30, False, "messages per second the bot sends, all chats together"),
    "outbox_chat_interval": Knob("OUTBOX_CHAT_INTERVAL", _seconds(0, 60), 1.0, False, "seconds between two messages to one private chat"),
    "outbox_group_per_minute": Knob("OUTBOX_GROUP_PER_MINUTE", Number(1, 1000, whole=True, unit="/min"), 20, False, "messages per minute to one group"),
    "outbox_max_age": Knob("OUTBOX_MAX_AGE", _seconds(1, 30 * 86400), 86400.0, False, "an outbox message older than this is dead-lettered, not sent late"),
    "outbox_max_backoff": Knob("OUTBOX_MAX_BACKOFF", _seconds(0.1, 86400), 60.0, False, "longest wait between retries after network errors/5xx"),
    "outbox_poll_interval": Knob("OUTBOX_POLL_INTERVAL", _seconds(0.05, 60), 1.0, False, "seconds between looks for messages queued by other processes"),
    "telegram_mode": Knob("TELEGRAM_MODE", _choice("polling", "webhook"), "polling", False, "how updates arrive: polling (one copy per token) or webhook (Telegram POSTs to WEBHOOK_URL; several replicas may serve)"),
    "webhook_url": Knob("WEBHOOK_URL", _url, None, False, "webhook mode: the public https URL Telegram POSTs updates to (routed to WEBHOOK_PORT, path /telegram)"),
    "webhook_port": Knob("WEBHOOK_PORT", _port(), 8443, False, "webhook mode: the port the bot receives updates on (path /telegram)"),
    "webhook_secret": Knob("WEBHOOK_SECRET", _webhook_secret, None, True, "webhook mode: the X-Telegram-Bot-Api-Secret-Token every delivery must carry"),
    "webhook_check_interval": Knob("WEBHOOK_CHECK_INTERVAL", _seconds(0.1, 3600), 30.0, False, "webhook mode: seconds between getWebhookInfo checks (Telegram's side of the link)"),
    "redis_url": Knob("REDIS_URL", _redis_url, None, True, "shared state for several replicas: update claims, send limits, poison strikes, the poller lock; unset = all local"),
    "outer": Knob("BOTKEEPER_OUTER", _choice("auto", "none", "systemd", "container", "pm2"), "auto", False,
                  "outer supervisor; auto = detected. Under one, start runs the supervisor alone in the foreground"),
    "crontab_file": Knob("CRONTAB_FILE", _text, None, False,
                         "`install cron` edits this file instead of the user's crontab (crontab -l / -)"),
    "update_command": Knob("UPDATE_COMMAND", _command, None, False,
                           "`update` runs this instead of git fetch + fast-forward (the work tree must still be clean)"),
    "update_trigger": Knob("UPDATE_TRIGGER", _file_path, None, False,
                           "a file whose appearance makes auto_recovery run `update`; default run/update.trigger"),
    "update_health_timeout": Knob("UPDATE_HEALTH_TIMEOUT", _seconds(1, 3600), 60.0, False,
                                  "seconds an update waits for the new bot's healthy heartbeat before rolling back"),
}
SECRET_FIELDS = tuple(name for name, knob in KNOBS.items() if knob.secret)

# Per-component limits share the knobs' parsers (and so their ranges).
COMPONENT_KEYS: dict[str, Callable[[Any], Any]] = {"command": _command, "enabled": _bool, "heartbeat": _bool} | {
    key: KNOBS[key].parse
    for key in ("min_uptime", "start_seconds", "restart_delay", "max_restart_delay", "max_restarts",
                "restart_window", "errored_retry", "kill_timeout")
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
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold the token


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
    trusted_proxies: tuple[str, ...]
    monitoring_webhook: str | None
    alert_bot_token: str | None
    bot_command: tuple[str, ...] | None
    handlers: str
    builtin_commands: tuple[str, ...]
    public_url: str | None
    log_level: str
    log_max_bytes: int
    log_backups: int
    log_retention_days: int
    min_free_disk_mb: int
    heartbeat_interval: float
    stale_after: float
    quarantine_after: int
    block_limit: float
    blocked_warn: float
    update_concurrency: int
    send_retry_for: float
    redis_down_polling: str
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
    outbox_rate: int = 30
    outbox_chat_interval: float = 1.0
    outbox_group_per_minute: int = 20
    outbox_max_age: float = 86400.0
    outbox_max_backoff: float = 60.0
    outbox_poll_interval: float = 1.0
    outer: str = "auto"
    crontab_file: str | None = None
    log_format: str = "text"
    error_alerts: str = "off"
    daily_report_at: str | None = None
    update_command: tuple[str, ...] | None = None
    update_trigger: str | None = None
    update_health_timeout: float = 60.0
    warm_standby: str = "auto"
    telegram_mode: str = "polling"
    webhook_url: str | None = None
    webhook_port: int = 8443
    webhook_secret: str | None = None
    webhook_check_interval: float = 30.0
    redis_url: str | None = None
    alert_urls: tuple[str, ...] | None = None
    deadman_url: str | None = None
    deadman_interval: float = 60.0
    deadman_start: bool = False
    replit_dev_domain: str | None = None
    replit_deployment: bool = False
    components: tuple[ComponentSpec, ...] = field(default=())
    notices: tuple[str, ...] = ()  # safe-to-print remarks about the settings (a token cleaned up)

    # --- derived -------------------------------------------------------------------------------
    @property
    def demo_active(self) -> bool:
        # The demo token arrives in a bot's environment from the supervisor: it still means the demo.
        return self.demo == "on" or (self.demo == "auto" and (not self.token or self.token == DEMO_TOKEN))

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
    def outbox_db(self) -> Path:
        return self.data_dir / "outbox.db"

    @property
    def update_trigger_file(self) -> Path:
        return self.home / self.update_trigger if self.update_trigger else self.run_dir / "update.trigger"

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

    def bot_env(self) -> dict[str, str]:
        """What every bot command finds in its environment, demo or live: the token, the Bot API
        base URL as python-telegram-bot's `ApplicationBuilder().base_url()` takes it, the heartbeat file."""
        env = {"BOTKEEPER_API_BASE_URL": f"{self.bot_api_base_url}/bot",
               "BOTKEEPER_HEARTBEAT_FILE": str(self.heartbeat_file),
               "BOTKEEPER_HEARTBEAT_INTERVAL": f"{self.heartbeat_interval:g}"}
        if self.bot_token:
            env["TELEGRAM_BOT_TOKEN"] = self.bot_token
        return env | importable_env()

    def secrets(self) -> list[str]:
        """The one list the redaction filter masks: every setting whose Knob is marked secret, with
        the parts of it that may be printed alone (`secret_parts`: a webhook URL's path and query,
        REDIS_URL's password, an Apprise URL's token; `url_secret_parts`: what Apprise rewrites
        discord://ID/TOKEN into). A new secret setting is one Knob with secret=True."""
        found = [p for f in SECRET_FIELDS for p in secret_parts(getattr(self, f))]
        for url in (*(self.alert_urls or ()), self.deadman_url or ""):
            found.extend(url_secret_parts(url) if url else ())
        found.extend(p for p in (redis_password(self.redis_url),) if p)
        return list(dict.fromkeys(found))

    def component(self, name: str) -> ComponentSpec | None:
        return next((c for c in self.components if c.name == name), None)

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, effective value with secrets masked, help and accepted range) for `botkeeper config`."""
        rows = [("BOTKEEPER_HOME", str(self.home), "bundle directory"), ("BOTKEEPER_ENV", self.env_name, "profile")]
        for name, knob in KNOBS.items():
            value = getattr(self, name)
            if knob.secret and isinstance(value, tuple):
                shown = ", ".join(f"{url_scheme(v)}://***" for v in value)
            elif knob.secret:
                shown = mask_secret(value)
            elif knob.parse is _command and value:
                shown = shlex.join(value)
            elif isinstance(value, tuple):
                shown = ", ".join(value) or "(none)"
            else:
                shown = "(not set)" if value is None else str(value)
            accepted = knob_range(knob)
            rows.append((knob.env, shown, knob.help + (f" [{accepted}]" if accepted else "")))
        for comp in self.components:
            rows.append((f"component {comp.name}", shlex.join(comp.command), f"kill_timeout={comp.kill_timeout:g}s"))
        return rows

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def from_run_files(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """The defaults only, for the same home: what `stop` and `status` need when .env,
        botkeeper.toml or the environment is broken (they act on the run files: PID files, locks,
        the control socket, whose places do not depend on any setting)."""
        environ = dict(os.environ if environ is None else environ)
        home = Path(environ.get("BOTKEEPER_HOME") or discover_home()).resolve()
        env_name = environ.get("BOTKEEPER_ENV", "").strip().lower()
        return cls.from_env({"BOTKEEPER_ENV": env_name if env_name in PROFILES else "production",
                             "PATH": environ.get("PATH", os.defpath)}, home, files=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, home: Path | str | None = None,
                 files: bool = True) -> "Settings":
        environ = dict(os.environ if environ is None else environ)
        home_path = Path(home or environ.get("BOTKEEPER_HOME") or discover_home()).resolve()
        env_name = environ.get("BOTKEEPER_ENV", "production").strip().lower() or "production"
        if env_name not in PROFILES:
            raise ConfigError(
                f"BOTKEEPER_ENV={env_name!r} is not valid: expected one of production, development, test"
            )
        toml_data = _read_toml(home_path / "botkeeper.toml") if files else {}
        toml_settings = toml_data.get("settings", {})
        dotenv = _read_dotenv(home_path / ".env") if files else {}
        profile = PROFILES[env_name]

        values: dict[str, Any] = {}
        notices: list[str] = []
        for name, knob in KNOBS.items():
            raw, source = _raw_value(name, knob, environ, dotenv, toml_settings)
            if raw is None:
                values[name] = profile.get(name, knob.default)
                continue
            values[name] = _parse(knob, raw, source)
            if knob.parse is _token and strip_token(raw) != raw:
                notices.append(f"{source}: removed the spaces or quotes around the token (set it without them)")

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
        if values["bot_command"] and not is_our_python(values["bot_command"][0]):  # `python`: ours, always there
            _check_program(values["bot_command"], "BOT_COMMAND", home_path, environ.get("PATH", os.defpath))
        if values["update_command"]:
            _check_program(values["update_command"], "UPDATE_COMMAND", home_path, environ.get("PATH", os.defpath))
        settings = cls(
            home=home_path,
            env_name=env_name,
            replit_dev_domain=environ.get("REPLIT_DEV_DOMAIN") or None,
            replit_deployment=bool(environ.get("REPLIT_DEPLOYMENT")),
            notices=tuple(notices),
            **values,
        )
        comps = _components(settings, toml_data.get("components", {}))
        return dataclasses.replace(settings, components=comps)


def knob_range(knob: Knob) -> str:
    """The accepted range of a numeric knob ("0.05–3600 s"), else ""."""
    return knob.parse.range_text if isinstance(knob.parse, Number) else ""


def _raw_value(name: str, knob: Knob, environ: Mapping[str, str], dotenv: Mapping[str, str],
               toml_settings: Mapping[str, Any]) -> tuple[Any, str]:
    """(raw value, where it came from); raw is None when no source sets the knob.

    An empty value means "not set" only for a knob that is off by default (a token, a URL): for
    one with a default, `PORT=` is a mistake worth naming, not a silent fallback.
    """
    for src in (environ, dotenv):
        if knob.env in src:
            raw = src[knob.env]
            if raw.strip() == "" and knob.default is None:
                continue
            return raw, knob.env
    key = name if name in toml_settings else knob.env.lower()
    if key in toml_settings:
        return toml_settings[key], f"botkeeper.toml [settings] {key}"
    return None, knob.env


def _parse(knob: Knob, raw: Any, source: str) -> Any:
    shown = mask_secret(str(raw)) if knob.secret else repr(raw)
    if isinstance(raw, str) and any(ch in raw for ch in "\r\n\x00"):
        raise ConfigError(f"{source}={shown} is not valid: expected one line (it contains a line break)")
    try:
        return knob.parse(raw)
    except ValueError as exc:
        if isinstance(raw, str) and raw.strip() == "":
            exc = ValueError(f"{exc} (unset it to use the default)")
        raise ConfigError(f"{source}={shown} is not valid: expected {exc}") from None


def _check_program(command: tuple[str, ...], source: str, home: Path, path: str) -> None:
    """The program of a command must exist now, not crash-loop later: found on PATH, or, when it
    names a file (./bot, bin/bot), that file relative to the bundle home (children run there)."""
    program = command[0]
    if "/" in program:
        target = home / program
        if not (target.is_file() and os.access(target, os.X_OK)):
            raise ConfigError(f"{source}={shlex.join(command)!r} is not valid: expected {program!r} to be an"
                              f" executable file (relative to {home})")
    elif shutil.which(program, path=path) is None:
        raise ConfigError(f"{source}={shlex.join(command)!r} is not valid: expected a program found on PATH;"
                          f" {program!r} is not (give its full path, or install it)")


# One late heartbeat (a busy event loop, a slow disk) must not make the bot look hung. Tiny intervals
# (0.0001 s cost 16 % CPU) are refused by the HEARTBEAT_INTERVAL range itself.
MIN_STALE_FACTOR = 2


def _check_relations(values: dict[str, Any]) -> None:
    if values["stale_after"] < MIN_STALE_FACTOR * values["heartbeat_interval"]:
        raise ConfigError(
            f"STALE_AFTER={values['stale_after']:g} is not valid: expected at least {MIN_STALE_FACTOR} x"
            f" HEARTBEAT_INTERVAL ({MIN_STALE_FACTOR * values['heartbeat_interval']:g}), or a single late"
            " heartbeat would look like a hung bot"
        )
    if values["restart_delay"] > values["max_restart_delay"]:
        raise ConfigError(
            f"RESTART_DELAY={values['restart_delay']:g} is not valid: expected at most MAX_RESTART_DELAY"
            f" ({values['max_restart_delay']:g})"
        )
    if values["telegram_mode"] == "webhook":
        for field_name in ("webhook_url", "webhook_secret"):
            if not values[field_name]:
                raise ConfigError(f"TELEGRAM_MODE=webhook needs {KNOBS[field_name].env}: expected it set"
                                  f" ({KNOBS[field_name].help.split(': ', 1)[-1]})")
    if values["demo"] == "on" and values["token"] and values["token"] != DEMO_TOKEN:
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


DOTENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def _read_dotenv(path: Path) -> dict[str, str]:
    """`.env` as python-dotenv reads it, but a line it cannot parse is an error naming the line
    (python-dotenv itself only warns and drops it), and so are bytes that are not UTF-8."""
    if not path.is_file():
        return {}
    try:
        from dotenv import dotenv_values
        from dotenv.parser import parse_stream
    except ImportError:  # python-dotenv is in requirements.txt; a bare checkout still starts
        return {}
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror}): expected a readable file") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path} line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}): expected a"
                          " file saved as UTF-8") from None
    for binding in parse_stream(io.StringIO(text)):
        lead = binding.original.string[: len(binding.original.string) - len(binding.original.string.lstrip())]
        line = binding.original.line + lead.count("\n")
        if binding.error:
            raise ConfigError(f"{path} line {line} cannot be parsed: expected NAME=value (check for an"
                              " unclosed quote)")
        if binding.key is not None and (binding.value is None or not DOTENV_KEY.fullmatch(binding.key)):
            raise ConfigError(f"{path} line {line} cannot be parsed: expected NAME=value, not {binding.key!r}")
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def _builtin_commands(settings: Settings) -> dict[str, tuple[str, ...]]:
    py, root = sys.executable, PACKAGE_ROOT
    return {
        "bot": bot_argv(settings.bot_command, settings.home) if settings.bot_command else (py, str(root / "main.py")),
        "web": (py, str(root / "keep_alive.py")),
        "monitor": (py, str(root / "bot_monitor.py")),
        "forkserver": (py, str(root / "botkeeper" / "bot" / "forkserver.py")),
    }


PYTHON_NAME = re.compile(r"python(3(\.\d+)?)?")
LAUNCHER = PACKAGE_ROOT / "botkeeper" / "bot" / "launch.py"


def is_our_python(program: str) -> bool:
    """`python`, `python3`, `python3.11` (a bare name) or this very interpreter: BOT_COMMAND runs ours."""
    if os.sep not in program:
        return bool(PYTHON_NAME.fullmatch(program))
    return os.path.abspath(program) == os.path.abspath(sys.executable)


def bot_argv(command: tuple[str, ...], home: Path) -> tuple[str, ...]:
    """BOT_COMMAND as the supervisor runs it. `python ...` runs this interpreter (the one that has
    botkeeper's packages, not whatever `python` PATH finds, if any), and a script or `-m module` that
    imports python-telegram-bot runs through the launcher (botkeeper/bot/launch.py): an unchanged
    bot gets the API URL, heartbeat, redaction and built-ins. Anything else is run as written."""
    from .supervise.importscan import imports_telegram
    from .supervise.warm import python_argv

    if not is_our_python(command[0]):
        return command
    own = (sys.executable, *command[1:])
    argv = python_argv(own, sys.executable)
    if argv is None or not imports_telegram(argv, home):
        return own
    if argv[0] != "-m" and (home / argv[0]).resolve() in (PACKAGE_ROOT / "main.py", LAUNCHER):
        return own  # botkeeper's own bot is attached by itself
    return (sys.executable, str(LAUNCHER), *argv)


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
        own = parsed.pop("command", None)
        command = own or builtin.get(name)
        if command is None:
            raise ConfigError(f"{where} needs a command: expected command = \"python worker.py\"")
        if own:  # `python worker.py` in botkeeper.toml: our interpreter too (no alias needed, same packages)
            command = bot_argv(tuple(own), settings.home) if name == "bot" else (
                (sys.executable, *own[1:]) if is_our_python(own[0]) else own)
        heartbeat = parsed.pop("heartbeat", name == "bot")
        limits = defaults | parsed
        if limits["restart_delay"] > limits["max_restart_delay"]:
            raise ConfigError(f"{where} restart_delay={limits['restart_delay']:g} is not valid: expected at most"
                              f" max_restart_delay ({limits['max_restart_delay']:g})")
        env = tuple(settings.bot_env().items()) if heartbeat else ()  # a bot gets token, API URL, heartbeat file
        specs.append(ComponentSpec(name=name, command=tuple(command), heartbeat=heartbeat, env=env, **limits))
    warm = settings.warm_standby == "auto"
    return tuple(s for s in specs if s.name != "forkserver"
                 or (warm and _warm_capable(specs, s, builtin["forkserver"], settings.home)))


def _warm_capable(specs: list[ComponentSpec], forkserver: ComponentSpec, ours: tuple[str, ...], cwd: Path) -> bool:
    """Our fork server only where it can help: a bot that is our interpreter running a script or a
    module that imports python-telegram-bot (what the fork server preloads). A BOT_COMMAND in another
    language or interpreter, or a Python bot without telegram, keeps cold starts only."""
    from .supervise.importscan import imports_telegram
    from .supervise.warm import python_argv

    if forkserver.command != ours:
        return True
    bot = next((s for s in specs if s.name == "bot"), None)
    argv = python_argv(bot.command, sys.executable) if bot is not None else None
    return argv is not None and imports_telegram(argv, cwd)


def load_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """For entry points: the settings, or one clear line on stderr and exit 78."""
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        print(f"botkeeper: configuration error: {exc}", file=sys.stderr)
        from .causes import Cause
        from .runfiles import write_exit_note

        write_exit_note(Cause.NEEDS_CONFIG, f"configuration error: {exc}")  # the supervisor shows our reason
        raise SystemExit(EX_CONFIG) from None
