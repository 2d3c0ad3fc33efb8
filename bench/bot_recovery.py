"""Bot recovery time under the real supervisor (not a test: it prints figures).

Runs `python -m botkeeper supervise` in a temporary home with the whole bundle (bot, web, monitor),
the bot pointed at the Bot API emulator started here. Then, N times: wait until the bot has been
up longer than MIN_UPTIME (so the supervisor treats the kill as a crash of a healthy bot, not a
crash loop), SIGKILL it, have a user send /ping at that same moment, and measure the time from the
kill to the bot's "pong" arriving at the emulator: reap, policy, fork/exec, Python and
python-telegram-bot imports, getMe, deleteWebhook, getUpdates, handler, sendMessage.

Both paths in one run: WARM_STANDBY=off (cold: a new interpreter) and WARM_STANDBY=auto (warm: a
fork of the fork server, botkeeper/bot/forkserver.py), then the fork server's PSS.

    python bench/bot_recovery.py [--kills 20] [--min-uptime 2] [--only cold|warm] [--settle 10]
Targets (2-core machine): cold median <= 1.0 s; warm median <= 0.25 x cold and <= 150 ms; fork
server PSS <= 15 MiB.
"""

from __future__ import annotations

import argparse
import json
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from botkeeper.emulator import Emulator  # noqa: E402

TOKEN = "123456789:AAH-fake-token-for-bench-0123456789"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def bot_component(home: Path) -> dict:
    state = read_json(home / "run" / "state.json")
    return next((c for c in state.get("components", []) if c.get("name") == "bot"), {})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid: int) -> dict[str, float]:
    """The process's smaps_rollup in MiB. Pss is the proportional set size: shared pages count by
    the share (the fork server's pages shared with the bot it forked count half)."""
    figures = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    figures[parts[0].rstrip(":")] = int(parts[1]) / 1024
    except OSError:
        pass
    return figures


def tear_down(sup: subprocess.Popen, emulator: Emulator, home: Path) -> None:
    """Stop the bench's supervisor (SIGTERM, then its group SIGKILLed after 20 s) and emulator;
    remove its home."""
    sup.send_signal(signal.SIGTERM)
    try:
        sup.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(sup.pid, signal.SIGKILL)
        sup.wait(5)
    emulator.stop()
    shutil.rmtree(home, ignore_errors=True)


