"""The bundle's own files in odd states (issue 25): does the bot keep answering, are there false
down alerts, and how does each case end?

    python bench/disk_faults.py [--only NAME ...] [--quiet-wait SECONDS]

Each row starts a real bundle (`start --detach`: runner, supervisor, main.py, web, monitor) in its own
home with the test profile, against the Bot API emulator in this process; a user sends /ping every
0.5 s and waits for the answer. Alerts go to a webhook receiver here. Rows that need a small or
read-only file system mount a tmpfs or a read-only bind mount (root only; without root they are
skipped and say so). Prints per row: bot answered throughout (yes/no, answered/sent), false down
alerts, final state (overall and cause) and a note.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from botkeeper.emulator import Emulator  # noqa: E402

TOKEN = "123456789:AAH-fake-token-for-bench-0123456789"
MIN_PINGS = 10  # each row pings for at least ~5 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


class Receiver:
    """The alert webhook: records JSON bodies."""

    def __init__(self):
        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    bodies.append(json.loads(raw))
                except ValueError:
                    pass
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def can_mount() -> bool:
    return os.geteuid() == 0


@contextmanager
def tmpfs(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise Skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextmanager
def read_only(path: Path):
    """`path` read-only from now on (a read-only bind mount over itself); files open for writing stay so."""
    if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode != 0:
        raise Skip("cannot bind-mount (needs root)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True, capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (65536, 512):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass
    return filler


class Skip(Exception):
    pass


class Bundle:
    """One bundle in `home` against the in-process emulator, pinged by a user the whole time."""

    def __init__(self, home: Path, emulator: Emulator, receiver: Receiver, **env: str):
        self.home, self.emulator, self.receiver = home, emulator, receiver
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
        self.env.update({"BOTKEEPER_HOME": str(home), "BOTKEEPER_ENV": "test", "PYTHONUNBUFFERED": "1",
                         "AUTO_RECOVERY": "off", "PORT": str(free_port()), "HANDLERS": "none",
                         "BOTKEEPER_OUTER": "none", "TELEGRAM_BOT_TOKEN": TOKEN,
                         "TELEGRAM_API_BASE_URL": emulator.url, "ALERTS": "on",
                         "MONITORING_WEBHOOK": receiver.url, "HEALTH_GRACE": "3"} | env)
        self.sent = self.answered = 0
        self.misses: list[float] = []
        self._stop = threading.Event()
        self._pinger: threading.Thread | None = None
        self.t0 = time.monotonic()

    def cli(self, *args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "botkeeper", *args], cwd=ROOT, env=self.env | env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> subprocess.CompletedProcess:
        done = self.cli("start", "--detach")
        self.t0 = time.monotonic()
        return done

    def ping_once(self, timeout: float = 4.0) -> bool:
        chat = 5000 + self.sent % 7  # a few users: one slow answer does not hold the next
        sent = self.emulator.inject_message("/ping", chat_id=chat)
        return bool(self.emulator.sent_messages(chat_id=chat, after=sent["message_id"], contains="pong", wait=timeout))

    def start_pinging(self) -> None:
        def loop():
            while not self._stop.is_set():
                self.sent += 1
                if self.ping_once():
                    self.answered += 1
                else:
                    self.misses.append(round(time.monotonic() - self.t0, 1))
                self._stop.wait(0.5)

        self._pinger = threading.Thread(target=loop, daemon=True)
        self._pinger.start()

    def stop_pinging(self) -> None:
        self._stop.set()
        if self._pinger:
            self._pinger.join(10)

    def verdict(self) -> tuple[str, str | None, str]:
        done = self.cli("status", "--json", timeout=30)
        try:
            data = json.loads(done.stdout)
            return data["overall"], data.get("cause"), data.get("detail", "")
        except (ValueError, KeyError):
            return "not-running", None, (done.stderr or done.stdout).strip()[-200:]

    def health(self) -> dict:
        import urllib.request
        from urllib.error import HTTPError

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.env['PORT']}/health", timeout=5) as resp:
                return json.loads(resp.read())
        except HTTPError as exc:
            return json.loads(exc.read() or b"{}")
        except OSError as exc:
            return {"error": str(exc)}

    def down_alerts(self) -> list[dict]:
        return [b for b in self.receiver.bodies if b.get("event") in ("down", "recovered", "flapping")]

    def bot_pid(self) -> int | None:
        try:
            return json.loads((self.home / "bot_health.txt").read_text()).get("pid")
        except (OSError, ValueError):
            return None

    def healthy(self, timeout: float = 40) -> bool:
        return bool(wait(lambda: self.verdict()[0] == "healthy", timeout, 0.3))

    def stop(self) -> None:
        self.stop_pinging()
        self.cli("stop", timeout=120)


# --- the rows -------------------------------------------------------------------------------------
def row_outbox_corrupt(b: Bundle) -> str:
    (b.home / "data").mkdir(exist_ok=True)
    (b.home / "data" / "outbox.db").write_bytes(os.urandom(64 * 1024))
    done = b.start()
    b.start_pinging()
    alert = wait(lambda: [x for x in b.receiver.bodies if x.get("event") == "corrupt-file"], 30)
    kept = sorted(p.name for p in (b.home / "data").glob("outbox.db.corrupt-*"))
    return (f"start exit {done.returncode}; corrupt-file alert: {'yes' if alert else 'NO'}"
            f" ({(alert or [{}])[0].get('text', '')[60:170]}...); kept {kept[:1]}")


def row_run_unwritable(b: Bundle) -> str:
    b.start()
    b.healthy()
    b.start_pinging()
    with read_only(b.home / "run"):
        old = b.bot_pid()
        os.kill(old, signal.SIGKILL)
        wait(lambda: b.bot_pid() not in (None, old), 30)
        time.sleep(4)  # past HEALTH_GRACE: a false down alert would be out by now
        during = b.verdict()
        health = b.health()
    lines = _log_lines(b.home / "logs" / "supervisor.log", "state.json")
    b.healthy(20)
    return f"during: {during[0]} ({during[1]}), /health {health.get('status') or health.get('overall')}; state.json log lines: {lines}"


def row_disk_full_restart(b: Bundle) -> str:
    b.start()
    b.healthy()
    b.start_pinging()
    filler = fill(b.home)
    old = b.bot_pid()
    os.kill(old, signal.SIGKILL)
    wait(lambda: b.bot_pid() not in (None, old), 30)
    time.sleep(4)
    during = b.verdict()
    filler.unlink()
    time.sleep(3)  # space back: no "DOWN 0 s ago" / "back up after 1 s" pair
    return f"during: {during[0]} ({during[1]})"


def row_state_is_a_directory(b: Bundle) -> str:
    b.start()
    b.healthy()
    b.start_pinging()
    state = b.home / "run" / "state.json"
    state.unlink()
    state.mkdir()
    (state / "x").write_text("x")
    moved = wait(lambda: list((b.home / "run").glob("state.json.not-a-file-*")) and state.is_file(), 10)
    alert = wait(lambda: [x for x in b.receiver.bodies if x.get("event") == "corrupt-file"], 20)
    return f"moved aside: {'yes' if moved else 'NO'}; alert: {'yes' if alert else 'NO'}"


CHATTER = [sys.executable, "-c", "import time\nwhile True:\n    print('x' * 200, flush=True)\n    time.sleep(0.01)"]


def row_logs_unwritable(b: Bundle) -> str:
    """A user component that logs ~20 kB/s beside the bot; logs/ turns read-only."""
    b.env["LOG_MAX_BYTES"] = "100000"
    (b.home / "botkeeper.toml").write_text(f"[components.chatter]\ncommand = {json.dumps(CHATTER)}\n")
    b.start()
    b.healthy()
    b.start_pinging()
    log = b.home / "logs" / "chatter.log"
    with read_only(b.home / "logs"):
        time.sleep(12)  # about 2.4 x LOG_MAX_BYTES of lines
        size = log.stat().st_size
        during = b.verdict()
    alert = wait(lambda: [x for x in b.receiver.bodies if x.get("event") == "log-rotation"], 10) or []
    b.healthy(20)
    return (f"chatter.log {size} B (LOG_MAX_BYTES 100000); during: {during[0]} ({during[1]});"
            f" log-rotation alerts: {len(alert)}")


def row_broken_env_stop(b: Bundle) -> str:
    b.start()
    b.healthy()
    b.start_pinging()
    (b.home / ".env").write_text('TELEGRAM_BOT_TOKEN="unterminated\nPORT=abc\n')
    status = b.cli("status", "--json")
    b.stop_pinging()
    stop = b.cli("stop")
    left = (b.home / "run" / "supervisor.pid").exists()
    b.final = ("stopped", None, "")
    return (f"status exit {status.returncode}; stop exit {stop.returncode}, bundle"
            f" {'STILL RUNNING' if left else 'stopped'}: {stop.stderr.strip()[:90]}")


def row_start_disk_full(b: Bundle, quiet_wait: float) -> str:
    filler = fill(b.home)
    done = b.start()
    filler.unlink()
    started = wait(lambda: (b.home / "run" / "supervisor.pid").exists() or (b.home / "run" / "runner.pid").exists(),
                   quiet_wait, 0.5)
    b.final = ("stopped", None, "")
    b.no_ping = True
    return (f"start exit {done.returncode}: {done.stderr.strip()[:110]}; started on its own within"
            f" {quiet_wait:g} s after space returned: {'YES' if started else 'no'}")


def row_ports(b: Bundle) -> str:
    out = []
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    cases = [("PORT=EMULATOR_PORT (demo)", {"TELEGRAM_BOT_TOKEN": "", "DEMO": "auto", "EMULATOR_PORT": b.env["PORT"]}),
             ("HOST=192.0.2.1", {"HOST": "192.0.2.1"}),
             ("WEBHOOK_PORT in use", {"TELEGRAM_MODE": "webhook", "WEBHOOK_URL": "https://example.org/telegram",
                                      "WEBHOOK_SECRET": "s3cret-s3cret", "WEBHOOK_PORT": str(holder.getsockname()[1])})]
    for name, env in cases:
        done = b.cli("start", "--detach", **env)
        ran = (b.home / "run" / "supervisor.pid").exists()
        out.append(f"{name}: exit {done.returncode}{' STARTED' if ran else ''} ({done.stderr.strip()[11:70]})")
        if ran:
            b.cli("stop")
    holder.close()
    b.final = ("stopped", None, "")
    b.no_ping = True
    return "; ".join(out)


def row_corrupt_heartbeat(b: Bundle) -> str:
    b.start()
    b.healthy()
    b.start_pinging()
    time.sleep(5)  # past the start grace (HEARTBEAT_GRACE=4 s in the test profile)
    b.bot_pid_before = b.bot_pid()
    seen = []
    path = b.home / "bot_health.txt"
    for _ in range(10):  # the bot replaces it on its next beat: look right after each write
        path.write_bytes(b"\x00garbage{")
        seen.append(b.verdict()[:2])
    kinds = sorted({f"{o} ({c})" for o, c in seen})
    return f"verdicts while corrupt: {', '.join(kinds)}"


def row_quarantine_counter(b: Bundle) -> str:
    from botkeeper.bot import poison

    book = {}
    book, _ = poison.quarantine(book, 1, {}, 1.0)
    beat = {"pid": 1, "written_at": 2.0, "in_flight": [{"update_id": 2}]}
    book = poison.strike(book, beat, "crash", 3.0)
    book, _ = poison.quarantine(book, 2, {}, 4.0)
    path = b.home / "poison.json"
    path.write_text(json.dumps(book))
    summary = poison.quarantine_summary(path)
    b.final = ("n/a", None, "")
    b.no_ping = True
    return f"page says {summary['total']} in all, lists {len(summary['latest'])}"


ROWS = {
    "outbox-corrupt": ("data/outbox.db corrupt", row_outbox_corrupt, None),
    "run-unwritable": ("run/ read-only, the bot restarts once", row_run_unwritable, None),
    "disk-full": ("disk full, the bot restarts once, space returns", row_disk_full_restart, "size=24m"),
    "state-dir": ("run/state.json replaced by a directory", row_state_is_a_directory, None),
    "logs-unwritable": ("logs/ read-only", row_logs_unwritable, None),
    "broken-env": ("a broken .env while running, then stop", row_broken_env_stop, None),
    "start-disk-full": ("start on a full disk", row_start_disk_full, "size=24m"),
    "ports": ("PORT=EMULATOR_PORT, non-local HOST, WEBHOOK_PORT in use", row_ports, None),
    "corrupt-heartbeat": ("a corrupt heartbeat of a running bot", row_corrupt_heartbeat, None),
    "quarantine": ("quarantine counter after a strike", row_quarantine_counter, None),
}
NEEDS_ROOT = {"run-unwritable", "disk-full", "logs-unwritable", "start-disk-full"}


def run_row(key: str, base: Path, emulator: Emulator, quiet_wait: float) -> tuple[str, ...]:
    title, fn, mount = ROWS[key]
    if key in NEEDS_ROOT and not can_mount():
        return title, "skipped", "-", "-", "needs root (mounts)"
    receiver = Receiver()
    home = base / key
    home.mkdir()
    b = Bundle(home, emulator, receiver)
    b.final, b.no_ping = None, False
    try:
        with (tmpfs(home, mount) if mount else _nothing()):
            try:
                note = fn(b, quiet_wait) if key == "start-disk-full" else fn(b)
                if b._pinger is not None and not b._stop.is_set():
                    wait(lambda: b.sent >= MIN_PINGS, 30)
                b.stop_pinging()
                if b.final is None:
                    b.final = wait(lambda: (v := b.verdict())[0] == "healthy" and v, 30, 0.3) or b.verdict()
            finally:
                b.stop()
    except Skip as exc:
        return title, "skipped", "-", "-", str(exc)
    finally:
        receiver.stop()
    answered = "n/a" if b.no_ping else (f"{'yes' if b.answered == b.sent else 'NO'} ({b.answered}/{b.sent}"
                                         + (f", missed at {b.misses[:5]} s" if b.misses else "") + ")")
    final = b.final[0] + (f" ({b.final[1]})" if b.final[1] else "")
    return title, answered, str(len(b.down_alerts())), final, note


@contextmanager
def _nothing():
    yield


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", choices=sorted(ROWS), help="run these rows only")
    p.add_argument("--quiet-wait", type=float, default=35.0,
                   help="seconds to watch that nothing starts on its own after a start on a full disk (default 35)")
    args = p.parse_args(argv)
    emulator = Emulator(port=0, tokens=[TOKEN])
    emulator.start()
    base = Path(tempfile.mkdtemp(prefix="bk-disk-faults-"))
    print(f"bench/disk_faults.py: {len(args.only or ROWS)} rows, root={os.geteuid() == 0}, homes under {base}")
    print("| state | bot answered throughout | false down alerts | final state | note |")
    print("|---|---|---|---|---|")
    try:
        for key in args.only or ROWS:
            started = time.monotonic()
            cells = run_row(key, base, emulator, args.quiet_wait)
            print("| " + " | ".join(cells) + f" ({time.monotonic() - started:.0f} s) |", flush=True)
    finally:
        emulator.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _log_lines(path: Path, needle: str) -> int:
    try:
        return sum(needle in line for line in path.read_text(errors="replace").splitlines())
    except OSError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
