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

from . import bundle, control, process
from .fmt import duration as fmt_duration, size as fmt_bytes
from .config import ConfigError, EX_CONFIG, Settings

EX_NOT_RUNNING = 3

# Commands implemented in their own modules: name -> "module:function(settings, argv) -> int".
DELEGATED = {
    "emulator": "botkeeper.emulator:main",
    "doctor": "botkeeper.doctor:main",
    "history": "botkeeper.history:main",
    "alert-test": "botkeeper.alerts:main_test",
    "install": "botkeeper.install:main_install",
    "uninstall": "botkeeper.install:main_uninstall",
    "probe": "botkeeper.probe:main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
    except ConfigError as exc:
        print(f"botkeeper: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    return int(args.func(settings, args) or 0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m botkeeper", description="Keep a Telegram bot alive 24/7.")
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
    sp = add("logs", cmd_logs, "print a component's log")
    sp.add_argument("name")
    sp.add_argument("-n", type=int, default=40, help="number of lines (default 40)")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    sp = add("config", cmd_config, "print the effective settings (secrets masked)")
    sp.add_argument("--markdown", action="store_true", help="print the settings table of README.md")
    add("supervise", cmd_supervise, "run the supervisor (run_24_7.sh does this)")
    for name in DELEGATED:
        sub.add_parser(name, help=f"see `python -m botkeeper {name} --help`")
    return p


# --- start / stop ---------------------------------------------------------------------------------
def cmd_start(settings: Settings, args) -> int:
    from . import outer

    # --detach asks for a background bundle on a bare machine: the bundle's own layers keep it alive.
    mode = "none" if args.detach else outer.mode(settings)
    os.environ["BOTKEEPER_OUTER"] = mode  # the supervisor and everything it starts use the same mode
    try:
        with bundle.start_lock(settings, timeout=settings.start_timeout * 2 + 60):
            if bundle.is_running(settings):
                print("botkeeper: stopping the copy that is already running in this directory")
                bundle.stop(settings)
            if mode != "none":
                bundle.clear_stopping(settings)
                print_banner(settings, mode)
                return exec_supervisor(settings)
            bundle.spawn_roots(settings, follow_us=not args.detach)
            print_banner(settings)
            if args.detach:
                return wait_until_healthy(settings)
    except TimeoutError as exc:
        print(f"botkeeper: {exc}", file=sys.stderr)
        return 1
    return follow_foreground(settings)


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


def print_banner(settings: Settings, mode: str = "none") -> None:
    host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    lines = [
        "botkeeper: keeping your Telegram bot alive",
        f"  status page : http://{host}:{settings.port}/   (health: /health)",
        f"  logs        : {settings.logs_dir}/<component>.log   (python -m botkeeper logs bot -f)",
        "  status      : python -m botkeeper status",
        "  stop        : Ctrl+C here, or bash stop_24_7.sh",
    ]
    if mode != "none":
        from .outer import describe

        lines[-1:] = [f"  supervised  : by {describe(mode)}"]
    if settings.demo_active:
        lines[1:1] = [
            "  *** DEMO *** no TELEGRAM_BOT_TOKEN is set: running against the built-in offline Telegram emulator.",
            "  To go live: add TELEGRAM_BOT_TOKEN (from @BotFather) in Replit Secrets or .env and run again.",
        ]
    print("\n".join(lines), flush=True)


def current_health(settings: Settings, live_state: dict | None = None):
    """(state, verdict). Pass the state the supervisor just answered with (it is alive then);
    without it, run/state.json is read and the supervisor's PID verified."""
    from . import heartbeat, policy
    from .fsutil import read_json, verified_process

    if live_state is not None:
        state, alive = live_state, True
    else:
        state = read_json(settings.state_file)
        sup = (state or {}).get("supervisor", {}) if isinstance(state, dict) else {}
        alive = verified_process(sup.get("pid"), sup.get("create_time")) is not None
    hb, hb_error = heartbeat.read_or_error(settings.heartbeat_file)
    verdict = policy.health(state if alive else None, alive, hb, hb_error, time.time(),
                            settings.heartbeat_interval, settings.stale_after, settings.heartbeat_grace)
    return state, verdict


def wait_until_healthy(settings: Settings) -> int:
    deadline = time.monotonic() + settings.start_timeout
    verdict = None
    state = None
    while time.monotonic() < deadline:
        state, verdict = current_health(settings)
        if verdict.healthy:
            print("botkeeper: all components are up and the bot's heartbeat is fresh")
            return 0
        time.sleep(0.1)
    failing = verdict.failing if verdict else []
    print(f"botkeeper: not healthy after {settings.start_timeout:g} s:", file=sys.stderr)
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


def follow_foreground(settings: Settings) -> int:
    """Stream the combined log until Ctrl+C/SIGTERM, then stop everything."""
    stop_requested = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stop_requested.append(signum))
    path = settings.logs_dir / "combined.log"
    follower = LogFollower(path, from_end=False)
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
            _, verdict = current_health(settings)
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
    from . import supervisor

    return supervisor.main(settings)


