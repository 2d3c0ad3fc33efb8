"""`python -m botkeeper doctor`: check what usually goes wrong and say how to fix each.

Checks: settings, Python and package versions, the bot token (shape, then a real getMe against
the configured Bot API), ADMIN_CHAT_ID (sendChatAction "typing"), the status-page port, logs/,
data/ and run/ writable, free disk, a .env or botkeeper.toml with secrets that other users may read, data/history.db's integrity (quick_check), another copy
polling (Conflict), clock skew (the API's HTTP Date header), and the running bundle's health. Exit 0 only when nothing FAILs (warnings pass).
The token is never printed: only its public bot id (config.mask_secret).
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import os
import re
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import PACKAGE_ROOT, ConfigError, KNOBS, Settings, mask_secret

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_PYTHON = (3, 10)
MAX_SKEW = 30.0  # seconds; beyond this TLS, logs and timestamps go wrong
CONFLICT_PROBE = 3.0  # seconds a getUpdates waits: another poller re-polls within ~1.5 s and ends it with 409
HTTP_TIMEOUT = (5.0, 10.0)


@dataclass
class Result:
    name: str
    status: str  # ok | warn | FAIL
    message: str
    fix: str = ""


# --- settings-independent checks ------------------------------------------------------------------
def check_python() -> Result:
    v = sys.version_info
    text = f"Python {v.major}.{v.minor}.{v.micro} ({sys.executable})"
    if (v.major, v.minor) < MIN_PYTHON:
        return Result("python", FAIL, text, f"use Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer (3.11 is tested)")
    return Result("python", OK, text)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def requirements(path: Path) -> list[tuple[str, str]]:
    """(distribution name, specifier) pairs from a simple requirements.txt."""
    found = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return found
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", line)
        if line and not line.startswith("-") and match:
            found.append((match.group(1), match.group(3).strip()))
    return found


def satisfies(version: str, spec: str) -> bool:
    have = _version_tuple(version)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = re.match(r"^(>=|<=|==|<|>|~=|!=)\s*(.+)$", part)
        if not match:
            continue
        op, want = match.group(1), _version_tuple(match.group(2))
        n = len(want)
        mine = (have + (0,) * n)[:n]
        ok = {">=": mine >= want, "<=": mine <= want, "==": mine == want, "<": mine < want, ">": mine > want,
              "~=": mine >= want, "!=": mine != want}[op]
        if not ok:
            return False
    return True


def check_packages(req_file: Path = PACKAGE_ROOT / "requirements.txt") -> Result:
    reqs = requirements(req_file)
    if not reqs:
        return Result("packages", WARN, f"cannot read {req_file.name}; versions not checked")
    missing, wrong, seen = [], [], []
    for name, spec in reqs:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        seen.append(f"{name} {version}")
        if spec and not satisfies(version, spec):
            wrong.append(f"{name} {version} (need {spec})")
    if missing or wrong:
        what = ", ".join([f"{m} missing" for m in missing] + wrong)
        return Result("packages", FAIL, what, "pip install -r requirements.txt")
    return Result("packages", OK, ", ".join(seen))


def check_bot_python(settings: Settings) -> Result | None:
    """The bot's own interpreter (BOT_COMMAND's, which may not be this one) imports telegram, if the
    bot is a Python script that needs it; None for any other bot."""
    import subprocess

    from ..config import LAUNCHER, importable_env
    from ..supervise.importscan import imports_telegram

    bot = settings.component("bot")
    if bot is None or "python" not in Path(bot.command[0]).name:
        return None
    program = bot.command[0] if os.sep in bot.command[0] else shutil.which(bot.command[0])
    args = [a for a in bot.command[1:] if a != str(LAUNCHER)]
    if program is None or not args or not imports_telegram(args, settings.home):
        return None
    try:
        proc = subprocess.run([program, "-c", "import telegram"], cwd=settings.home, capture_output=True,
                              env=os.environ | importable_env(), timeout=60)
        ok = proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if ok:
        return Result("bot-python", OK, f"{program} imports telegram")
    return Result("bot-python", FAIL, f"the bot's Python {program} cannot import telegram (python-telegram-bot)",
                  f"`{program} -m pip install -r {PACKAGE_ROOT / 'requirements.txt'}`, or start BOT_COMMAND with"
                  " `python` (botkeeper's own Python)")


# --- Telegram -------------------------------------------------------------------------------------
class Api:
    """Bot API calls for the checks; remembers the first HTTP Date header for the clock check."""

    def __init__(self, base_url: str, token: str, redact: Callable[[str], str]):
        self.base_url, self._token, self.redact = base_url.rstrip("/"), token, redact
        self.server_date: float | None = None
        self.local_date: float | None = None

    def call(self, method: str, http_timeout: Any = HTTP_TIMEOUT, **params: Any) -> tuple[int | None, dict[str, Any], str]:
        """(HTTP status or None, body, error text without the token)."""
        import requests

        try:
            resp = requests.post(f"{self.base_url}/bot{self._token}/{method}", json=params, timeout=http_timeout)
        except requests.RequestException as exc:
            from ..alerting.alert_channels import http_error

            return None, {}, http_error(exc, self.redact)
        if self.server_date is None and resp.headers.get("Date"):
            try:
                self.server_date = parsedate_to_datetime(resp.headers["Date"]).timestamp()
                self.local_date = time.time() - resp.elapsed.total_seconds() / 2
            except (TypeError, ValueError):
                pass
        try:
            body = resp.json()
        except ValueError:
            body = {}
        return resp.status_code, body if isinstance(body, dict) else {}, ""


def _desc(body: Mapping[str, Any], redact: Callable[[str], str]) -> str:
    return redact(str(body.get("description") or ""))[:200]


def check_token(settings: Settings, api: Api | None) -> Result:
    if settings.demo_active:
        return Result("token", WARN, "TELEGRAM_BOT_TOKEN is not set: the offline demo runs instead of your bot",
                      "get a token from @BotFather and put TELEGRAM_BOT_TOKEN in Replit Secrets or .env")
    if api is None:  # DEMO=off and no token: nothing runs until one is set
        return Result("token", FAIL, "TELEGRAM_BOT_TOKEN is not set and DEMO=off: the bot cannot start",
                      "get a token from @BotFather and put TELEGRAM_BOT_TOKEN in Replit Secrets or .env"
                      " (or DEMO=auto for the offline demo)")
    shown = mask_secret(settings.token)
    status, body, error = api.call("getMe")
    host = settings.bot_api_base_url
    if status is None:
        return Result("token", FAIL, f"cannot reach the Bot API at {host}: {error}",
                      "check the network (and TELEGRAM_API_BASE_URL if you set it), then run doctor again")
    if status in (401, 404):
        return Result("token", FAIL, f"Telegram rejected the token {shown} (HTTP {status} {_desc(body, api.redact)})",
                      "the token was revoked or mistyped: open @BotFather, /mybots, API Token, and set the new"
                      " value as TELEGRAM_BOT_TOKEN")
    if status != 200 or not body.get("ok"):
        return Result("token", FAIL, f"getMe answered HTTP {status} {_desc(body, api.redact)}",
                      "Telegram may be having trouble; try again in a minute")
    user = body.get("result") or {}
    return Result("token", OK, f"{shown} is @{user.get('username', '?')} (getMe works)")


def check_admin_chat(settings: Settings, api: Api | None, token_ok: bool) -> Result:
    if settings.admin_chat_id is None:
        return Result("admin chat", WARN, "ADMIN_CHAT_ID is not set: down/recovered alerts will not reach Telegram",
                      "send any message to @userinfobot to learn your chat id, set ADMIN_CHAT_ID, then send /start"
                      " to your bot once")
    if api is None or not token_ok:
        return Result("admin chat", WARN, f"ADMIN_CHAT_ID={settings.admin_chat_id} not checked (no working token)")
    status, body, error = api.call("sendChatAction", chat_id=settings.admin_chat_id, action="typing")
    if status == 200 and body.get("ok"):
        return Result("admin chat", OK, f"chat {settings.admin_chat_id} is reachable (sendChatAction works)")
    if status is None:
        return Result("admin chat", FAIL, f"cannot reach the Bot API: {error}", "check the network")
    return Result("admin chat", FAIL,
                  f"chat {settings.admin_chat_id} is not reachable (HTTP {status} {_desc(body, api.redact)})",
                  "open your bot in Telegram and send /start from the ADMIN_CHAT_ID account (a bot cannot write"
                  " first); check the id with @userinfobot (groups have ids starting with -100)")


def check_conflict(settings: Settings, api: Api | None, token_ok: bool, running: bool,
                   hb: Mapping[str, Any] | None, probe: float) -> Result:
    if settings.demo_active or api is None or not token_ok:
        return Result("conflict", OK, "not checked (no working token to probe with)")
    if running:
        if (hb or {}).get("state") == "conflict":
            return Result("conflict", FAIL, "the running bot reports 409 Conflict: another copy polls with this token",
                          "stop the other copy (often the Replit editor's Run and a deployment at the same time)")
        return Result("conflict", OK, "the bundle runs and its bot reports no conflict (not probed: polling now"
                                      " would interrupt our own bot)")
    # No offset: nothing is confirmed, so no update is lost by looking.
    status, body, error = api.call("getUpdates", http_timeout=(5.0, probe + 5.0), timeout=max(1, int(round(probe))), limit=1)
    if status == 409:
        desc = _desc(body, api.redact)
        if "webhook" in desc.lower():
            return Result("conflict", WARN, "a webhook is set for this bot; polling deletes it at start",
                          "nothing to do unless another service relies on that webhook")
        return Result("conflict", FAIL, "another program is polling Telegram with this token (409 Conflict)",
                      "stop the other copy (Replit editor vs deployment, another server) before starting this one")
    if status is None:
        return Result("conflict", WARN, f"not checked: {error}")
    return Result("conflict", OK, f"no other copy answered a {probe:g} s getUpdates with a conflict")


def check_clock(api: Api | None) -> Result:
    if api is None or api.server_date is None:
        return Result("clock", OK, "not checked (no Bot API answer with a Date header)")
    skew = api.local_date - api.server_date
    text = f"local clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the Bot API server"
    if abs(skew) > MAX_SKEW:
        return Result("clock", FAIL, text, "enable time sync (e.g. `timedatectl set-ntp true` or chrony/ntpd)")
    return Result("clock", OK, f"in sync ({text})" if abs(skew) >= 2 else "in sync with the Bot API server")


# --- the machine ------------------------------------------------------------------------------------
def check_port(host: str, port: int, running: bool, what: str, env: str) -> Result:
    if running:
        return Result(f"port {port}", OK, f"in use by this bundle's {what} (it is running)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host if host not in ("", "::") else "0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                owner = port_owner(port)
                return Result(f"port {port}", FAIL, f"port {port} ({what}) is already taken{owner}",
                              f"stop that program, or set {env} to a free port")
            return Result(f"port {port}", FAIL, f"cannot listen on {host}:{port}: {exc.strerror}",
                          f"set HOST/{env} to an address and port this machine can use")
    return Result(f"port {port}", OK, f"free for the {what}")


def port_owner(port: int) -> str:
    try:
        import psutil

        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except Exception:  # psutil.AccessDenied and friends: naming the owner is only a courtesy
        pass
    return ""


def check_writable(path: Path, label: str) -> Result:
    """Really create a file (root passes os.access for everything)."""
    target = path
    while not target.exists() and target.parent != target:
        target = target.parent
    if target.exists() and not target.is_dir():
        return Result(label, FAIL, f"{target} is a file, not a directory",
                      f"move that file away (mv {target} {target}.old) so botkeeper can create the directory")
    probe = target / f".botkeeper-doctor-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return Result(label, FAIL, f"{target} is not writable ({exc.strerror})",
                      f"give this user write access: chown -R $(id -u) {target} && chmod u+rwx {target}")
    return Result(label, OK, f"{path} is writable" if target == path else f"{path} can be created")


def check_disk(home: Path, min_free_mb: int) -> Result:
    target = home if home.exists() else home.parent
    usage = shutil.disk_usage(target)
    free_mb = usage.free / 1024 / 1024
    text = f"{free_mb:,.0f} MB free of {usage.total / 1024 ** 3:.1f} GB"
    if free_mb < min_free_mb:
        return Result("disk", FAIL, f"{text}: below MIN_FREE_DISK_MB={min_free_mb}",
                      "delete old files (logs_archive/ is safe to empty) or add disk space")
    if free_mb < 2 * min_free_mb:
        return Result("disk", WARN, f"{text}: nearly full", "delete old files or add disk space soon")
    return Result("disk", OK, text)


def check_history(path: Path) -> Result:
    """SQLite's quick_check on data/history.db, read-only: doctor reports, the next writer repairs."""
    import sqlite3

    from ..store import Store

    kept = sorted(p.name for p in path.parent.glob(f"{path.name}.corrupt-*") if not p.name.endswith(("-wal", "-shm")))
    note = f"; corrupt copies kept: {', '.join(kept)}" if kept else ""
    if not path.exists():
        return Result("history", OK, f"{path} does not exist yet (the bundle creates it){note}")
    store = Store(path, readonly=True)
    try:
        found = store.quick_check()
    except sqlite3.Error as exc:
        found = str(exc)
    finally:
        store.close()
    if found == "ok":
        return Result("history", OK, f"{path} passes SQLite's quick_check{note}")
    return Result("history", FAIL, f"{path} is corrupt: {found}",
                  "start the bundle or run `python -m botkeeper history`: the corrupt file is moved aside as"
                  f" {path.name}.corrupt-<time> (kept) and a fresh database is started")


