"""How long stopping the bundle takes (not a test: it prints figures).

Starts the offline demo bundle (emulator, the real python-telegram-bot bot, web, monitor, and in
the plain modes the runner and auto_recovery) with the production timings in a temporary home,
waits for GET /health = 200, stops it one way and measures from the stop request until every
process of the bundle is gone (found by BOTKEEPER_HOME in their environment; zombies count as gone)
and the process we signalled has exited. Also says whether the bot logged its graceful stop.

    python bench/stop_time.py [--runs 1] [--only fg-sigint,fg-sigterm,stop-script,pid1-sigterm]

Scenarios:
  fg-sigint     foreground `python -m botkeeper start`, then SIGINT (Ctrl+C)
  fg-sigterm    the same, SIGTERM
  stop-script   `start --detach`, then `bash stop_24_7.sh` (the command's own duration)
  pid1-sigterm  `unshare --pid --fork --mount-proc python -m botkeeper start` (the container's entry
                command as PID 1 of a fresh PID namespace), SIGTERM to that PID 1 (root only)
Target: about 2 s when the components stop promptly, never more than the slowest kill timeout + 2 s.

Measured on the 2-core dev machine (2026-11-26, production timings, median of 3 after / 1 before):
                 before issue 11   after
  fg-sigint          30.11 s       0.26 s
  fg-sigterm         30.13 s       0.28 s
  stop-script         3.64 s       0.23 s
  pid1-sigterm       30.13 s       0.14 s   (bot's graceful "bot stopped" logged in every run)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("fg-sigint", "fg-sigterm", "stop-script", "pid1-sigterm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
    env.update({"BOTKEEPER_HOME": str(home), "DEMO": "on", "PORT": str(free_port()),
                "EMULATOR_PORT": str(free_port()), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1",
                "BOTKEEPER_PYTHON": sys.executable})
    return env


def census(home: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("BOTKEEPER_HOME") == str(home) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def wait_healthy(env: dict[str, str], timeout: float = 90.0) -> None:
    url = f"http://127.0.0.1:{env['PORT']}/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not 200 within {timeout:g} s")


def wait_gone(home: Path, proc: subprocess.Popen | None, t0: float, timeout: float = 90.0) -> float:
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if (proc is None or proc.poll() is not None) and not census(home):
            return time.monotonic() - t0
        time.sleep(0.01)
    raise TimeoutError(f"bundle in {home} still running {timeout:g} s after the stop request")


def run_one(scenario: str) -> tuple[float, bool]:
    home = Path(tempfile.mkdtemp(prefix="bk-stop-"))
    env = env_for(home)
    # The plain bundle (run_24_7.sh + auto_recovery), even on a machine that looks like a container;
    # PID 1 detects its mode as a container's entry command does.
    env["BOTKEEPER_OUTER"] = "auto" if scenario == "pid1-sigterm" else "none"
    proc = None
    try:
        if scenario == "stop-script":
            subprocess.run([sys.executable, "-m", "botkeeper", "start", "--detach"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
            wait_healthy(env)
            t0 = time.monotonic()
            subprocess.run(["bash", str(ROOT / "stop_24_7.sh")], env=env, stdout=subprocess.DEVNULL, timeout=120)
            took = wait_gone(home, None, t0)
        else:
            cmd = [sys.executable, "-m", "botkeeper", "start"]
            if scenario == "pid1-sigterm":
                cmd = ["unshare", "--pid", "--fork", "--mount-proc"] + cmd
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            wait_healthy(env)
            target = proc.pid
            if scenario == "pid1-sigterm":  # signal the namespace's PID 1, as `docker stop` does
                target = psutil.Process(proc.pid).children()[0].pid
            sig = signal.SIGINT if scenario == "fg-sigint" else signal.SIGTERM
            t0 = time.monotonic()
            os.kill(target, sig)
            took = wait_gone(home, proc, t0)
        log = (home / "logs" / "bot.log").read_text(errors="replace") if (home / "logs" / "bot.log").exists() else ""
        return took, "bot stopped" in log
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        subprocess.run([sys.executable, "-m", "botkeeper", "stop"], cwd=ROOT, env=env, capture_output=True, timeout=120)
        for pid in census(home):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only", default=",".join(SCENARIOS))
    args = ap.parse_args()
    chosen = [s for s in args.only.split(",") if s]
    for s in chosen:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}: expected some of {', '.join(SCENARIOS)}")
    if "pid1-sigterm" in chosen and (os.geteuid() != 0 or not shutil.which("unshare")):
        print("pid1-sigterm: skipped (needs root and unshare from util-linux)")
        chosen.remove("pid1-sigterm")
    for scenario in chosen:
        times, graceful = [], []
        for _ in range(args.runs):
            took, ok = run_one(scenario)
            times.append(took)
            graceful.append(ok)
        print(f"{scenario:13s} stop took median {statistics.median(times):6.2f} s  (runs: "
              + ", ".join(f"{t:.2f}" for t in times) + f")  bot graceful stop logged: {all(graceful)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
