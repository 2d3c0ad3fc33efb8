"""Outbox delivery under Telegram's limits, injected 429s and SIGKILLs (not a test: it prints figures).

Queues N messages to C chats in data/outbox.db of a temporary home (10 % high priority, the rest
low, as a broadcast would be), starts the real bot (`python main.py`, production profile) against
the emulator with Telegram's limits enforced (30/s overall, 1/s per private chat), injects 429s
with retry_after 1-3 s at random moments and SIGKILLs the bot at random moments, restarting it at
once (as the supervisor would). Prints delivered, lost, duplicated, the sustained rate and the
highest per-chat rate the emulator counted.

    python bench/outbox.py [--messages 3000] [--chats 300] [--kills 3] [--429s 5] [--seed 1]
Targets: 0 lost, at most one duplicate per kill, sustained >= 27/s (90 % of 30/s), no chat above 1/s.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from botkeeper.emulator import Emulator, Limits  # noqa: E402
from botkeeper.bot.outbox import Outbox  # noqa: E402

TOKEN = "123456789:AAH-fake-token-for-bench-0123456789"


def start_bot(home: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(home / "bot.stderr", "ab") as err:
        return subprocess.Popen([sys.executable, str(ROOT / "main.py")], cwd=home, env=env, stdout=err, stderr=err,
                                start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--chats", type=int, default=300)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--429s", dest="rate_limits", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="bk-outbox-bench-"))
    emulator = Emulator(port=0, limits=Limits(), keep=args.messages * 2)
    emulator.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO", "OUTBOX_"))}
    env |= {"BOTKEEPER_HOME": str(home), "BOTKEEPER_ENV": "production", "DEMO": "off", "LOG_LEVEL": "WARNING",
            "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": emulator.url, "AUTO_RECOVERY": "off"}
    proc = None
    try:
        box = Outbox(home / "data" / "outbox.db")
        items = [(1000 + i % args.chats, f"m{i}") for i in range(args.messages)]
        high = set(rnd.sample(range(args.messages), args.messages // 10))
        box.enqueue([items[i] for i in sorted(high)], "high", keys=[f"m{i}" for i in sorted(high)])
        low = [i for i in range(args.messages) if i not in high]
        box.enqueue([items[i] for i in low], "low", keys=[f"m{i}" for i in low])
        box.close()

        expected = args.messages / 30.0
        kill_at = sorted(rnd.uniform(3.0, expected * 0.9) for _ in range(args.kills))
        limit_at = sorted((rnd.uniform(1.0, expected * 0.9), rnd.randint(1, 3)) for _ in range(args.rate_limits))
        started = time.monotonic()
        proc = start_bot(home, env)
        kills, peak_rss = 0, 0
        while time.monotonic() - started < args.timeout:
            now = time.monotonic() - started
            if kill_at and now >= kill_at[0]:
                kill_at.pop(0)
                kill(proc)
                kills += 1
                proc = start_bot(home, env)
            if limit_at and now >= limit_at[0][0]:
                emulator.add_fault("sendMessage", status=429, retry_after=limit_at.pop(0)[1], count=1)
            if emulator.rates()["accepted"] >= args.messages and not kill_at:
                texts = {m["text"] for m in emulator.sent_messages()}
                if len(texts) >= args.messages:
                    break
            try:
                peak_rss = max(peak_rss, psutil.Process(proc.pid).memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        sent = emulator.sent_messages()
        counts = collections.Counter(m["text"] for m in sent)
        unique = sum(1 for i in range(args.messages) if counts.get(f"m{i}"))
        duplicated = sum(n - 1 for n in counts.values() if n > 1)
        rates = emulator.rates()
        sustained = rates["sustained_per_second"] or 0.0
        box = Outbox(home / "data" / "outbox.db")
        summary = box.summary()
        # The duplicate window: Telegram has the message, our file does not say so yet.
        accepted_at = {}
        for m in sent:
            accepted_at.setdefault(m["text"], m["sent_at"])
        windows = sorted(row[1] - accepted_at[row[0]] for row in box.db.execute(
            "SELECT key, sent_at FROM messages WHERE status = 'sent'") if row[0] in accepted_at)
        box.close()
        print(f"messages {args.messages} to {args.chats} chats; {kills} SIGKILLs; {args.rate_limits} injected 429s;"
              f" {elapsed:.1f} s; outbox counted sent {summary['sent']}, retried {summary['retried']},"
              f" dead {summary['dead']}")
        print(f"delivered  {unique}")
        print(f"lost       {args.messages - unique}")
        print(f"duplicated {duplicated} ({duplicated / max(1, kills):.2f} per kill)")
        print(f"sustained  {sustained:.2f} msg/s first to last delivery ({sustained / 30 * 100:.1f} % of 30/s)")
        print(f"peak 1 s   {rates['max_per_second']} msg/s overall (limit 30)")
        print(f"per chat   highest {rates['max_chat_per_second'] or 0:.3f} msg/s (shortest gap"
              f" {rates['min_chat_gap'] or 0:.3f} s; limit 1/s); emulator refused {rates['rejected']} for limits")
        print(f"bot RSS    peak {peak_rss / 2**20:.1f} MiB")
        if windows:
            mid, p99 = windows[len(windows) // 2], windows[int(len(windows) * 0.99)]
            print(f"dup window Telegram's answer to our commit: median {mid * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
                  f" max {windows[-1] * 1000:.1f} ms; a kill at a random moment duplicates"
                  f" {sustained * mid:.3f} messages on average at this rate")
        return 0 if unique == args.messages else 1
    finally:
        if proc is not None and proc.poll() is None:
            kill(proc)
        emulator.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
