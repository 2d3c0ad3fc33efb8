"""Where the fork server's memory goes (not a test: it prints figures).

Preloads what the fork server preloads (botkeeper/bot/forkserver.py: python-telegram-bot, httpx, the
bot), then forks a child three ways and reads the parent's memory while the child lives:
  idle    the child only sleeps: the pages stay shared (the floor of copy-on-write)
  gc      the child runs a full collection (gc.freeze keeps it off the inherited objects)
  touch   the child reads every module's globals, as running code does: CPython writes the
          reference count of each object it reads, so each page it reads is copied
The running bot is between `idle` and `touch` (bench/bot_recovery.py measures the real one).

    python bench/forkserver_memory.py
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rollup(pid: int) -> dict[str, float]:
    figures = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                figures[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return figures


def child(mode: str) -> None:
    if mode == "gc":
        gc.collect()
    elif mode == "touch":
        for module in list(sys.modules.values()):
            for _value in list(getattr(module, "__dict__", {}).values()):
                pass
    time.sleep(30)


def main() -> int:
    os.environ.setdefault("BOTKEEPER_HOME", tempfile.mkdtemp(prefix="bk-fsmem-"))
    os.environ.setdefault("HANDLERS", "none")
    from botkeeper.bot import forkserver
    from botkeeper.config import load_or_exit
    from botkeeper.supervise.process import release_free_memory

    forkserver.preload(load_or_exit())
    gc.collect()
    gc.freeze()
    release_free_memory()
    alone = rollup(os.getpid())
    print(f"fork server alone: RSS {alone['Rss']:.1f} MiB, anonymous {alone['Anonymous']:.1f} MiB,"
          f" {len(sys.modules)} modules")
    for mode in ("idle", "gc", "touch"):
        pid = os.fork()
        if pid == 0:
            try:
                child(mode)
            finally:
                os._exit(0)
        time.sleep(1.5)
        parent = rollup(os.getpid())
        print(f"child {mode:5}: the fork server's PSS {parent['Pss']:5.1f} MiB, its own pages"
              f" {parent['Private_Dirty']:5.1f} MiB, shared {parent['Shared_Dirty'] + parent['Shared_Clean']:5.1f} MiB")
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    print("(PSS here counts the libraries shared by two processes only; in the bundle more processes share them)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
