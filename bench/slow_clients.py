"""Slow-client flood on the status page, loopback only (not a test).

Starts `python keep_alive.py` in a throw-away bundle home, opens N connections that each send a
request line and then one header line every INTERVAL seconds (never finishing the request, as a
slowloris client does), and while they stay open measures how long a fresh `GET /health` and
`GET /ping` take. Prints p50/p95/max latency, failures, and the web process's RSS and open files
before and with the flood.

    python bench/slow_clients.py [--clients 500] [--interval 10] [--duration 30]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, timeout: float) -> tuple[float, int | None]:
    """(seconds, status or None on failure) for one request on a fresh connection."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    except OSError:
        status = None
    return time.perf_counter() - started, status


def open_slow(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET /?slow={i} HTTP/1.1\r\nHost: bench\r\n".encode())
        socks.append(sock)
    return socks


def dribble(socks: list[socket.socket], interval: float, stop: threading.Event) -> None:
    """One more header line per socket every `interval` seconds, spread over the interval."""
    n = 0
    while not stop.is_set():
        for sock in socks:
            if stop.wait(interval / max(1, len(socks))):
                return
            try:
                sock.sendall(f"X-Slow-{n}: x\r\n".encode())
            except OSError:
                pass
        n += 1


def summary(name: str, samples: list[tuple[float, int | None]]) -> str:
    ok = sorted(t for t, status in samples if status is not None)
    failed = len(samples) - len(ok)
    if not ok:
        return f"{name:8s} {len(samples)} requests, all failed"
    p95 = ok[min(len(ok) - 1, int(len(ok) * 0.95))]
    return (f"{name:8s} {len(samples)} requests  p50 {statistics.median(ok) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms"
            f"  max {ok[-1] * 1000:7.1f} ms  failed/timed out (5 s) {failed}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between header lines per client")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measuring with the flood open")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bk-slow-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
    env |= {"BOTKEEPER_HOME": str(home), "BOTKEEPER_ENV": "test", "DEMO": "off", "HOST": "127.0.0.1",
            "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    web = subprocess.Popen([sys.executable, str(ROOT / "keep_alive.py")], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 20
        while get(port, "/ping", 1)[1] != 200:
            if time.monotonic() > deadline or web.poll() is not None:
                print("web did not come up", file=sys.stderr)
                return 1
            time.sleep(0.1)
        proc = psutil.Process(web.pid)
        rss0, fds0 = proc.memory_info().rss, proc.num_fds()
        idle = [get(port, "/health", 5) for _ in range(20)]
        socks = open_slow(port, args.clients)
        threading.Thread(target=dribble, args=(socks, args.interval, stop), daemon=True).start()
        time.sleep(1.0)  # let the server accept them all
        health, ping = [], []
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            health.append(get(port, "/health", 5))
            ping.append(get(port, "/ping", 5))
            time.sleep(0.25)
        rss1, fds1 = proc.memory_info().rss, proc.num_fds()
        print(f"slow clients: {args.clients} (a header line every {args.interval:g} s each), measured for"
              f" {args.duration:g} s")
        print(summary("idle", idle))
        print(summary("/health", health))
        print(summary("/ping", ping))
        print(f"web RSS {rss0 / 2**20:.1f} MiB idle -> {rss1 / 2**20:.1f} MiB with the flood"
              f" ({(rss1 - rss0) / max(1, args.clients) / 1024:.1f} KiB per slow connection);"
              f" open files {fds0} -> {fds1}")
        return 0
    finally:
        stop.set()
        for sock in socks:
            sock.close()
        web.terminate()
        try:
            web.wait(10)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait(5)


if __name__ == "__main__":
    raise SystemExit(main())
