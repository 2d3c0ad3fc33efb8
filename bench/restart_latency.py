"""Restart latency and idle cost of the supervisor (not a test: it prints figures).

SIGKILLs a trivial child N times under the real supervisor and measures, for each kill, the time
from the kill to the new child's first output line appearing in logs/child.log (so the whole path
counts: SIGCHLD, reap, policy, fork/exec, the child's echo, the pipe, the redacted log write). For
comparison it measures a bare fork/exec + waitpid loop on the same child. Then it leaves the
supervisor idle and reports its RSS/PSS and CPU.

    python bench/restart_latency.py [--kills 20] [--idle-seconds 60] [--pm2]
--pm2 also measures PM2 (`npm i -g pm2`) on the same child, kill to its first line in PM2's log,
under a PM2_HOME of its own (its daemon is killed afterwards).
Targets (2-core machine): median <= 15 ms, supervisor RSS <= 20 MiB, idle CPU <= 0.2 %.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
CHILD = ["sh", "-c", "echo up; exec sleep 100000"]


def ups(log: Path) -> int:
    """The child's "up" lines in its log, as text or (LOG_FORMAT=json) wrapped in JSON objects."""
    data = log.read_bytes()
    return data.count(b"up\n") + data.count(b'"message": "up"')


def wait_until(predicate, timeout, interval=0.0005):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met")


def bare_loop(kills: int) -> list[float]:
    """The floor: fork/exec, SIGKILL, waitpid, fork/exec again, read the first line."""
    times = []
    proc = subprocess.Popen(CHILD, stdout=subprocess.PIPE)
    proc.stdout.readline()
    for _ in range(kills):
        t0 = time.perf_counter()
        proc.kill()
        proc.wait()
        proc = subprocess.Popen(CHILD, stdout=subprocess.PIPE)
        proc.stdout.readline()
        times.append(time.perf_counter() - t0)
    proc.kill()
    proc.wait()
    return times


def supervised_loop(home: Path, kills: int) -> tuple[list[float], psutil.Process, subprocess.Popen]:
    (home / "botkeeper.toml").write_text(
        '[components.child]\ncommand = ["sh", "-c", "echo up; exec sleep 100000"]\nmin_uptime = 0\n'
        "[components.bot]\nenabled = false\n[components.web]\nenabled = false\n"
        "[components.monitor]\nenabled = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_"))}
    env.update(BOTKEEPER_HOME=str(home), BOTKEEPER_ENV="production", DEMO="off", AUTO_RECOVERY="off")
    sup = subprocess.Popen([sys.executable, "-m", "botkeeper", "supervise"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = home / "logs" / "child.log"
    state = home / "run" / "state.json"
    wait_until(lambda: log.exists() and ups(log) >= 1, 10)
    import json

    def child_pid():
        try:
            comps = json.loads(state.read_text())["components"]
            return next(c["pid"] for c in comps if c["name"] == "child")
        except (OSError, ValueError, StopIteration, KeyError):
            return None

    times = []
    for i in range(kills):
        time.sleep(0.25)  # let the child count as up (min_uptime 0) and the supervisor go idle
        pid = wait_until(child_pid, 5)
        seen = ups(log)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: ups(log) > seen, 5)
        times.append(time.perf_counter() - t0)
    return times, psutil.Process(sup.pid), sup


def pm2_loop(tmp: Path, kills: int) -> list[float]:
    """The same measure under PM2: SIGKILL the child, wait for its "up" in PM2's out log."""
    import json

    env = dict(os.environ, PM2_HOME=str(tmp / "pm2"))
    log = tmp / "pm2-child.log"
    (tmp / "ecosystem.json").write_text(json.dumps({"apps": [{
        "name": "child", "script": CHILD[0], "args": CHILD[1:], "interpreter": "none", "out_file": str(log),
        "error_file": str(tmp / "pm2-child.err"), "autorestart": True, "min_uptime": 0, "restart_delay": 0,
        "max_restarts": 100000}]}))
    subprocess.run(["pm2", "start", str(tmp / "ecosystem.json")], env=env, capture_output=True, check=True)
    try:
        wait_until(lambda: log.exists() and ups(log) >= 1, 20)

        def child_pid():
            out = subprocess.run(["pm2", "jlist"], env=env, capture_output=True, text=True).stdout
            try:
                return next(p["pid"] for p in json.loads(out) if p["name"] == "child") or None
            except (ValueError, StopIteration, KeyError):
                return None

        times = []
        for _ in range(kills):
            time.sleep(0.25)
            pid = wait_until(child_pid, 10)
            seen = ups(log)
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: ups(log) > seen, 5)
            times.append(time.perf_counter() - t0)
        return times
    finally:
        subprocess.run(["pm2", "kill"], env=env, capture_output=True)


def ms(values):
    return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--pm2", action="store_true", help="also measure PM2 on the same child")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, child: {' '.join(CHILD)}")
    bare = bare_loop(args.kills)
    print(f"bare fork/exec+waitpid loop ({args.kills} kills): {ms(bare)}")
    if args.pm2:
        with tempfile.TemporaryDirectory(prefix="bk-bench-pm2-") as tmp:
            print(f"PM2                   ({args.kills} kills): {ms(pm2_loop(Path(tmp), args.kills))}")
    with tempfile.TemporaryDirectory(prefix="bk-bench-") as tmp:
        times, sup_proc, sup = supervised_loop(Path(tmp), args.kills)
        try:
            print(f"botkeeper supervisor  ({args.kills} kills): {ms(times)}   [target: median <= 15 ms]")
            time.sleep(1.0)
            cpu0, t0 = sup_proc.cpu_times(), time.monotonic()
            time.sleep(args.idle_seconds)
            cpu1, t1 = sup_proc.cpu_times(), time.monotonic()
            used = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
            mem = sup_proc.memory_full_info()
            bare_py = subprocess.run([sys.executable, "-c", "import psutil; print(psutil.Process().memory_info().rss)"],
                                     capture_output=True, text=True).stdout.strip()
            print(f"supervisor idle over {args.idle_seconds:g} s: CPU {100 * used / (t1 - t0):.3f} % of one core"
                  f"   [target <= 0.2 %]")
            print(f"supervisor memory: RSS {mem.rss / 2**20:.1f} MiB, PSS {mem.pss / 2**20:.1f} MiB, USS "
                  f"{mem.uss / 2**20:.1f} MiB   [target RSS <= 20 MiB]; a bare `python -c 'import psutil'` here: "
                  f"{int(bare_py) / 2**20:.1f} MiB RSS")
        finally:
            sup.send_signal(signal.SIGTERM)
            sup.wait(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
