"""Poison updates and hangs under the real supervisor and monitor (not a test: it prints figures).

A bundle (bot, monitor, fork server) runs the tests' poison handlers against the Bot API emulator.
A user sends /freeze (blocks the event loop) or /die (ends the process); another user sends /ping
right after. Measured: seconds from the poison message to the other user's "pong", and the bot
restarts it cost. `sigstop`: seconds from SIGSTOP of a polling bot to its replacement.

    python bench/poison.py --defaults          # production defaults, no timing setting touched
    python bench/poison.py [--rounds 2] [--stale-after 3] [--quarantine-after 2]   # the tuned profile
Targets at the defaults: /freeze <= 20 s and 1 restart; /die <= 3 s and <= 2 restarts; SIGSTOP
restarted <= STALE_AFTER + 5 s. Tuned: at most QUARANTINE_AFTER restarts within
QUARANTINE_AFTER * (STALE_AFTER + 2) + 3 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot_recovery import TOKEN, bot_component, free_port, read_json, tear_down, wait_until  # noqa: E402

from botkeeper.emulator import Emulator  # noqa: E402


def tuned(args: argparse.Namespace) -> dict[str, str]:
    return {"STALE_AFTER": str(args.stale_after), "BLOCK_LIMIT": str(args.stale_after), "HEARTBEAT_INTERVAL": "1",
            "HEARTBEAT_GRACE": "5", "MONITOR_INTERVAL": "0.5", "KILL_TIMEOUT": "1",
            "QUARANTINE_AFTER": str(args.quarantine_after), "MIN_UPTIME": "1", "RESTART_DELAY": "0.1"}


def one(command: str, args: argparse.Namespace, chat: int) -> tuple[float, int]:
    home = Path(tempfile.mkdtemp(prefix="botkeeper-bench-poison-"))
    (home / "botkeeper.toml").write_text("[components.web]\nenabled = false\n")
    emulator = Emulator(port=0)
    emulator.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
    env.update({
        "BOTKEEPER_HOME": str(home), "BOTKEEPER_ENV": "production", "DEMO": "off", "BOTKEEPER_OUTER": "none",
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": emulator.url, "HANDLERS": str(ROOT / "tests" / "poison_handlers.py"),
        "PORT": str(free_port()), "AUTO_RECOVERY": "off", "ALERTS": "off",
    } | ({} if args.defaults else tuned(args)))
    sup = subprocess.Popen([sys.executable, "-m", "botkeeper", "supervise"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: read_json(home / "bot_health.txt").get("last_poll_at"), 60, "a polling bot")
        if args.defaults:  # a restart is warm (fork server) once it is up, as in production
            wait_until(lambda: (home / "run" / "forkserver.sock").exists(), 60, "the fork server")
        before = bot_component(home).get("restarts", 0)
        if command == "sigstop":
            pid = bot_component(home)["pid"]
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGSTOP)
            wait_until(lambda: bot_component(home).get("pid") not in (None, pid), 180, "the stopped bot replaced")
        else:
            t0 = time.perf_counter()
            emulator.inject_message(command, chat_id=chat)
            emulator.inject_message("/ping", chat_id=chat + 1)
            wait_until(lambda: emulator.sent_messages(chat_id=chat + 1, contains="pong"), 180, "the other user's pong")
        took = time.perf_counter() - t0
        return took, bot_component(home).get("restarts", 0) - before
    finally:
        tear_down(sup, emulator, home)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defaults", action="store_true", help="production defaults: no timing setting set")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case (default 1 with --defaults, else 2)")
    parser.add_argument("--stale-after", type=float, default=3.0)
    parser.add_argument("--quarantine-after", type=int, default=2)
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.defaults else 2)
    if args.defaults:
        from botkeeper.config import PRODUCTION, KNOBS
        stale = PRODUCTION["stale_after"]
        print(f"production defaults: STALE_AFTER={stale:g} BLOCK_LIMIT={KNOBS['block_limit'].default:g}"
              f" BLOCKED_WARN={KNOBS['blocked_warn'].default:g} MONITOR_INTERVAL={PRODUCTION['monitor_interval']:g}"
              f" KILL_TIMEOUT={PRODUCTION['kill_timeout']:g} QUARANTINE_AFTER={KNOBS['quarantine_after'].default}"
              f" HEARTBEAT_INTERVAL={PRODUCTION['heartbeat_interval']:g} WARM_STANDBY=auto")
        targets = {"/freeze": (20.0, 1), "/die": (3.0, 2), "sigstop": (stale + 5, 1)}
    else:
        budget = args.quarantine_after * (args.stale_after + 2) + 3
        print(f"tuned: {' '.join(f'{k}={v}' for k, v in tuned(args).items())}: target <= "
              f"{args.quarantine_after} restarts within {budget:g} s")
        targets = {"/freeze": (budget, args.quarantine_after), "/die": (budget, args.quarantine_after)}
    for command, (within, most) in targets.items():
        for n in range(rounds):
            took, restarts = one(command, args, 5000 + 10 * n)
            ok = "ok" if restarts <= most and took <= within else "MISSED"
            what = "restarted after" if command == "sigstop" else "other user answered after"
            print(f"{command:<8} round {n + 1}: {what} {took:5.2f} s, {restarts} restarts"
                  f" (target <= {within:g} s, <= {most})  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