def check_private(path: Path) -> Result | None:
    """.env or botkeeper.toml that holds a secret (a secret setting with a value) and that other
    users of the machine may read: the chmod that fixes it. None when the file is absent."""
    from ..config import _read_dotenv, _read_toml

    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    secret_names = {k.env for k in KNOBS.values() if k.secret}
    try:
        if path.name == "botkeeper.toml":
            table = _read_toml(path).get("settings") or {}
            keys = {str(k).upper() for k, v in table.items() if v not in (None, "")}
        else:
            keys = {k for k, v in _read_dotenv(path).items() if v}
    except ConfigError:  # unreadable or invalid: the settings check says so
        return None
    held = sorted(keys & secret_names)
    label = f"{path.name} privacy"
    if not held:
        return Result(label, OK, f"{path} holds no secret setting")
    if mode & 0o077:
        who = "everyone" if mode & 0o004 else "its group"
        return Result(label, WARN, f"{path} holds {', '.join(held)} and is readable by {who} on this machine"
                      f" (mode {mode & 0o777:o})", f"chmod 600 {path}")
    return Result(label, OK, f"{path} holds secrets and is readable only by its owner")


def check_set_aside(settings: Settings) -> Result:
    """Every file the bundle set aside (a corrupt database, a state.json that was a directory): kept
    for inspection, safe to delete once looked at."""
    from ..store import set_aside_files

    found = [p for d in (settings.data_dir, settings.run_dir) for p in set_aside_files(d)
             if not p.name.endswith(("-wal", "-shm"))]
    if not found:
        return Result("set aside", OK, "no file of the bundle was set aside")
    names = ", ".join(str(p.relative_to(settings.home)) for p in found)
    return Result("set aside", WARN, f"{len(found)} file(s) set aside: {names}",
                  "each was replaced by a fresh one (see `python -m botkeeper history` for what was lost);"
                  " delete them once looked at")


