"""`python -m botkeeper COMMAND`: start, stop, status, restart, logs, config, supervise, ...

Every command loads the settings first, so a bad setting is one clear line and exit 78.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..supervise import bundle, control, process
from .. import fmt, runfiles
from ..fmt import duration as fmt_duration, size as fmt_bytes
from ..config import ConfigError, EX_CONFIG, Settings
from ..fsutil import ensure_dirs_or_exit, private_umask
from ..health.snapshot import deadman_view
from ..health.verdict import NEEDS_CONFIG, read_and_judge

EX_NOT_HEALTHY = 1  # `status`: running, but overall is not healthy
EX_NOT_RUNNING = 3
CRASH_LOOP_NAMED_AFTER = 3.0  # seconds of crash-loop verdicts before `start --detach` names it and returns
# Commands that create files under run/, logs/ and data/: checked first, one line if they cannot.
WRITES_HOME = ("start", "stop", "supervise")
# Commands that work from the run files alone when the settings are broken (see without_settings).
RUN_FILES_ONLY = ("stop", "status", "start")

# Commands implemented in their own modules: name -> "module:function(settings, argv) -> int".
DELEGATED = {
    "emulator": "botkeeper.emulator:main",
    "doctor": "botkeeper.ops.doctor:main",
    "history": "botkeeper.ops.history:main",
    "errors": "botkeeper.bot.errorstats:main",
    "alert-test": "botkeeper.alerting.alerts:main_test",
    "outbox": "botkeeper.ops.outbox_cli:main",
    "install": "botkeeper.ops.install:main_install",
    "uninstall": "botkeeper.ops.install:main_uninstall",
    "probe": "botkeeper.ops.probe:main",
    "update": "botkeeper.ops.update:main",
}


CHECKS_ALERT_URLS = ("start", "ensure", "reload")  # not `supervise`: Apprise would stay in its memory


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, early = global_options(argv)
    if early is not None:
        return early
    if argv and argv[0] in DELEGATED:
        module, func = DELEGATED[argv[0]].split(":")
        try:
            target = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError):
            print(f"botkeeper: the {argv[0]!r} command is not available in this version", file=sys.stderr)
            return 2
        return int(target(argv[1:]) or 0)
    args = parser().parse_args(argv)
    if args.command not in ("supervise", "start"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `status | head` ends quietly, no traceback
    try:
        settings = Settings.from_env()
        if args.command in CHECKS_ALERT_URLS and settings.alert_urls:
            from ..alerting.alert_channels import check_alert_urls

            check_alert_urls(settings)  # Apprise's own check (imported only here): a bad URL is 78 now
    except ConfigError as exc:
        if args.command in RUN_FILES_ONLY:
            return without_settings(args, exc)
        kept = "reload refused, the running settings are kept: " if args.command == "reload" else ""
        print(f"botkeeper: {kept}configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    for notice in settings.notices:
        print(f"botkeeper: notice: {notice}", file=sys.stderr)
    if args.command in WRITES_HOME:
        private_umask()  # inherited by the runner, the supervisor and every component
        ensure_dirs_or_exit(settings.run_dir, settings.logs_dir, settings.data_dir)
    return int(args.func(settings, args) or 0)


def without_settings(args, exc: ConfigError) -> int:
    """`stop` and `status` with broken settings work from the run files alone (PID files, locks, the
    control socket) and say the settings are broken; `start` leaves a running copy as it is (it keeps
    its settings) and exits 78: a typo in .env never takes the bot down, nor keeps it from stopping."""
    try:
        fallback = Settings.from_run_files()
    except ConfigError:  # not even the defaults (cannot happen with a sane install): nothing to act on
        fallback = None
    if args.command == "start" or fallback is None:
        running = fallback is not None and fallback.run_dir.is_dir() and bundle.is_running(fallback)
        kept = (" (the bundle that is running keeps running with the settings it started with; stop works"
                " without them)") if running else ""
        print(f"botkeeper: configuration error: {exc}{kept}", file=sys.stderr)  # one line, as every 78
        return EX_CONFIG
    print(f"botkeeper: the settings are broken: {exc}; {args.command} works from the run files alone, fix"
          " the settings before the next start", file=sys.stderr)
    args.settings_error = str(exc)
    return int(args.func(fallback, args) or 0)


def global_options(argv: list[str]) -> tuple[list[str], int | None]:
    """`--version` and `--home DIR` before the command. --home becomes BOTKEEPER_HOME, so every
    command, delegated ones and the processes they start included, uses that bundle. Without it the
    home is BOTKEEPER_HOME or the nearest directory from here upwards that holds a bundle."""
    while argv and argv[0].startswith("--"):
        option = argv.pop(0)
        if option == "--version":
            from .. import __version__

            print(f"botkeeper {__version__}")
            return argv, 0
        name, _, value = option.partition("=")
        if name != "--home":
            argv.insert(0, option)
            break
        if not value:
            value = argv.pop(0) if argv else ""
        if not value or not Path(value).is_dir():
            print(f"botkeeper: --home {value!r} is not valid: expected an existing directory", file=sys.stderr)
            return argv, EX_CONFIG
        os.environ["BOTKEEPER_HOME"] = str(Path(value).resolve())
    return argv, None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="botkeeper", description="Keep a Telegram bot alive 24/7.",
                                epilog="global options (before COMMAND): --home DIR (the bundle; default:"
                                       " BOTKEEPER_HOME or the nearest directory upwards holding one), --version")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    sp = add("start", cmd_start, "start the bundle (stops an earlier copy first)")
    sp.add_argument("--detach", action="store_true", help="return once healthy instead of streaming logs")
    add("ensure", cmd_ensure, "start the bundle (detached) only if it is not running; for cron")
    add("stop", cmd_stop, "stop every process of the bundle")
    sp = add("status", cmd_status, "show the components like pm2 status")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--watch", action="store_true", help="redraw every second until Ctrl+C")
    sp = add("restart", cmd_restart, "restart one component through the supervisor")
    sp.add_argument("name")
    sp.add_argument("--reason", default="requested from the command line")
    add("reload", cmd_reload, "re-read .env and botkeeper.toml; restart only what changed (also: SIGHUP to the supervisor)")
    sp = add("logs", cmd_logs, "print a component's log")
    sp.add_argument("name")
    sp.add_argument("-n", type=int, default=40, help="number of lines (default 40)")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    sp = add("config", cmd_config, "print the effective settings (secrets masked)")
    sp.add_argument("--markdown", action="store_true", help="print the settings table of README.md")
    add("supervise", cmd_supervise, "run the supervisor (run_24_7.sh does this)")
    sp = add("beat", cmd_beat, "write one heartbeat for a bot that is not python-telegram-bot")
    sp.add_argument("--state", default="alive", help="heartbeat state (default alive)")
    sp.add_argument("--detail", default=None, help="a short text shown on the status page")
    for name in DELEGATED:
        sub.add_parser(name, help=f"see `python -m botkeeper {name} --help`")
    return p


# --- start / stop ---------------------------------------------------------------------------------
def cmd_start(settings: Settings, args) -> int:
    from ..supervise import outer
    from ..config import PACKAGE_ROOT

    if not (PACKAGE_ROOT / "run_24_7.sh").is_file():  # pip-installed: library, CLI and plugin only
        print("botkeeper: start needs the project directory (start_24_7.sh, run_24_7.sh, main.py), which a pip"
              " install does not include: run `bash start_24_7.sh` in your copy of the project", file=sys.stderr)
        return EX_CONFIG
    # --detach asks for a background bundle on a bare machine: the bundle's own layers keep it alive.
    mode = "none" if args.detach else outer.mode(settings)
    os.environ["BOTKEEPER_OUTER"] = mode  # the supervisor and everything it starts use the same mode
    try:
        with bundle.start_lock(settings, timeout=settings.start_timeout * 2 + 60):
            if bundle.is_running(settings):
                print("botkeeper: stopping the copy that is already running in this directory")
                bundle.stop(settings)
            busy = bundle.ports_busy(settings)
            if busy:
                print(f"botkeeper: {busy}", file=sys.stderr)
                return EX_CONFIG
            if mode != "none":
                runfiles.clear_stopping(settings)
                print_banner(settings, mode)
                return exec_supervisor(settings)
            # This run's lines only: the stream starts where combined.log ends now (not its old tracebacks).
            follower = None if args.detach else LogFollower(settings.logs_dir / "combined.log", from_end=True)
            bundle.spawn_roots(settings, follow_us=not args.detach)
            print_banner(settings)
            if args.detach:
                return wait_until_healthy(settings)
    except TimeoutError as exc:
        print(f"botkeeper: {exc}", file=sys.stderr)
        return 1
    return follow_foreground(settings, follower)


def cmd_ensure(settings: Settings, args) -> int:
    """cron's 5-minute check: start the bundle if nothing of it runs, else do nothing at all."""
    try:
        with bundle.start_lock(settings, timeout=settings.start_timeout * 2 + 60):
            if bundle.is_running(settings):
                return 0
            os.environ["BOTKEEPER_OUTER"] = "none"
            print(f"botkeeper: {time.strftime('%F %T')} the bundle was not running: starting it")
            bundle.spawn_roots(settings)
            return wait_until_healthy(settings)
    except TimeoutError as exc:
        print(f"botkeeper: {exc}", file=sys.stderr)
        return 1


