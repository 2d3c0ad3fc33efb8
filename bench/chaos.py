"""Chaos bench for the watchers (not a test): random SIGKILLs across every piece of the bundle.

    python bench/chaos.py                 # 100 kills, gaps 0.1-1.5 s, at most 300 s of killing
    python bench/chaos.py -n 30 --max-gap 0.5 --pair-prob 0.3 --seed 7
    python bench/chaos.py -n 100 --seed 42 --real-bot --warm   # main.py + the fork server

A bundle runs in a temporary BOTKEEPER_HOME (test profile, loopback only) with a fake bot that writes
heartbeats every 0.2 s, the real status page (keep_alive.py), the real monitor, run_24_7.sh, the
supervisor and auto_recovery.py. The bench SIGKILLs random running pieces (sometimes two at once),
samples the processes every ~30 ms and prints:
  - per piece: kills, median / max seconds until it runs again (a new verified pid, state running)
  - moments with two bots or two supervisors (must be 0)
  - processes left after `python -m botkeeper stop` (must be 0)
  - kills without a matching row in data/history.db (must be 0)
  - total PSS/RSS and CPU of all non-bot processes at idle, production profile (target <= 80 MiB
    PSS and <= 0.5 % of one core)
A kill never takes the last living root (run_24_7.sh, supervisor, auto_recovery): with all three
gone nothing is left to restart anything, which is a machine reboot, not a crash.
The processes are found by the environment the bundle gives them: that is the bench's oracle, not
something the product does.

--real-bot: the bot is main.py (python-telegram-bot, handlers_example) against botkeeper's Bot API
emulator run inside this process (loopback, a fake token); --warm adds WARM_STANDBY=auto, so the fork
server is a piece too and most bots are forks of it. A forked bot's /proc/PID/environ is the fork
server's, so bots are not found by environ there: the pollers are counted at the emulator
(bench/pollwatch.py): living processes that hold an open connection on which they called getUpdates
(a sample with two = a moment with two pollers), and every getUpdates cut short by a newer one (409)
while the older caller's connection was still open (two pollers racing, between samples). Orphans:
bundle processes (BOTKEEPER_HOME in the environ, which forks keep) other than the roots whose parent
is no bundle process while the bundle runs (reparented to init) for longer than --orphan-grace, and
any bundle process left after the final stop.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psutil  # noqa: E402

from botkeeper.supervise import bundle  # noqa: E402
from botkeeper.config import Settings  # noqa: E402
from botkeeper.fsutil import read_json, verified_process  # noqa: E402
from botkeeper.store import Store  # noqa: E402
from watchers import bots, bundle_processes, fake_bot_command, supervisors  # noqa: E402

from pollwatch import Census, RecordingEmulator  # noqa: E402

PIECES = ("bot", "web", "monitor", "supervisor", "runner", "recovery")
COMPONENTS = ("bot", "web", "monitor", "forkserver")
TOKEN = "123456789:AAH-fake-token-for-chaos-0123456789"
LABEL = {"runner": "run_24_7.sh", "recovery": "auto_recovery"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bench:
    def __init__(self, home: Path, profile: str, extra: dict[str, str] | None = None, pieces=PIECES):
        self.home, self.pieces = home, pieces
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
        env |= {"BOTKEEPER_HOME": str(home), "BOTKEEPER_ENV": profile, "DEMO": "off", "AUTO_RECOVERY": "on",
                "HOST": "127.0.0.1", "PORT": str(free_port()), "SELF_PING": "off"}
        if profile == "test":
            env["HEALTH_GRACE"] = "1"
        env |= extra or {}
        self.env = env
        self.settings = Settings.from_env(env, home=home)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "botkeeper", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def pid(self, piece: str) -> int | None:
        if piece in bundle.ROOTS:
            proc = bundle.root_process(self.settings, piece)
            return proc.pid if proc else None
        state = read_json(self.settings.state_file) or {}
        comp = next((c for c in state.get("components", []) if c.get("name") == piece), {})
        if comp.get("state") != "running":
            return None
        proc = verified_process(comp.get("pid"), comp.get("create_time"))
        return proc.pid if proc else None

    def all_running(self) -> bool:
        pids = [self.pid(p) for p in self.pieces]
        hb = read_json(self.settings.heartbeat_file) or {}
        return all(pids) and hb.get("pid") == pids[0] and time.time() - hb.get("written_at", 0) < 1.0


class Sampler(threading.Thread):
    """Census every ~30 ms: moments with two bots/supervisors; when each killed piece is back."""

    def __init__(self, bench: Bench, census: Census | None = None, orphan_grace: float = 5.0):
        super().__init__(daemon=True)
        self.bench, self.stop_flag = bench, threading.Event()
        self.census, self.orphan_grace = census, orphan_grace
        self.reparented: dict[int, list] = {}  # pid -> [first seen, last seen, cmd, comp]
        self.lock = threading.Lock()
        self.pending: list[dict] = []  # kills not back yet
        self.done: list[dict] = []
        self.two_bots = self.two_sups = self.samples = self.one_bot = 0
        self.examples: list = []

    def add(self, kill: dict) -> None:
        with self.lock:
            self.pending.append(kill)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            if self.census is None:
                procs = bundle_processes(self.bench.home)
                nb, ns = len(bots(procs)), len(supervisors(procs))
            else:
                nb, ns, procs = self.real_census()
            self.samples += 1
            self.one_bot += nb == 1
            if nb > 1 or ns > 1:
                self.two_bots += nb > 1
                self.two_sups += ns > 1
                if len(self.examples) < 3:
                    self.examples.append(procs)
            with self.lock:
                now = time.monotonic()
                for kill in list(self.pending):
                    pid = self.bench.pid(kill["piece"])
                    if pid is not None and pid != kill["pid"]:
                        kill["back_after"] = now - kill["mono"]
                        self.pending.remove(kill)
                        self.done.append(kill)
            time.sleep(0.03)

    def real_census(self) -> tuple[int, int, list]:
        """(pollers, supervisors, what to show) from /proc and the emulator; notes reparented processes."""
        census = self.census
        procs = census.sample()
        pollers = census.pollers()
        sups = [pid for pid, p in procs.items() if " supervise" in p["cmd"] and p["root"]]
        sups = [pid for pid in sups if procs[pid]["ppid"] not in sups]  # a supervisor's child before exec
        now = time.monotonic()
        for pid, p in procs.items():
            if not p["root"] and p["ppid"] not in procs:
                seen = self.reparented.setdefault(pid, [now, now, p["cmd"][:60], p["comp"]])
                seen[1] = now
        shown = [(pid, procs.get(pid, {}).get("comp"), ports) for pid, ports in pollers.items()]
        if len(sups) > 1:
            shown += [(pid, "supervisor", procs[pid]["ppid"]) for pid in sups]
        return len(pollers), len(sups), shown

    def orphans(self) -> list:
        return [(pid, round(last - first, 1), cmd, comp) for pid, (first, last, cmd, comp) in self.reparented.items()
                if last - first > self.orphan_grace]


def match_history(kills: list[dict], events: list[dict]) -> list[dict]:
    """Kills with no history row at or after them: each kill needs its own row.

    bot/web/monitor: exit, restart, start or orphan-stopped of that component; the supervisor: the
    `exit` row its successor writes with its pid; run_24_7.sh / auto_recovery: their `relaunch` row."""
    def wanted(piece: str, e: dict) -> bool:
        if piece in COMPONENTS:
            return e["component"] == piece and e["kind"] in ("exit", "restart", "start", "orphan-stopped")
        return e["kind"] == "relaunch" and e["component"] == LABEL.get(piece, piece)

    # The next supervisor records the one that died, by pid.
    dead = {e["detail"].split()[1] for e in events if e["component"] == "supervisor" and e["kind"] == "exit"}
    missing = [k for k in kills if k["piece"] == "supervisor" and str(k["pid"]) not in dead]
    for piece in sorted({k["piece"] for k in kills} - {"supervisor"}):
        rows = sorted((e for e in events if wanted(piece, e)), key=lambda e: e["at"])
        used = 0
        for kill in sorted((k for k in kills if k["piece"] == piece), key=lambda k: k["wall"]):
            while used < len(rows) and rows[used]["at"] < kill["wall"] - 0.01:
                used += 1
            if used < len(rows):
                used += 1
            else:
                missing.append(kill)
    return missing


def idle_usage(bench: Bench, seconds: float) -> tuple[list[tuple], float, float, float]:
    """[(name, pid, pss, rss, cpu%)], total PSS, total RSS, total CPU % of non-bot processes."""
    procs = []
    bot = bench.pid("bot")  # a forked bot's environ says forkserver
    for pid, comp, cmd, _ in bundle_processes(bench.home):
        if comp == "bot" or pid == bot:
            continue
        try:
            p = psutil.Process(pid)
            t = p.cpu_times()
            procs.append((p, comp if comp != "root" else cmd.split("/")[-1][:28], t.user + t.system))
        except psutil.Error:
            continue
    began = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - began
    rows, pss_total, rss_total, cpu_total = [], 0, 0, 0.0
    for p, name, cpu0 in procs:
        try:
            t = p.cpu_times()
            mem = p.memory_full_info()
        except psutil.Error:
            continue
        cpu = 100.0 * (t.user + t.system - cpu0) / wall
        rows.append((name, p.pid, mem.pss, mem.rss, cpu))
        pss_total += mem.pss
        rss_total += mem.rss
        cpu_total += cpu
    return rows, pss_total, rss_total, cpu_total


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def write_toml(home: Path) -> None:
    cmd = fake_bot_command(home)
    (home / "botkeeper.toml").write_text("[components.bot]\ncommand = [%s]\n" % ", ".join(f'"{c}"' for c in cmd))


def end_leftovers(census: Census) -> list:
    """SIGKILL, by pid and start time, whatever of this bundle outlived the final stop (the bench
    must not leave processes behind; each one is reported)."""
    procs = census.sample()
    for pid in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return [(pid, p["comp"], p["cmd"][:60], p["ppid"]) for pid, p in procs.items()]


def chaos(args) -> int:
    began = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="bk-chaos-")) / "bk"
    home.mkdir()
    emulator = None
    try:
        if args.real_bot:
            emulator = RecordingEmulator(port=0)
            emulator.start()
        return _chaos(args, home, emulator)
    finally:
        leftovers = end_leftovers(Census(home, None))
        if leftovers:
            print("bench clean-up: SIGKILLed leftovers", leftovers)
        if emulator is not None:
            emulator.stop()
        if not args.keep:
            shutil.rmtree(home.parent, ignore_errors=True)
        else:
            print("home kept:", home)
        print(f"total run time: {time.monotonic() - began:.0f} s")


def _chaos(args, home: Path, emulator: RecordingEmulator | None) -> int:
    rng = random.Random(args.seed)
    pieces, extra = PIECES, {}
    if emulator is None:
        write_toml(home)
    else:
        # An installed bundle has its handlers.py already (the first start creates it, which
        # would make the fork server reload once).
        shutil.copyfile(ROOT / "botkeeper" / "bot" / "handlers_example.py", home / "handlers.py")
        extra = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": emulator.url,
                 "WARM_STANDBY": "auto" if args.warm else "off"}
        if args.warm:
            pieces = PIECES + ("forkserver",)
    bench = Bench(home, "test", extra, pieces)
    started = bench.cli("start", "--detach")
    if started.returncode != 0:
        print(started.stdout, started.stderr)
        return 1
    if not wait(bench.all_running, 60):
        print("the bundle did not come up")
        return 1
    census = Census(home, emulator) if emulator is not None else None
    sampler = Sampler(bench, census, args.orphan_grace)
    sampler.start()
    kills: list[dict] = []
    spared = 0
    t_end = time.monotonic() + args.time_limit
    while len(kills) < args.kills and time.monotonic() < t_end:
        running = {p: pid for p in pieces if (pid := bench.pid(p))}
        if not running:
            time.sleep(0.05)
            continue
        n = 2 if rng.random() < args.pair_prob and len(running) >= 2 else 1
        chosen = rng.sample(sorted(running), min(n, args.kills - len(kills)))
        if not [r for r in bundle.ROOTS if r in running and r not in chosen]:
            # Killing every living root at once leaves nothing to restart anything (that is a
            # machine reboot: the platform's restart or an @reboot entry starts the bundle again).
            spared += 1
            chosen = [c for c in chosen if c not in bundle.ROOTS] or []
        for piece in chosen:
            pid = running[piece]
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            kill = {"piece": piece, "pid": pid, "mono": time.monotonic(), "wall": time.time()}
            kills.append(kill)
            sampler.add(kill)
        time.sleep(rng.uniform(args.min_gap, args.max_gap))
    back = wait(lambda: not sampler.pending and bench.all_running(), 60)
    sampler.stop_flag.set()
    sampler.join(5)
    time.sleep(1.0)  # let the last history rows land
    events = Store(bench.settings.history_db).events(limit=100_000)
    missing = match_history(kills, events)

    print(f"chaos: {len(kills)} SIGKILLs in {kills[-1]['mono'] - kills[0]['mono']:.0f} s (gaps"
          f" {args.min_gap:g}-{args.max_gap:g} s, pairs {args.pair_prob:.0%}), census samples: {sampler.samples};"
          f" {spared} picks spared the last living root")
    print(f"{'piece':14} {'kills':>5} {'median s':>9} {'max s':>7}")
    for piece in pieces:
        times = [k["back_after"] for k in sampler.done if k["piece"] == piece]
        n = sum(1 for k in kills if k["piece"] == piece)
        if times:
            print(f"{LABEL.get(piece, piece):14} {n:5d} {statistics.median(times):9.2f} {max(times):7.2f}")
        else:
            print(f"{LABEL.get(piece, piece):14} {n:5d} {'-':>9} {'-':>7}")
    print(f"not back at the end: {len(sampler.pending)}  (everything running again: {back})")
    what = "pollers (census at the emulator)" if census else "bots"
    print(f"moments with two {what}: {sampler.two_bots}   with two supervisors: {sampler.two_sups}"
          f"   (samples with exactly one: {sampler.one_bot} of {sampler.samples})")
    for example in sampler.examples:
        print("  e.g.", example)
    live_preempted = []
    if emulator is not None:
        live_preempted = list(emulator.live_preemptions)
        print(f"getUpdates: {emulator.getupdates} calls, {emulator.preempted} ended by a newer one (409);"
              f" of these while the older caller's connection was still open (two pollers): {len(live_preempted)}",
              live_preempted[:5])
        orphans = sampler.orphans()
        brief = sorted(((pid, round(last - first, 1), comp) for pid, (first, last, _, comp)
                        in sampler.reparented.items()), key=lambda r: -r[1])
        print(f"orphans while running (non-root bundle processes without a bundle parent for more than"
              f" {args.orphan_grace:g} s): {len(orphans)}", orphans[:5])
        print(f"  (reparented at all: {len(brief)}, longest {brief[0][1] if brief else 0:g} s)", brief[:5])
    print(f"kills without a history row: {len(missing)}", [(k["piece"], round(k["wall"], 2)) for k in missing][:10])

    stopped = bench.cli("stop")
    left = []
    wait(lambda: not (left := bundle_processes(home)), 5)
    left = bundle_processes(home)
    print(f"stop: exit {stopped.returncode}; processes left (orphans): {len(left)}", left[:5])
    if census is not None:
        ok = (not sampler.pending and sampler.two_bots == 0 and sampler.two_sups == 0 and not missing
              and not left and not live_preempted and not sampler.orphans())
        print("RESULT:", "ok" if ok else "FAILED")
        return 0 if ok else 1

    # Idle footprint with the production profile (its intervals are what a user runs).
    idle = Bench(home, "production")
    if idle.cli("start", "--detach").returncode != 0 or not wait(idle.all_running, 60):
        print("idle: the production-profile bundle did not come up")
        idle.cli("stop")
        return 1
    time.sleep(args.settle)
    rows, pss, rss, cpu = idle_usage(idle, args.idle_seconds)
    print(f"idle ({args.idle_seconds:g} s, production profile, non-bot processes):")
    for name, pid, p_pss, p_rss, p_cpu in sorted(rows, key=lambda r: -r[2]):
        print(f"  {name:28} pid {pid:7d}  PSS {p_pss / 2**20:6.1f} MiB  RSS {p_rss / 2**20:6.1f} MiB  CPU {p_cpu:5.2f} %")
    print(f"  total: PSS {pss / 2**20:.1f} MiB (target <= 80), RSS {rss / 2**20:.1f} MiB, CPU {cpu:.2f} % of one core"
          f" (target <= 0.5)")
    idle.cli("stop")
    left = bundle_processes(home)
    ok = (not sampler.pending and sampler.two_bots == 0 and sampler.two_sups == 0 and not missing and not left)
    print("RESULT:", "ok" if ok else "FAILED")
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", "--kills", type=int, default=100, help="number of SIGKILLs (default 100)")
    p.add_argument("--min-gap", type=float, default=0.1, help="shortest gap between kills, seconds")
    p.add_argument("--max-gap", type=float, default=1.5, help="longest gap between kills, seconds")
    p.add_argument("--pair-prob", type=float, default=0.2, help="chance that a kill hits two pieces at once")
    p.add_argument("--time-limit", type=float, default=300, help="stop killing after this many seconds")
    p.add_argument("--settle", type=float, default=5, help="seconds before the idle measurement")
    p.add_argument("--idle-seconds", type=float, default=20, help="length of the idle measurement")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the temporary home for inspection")
    p.add_argument("--real-bot", action="store_true", help="main.py against the Bot API emulator (in this process)")
    p.add_argument("--warm", action="store_true", help="with --real-bot: WARM_STANDBY=auto, the fork server a piece too")
    p.add_argument("--orphan-grace", type=float, default=5.0,
                   help="seconds a reparented bundle process may live before it counts as an orphan")
    args = p.parse_args(argv)
    args.kills = max(1, min(args.kills, 10_000))
    args.real_bot = args.real_bot or args.warm
    return chaos(args)


if __name__ == "__main__":
    raise SystemExit(main())
