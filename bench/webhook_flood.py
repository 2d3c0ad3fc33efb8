"""Strangers against the webhook port of a real bundle (not a test): memory, restarts, /health, and
whether Telegram's own deliveries still get through.

    python bench/webhook_flood.py [--strangers 500] [--flood 10] [--slow 500] [--slowloris 15]

A real `python -m botkeeper supervise` in a temporary home (bot in webhook mode against the
in-thread emulator, web, monitor, production profile). While a legitimate sender POSTs a /ping with
the right secret every 0.2 s (each must be answered by the bot) and a prober GETs /health every
20 ms on a fresh connection:
  1. flood: `--strangers` concurrent connections, wave after wave for `--flood` seconds, each
     announcing a 1 MiB body without the secret and sending it in 64 KiB pieces;
  2. slowloris: `--slow` connections that send a request head one byte a second, for `--slowloris`
     seconds (reconnecting when cut).
Prints the bot's RSS (before, peak, after), its restarts, /health latency and the legitimate
updates answered in each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from botkeeper.emulator import Emulator  # noqa: E402

TOKEN = "123456789:AAH-fake-token-for-bench-0123456789"
SECRET = "bench-flood-secret"
MIB = 1 << 20


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
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def bot_component(home: Path) -> dict:
    try:
        state = json.loads((home / "run" / "state.json").read_text())
        return next(c for c in state["components"] if c["name"] == "bot")
    except (OSError, ValueError, KeyError, StopIteration):
        return {}


def beat(home: Path) -> dict:
    try:
        return json.loads((home / "bot_health.txt").read_text())
    except (OSError, ValueError):
        return {}


class Meter(threading.Thread):
    """Samples the bot's RSS (by the pid state.json names) every 50 ms; /health every 20 ms."""

    def __init__(self, home: Path, web_port: int):
        super().__init__(daemon=True)
        self.home, self.web_port = home, web_port
        self.stop = threading.Event()
        self.rss: list[int] = []
        self.health: list[float] = []
        self.health_bad = 0
        self.phase = "idle"

    def run(self) -> None:
        last_rss = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now - last_rss >= 0.05:
                last_rss = now
                pid = bot_component(self.home).get("pid")
                try:
                    self.rss.append(psutil.Process(pid).memory_info().rss if pid else 0)
                except psutil.Error:
                    pass
            started = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", self.web_port), timeout=5) as sock:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    head = sock.recv(64)
                ok = head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.1 503")
            except OSError:
                ok = False
            took = time.perf_counter() - started
            if ok:
                self.health.append(took)
            else:
                self.health_bad += 1
            self.stop.wait(0.02)


class Legit(threading.Thread):
    """Telegram's own deliveries: a /ping from a chat of its own every 0.2 s, with the secret."""

    def __init__(self, emulator: Emulator, port: int):
        super().__init__(daemon=True)
        self.emulator, self.port = emulator, port
        self.stop = threading.Event()
        self.sent: dict[str, list[dict]] = {}
        self.phase = "before"
        self.refused = 0
        self.chat = 900_000

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            self.chat += 1
            update = self.emulator.new_message_update("/ping", chat_id=self.chat)
            try:
                code = session.post(f"http://127.0.0.1:{self.port}/telegram", json=update, timeout=10,
                                    headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}).status_code
            except requests.RequestException:
                code = None
            if code == 200:
                self.sent.setdefault(self.phase, []).append(update)
            else:
                self.refused += 1
            self.stop.wait(0.2)

    def answered(self, phase: str) -> tuple[int, int]:
        updates = self.sent.get(phase, [])
        got = sum(bool(self.emulator.sent_messages(chat_id=u["message"]["chat"]["id"], wait=0)) for u in updates)
        return got, len(updates)


