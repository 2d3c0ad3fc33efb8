"""Helpers for the watcher tests (monitor, auto_recovery) and bench/chaos.py: a fake bot with
heartbeats, a tiny status-page stub, and a test-side census of the bundle's processes.

The census scans processes by the environment our supervisor and start give them: that is the test's
oracle, never what the product itself does (it finds processes only through PID files and locks).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent

# argv: [mode]; modes: "" (beats every 0.2 s), "grow" (also allocates 4 MB per beat),
# "silent" (never beats). A file `block` in the home makes one beat block the event loop for good
# (renamed to block.done first, so the next bot runs normally). Each bot appends its pid to bots.txt.
FAKE_BOT = f"""
import asyncio, os, sys, time
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from botkeeper import heartbeat

home = Path(os.environ["BOTKEEPER_HOME"])
mode = sys.argv[1] if len(sys.argv) > 1 else ""
with open(home / "bots.txt", "a") as fh:
    fh.write(f"{{os.getpid()}}\\n")
print(f"fake bot {{os.getpid()}} mode={{mode!r}}", flush=True)
ballast = []

async def handler():
    block = home / "block"
    if block.exists():
        os.replace(block, home / "block.done")
        print("handler blocks the event loop", flush=True)
        time.sleep(3600)  # a blocking call inside a coroutine: the loop is stuck

async def main():
    while True:
        if mode != "silent":
            heartbeat.beat(state="polling", last_poll_at=time.time())
        if mode == "grow" and len(ballast) < 100:
            ballast.append("x" * (4 * 1024 * 1024))
        await handler()
        await asyncio.sleep(0.2)

asyncio.run(main())
"""

# A stand-in for the status page: answers GET /health with 200 on PORT (loopback), nothing more.
WEB_STUB = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    do_HEAD = do_GET
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def install_fake_bot(home: Path) -> Path:
    path = home / "fakebot.py"
    path.write_text(FAKE_BOT)
    return path


def fake_bot_command(home: Path, mode: str = "") -> list[str]:
    path = install_fake_bot(home)
    return [sys.executable, str(path)] + ([mode] if mode else [])


def web_stub_command(home: Path) -> list[str]:
    path = home / "webstub.py"
    path.write_text(WEB_STUB)
    return [sys.executable, str(path)]


def bundle_processes(home: Path) -> list[tuple[int, str, str, int]]:
    """Every live process of the bundle in `home`: (pid, component or 'root', command line, ppid)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            env = proc.environ()
            if env.get("BOTKEEPER_HOME") == str(home) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append((proc.pid, env.get("BOTKEEPER_COMPONENT", "root"), " ".join(proc.cmdline())[:100],
                              proc.ppid()))
        except psutil.Error:
            continue
    return found


def bots(procs) -> list:
    return [p for p in procs if p[1] == "bot"]


def supervisors(procs) -> list:
    """Supervisor processes. A supervisor's child between fork and exec still shows the supervisor's
    command line and environment: it is not a second supervisor, so children of one are left out."""
    found = [p for p in procs if p[1] == "root" and " supervise" in p[2]]
    pids = {p[0] for p in found}
    return [p for p in found if p[3] not in pids]
