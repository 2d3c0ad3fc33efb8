"""A bot that is not python-telegram-bot (stdlib only, as a bot in any language would be), kept
alive by botkeeper: BOT_COMMAND="python examples/plain_bot/bot.py".

It uses only what the supervisor puts in every bot's environment and the heartbeat contract:
  TELEGRAM_BOT_TOKEN, BOTKEEPER_API_BASE_URL (".../bot", the token is appended),
  BOTKEEPER_HEARTBEAT_FILE: write {"written_at": <unix time>} there (atomically) at least every
  BOTKEEPER_HEARTBEAT_INTERVAL seconds, from the loop that does the work, so a hang shows.
From a shell script, `python -m botkeeper beat` writes the same line.
"""

import json
import os
import signal
import time
import urllib.error
import urllib.request

API = os.environ.get("BOTKEEPER_API_BASE_URL", "https://api.telegram.org/bot") + os.environ["TELEGRAM_BOT_TOKEN"]
BEAT_FILE = os.environ.get("BOTKEEPER_HEARTBEAT_FILE", "bot_health.txt")
INTERVAL = float(os.environ.get("BOTKEEPER_HEARTBEAT_INTERVAL", "10"))
running = True


def beat(state: str) -> None:
    tmp = f"{BEAT_FILE}.tmp"
    with open(tmp, "w") as fh:
        json.dump({"pid": os.getpid(), "written_at": time.time(), "state": state}, fh)
    os.replace(tmp, BEAT_FILE)  # atomic: a reader never sees half a file


def call(method: str, wait: float, **params) -> list | dict | bool:
    request = urllib.request.Request(f"{API}/{method}", json.dumps(params).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=wait) as response:
        return json.load(response)["result"]


def answer(text: str) -> str | None:
    if text.startswith("/price"):
        return "A coffee costs 2.50 EUR today (plain bot)."
    if text.startswith("/start"):
        return "Hi! I am a plain bot without python-telegram-bot."
    return None


def main() -> None:
    def stop(signum, frame):
        global running
        running = False

    signal.signal(signal.SIGTERM, stop)
    poll = max(1, int(INTERVAL / 2))  # a long poll shorter than the heartbeat interval
    offset = 0
    while running:
        beat("polling")
        try:
            updates = call("getUpdates", poll + 5, offset=offset, timeout=poll)
        except (urllib.error.URLError, OSError) as exc:
            print(f"Telegram unreachable: {exc}; retrying", flush=True)
            time.sleep(1)
            continue
        for update in updates:
            offset = update["update_id"] + 1
            message = update.get("message") or {}
            reply = answer(message.get("text", ""))
            if reply:
                call("sendMessage", 10, chat_id=message["chat"]["id"], text=reply)
    beat("stopping")


if __name__ == "__main__":
    main()