async def stranger(port: int, stats: dict) -> None:
    head = (f"POST /telegram HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MIB}\r\n\r\n").encode()
    piece = b"x" * (64 * 1024)
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        writer.write(head)
        for _ in range(MIB // len(piece)):
            writer.write(piece)
            await asyncio.wait_for(writer.drain(), 10)
        answer = await asyncio.wait_for(reader.read(64), 10)
        stats["403" if answer.startswith(b"HTTP/1.1 403") else "other"] += 1
    except (OSError, asyncio.TimeoutError):
        stats["cut"] += 1  # the server closed it before the body was sent: what it should do
    finally:
        if writer is not None:
            writer.close()


async def flood(port: int, n: int, seconds: float) -> dict:
    stats = {"403": 0, "cut": 0, "other": 0, "waves": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.gather(*(stranger(port, stats) for _ in range(n)))
        stats["waves"] += 1
    return stats


async def slowloris(port: int, n: int, seconds: float) -> dict:
    stats = {"connections": 0, "cut_by_server": 0}
    deadline = time.monotonic() + seconds
    head = b"POST /telegram HTTP/1.1\r\nHost: bench\r\nX-Slow: " + b"a" * 200

    async def one() -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            stats["connections"] += 1
            try:
                for byte in head:
                    if time.monotonic() >= deadline:
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    try:
                        if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                            stats["cut_by_server"] += 1
                            break
                    except asyncio.TimeoutError:
                        pass
            except OSError:
                stats["cut_by_server"] += 1
            finally:
                writer.close()

    await asyncio.gather(*(one() for _ in range(n)))
    return stats


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strangers", type=int, default=500)
    parser.add_argument("--flood", type=float, default=10.0)
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--slowloris", type=float, default=15.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bk-flood-"))
    emulator = Emulator(keep=100_000)
    emulator.start()
    hook_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
    env |= {"BOTKEEPER_HOME": str(home), "BOTKEEPER_ENV": "production", "DEMO": "off", "HANDLERS": "none",
            "BOTKEEPER_OUTER": "none", "AUTO_RECOVERY": "off", "TELEGRAM_API_BASE_URL": emulator.url,
            "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_MODE": "webhook", "WEBHOOK_PORT": str(hook_port),
            "WEBHOOK_SECRET": SECRET, "WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/telegram",
            "PORT": str(web_port), "HOST": "127.0.0.1", "WARM_STANDBY": "off"}
    sup = subprocess.Popen([sys.executable, "-m", "botkeeper", "supervise"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    meter = legit = None
    try:
        wait(lambda: beat(home).get("state") == "webhook", 60, "the bot in webhook mode")
        wait(lambda: requests.get(f"http://127.0.0.1:{web_port}/ping", timeout=2).ok, 30, "the web page")
        time.sleep(3)  # let the bot settle (first updates, heartbeat) before the baseline
        pid = bot_component(home)["pid"]
        restarts0 = bot_component(home).get("restarts", 0)
        meter = Meter(home, web_port)
        legit = Legit(emulator, hook_port)
        meter.start()
        legit.start()
        time.sleep(2)
        base = statistics.median(meter.rss[-20:])
        print(f"{os.cpu_count()} CPUs, machine shared with other work; bot pid {pid}, RSS before {base / MIB:.1f} MiB")
        results = {}
        for phase, coro in (("flood", flood(hook_port, args.strangers, args.flood)),
                            ("slowloris", slowloris(hook_port, args.slow, args.slowloris))):
            legit.phase = phase
            n0, h0 = len(meter.rss), len(meter.health)
            started = time.monotonic()
            results[phase] = asyncio.run(coro)
            took = time.monotonic() - started
            peak = max(meter.rss[n0:] or [0])
            health = meter.health[h0:]
            print(f"{phase}: {took:.1f} s, {results[phase]}; bot RSS peak {peak / MIB:.1f} MiB "
                  f"(+{(peak - base) / MIB:.1f} MiB); /health p50 {pct(health, .5):.1f} ms, "
                  f"p99 {pct(health, .99):.1f} ms, max {pct(health, 1):.1f} ms over {len(health)} probes")
        legit.phase = "after"
        time.sleep(3)
        legit.stop.set()
        meter.stop.set()
        legit.join(15)
        meter.join(15)
        for phase in ("flood", "slowloris", "after"):
            got, sent = legit.answered(phase)
            print(f"legitimate updates during {phase}: {got}/{sent} answered")
        comp = bot_component(home)
        after = statistics.median(meter.rss[-20:]) if meter.rss else 0
        hb = beat(home)
        print(f"bot RSS after {after / MIB:.1f} MiB; restarts {comp.get('restarts', 0) - restarts0}"
              f" (pid {'unchanged' if comp.get('pid') == pid else 'CHANGED'}); /health failures {meter.health_bad};"
              f" legit refused {legit.refused}; heartbeat: refused {hb.get('webhook_refused')},"
              f" turned away {hb.get('webhook_turned_away')}, bad {hb.get('webhook_bad')}")
        log = (home / "logs" / "bot.log").read_text(errors="replace")
        print(f"bot.log lines about refusals: {log.count('secret token refused')}")
    finally:
        for thread in (legit, meter):
            if thread is not None:
                thread.stop.set()
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGTERM)
            try:
                sup.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(sup.pid, signal.SIGKILL)
        emulator.stop()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
