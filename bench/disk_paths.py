"""What the disk hardening costs on the hot paths, and how long a corrupt history takes to repair.

    python bench/disk_paths.py

Prints: one heartbeat write (padded, atomic) and one in-place fallback write on a full tmpfs (root
only; skipped otherwise), one Store.record (it now stats the file per call to notice a set-aside
database), and the time from a corrupt history.db to a fresh one with its corrupt-file event.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from botkeeper.health import heartbeat  # noqa: E402
from botkeeper.fsutil import atomic_write  # noqa: E402
from botkeeper.store import Store  # noqa: E402


def timed(fn, n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hb = tmp / "bot_health.txt"
        small = '{"pid":1,"written_at":1.0,"state":"polling","detail":"polling Telegram for updates"}'
        print(f"atomic_write of an unpadded beat (before): {timed(lambda: atomic_write(hb, small), 2000):.1f} us median")
        print(f"heartbeat.write (atomic, padded to {heartbeat.SLOT} B): "
              f"{timed(lambda: heartbeat.write(hb, state='polling'), 2000):.1f} us median")
        disk = tmp / "disk"
        disk.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode == 0:
            try:
                path = disk / "bot_health.txt"
                heartbeat.write(path, state="polling")
                with open(disk / "filler", "wb", buffering=0) as fh:
                    try:
                        while True:
                            fh.write(b"\0" * 4096)
                    except OSError:
                        pass
                assert heartbeat.write(path, state="polling").get("disk_full")
                print(f"heartbeat.write on a full disk (in place, disk_full): "
                      f"{timed(lambda: heartbeat.write(path, state='polling'), 2000):.1f} us median")
            finally:
                subprocess.run(["umount", "-l", str(disk)])
        else:
            print("heartbeat.write on a full disk: skipped (cannot mount a tmpfs: needs root)")
        store = Store(tmp / "history.db")
        store.record("start", "bot")
        print(f"Store.record (WAL, synchronous=NORMAL, + one stat): {timed(lambda: store.record('start', 'bot'), 2000):.1f} us median")
        print(f"  of which the stat that follows a set-aside file: {timed(lambda: os.stat(store.path), 20000):.2f} us median")
        for _ in range(5000):
            store.record("start", "bot", "x" * 200)
        import sqlite3

        with sqlite3.connect(store.path) as other:  # another process's checkpoint, as in normal operation
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = store.path.stat().st_size
        with open(store.path, "r+b") as fh:
            fh.write(os.urandom(size))
        t = time.perf_counter()
        store.record("start", "bot")
        took = (time.perf_counter() - t) * 1e3
        kinds = [e["kind"] for e in store.events(limit=5)]
        assert "corrupt-file" in kinds, kinds
        print(f"corrupt history.db ({size / 1024:.0f} KiB of random bytes) -> set aside + fresh database + event: {took:.1f} ms")


if __name__ == "__main__":
    main()
