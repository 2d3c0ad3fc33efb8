"""Poison updates under the real supervisor and monitor (not a test: it prints figures).

A bundle (bot, monitor; production profile with STALE_AFTER=3, HEARTBEAT_INTERVAL=1, KILL_TIMEOUT=1,
HEARTBEAT_GRACE=5: a bot that freezes within its start grace is judged hung only after it)
runs the tests' poison handlers against the Bot API emulator. A user sends /freeze (blocks the event
loop) or /die (ends the process); another user sends /ping right after. Measured: seconds from the
poison message to the other user's "pong", and the bot restarts it cost.

    python bench/poison.py [--rounds 2] [--stale-after 3] [--quarantine-after 2]
Target: at most QUARANTINE_AFTER restarts, answered within QUARANTINE_AFTER * (STALE_AFTER + 2) + 3 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot_recovery import TOKEN, bot_component, free_port, read_json, tear_down, wait_until  # noqa: E402

from botkeeper.emulator import Emulator  # noqa: E402


def one(command: str, args: argparse.Namespace, chat: int) -> tuple[float, int]:
    home = Path(tempfile.mkdtemp(prefix="botkeeper-bench-poison-"))
    (home / "botkeeper.toml").write_text("[components.web]\nenabled = false\n")
    emulator = Emulator(port=0)
    emulator.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
    env.update({
        "BOTKEEPER_HOME": str(home), "BOTKEEPER_ENV": "production", "DEMO": "off", "BOTKEEPER_OUTER": "none",
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": emulator.url, "HANDLERS": str(ROOT / "tests" / "poison_handlers.py"),
        "STALE_AFTER": str(args.stale_after), "HEARTBEAT_INTERVAL": "1", "HEARTBEAT_GRACE": "5", "MONITOR_INTERVAL": "0.5", "KILL_TIMEOUT": "1",
        "QUARANTINE_AFTER": str(args.quarantine_after), "MIN_UPTIME": "1", "RESTART_DELAY": "0.1",
        "PORT": str(free_port()), "AUTO_RECOVERY": "off", "ALERTS": "off",
    })
    sup = subprocess.Popen([sys.executable, "-m", "botkeeper", "supervise"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: read_json(home / "bot_health.txt").get("last_poll_at"), 60, "a polling bot")
        before = bot_component(home).get("restarts", 0)
        t0 = time.perf_counter()
        emulator.inject_message(command, chat_id=chat)
        emulator.inject_message("/ping", chat_id=chat + 1)
        wait_until(lambda: emulator.sent_messages(chat_id=chat + 1, contains="pong"), 120, "the other user's pong")
        took = time.perf_counter() - t0
        return took, bot_component(home).get("restarts", 0) - before
    finally:
        tear_down(sup, emulator, home)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stale-after", type=float, default=3.0)
    parser.add_argument("--quarantine-after", type=int, default=2)
    args = parser.parse_args()
    budget = args.quarantine_after * (args.stale_after + 2) + 3
    print(f"STALE_AFTER={args.stale_after:g} QUARANTINE_AFTER={args.quarantine_after}: target <= "
          f"{args.quarantine_after} restarts within {budget:g} s")
    for command in ("/freeze", "/die"):
        for n in range(args.rounds):
            took, restarts = one(command, args, 5000 + 10 * n)
            ok = "ok" if restarts <= args.quarantine_after and took <= budget else "MISSED"
            print(f"{command:<8} round {n + 1}: other user answered after {took:5.2f} s, {restarts} restarts  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