def check_bundle(verdict: Any, running: bool) -> Result:
    """The one verdict (botkeeper.health.verdict), as the page and `status` show it."""
    if not running:
        return Result("bundle", OK, "not running (start it with: bash start_24_7.sh)")
    if verdict.healthy:
        return Result("bundle", OK, "running and healthy")
    failing = "; ".join(f"{c.name}: {c.detail}" for c in verdict.failing)
    cause = f" ({verdict.cause.value})" if verdict.cause else ""
    return Result("bundle", WARN, f"running but {verdict.overall}{cause}: {failing}",
                  "see `python -m botkeeper status` and `python -m botkeeper logs bot`")


# --- running them ------------------------------------------------------------------------------------
def load_settings(environ: Mapping[str, str]) -> tuple[Settings | None, list[Result]]:
    """Settings, or the reason they do not load. Each bad variable is named; the rest still load
    when that variable can be dropped from the environment."""
    env = dict(environ)
    problems: list[Result] = []
    by_env = {k.env: k for k in KNOBS.values()}
    for _ in range(10):
        try:
            return Settings.from_env(env), problems
        except ConfigError as exc:
            text = str(exc)
            var = text.split("=", 1)[0].strip()
            name = "token" if var == "TELEGRAM_BOT_TOKEN" else "settings"
            if var == "TELEGRAM_BOT_TOKEN":
                fix = "copy the token again from @BotFather (/mybots, API Token): digits, a colon, 35 characters"
            else:
                fix = f"fix {var} in Replit Secrets, .env or botkeeper.toml" if var in by_env else "fix botkeeper.toml"
            problems.append(Result(name, FAIL, text, fix))
            if var in by_env and env.get(var):
                env.pop(var)
                if var == "TELEGRAM_BOT_TOKEN":
                    env["DEMO"] = "off"
                continue
            return None, problems
    return None, problems


