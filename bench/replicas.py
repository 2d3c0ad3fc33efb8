"""Webhook replicas on this machine: updates per second one and two replicas handle, duplicate
deliveries suppressed, and the combined send rate under Telegram's limits.

    python bench/replicas.py [--updates 300] [--senders 8]

Real processes throughout: the in-thread emulator, a redis-server on a free port, the bots
(main.py in webhook mode with REDIS_URL) in temporary homes; updates are POSTed to /telegram with
the secret header by `--senders` threads, round robin over the replicas, as a load balancer would.
Each update is a /ping from a chat of its own (one sendMessage and one edit per update).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from botkeeper.emulator import Emulator, Limits  # noqa: E402

TOKEN = "123456789:AAH-fake-token-for-bench-0123456789"
SECRET = "bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def beat(home: Path) -> dict:
    try:
        return json.loads((home / "bot_health.txt").read_text())
    except (OSError, ValueError):
        return {}


class Replicas:
    def __init__(self, n: int, emulator: Emulator, redis_url: str, workdir: Path, **extra: str):
        self.ports = [free_port() for _ in range(n)]
        self.homes, self.procs = [], []
        for i, port in enumerate(self.ports):
            home = workdir / f"r{n}-{i}-{time.monotonic_ns()}"
            home.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
            env |= {"BOTKEEPER_HOME": str(home), "BOTKEEPER_ENV": "production", "DEMO": "off", "HANDLERS": "none",
                    "BOTKEEPER_OUTER": "none", "LOG_LEVEL": "WARNING", "TELEGRAM_API_BASE_URL": emulator.url,
                    "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_MODE": "webhook", "WEBHOOK_PORT": str(port),
                    "WEBHOOK_SECRET": SECRET, "WEBHOOK_URL": f"http://127.0.0.1:{self.ports[0]}/telegram",
                    "REDIS_URL": redis_url, "HEARTBEAT_INTERVAL": "0.5", "STALE_AFTER": "5"} | extra
            err = open(home / "bot.stderr", "wb")
            self.procs.append(subprocess.Popen([sys.executable, str(ROOT / "main.py")], cwd=home, env=env,
                                               stdout=err, stderr=err, start_new_session=True))
            self.homes.append(home)
        for home in self.homes:
            wait(lambda: beat(home).get("state") == "webhook", 30, f"webhook state in {home}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def duplicates(self) -> int:
        return sum(beat(h).get("duplicates_skipped", 0) for h in self.homes)


def deliver(emulator: Emulator, reps: Replicas, n: int, senders: int, chat0: int, both: bool = False) -> float:
    """POST n updates (each to every replica when `both`); seconds until every one was answered."""
    updates = [emulator.new_message_update("/ping", chat_id=chat0 + i) for i in range(n)]
    session_per_thread: dict[int, requests.Session] = {}
    before = emulator.rates()["accepted"]

    def post(i: int) -> None:
        import threading

        session = session_per_thread.setdefault(threading.get_ident(), requests.Session())
        targets = reps.ports if both else [reps.ports[i % len(reps.ports)]]
        for port in targets:
            code = session.post(f"http://127.0.0.1:{port}/telegram", json=updates[i],
                                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}, timeout=30).status_code
            assert code == 200, code

    start = time.monotonic()
    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(post, range(n)))
    wait(lambda: emulator.rates()["accepted"] - before >= n, 300, f"{n} answers")
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--senders", type=int, default=8)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bk-replicas-"))
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL,
                             start_new_session=True)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    emulator = Emulator(keep=100_000)
    emulator.start()
    n = args.updates
    try:
        print(f"{os.cpu_count()} CPUs; {n} updates (/ping: sendMessage + edit), {args.senders} concurrent POSTs")
        for count in (1, 2):  # handling speed: Telegram's limits out of the way (OUTBOX_RATE=1000, no 429s)
            reps = Replicas(count, emulator, redis_url, workdir, OUTBOX_RATE="1000", OUTBOX_CHAT_INTERVAL="0")
            try:
                deliver(emulator, reps, 20, args.senders, 10_000 * count)  # warm-up
                took = deliver(emulator, reps, n, args.senders, 100_000 * count)
                print(f"{count} replica(s): {n / took:.0f} updates/s handled and answered ({took:.2f} s)")
                if count == 2:
                    before = reps.duplicates()
                    took = deliver(emulator, reps, n, args.senders, 500_000, both=True)
                    print(f"2 replicas, every update POSTed to both: {n} answered once, "
                          f"{reps.duplicates() - before} duplicates suppressed ({n / took:.0f} updates/s)")
            finally:
                reps.stop()
        emulator.set_limits(Limits(per_second=30))  # Telegram's: anything over 30/s together gets 429
        reps = Replicas(2, emulator, redis_url, workdir)  # each replica alone may send 30/s (OUTBOX_RATE)
        try:
            emulator.rates(reset=True)
            took = deliver(emulator, reps, n, args.senders, 900_000)
            rates = emulator.rates()
            print(f"2 replicas under the 30/s limit: {rates['accepted']} sent in {took:.2f} s,"
                  f" sustained {rates['sustained_per_second']:.1f}/s, busiest second {rates['max_per_second']},"
                  f" 429s {rates['rejected']}")
        finally:
            reps.stop()
    finally:
        emulator.stop()
        redis.terminate()
        redis.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
