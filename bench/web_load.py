"""Bounded load on the status page, loopback only (not a test).

Starts `python keep_alive.py` in a throw-away bundle home whose state.json and heartbeat describe
a healthy bundle (real sleeping processes stand in for the supervisor and components), then for
each endpoint: a paced phase (default 200 requests/s for 10 s; latency counted from each request's
*scheduled* time, so a stall is not hidden) and a flat-out phase (default 5 s, 8 keep-alive
connections). Prints rps and p50/p99/max per endpoint, and the web process's RSS idle and after.

    python bench/web_load.py [--rate 200] [--paced 10] [--flat 5] [--endpoints /health,/ping,/,/metrics]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from botkeeper.fsutil import atomic_write  # noqa: E402

CONNECTIONS = 8


class Conn:
    """One keep-alive HTTP/1.1 connection with just enough parsing for our own server."""

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""

    def request(self, path: str) -> int:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                length = length or 0
        while len(self.buf) < length:
            self._fill()
        self.buf = self.buf[length:]
        return status

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def paced(port: int, path: str, rate: float, seconds: float) -> dict:
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.05

    def worker(k: int) -> None:
        conn, mine = Conn(port), []
        for i in range(k, total, CONNECTIONS):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                ok = conn.request(path) < 500 or path == "/health"
            except OSError:
                conn.close()
                ok = False
            if not ok:
                errors[0] += 1
            mine.append(time.perf_counter() - due)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"rps": len(latencies) / elapsed, "p50": pct(latencies, 50), "p99": pct(latencies, 99),
            "max": max(latencies), "errors": errors[0], "n": len(latencies)}


def flat_out(port: int, path: str, seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker() -> None:
        conn, mine = Conn(port), []
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                conn.request(path)
            except OSError:
                conn.close()
                errors[0] += 1
            mine.append(time.perf_counter() - started)
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"rps": len(latencies) / elapsed, "p50": pct(latencies, 50), "p99": pct(latencies, 99),
            "max": max(latencies), "errors": errors[0], "n": len(latencies)}


def fake_bundle(home: Path, stop: threading.Event) -> list[subprocess.Popen]:
    """state.json for a healthy bundle (real sleeping processes) and a heartbeat kept fresh."""
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]) for _ in range(3)]
    ids = [(p.pid, psutil.Process(p.pid).create_time()) for p in sleepers]
    now = time.time()

    def comp(name, pid_ct):
        return {"name": name, "state": "running", "pid": pid_ct[0], "create_time": pid_ct[1], "started_at": now,
                "restarts": 0, "last_restart_reason": None, "heartbeat": name == "bot"}

    state = {"version": 1, "updated_at": now,
             "supervisor": {"pid": ids[0][0], "create_time": ids[0][1], "started_at": now, "demo": False},
             "components": [comp("bot", ids[1]), comp("monitor", ids[2])],
             "recent_restarts": [{"at": now - 60 * i, "component": "bot", "cause": "crash",
                                  "detail": "exited with code 1", "reason": "exited with code 1",
                                  "by": "supervisor"} for i in range(10, 0, -1)]}
    atomic_write(home / "run" / "state.json", json.dumps(state))
    # The supervisor's own PID file (what proves it alive) and a heartbeat written by the bot's pid.
    atomic_write(home / "run" / "supervisor.pid", json.dumps({"pid": ids[0][0], "create_time": ids[0][1]}))

    def beat() -> None:
        while not stop.is_set():
            atomic_write(home / "bot_health.txt", json.dumps(
                {"pid": ids[1][0], "written_at": time.time(), "last_poll_at": time.time(), "state": "polling",
                 "updates_handled": 1}))
            stop.wait(1.0)

    threading.Thread(target=beat, daemon=True).start()
    return sleepers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--paced", type=float, default=10.0, help="seconds of paced load per endpoint")
    ap.add_argument("--flat", type=float, default=5.0, help="seconds of flat-out load per endpoint")
    ap.add_argument("--endpoints", default="/health,/ping,/,/metrics")
    args = ap.parse_args()
    if args.rate * args.paced > 100_000 or args.paced > 60 or args.flat > 60:
        ap.error("keep the load bounded: rate*paced <= 100000, phases <= 60 s")

    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="botkeeper-bench-") as tmp:
        home = Path(tmp)
        (home / "run").mkdir()
        sleepers = fake_bundle(home, stop)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_"))}
        env |= {"BOTKEEPER_HOME": tmp, "BOTKEEPER_ENV": "production", "DEMO": "off", "HOST": "127.0.0.1",
                "PORT": str(port), "LOG_LEVEL": "WARNING", "SELF_PING": "off"}
        web = subprocess.Popen([sys.executable, str(ROOT / "keep_alive.py")], env=env, cwd=ROOT)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if Conn(port).request("/ping") == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("keep_alive.py did not come up")
                    time.sleep(0.05)
            proc = psutil.Process(web.pid)
            time.sleep(2)
            idle = proc.memory_info().rss
            print(f"web process pid {web.pid}: idle RSS {idle / 2**20:.1f} MB; {psutil.cpu_count()} CPUs")
            print(f"/health answers {Conn(port).request('/health')} (200 = the fake bundle is judged healthy)")
            print(f"{'endpoint':10} {'phase':14} {'rps':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>6}")
            for path in args.endpoints.split(","):
                warm = Conn(port)
                for _ in range(20):  # first hits compile templates and prime psutil
                    warm.request(path)
                warm.close()
                for name, result in ((f"paced {args.rate:g}/s", paced(port, path, args.rate, args.paced)),
                                     ("flat out", flat_out(port, path, args.flat))):
                    print(f"{path:10} {name:14} {result['rps']:7.0f} {result['p50'] * 1000:8.2f} "
                          f"{result['p99'] * 1000:8.2f} {result['max'] * 1000:8.2f} {result['errors']:6d}",
                          flush=True)
            print(f"web process RSS after the load: {proc.memory_info().rss / 2**20:.1f} MB")
        finally:
            stop.set()
            web.terminate()
            web.wait(10)
            for p in sleepers:
                p.kill()
                p.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