def exec_supervisor(settings: Settings) -> int:
    """Become the supervisor (same PID: systemd's main process, the container's PID 1, PM2's child)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ["BOTKEEPER_HOME"] = str(settings.home)
    os.chdir(bundle.PACKAGE_ROOT)  # where `-m botkeeper` is importable, as for run_24_7.sh
    os.execv(sys.executable, [sys.executable, "-m", "botkeeper", "supervise"])
    return 1  # not reached


def cli_name() -> str:
    """How to run botkeeper's commands from the project directory: `python -m botkeeper` where that
    `python` is this interpreter, else this interpreter's path (the .venv start_24_7.sh made on a
    machine without a `python` alias)."""
    import shutil

    from ..config import PACKAGE_ROOT

    for alias in ("python", "python3"):
        found = shutil.which(alias)
        if found and os.path.samefile(found, sys.executable) and found.startswith(os.path.dirname(sys.executable)):
            return f"{alias} -m botkeeper"
    try:
        return f"{Path(sys.executable).relative_to(PACKAGE_ROOT)} -m botkeeper"
    except ValueError:
        return f"{sys.executable} -m botkeeper"


def print_banner(settings: Settings, mode: str = "none") -> None:
    host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    lines = [
        "botkeeper: keeping your Telegram bot alive",
        f"  status page : http://{host}:{settings.port}/   (health: /health)",
        f"  logs        : {settings.logs_dir}/<component>.log   ({cli_name()} logs bot -f)",
        f"  status      : {cli_name()} status",
        "  stop        : Ctrl+C here, or bash stop_24_7.sh",
    ]
    if mode != "none":
        from ..supervise.outer import describe

        lines[-1:] = [f"  supervised  : by {describe(mode)}"]
    lines[1:1] = bot_command_lines(settings)
    if settings.demo_active:
        lines[1:1] = [
            "  *** DEMO *** no TELEGRAM_BOT_TOKEN is set: running against the built-in offline Telegram emulator.",
            "  To go live: add TELEGRAM_BOT_TOKEN (from @BotFather) in Replit Secrets or .env and run again.",
        ]
    print("\n".join(lines), flush=True)


def bot_command_lines(settings: Settings) -> list[str]:
    """What BOT_COMMAND became: `python` is our interpreter, a python-telegram-bot bot runs attached."""
    from ..config import LAUNCHER, is_our_python

    bot = settings.component("bot")
    if not settings.bot_command or bot is None or not is_our_python(settings.bot_command[0]):
        return []
    lines = [f"  bot         : BOT_COMMAND's {settings.bot_command[0]!r} is this Python: {sys.executable}"]
    if len(bot.command) > 1 and bot.command[1] == str(LAUNCHER):
        lines.append("                a python-telegram-bot bot: the launcher attaches botkeeper to it (no edit needed)")
    return lines


def wait_until_healthy(settings: Settings) -> int:
    """`start --detach`: 0 once healthy; 78 when the bot (or another component) needs configuration,
    with its own reason; 1 when it is not healthy by START_TIMEOUT."""
    deadline = time.monotonic() + settings.start_timeout
    verdict = None
    loop_since = None
    while time.monotonic() < deadline:
        _, verdict = read_and_judge(settings)
        # An obvious crash loop (quick crashes in a row) does not need START_TIMEOUT to be named.
        looping = verdict.cause is not None and verdict.cause.value == "crash-loop"
        loop_since = (loop_since or time.monotonic()) if looping else None
        if loop_since is not None and time.monotonic() - loop_since >= CRASH_LOOP_NAMED_AFTER:
            break
        if verdict.healthy:
            print("botkeeper: healthy: every component is running and the bot's heartbeat is fresh")
            return 0
        if verdict.overall == NEEDS_CONFIG:
            print(f"botkeeper: needs configuration ({verdict.cause.value}): {verdict.detail}", file=sys.stderr)
            print(f"  fix it, then run `{cli_name()} restart bot` (or start again);"
                  f" `{cli_name()} doctor` checks the setup", file=sys.stderr)
            return EX_CONFIG
        time.sleep(0.1)
    waited = settings.start_timeout if loop_since is None else time.monotonic() - (deadline - settings.start_timeout)
    print(f"botkeeper: not healthy after {waited:.0f} s: {verdict.overall}"
          f" ({verdict.cause.value if verdict.cause else '-'}): {verdict.detail}", file=sys.stderr)
    # The bundle stays up (a Telegram outage or a slow first start heals by itself): say so, and how to stop.
    print(f"  the bundle keeps running and retrying (with backoff); `{cli_name()} status` shows it,"
          " `bash stop_24_7.sh` stops it", file=sys.stderr)
    failing = verdict.failing if verdict else []
    for check in failing:
        print(f"  {check.name}: {check.detail}", file=sys.stderr)
    names = [c.name.split(":", 1)[1] for c in failing if c.name.startswith("component:")]
    if any(c.name in ("heartbeat", "telegram") for c in failing):
        names.append("bot")
    for name in dict.fromkeys(names or ["supervisor"]):
        print(f"--- last lines of logs/{name}.log ---", file=sys.stderr)
        for line in tail_lines(settings.logs_dir / f"{name}.log", 10):
            print("  " + line, file=sys.stderr)
    return 1


def follow_foreground(settings: Settings, follower: "LogFollower | None" = None) -> int:
    """Stream the combined log until Ctrl+C/SIGTERM, then stop everything."""
    stop_requested = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stop_requested.append(signum))
    follower = follower or LogFollower(settings.logs_dir / "combined.log", from_end=True)
    announced = False
    next_check = 0.0
    gone_since = None
    while not stop_requested:
        process.reap_any()  # the runner and auto_recovery are our children: no zombies
        for line in follower.read():
            print(line, flush=True)
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 1.0
            _, verdict = read_and_judge(settings)
            if verdict.healthy and not announced:
                print(f"botkeeper: healthy. Status page on port {settings.port}.", flush=True)
                announced = True
            if bundle.is_running(settings):
                gone_since = None
            elif gone_since is None:
                gone_since = now
            elif now - gone_since > max(5.0, settings.recovery_interval * 3):
                print("botkeeper: the bundle is no longer running (see logs/runner.log)", file=sys.stderr)
                return 1
        time.sleep(0.2)
    print("\nbotkeeper: stopping everything ...", flush=True)
    with bundle.start_lock(settings, timeout=120):
        bundle.stop(settings)
    print("botkeeper: stopped", flush=True)
    return 0


def cmd_stop(settings: Settings, args) -> int:
    with bundle.start_lock(settings, timeout=settings.kill_timeout * 4 + 60):
        if bundle.stop(settings):
            print("botkeeper: stopped")
        else:
            print("botkeeper: nothing was running")
    return 0


def cmd_supervise(settings: Settings, args) -> int:
    from ..supervise import supervisor

    return supervisor.main(settings)


# --- status ---------------------------------------------------------------------------------------
def gather_status(settings: Settings) -> dict[str, Any] | None:
    """The status document behind `status --json` and the table, or None if nothing runs."""
    from ..health.procstats import ProcessStats

    try:
        state = control.call(settings, "status", timeout=3.0)
    except control.SupervisorUnavailable:
        state = None
    if state is None:
        return None
    snap, verdict = read_and_judge(settings, answered_state=state)
    now = snap.now
    roots = {r: runfiles.root_process(settings, r) for r in bundle.ROOTS}
    meter, own = ProcessStats(ttl=0.0), ProcessStats(ttl=0.0, tree=False)  # roots: their own process only
    targets = [(c["name"], c.get("pid"), c.get("create_time")) for c in state["components"] if c.get("pid")]
    root_targets = [(f"root:{r}", p.pid, p.create_time()) for r, p in roots.items() if p is not None]
    meter.measure(targets), own.measure(root_targets)
    time.sleep(0.3)  # cpu_percent needs two looks
    usage = meter.measure(targets) | own.measure(root_targets)
    components = []
    for comp in state["components"]:
        use = usage.get(comp["name"]) or {}
        started = comp.get("started_at")
        components.append({
            "name": comp["name"], "pid": comp.get("pid"), "state": comp["state"], "restarts": comp["restarts"],
            "uptime_seconds": round(now - started, 1) if started and comp["state"] in ("running", "starting") else 0.0,
            "memory_bytes": use.get("memory_bytes", 0), "cpu_percent": use.get("cpu_percent", 0.0),
            "last_exit_code": comp.get("last_exit_code"), "last_exit": comp.get("last_exit"),
            "cause": comp.get("cause"), "last_restart_reason": comp.get("last_restart_reason"),
        })

    def root_info(name: str, proc) -> dict[str, Any]:
        if proc is None:
            return {"pid": None, "running": False}
        use = usage.get(f"root:{name}") or {}
        return {"pid": proc.pid, "running": True, "uptime_seconds": round(now - proc.create_time(), 1),
                "memory_bytes": use.get("memory_bytes", 0), "cpu_percent": use.get("cpu_percent", 0.0)}

    return {
        "healthy": verdict.healthy, "overall": verdict.overall,
        "cause": verdict.cause.value if verdict.cause else None, "detail": verdict.detail,
        "demo": state["supervisor"].get("demo", False), "outer": state["supervisor"].get("outer", "none"),
        "version": state["supervisor"].get("version"),
        "supervisor": root_info("supervisor", roots["supervisor"]) | {"pid": state["supervisor"]["pid"], "running": True},
        "runner": root_info("runner", roots["runner"]), "auto_recovery": root_info("recovery", roots["recovery"]),
        "heartbeat": verdict.heartbeat.as_dict(),
        "heartbeat_age_seconds": None if verdict.heartbeat.age is None else round(verdict.heartbeat.age, 1),
        "components": components,
        "checks": [c.as_dict() for c in verdict.checks],
        "recent_restarts": state.get("recent_restarts", [])[-10:],
        "history": _settled(history_summary(settings, now), verdict.healthy),
        "deadman": deadman_view(snap.deadman, now) if settings.deadman_url else None,
    }


def _settled(history: dict[str, Any] | None, healthy: bool) -> dict[str, Any] | None:
    """As on the page: a healthy verdict has no open incident beside it (the monitor closes the
    record a moment later; the two surfaces never disagree meanwhile)."""
    if history and healthy and history.get("open_incident"):
        history = history | {"open_incident": None}
    return history


def history_summary(settings: Settings, now: float) -> dict[str, Any] | None:
    """Uptime % and the open incident from data/history.db (None before there is a history)."""
    import sqlite3

    from ..store import Store

    if not settings.history_db.exists():
        return None
    store = Store(settings.history_db, readonly=True)
    try:
        from ..store import watch_gap

        return store.summary(now, gap=watch_gap(settings))
    except sqlite3.Error:
        return None
    finally:
        store.close()


def render_table(status: dict[str, Any]) -> str:
    headers = ("name", "pid", "state", "restarts", "uptime", "cpu", "memory", "last exit", "cause")
    rows = []
    for c in status["components"]:
        started_once = c.get("cause") == "initial-start" and not c["restarts"]
        why = "-" if not c.get("cause") or started_once else f"{c['cause']}: {c.get('last_restart_reason') or '-'}"
        rows.append((c["name"], str(c["pid"] or "-"), c["state"], str(c["restarts"]), fmt_duration(c["uptime_seconds"] or None),
                     f"{c['cpu_percent']:.1f}%", fmt_bytes(c["memory_bytes"] or None), c.get("last_exit") or "-",
                     _short(why, 60)))
    layers = (("run_24_7.sh", "runner"), ("auto_recovery", "auto_recovery")) if status.get("outer", "none") == "none" else ()
    for label, key in (("supervisor", "supervisor"),) + layers:
        r = status[key]
        rows.append((label, str(r.get("pid") or "-"), "running" if r.get("running") else "missing", "-",
                     fmt_duration(r.get("uptime_seconds")), f"{r.get('cpu_percent', 0.0):.1f}%",
                     fmt_bytes(r.get("memory_bytes") or None), "-", "-"))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]
    word = status["overall"].upper() + (" (DEMO)" if status.get("demo") else "")
    hb = status.get("heartbeat") or {}
    beat = "-" if hb.get("age") is None else f"{hb['age']:.1f} s old ({hb.get('status')})"
    if hb.get("enabled") is False:
        beat = "not used by this bot"
    out.append("")
    out.append(f"overall: {word}   heartbeat: {beat}")
    if status.get("cause"):
        out.append(f"cause:   {status['cause']}: {status.get('detail') or ''}")
    from ..supervise.outer import describe

    out.append(f"outer supervisor: {describe(status.get('outer', 'none'))}")
    if status.get("version"):
        out.append(f"version: {status['version']} (git commit of the bundle)")
    hist = status.get("history")
    if hist:
        up, seen = hist["uptime"], hist.get("observed_seconds") or {}
        out.append("uptime:  " + "   ".join(
            f"{k} {fmt.uptime(v)}" + (f" (of {fmt_duration(seen[k])})" if v is not None and seen.get(k) else "")
            for k, v in up.items()))
        inc = hist.get("open_incident")
        if inc:
            out.append(f"  ! open incident: {inc['cause']} for {fmt_duration(inc['duration_seconds'])}")
    dm = status.get("deadman")
    if dm:
        when = "" if dm.get("last_age") is None else f"{fmt_duration(dm['last_age'])} ago, "
        out.append(f"dead man's switch: {when}{dm['text']}")
    for check in status["checks"]:
        if not check["ok"]:
            out.append(f"  ! {check['name']}: {check['detail']}")
    return "\n".join(out)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def not_running(settings: Settings) -> int:
    print(f"botkeeper is not running in {settings.home} (start it with: bash start_24_7.sh)", file=sys.stderr)
    return EX_NOT_RUNNING


def cmd_status(settings: Settings, args) -> int:
    if args.watch:
        try:
            while True:
                status = gather_status(settings)
                text = render_table(status) if status else "botkeeper is not running"
                sys.stdout.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S  (Ctrl+C to quit)\n\n") + text + "\n")
                sys.stdout.flush()
                time.sleep(0.7)
        except KeyboardInterrupt:
            return 0
    status = gather_status(settings)
    if status is None:
        return not_running(settings)
    if getattr(args, "settings_error", None):
        status["settings_error"] = args.settings_error  # the running bundle is fine; the next start is not
    print(json.dumps(status, indent=2) if args.json else render_table(status))
    return 0 if status["healthy"] else EX_NOT_HEALTHY


def cmd_restart(settings: Settings, args) -> int:
    try:
        comp = control.call(settings, "restart", name=args.name, cause="operator", reason=args.reason, by="cli",
                            timeout=5.0)
    except control.SupervisorUnavailable:
        return not_running(settings)
    except control.ControlError as exc:
        print(f"botkeeper: {exc}", file=sys.stderr)
        return 2
    print(f"botkeeper: restarting {args.name} (state {comp['state']})")
    return 0


def cmd_reload(settings: Settings, args) -> int:
    """The supervisor re-reads the files over the environment it started with; 78 if it refuses them."""
    try:
        done = control.call(settings, "reload", by="cli", timeout=10.0)
    except control.SupervisorUnavailable:
        return not_running(settings)
    if done.get("error"):
        print(f"botkeeper: reload refused, the running settings are kept: {done['error']}", file=sys.stderr)
        return EX_CONFIG
    if not any(done.values()):
        print("botkeeper: reloaded: nothing changed")
        return 0
    parts = [f"{what} {', '.join(names)}" for what, names in done.items() if names]
    print("botkeeper: reloaded: " + "; ".join(parts))
    return 0


# --- logs and config ------------------------------------------------------------------------------
def tail_lines(path: Path, n: int) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            block = min(size, max(4096, n * 300))
            while True:
                fh.seek(size - block)
                data = fh.read()
                if data.count(b"\n") > n or block == size:
                    break
                block = min(size, block * 2)
    except OSError:
        return []
    return [line.decode("utf-8", "replace") for line in data.splitlines()[-n:]] if n > 0 else []


class LogFollower:
    """Reads new lines of a log that may be rotated (renamed) under us, like `tail -F`."""

    def __init__(self, path: Path, from_end: bool = True):
        self.path, self.fh, self.inode, self.buf = path, None, None, b""
        self._open(from_end)

    def _open(self, at_end: bool) -> None:
        try:
            self.fh = self.path.open("rb")
        except OSError:
            self.fh = None
            return
        self.inode = os.fstat(self.fh.fileno()).st_ino
        if at_end:
            self.fh.seek(0, os.SEEK_END)

    def read(self) -> list[str]:
        if self.fh is None:
            self._open(False)
            if self.fh is None:
                return []
        data = self.fh.read()
        try:
            rotated = os.stat(self.path).st_ino != self.inode
        except OSError:
            rotated = False
        if rotated:
            data += self.fh.read()
            self.fh.close()
            self._open(False)
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]


def cmd_logs(settings: Settings, args) -> int:
    known = {c.name for c in settings.components} | {"supervisor", "combined", "auto_recovery", "runner"}
    if args.name not in known:
        print(f"botkeeper: unknown log {args.name!r}: expected one of {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    path = settings.logs_dir / f"{args.name}.log"
    if not path.exists() and not args.follow:
        print(f"botkeeper: {path} does not exist yet", file=sys.stderr)
        return 1
    for line in tail_lines(path, args.n):
        print(line)
    if args.follow:
        follower = LogFollower(path, from_end=True)
        try:
            while True:
                for line in follower.read():
                    print(line, flush=True)
                time.sleep(0.2)
        except KeyboardInterrupt:
            return 0
    return 0


def cmd_beat(settings: Settings, args) -> int:
    """One heartbeat, to BOTKEEPER_HEARTBEAT_FILE (set by the supervisor) or the bundle's file."""
    from ..health import heartbeat

    path = heartbeat.default_path(settings)
    fields = {"detail": args.detail} if args.detail else {}
    try:
        heartbeat.write(path, pid=os.getppid(), state=args.state, **fields)  # the bot is our parent
    except OSError as exc:
        print(f"botkeeper: cannot write heartbeat {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def cmd_config(settings: Settings, args) -> int:
    if args.markdown:
        from ..config import KNOBS, PROFILES, knob_range

        print("| variable | default | development | test | accepted | what it does |")
        print("|---|---|---|---|---|---|")
        for name, knob in KNOBS.items():
            cells = [PROFILES[p].get(name, knob.default) for p in ("production", "development", "test")]
            cells = [",".join(v) if isinstance(v, tuple) else v for v in cells]
            shown = ["" if v in (None, "") else f"`{v}`" for v in cells]
            dev = shown[1] if cells[1] != cells[0] else ""
            test = shown[2] if cells[2] != cells[0] else ""
            print(f"| `{knob.env}` | {shown[0]} | {dev} | {test} | {knob_range(knob)} | {knob.help}{' (secret)' if knob.secret else ''} |")
        return 0
    rows = settings.describe()
    width = max(len(r[0]) for r in rows)
    vwidth = min(50, max(len(r[1]) for r in rows))
    for name, value, help in rows:
        print(f"{name.ljust(width)}  {value.ljust(vwidth)}  {help}")
    return 0