def run_path(warm: bool, kills: int, min_uptime: float, settle: float) -> dict:
    """One supervisor with WARM_STANDBY=auto or off: `kills` SIGKILLs of a healthy bot, each timed
    from the kill to the pong of a /ping sent at the same moment."""
    home = Path(tempfile.mkdtemp(prefix="botkeeper-bench-"))
    # An installed bundle has its handlers.py already (the first start creates it): not created
    # here while the fork server loads, which would make it reload once.
    shutil.copyfile(ROOT / "botkeeper" / "bot" / "handlers_example.py", home / "handlers.py")
    emulator = Emulator(port=0)
    emulator.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
    env.update({
        "BOTKEEPER_HOME": str(home), "BOTKEEPER_ENV": "production", "DEMO": "off",
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": emulator.url, "WARM_STANDBY": "auto" if warm else "off",
        "MIN_UPTIME": str(min_uptime), "HEARTBEAT_INTERVAL": "1", "PORT": str(free_port()), "AUTO_RECOVERY": "off", "ALERTS": "off",
    })
    label = "warm" if warm else "cold"
    sup = subprocess.Popen([sys.executable, "-m", "botkeeper", "supervise"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    times: list[float] = []
    spawn: list[float] = []
    cpu: list[float] = []
    warm_starts = 0
    pss: dict[str, dict[str, float]] = {}
    try:
        if warm:  # the fork server has loaded everything (the first bot start was cold)
            wait_until(lambda: "ready:" in (home / "logs" / "forkserver.log").read_text()
                       if (home / "logs" / "forkserver.log").exists() else False, 60, "the fork server ready")
        for round_no in range(kills):
            # A healthy bot: polling, and up longer than MIN_UPTIME.
            comp = wait_until(lambda: (c := bot_component(home)).get("pid") and c.get("started_at")
                              and time.time() - c["started_at"] > min_uptime + 0.3
                              and read_json(home / "bot_health.txt").get("pid") == c["pid"]
                              and read_json(home / "bot_health.txt").get("last_poll_at") and c,
                              60, "a healthy, polling bot")
            killed_at_wall = time.time()
            t0 = time.perf_counter()
            os.kill(comp["pid"], signal.SIGKILL)
            sent = emulator.inject_message("/ping", chat_id=1000 + round_no)
            answer = emulator.sent_messages(chat_id=1000 + round_no, after=sent["message_id"], contains="pong",
                                            wait=30)
            elapsed = time.perf_counter() - t0
            if not answer:
                raise TimeoutError(f"{label} round {round_no + 1}: no pong within 30 s")
            new = wait_until(lambda: (c := bot_component(home)).get("pid") not in (None, comp["pid"]) and c, 5,
                             "the new pid in state.json")
            try:  # CPU the new bot spent to get here: the load-independent part of the figure
                proc = psutil.Process(new["pid"])
                cpu_times = proc.cpu_times()
                cpu.append(cpu_times.user + cpu_times.system)
                warm_starts += "forkserver.py" in " ".join(proc.cmdline())  # a fork keeps the server's cmdline
            except psutil.Error:
                pass
            times.append(elapsed)
            spawn.append(max(0.0, (new.get("started_at") or killed_at_wall) - killed_at_wall))
            print(f"{label} kill {round_no + 1:2d}: pid {comp['pid']} -> {new['pid']}: pong after"
                  f" {elapsed * 1000:6.0f} ms (respawned after {spawn[-1] * 1000:4.0f} ms)", flush=True)
        # The last bot works for a while before memory is read: its pages diverge from the fork
        # server's as it runs, so a PSS read at once would flatter the fork server.
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            for command in ("/ping", "/start", "/help", "/status", "hello"):
                emulator.inject_message(command, chat_id=5000)
            time.sleep(0.5)
        time.sleep(1.0)
        state = read_json(home / "run" / "state.json")
        for c in state.get("components", []):
            if c.get("name") in ("bot", "forkserver") and c.get("pid"):
                pss[c["name"]] = memory(c["pid"])
    finally:
        tear_down(sup, emulator, home)
    return {"times": times, "spawn": spawn, "cpu": cpu, "warm_starts": warm_starts, "pss": pss}


def summary(label: str, result: dict) -> None:
    times, cpu = result["times"], result["cpu"]
    print(f"{label}: {len(times)} kills: SIGKILL -> /ping answered median {statistics.median(times) * 1000:.0f} ms,"
          f" max {max(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms;"
          f" respawn median {statistics.median(result['spawn']) * 1000:.0f} ms"
          + (f"; new bot's CPU until the answer median {statistics.median(cpu) * 1000:.0f} ms" if cpu else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per path")
    parser.add_argument("--min-uptime", type=float, default=2.0, help="MIN_UPTIME for the run (seconds)")
    parser.add_argument("--only", choices=("cold", "warm"), help="run one path only")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds the last bot handles messages before memory is read")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = {}
    for path in ("cold", "warm"):
        if args.only in (None, path):
            results[path] = run_path(path == "warm", args.kills, args.min_uptime, args.settle)
    print()
    for path, result in results.items():
        if result["times"]:
            summary(f"{path} (WARM_STANDBY={'auto' if path == 'warm' else 'off'})", result)
    if "warm" in results and results["warm"]["times"]:
        warm = results["warm"]
        print(f"warm starts: {warm['warm_starts']} of {len(warm['times'])} restarts came from the fork server")
        pss = warm["pss"]
        server, bot = pss.get("forkserver", {}), pss.get("bot", {})
        if server.get("Pss"):
            print(f"fork server PSS {server['Pss']:.1f} MiB (anonymous {server.get('Pss_Anon', 0):.1f}, files"
                  f" {server.get('Pss_File', 0):.1f}); target <= 15 MiB: {'met' if server['Pss'] <= 15 else 'MISSED'}")
            # Its pages the bot wrote since the fork are the server's alone now; the rest count half.
            # Even a bot that wrote none would leave half of the server's anonymous memory to it.
            print(f"  RSS {server.get('Rss', 0):.1f} MiB: {server.get('Private_Dirty', 0):.1f} its own (written by the"
                  f" bot or by it since the fork), {server.get('Shared_Dirty', 0) + server.get('Shared_Clean', 0):.1f}"
                  f" shared; floor if the bot wrote nothing: {server.get('Anonymous', 0) / 2 + server.get('Pss_File', 0):.1f} MiB")
        if bot.get("Pss"):
            print(f"the bot it forked: PSS {bot['Pss']:.1f} MiB (RSS {bot.get('Rss', 0):.1f})")
        cold_bot = results.get("cold", {}).get("pss", {}).get("bot", {}).get("Pss")
        if cold_bot and server.get("Pss") and bot.get("Pss"):
            extra = server["Pss"] + bot["Pss"] - cold_bot
            print(f"a cold-started bot's PSS {cold_bot:.1f} MiB: warm standby costs {extra:.1f} MiB more in all")
        if "cold" in results and results["cold"]["times"]:
            cold_median = statistics.median(results["cold"]["times"])
            warm_median = statistics.median(warm["times"])
            print(f"warm/cold median ratio {warm_median / cold_median:.2f} (cold/warm {cold_median / warm_median:.1f}x);"
                  f" targets: warm <= 0.25 x cold and <= 150 ms: {'met' if warm_median <= 0.25 * cold_median and warm_median <= 0.150 else 'MISSED'}")
    print(f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
