"""What ALERT_URLS costs the monitor (not a test: it prints figures), and what a dead man's switch tick costs.

Each run is a fresh interpreter that imports what the monitor imports, then (1) imports Apprise as
the alert channel does, (2) sends one alert through a json:// URL to a loopback receiver (Apprise
loads its plugins on first use), and reads its own RSS and PSS and the time after each step. The
median of the runs is printed. Then the monitor's per-tick dead man's switch call (decide + queue)
is timed in this process.

    python bench/apprise_cost.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
def mem():
    out = {}
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("Rss", "Pss"):
                out[k] = int(v.split()[0]) / 1024
    return out
from botkeeper.alerting import monitor, alerts  # what bot_monitor.py has loaded before any alert
import requests
base = mem()
t0 = time.perf_counter()
from botkeeper.alerting.alert_channels import AppriseChannel, apprise_module
apprise_module()
t1 = time.perf_counter()
imported = mem()
ch = AppriseChannel(sys.argv[1], "json", lambda s: s)
ok = ch.send("bench alert", {"event": "test", "host": "bench"}).ok
t2 = time.perf_counter()
sent = mem()
t3 = time.perf_counter()
ch.send("bench alert 2", {"event": "test"})
t4 = time.perf_counter()
print(json.dumps({"ok": ok, "base": base, "imported": imported, "sent": sent, "import_ms": (t1 - t0) * 1000,
                  "first_send_ms": (t2 - t1) * 1000, "next_send_ms": (t4 - t3) * 1000}))
"""


def receiver() -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def tick_cost() -> float:
    """Microseconds per monitor tick spent on the dead man's switch (decide + a queued ping)."""
    from botkeeper.alerting.deadman import DeadMan
    from botkeeper.config import Settings

    server = receiver()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings.from_env({"DEADMAN_URL": f"http://127.0.0.1:{server.server_address[1]}/x",
                                      "DEADMAN_INTERVAL": "0.1"}, home=home)
        dm = DeadMan(settings, lambda s: s)

        class Verdict:
            overall, cause, detail = "healthy", None, ""

        n, began = 2000, time.perf_counter()
        for i in range(n):
            dm.step(i * 0.001, Verdict())  # a ping due every 100 ticks
        took = (time.perf_counter() - began) / n * 1e6
        dm.close()
    server.shutdown()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    server = receiver()
    url = f"json://127.0.0.1:{server.server_address[1]}/alerts"
    runs = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", CHILD, url], cwd=ROOT, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    server.shutdown()
    med = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
    print(f"Apprise in the monitor, median of {len(runs)} fresh interpreters (all sends ok: {all(r['ok'] for r in runs)}):")
    print(f"  monitor's imports before Apprise: RSS {med(lambda r: r['base']['Rss']):.1f} MiB, PSS {med(lambda r: r['base']['Pss']):.1f} MiB")
    print(f"  import apprise:        {med(lambda r: r['import_ms']):6.1f} ms   +RSS {med(lambda r: r['imported']['Rss'] - r['base']['Rss']):.1f} MiB"
          f"  +PSS {med(lambda r: r['imported']['Pss'] - r['base']['Pss']):.1f} MiB")
    print(f"  first alert (plugins): {med(lambda r: r['first_send_ms']):6.1f} ms   +RSS {med(lambda r: r['sent']['Rss'] - r['imported']['Rss']):.1f} MiB"
          f"  +PSS {med(lambda r: r['sent']['Pss'] - r['imported']['Pss']):.1f} MiB")
    print(f"  next alert:            {med(lambda r: r['next_send_ms']):6.1f} ms")
    print(f"  total with ALERT_URLS: +RSS {med(lambda r: r['sent']['Rss'] - r['base']['Rss']):.1f} MiB,"
          f" +PSS {med(lambda r: r['sent']['Pss'] - r['base']['Pss']):.1f} MiB")
    print(f"dead man's switch per monitor tick (decide + queue): {tick_cost():.1f} µs")


if __name__ == "__main__":
    main()