def run_checks(environ: Mapping[str, str], probe: float = CONFLICT_PROBE) -> list[Result]:
    from ..supervise import bundle
    from ..alerting.alert_channels import make_redactor
    from ..health.verdict import read_and_judge

    results = [check_python(), check_packages()]
    settings, problems = load_settings(environ)
    results += problems
    if settings is None:
        return results
    bot_python = check_bot_python(settings)
    if bot_python is not None:
        results.append(bot_python)
    running = bundle.is_running(settings)
    api = None
    token_ok = False
    bad_token = any(r.name == "token" for r in problems)
    if not settings.demo_active and settings.token and not bad_token:
        api = Api(settings.bot_api_base_url, settings.token, make_redactor(settings))
        token = check_token(settings, api)
        token_ok = token.status == OK
        results.append(token)
    elif not bad_token:
        results.append(check_token(settings, None))
    alert_api = api
    if settings.alert_bot_token:
        alert_api = Api(settings.bot_api_base_url, settings.alert_bot_token, make_redactor(settings))
        status, body, error = alert_api.call("getMe")
        alert_ok = status == 200 and body.get("ok")
        results.append(Result("alert token", OK if alert_ok else FAIL,
                              f"ALERT_BOT_TOKEN {mask_secret(settings.alert_bot_token)} "
                              + ("works" if alert_ok else f"does not work ({error or f'HTTP {status}'})"),
                              "" if alert_ok else "set ALERT_BOT_TOKEN to a valid token from @BotFather, or unset it"))
        token_ok_for_alerts = bool(alert_ok)
    else:
        token_ok_for_alerts = token_ok
    results.append(check_admin_chat(settings, alert_api, token_ok_for_alerts))
    snap, verdict = read_and_judge(settings)
    results.append(check_conflict(settings, api, token_ok, running, snap.heartbeat.data, probe))
    results.append(check_clock(api))
    results.append(check_port(settings.host, settings.port, running, "status page", "PORT"))
    if settings.demo_active:
        results.append(check_port("127.0.0.1", settings.emulator_port, running, "demo emulator", "EMULATOR_PORT"))
    for path, label in ((settings.logs_dir, "logs"), (settings.data_dir, "data"), (settings.run_dir, "run")):
        results.append(check_writable(path, label))
    results.append(check_disk(settings.home, settings.min_free_disk_mb))
    results += [r for r in (check_private(settings.home / ".env"), check_private(settings.home / "botkeeper.toml")) if r]
    results.append(check_history(settings.history_db))
    results.append(check_set_aside(settings))
    results.append(check_bundle(verdict, running))
    return results


def render(results: list[Result]) -> str:
    width = max(len(r.name) for r in results)
    out = []
    for r in results:
        out.append(f"  {r.status:<4}  {r.name.ljust(width)}  {r.message}")
        if r.fix and r.status != OK:
            out.append(f"  {'':<4}  {''.ljust(width)}  fix: {r.fix}")
    fails = sum(r.status == FAIL for r in results)
    warns = sum(r.status == WARN for r in results)
    out.append("")
    if fails:
        out.append(f"{fails} problem(s) found" + (f", {warns} warning(s)" if warns else "") + ".")
    else:
        out.append("everything looks good" + (f" ({warns} warning(s))" if warns else "") + ".")
    return "\n".join(out)


def main(argv: list[str], environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m botkeeper doctor",
                                     description="Check the setup and print a fix for each problem.")
    parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    home = environ.get("BOTKEEPER_HOME") or str(PACKAGE_ROOT)
    print(f"botkeeper doctor: {home}")
    results = run_checks(environ, CONFLICT_PROBE)
    print(render(results))
    return 1 if any(r.status == FAIL for r in results) else 0