# --- status ---------------------------------------------------------------------------------------
def gather_status(settings: Settings) -> dict[str, Any] | None:
    """The status document behind `status --json` and the table, or None if nothing runs."""
    import psutil

    from .fsutil import read_json

    try:
        state = control.call(settings, "status", timeout=3.0)
    except control.SupervisorUnavailable:
        state = None
    if state is None:
        return None
    _, verdict = current_health(settings, live_state=state)
    now = time.time()
    procs: dict[str, psutil.Process | None] = {}
    for comp in state["components"]:
        procs[comp["name"]] = _process(comp.get("pid"), comp.get("create_time"))
    roots = {r: bundle.root_process(settings, r) for r in bundle.ROOTS}
    measured = [p for p in list(procs.values()) + list(roots.values()) if p is not None]
    for p in measured:
        _cpu(p)
    time.sleep(0.3)  # cpu_percent needs two samples
    components = []
    for comp in state["components"]:
        proc = procs[comp["name"]]
        started = comp.get("started_at")
        components.append({
            "name": comp["name"], "pid": comp.get("pid"), "state": comp["state"], "restarts": comp["restarts"],
            "uptime_seconds": round(now - started, 1) if started and comp["state"] in ("running", "starting") else 0.0,
            "memory_bytes": _tree_memory(proc), "cpu_percent": _cpu(proc),
            "last_exit_code": comp.get("last_exit_code"), "last_exit": comp.get("last_exit"),
            "last_restart_reason": comp.get("last_restart_reason"),
        })
    hb = read_json(settings.heartbeat_file)
    hb_age = round(now - hb["written_at"], 1) if isinstance(hb, dict) and isinstance(hb.get("written_at"), (int, float)) else None

    def root_info(proc) -> dict[str, Any]:
        if proc is None:
            return {"pid": None, "running": False}
        return {"pid": proc.pid, "running": True, "uptime_seconds": round(now - proc.create_time(), 1),
                "memory_bytes": _tree_memory(proc, children=False), "cpu_percent": _cpu(proc)}

    return {
        "healthy": verdict.healthy, "overall": verdict.overall, "demo": state["supervisor"].get("demo", False),
        "outer": state["supervisor"].get("outer", "none"),
        "supervisor": root_info(roots["supervisor"]) | {"pid": state["supervisor"]["pid"]},
        "runner": root_info(roots["runner"]), "auto_recovery": root_info(roots["recovery"]),
        "heartbeat_age_seconds": hb_age,
        "components": components,
        "checks": [c.as_dict() for c in verdict.checks],
        "recent_restarts": state.get("recent_restarts", [])[-10:],
        "history": history_summary(settings, now),
    }


def history_summary(settings: Settings, now: float) -> dict[str, Any] | None:
    """Uptime % and the open incident from data/history.db (None before there is a history)."""
    import sqlite3

    from .store import Store

    if not settings.history_db.exists():
        return None
    store = Store(settings.history_db)
    try:
        return store.summary(now)
    except sqlite3.Error:
        return None
    finally:
        store.close()


def _process(pid, create_time):
    from .fsutil import verified_process

    return verified_process(pid, create_time) if pid else None


def _cpu(proc) -> float:
    import psutil

    if proc is None:
        return 0.0
    try:
        return round(proc.cpu_percent(None), 1)
    except psutil.Error:
        return 0.0


def _tree_memory(proc, children: bool = True) -> int:
    import psutil

    if proc is None:
        return 0
    try:
        members = [proc] + (proc.children(recursive=True) if children else [])
        return sum(p.memory_info().rss for p in members)
    except psutil.Error:
        return 0


def render_table(status: dict[str, Any]) -> str:
    headers = ("name", "pid", "state", "restarts", "uptime", "cpu", "memory", "last exit", "last restart reason")
    rows = []
    for c in status["components"]:
        rows.append((c["name"], str(c["pid"] or "-"), c["state"], str(c["restarts"]), fmt_duration(c["uptime_seconds"] or None),
                     f"{c['cpu_percent']:.1f}%", fmt_bytes(c["memory_bytes"] or None), c.get("last_exit") or "-",
                     _short(c.get("last_restart_reason") or "-", 60)))
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
    hb = status.get("heartbeat_age_seconds")
    out.append("")
    out.append(f"overall: {word}   heartbeat: {'-' if hb is None else f'{hb:.1f} s old'}")
    from .outer import describe

    out.append(f"outer supervisor: {describe(status.get('outer', 'none'))}")
    hist = status.get("history")
    if hist:
        up = hist["uptime"]
        out.append("uptime:  " + "   ".join(f"{k} {'-' if v is None else f'{v:.2f}%'}" for k, v in up.items()))
        inc = hist.get("open_incident")
        if inc:
            out.append(f"  ! open incident: {inc['cause']} for {fmt_duration(inc['duration_seconds'])}")
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
    print(json.dumps(status, indent=2) if args.json else render_table(status))
    return 0


def cmd_restart(settings: Settings, args) -> int:
    try:
        comp = control.call(settings, "restart", name=args.name, reason=args.reason, by="cli",
                            timeout=5.0)
    except control.SupervisorUnavailable:
        return not_running(settings)
    except control.ControlError as exc:
        print(f"botkeeper: {exc}", file=sys.stderr)
        return 2
    print(f"botkeeper: restarting {args.name} (state {comp['state']})")
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


def cmd_config(settings: Settings, args) -> int:
    if args.markdown:
        from .config import KNOBS, PROFILES

        print("| variable | default | development | test | what it does |")
        print("|---|---|---|---|---|")
        for name, knob in KNOBS.items():
            cells = [PROFILES[p].get(name, knob.default) for p in ("production", "development", "test")]
            shown = ["" if v is None else f"`{v}`" for v in cells]
            dev = shown[1] if cells[1] != cells[0] else ""
            test = shown[2] if cells[2] != cells[0] else ""
            print(f"| `{knob.env}` | {shown[0]} | {dev} | {test} | {knob.help}{' (secret)' if knob.secret else ''} |")
        return 0
    rows = settings.describe()
    width = max(len(r[0]) for r in rows)
    vwidth = min(50, max(len(r[1]) for r in rows))
    for name, value, help in rows:
        print(f"{name.ljust(width)}  {value.ljust(vwidth)}  {help}")
    return 0
