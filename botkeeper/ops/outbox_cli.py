"""`python -m botkeeper outbox [--dead] [--requeue ID ... | --requeue-all]`: what waits in the
outbox or died there, and putting dead letters back in the queue. Never prints message text beyond
a short preview (the operator's own terminal, not a public page)."""

from __future__ import annotations

import argparse
import sys
import time

from ..config import load_or_exit
from ..fmt import duration
from ..bot.outbox import Outbox, Priority, outbox_summary

PREVIEW = 40


def _preview(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= PREVIEW else one_line[: PREVIEW - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m botkeeper outbox", description=__doc__.split("\n")[0])
    parser.add_argument("--dead", action="store_true", help="list dead letters instead of waiting messages")
    parser.add_argument("--requeue", type=int, nargs="+", metavar="ID", help="put these dead letters back in the queue")
    parser.add_argument("--requeue-all", action="store_true", help="put every dead letter back in the queue")
    parser.add_argument("--limit", type=int, default=50, help="rows to list (default %(default)s)")
    args = parser.parse_args(argv)
    settings = load_or_exit()
    if args.requeue or args.requeue_all:
        box = Outbox(settings.outbox_db)
        try:
            n = box.requeue(None if args.requeue_all else args.requeue)
        finally:
            box.close()
        print(f"requeued {n} dead letter(s)")
        if args.requeue and n < len(set(args.requeue)):
            print("botkeeper: some ids are not dead letters (see `python -m botkeeper outbox --dead`)", file=sys.stderr)
            return 1
        return 0
    s = outbox_summary(settings)
    depth = ", ".join(f"{n} {name}" for name, n in s["pending"].items())
    print(f"outbox {settings.outbox_db}: {s['pending_total']} waiting ({depth}); sent {s['sent']},"
          f" retried {s['retried']}, dead {s['dead']}")
    if not settings.outbox_db.exists():
        return 0
    box = Outbox(settings.outbox_db, readonly=True)
    now = time.time()
    try:
        if args.dead:
            rows = box.dead(args.limit)
            if rows:
                print(f"{'ID':>6}  {'CHAT':>14}  {'DIED':>8}  {'TRIES':>5}  REASON / TEXT")
            for r in rows:
                print(f"{r['id']:>6}  {r['chat_id']:>14}  {duration(now - r['died_at']):>8}  {r['attempts']:>5}"
                      f"  {r['reason']}\n{'':>40}{_preview(r['text'])}")
        else:
            rows = box.pending(args.limit)
            if rows:
                print(f"{'ID':>6}  {'CHAT':>14}  {'PRIO':<6}  {'AGE':>8}  {'TRIES':>5}  LAST ERROR / TEXT")
            for r in rows:
                print(f"{r['id']:>6}  {r['chat_id']:>14}  {Priority(r['priority']).name.lower():<6}"
                      f"  {duration(now - r['created_at']):>8}  {r['attempts']:>5}"
                      f"  {r['last_error'] or '-'}\n{'':>40}{_preview(r['text'])}")
    finally:
        box.close()
    return 0
