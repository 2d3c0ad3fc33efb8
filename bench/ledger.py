"""Every message answered, once: a ledger of numbered messages through a fault schedule (not a test).

    python bench/ledger.py                      # 20 users, 180 s of faults, then a drain
    python bench/ledger.py --duration 120 --users 20 --seed 1

A bundle (supervisor, bot = main.py with tests/ledger_handlers.py, monitor; production profile,
KILL_TIMEOUT=10 so a graceful stop gets its SHUTDOWN_LIMIT) talks to the Bot API emulator run inside
this process with Telegram's sending limits on (1 message per second per chat, 30 per second).
Each user sends numbered messages ("m <user> <n>", some "slow 6 <user> <n>": a 6 s handler) every
1-3 s; the bot answers "got <text>". Meanwhile the schedule cycles through:
  - kill      SIGKILL of the bot's process group (the supervisor restarts it, cause crash), never
              while an update struck by an earlier kill is in flight (two strikes quarantine it)
  - restart   a slow handler in flight, then a graceful `restart bot` (operator): left for the next bot
  - 429       the next reply answered 429 retry_after 10 (that chat waits); then a probe from an idle
              chat is timed: it must not wait for the held chat
  - 5xx       the next 4 sendMessage calls answered 500/502
  - drops     the next 3 sendMessage connections dropped without an answer
  - update    the supervisor's `deploy` (what `botkeeper update` does after fetching; no git here)
  - revoke    the token refused for 10 s (the bot exits 78, needs-config), then `start bot`
  - ids-lower users pause, the bot is stopped, the emulator's next update id set lower (Telegram after
              a week without updates), the bot started again
Then the users stop and the bench waits for the answers to drain (up to 60 s) and prints:
sent, answered, lost (never answered), duplicated (answered more than once), and the duplicates it
can attribute to a kill inside a send: an update in flight at a SIGKILL whose answer the emulator had
already accepted (the one window the guarantee leaves; docs/bot.md). Target: 0 lost, duplicates <=
those; and the probes' answer times while one chat sat in a 429 (well under its 10 s).
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot_recovery import TOKEN, bot_component, free_port, read_json, tear_down, wait_until  # noqa: E402

from botkeeper.emulator import Emulator, Limits  # noqa: E402
from botkeeper.supervise import control  # noqa: E402

FAULTS = ("kill", "restart", "429", "5xx", "drops", "update", "revoke", "ids-lower")
CHAT0 = 7000


class Ledger:
    def __init__(self, emulator: Emulator):
        self.emulator = emulator
        self.lock = threading.Lock()
        self.sent: dict[str, dict] = {}  # text -> {update_id, at, chat}
        self.by_update: dict[int, str] = {}
        self.paused = threading.Event()
        self.stop = threading.Event()

    def send(self, chat: int, text: str) -> None:
        wall = time.time()
        update = self.emulator.inject_message(text, chat_id=chat)
        with self.lock:
            self.sent[text] = {"update_id": update["update_id"], "wall": wall, "chat": chat}
            self.by_update[update["update_id"]] = text

    def answers(self) -> dict[str, list[float]]:
        """text -> the times (wall clock) its answers were accepted by the emulator."""
        out: dict[str, list[float]] = collections.defaultdict(list)
        for m in self.emulator.sent_messages():
            text = m.get("text", "")
            if text.startswith("got "):
                out[text[4:]].append(m.get("sent_at", 0.0))
        return out

    def user(self, index: int, rng: random.Random) -> None:
        chat, n = CHAT0 + index, 0
        while not self.stop.is_set():
            if self.paused.is_set():
                time.sleep(0.1)
                continue
            n += 1
            slow = rng.random() < 0.03
            self.send(chat, f"slow 6 {index} {n}" if slow else f"m {index} {n}")
            self.stop.wait(rng.uniform(1.0, 3.0))  # within Telegram's 1 message a second per chat


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.home = Path(tempfile.mkdtemp(prefix="botkeeper-bench-ledger-"))
        (self.home / "botkeeper.toml").write_text("[components.web]\nenabled = false\n")
        self.emulator = Emulator(port=0, limits=Limits(), keep=1_000_000)
        self.emulator.start()
        self.ledger = Ledger(self.emulator)
        self.sock = self.home / "run" / "control.sock"
        self.kills = 0
        self.kill_candidates: set[int] = set()  # update ids in flight at a kill with an answer accepted
        self.faults: collections.Counter = collections.Counter()
        self.waits_429: list[float] = []  # other chats' longest answer time during a 429 episode
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BOTKEEPER_", "DEMO"))}
        env.update({
            "BOTKEEPER_HOME": str(self.home), "BOTKEEPER_ENV": "production", "DEMO": "off", "BOTKEEPER_OUTER": "none",
            "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": self.emulator.url,
            "HANDLERS": str(ROOT / "tests" / "ledger_handlers.py"), "HEARTBEAT_INTERVAL": "1",
            "MONITOR_INTERVAL": "1", "KILL_TIMEOUT": "10", "MIN_UPTIME": "1", "RESTART_DELAY": "0.1",
            "MAX_RESTARTS": "1000", "PORT": str(free_port()), "AUTO_RECOVERY": "off", "ALERTS": "off",
            "WARM_STANDBY": "off",
        })
        self.sup = subprocess.Popen([sys.executable, "-m", "botkeeper", "supervise"], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def heartbeat(self) -> dict:
        return read_json(self.home / "bot_health.txt")

    def call(self, cmd: str, **args) -> None:
        try:
            control.call(self.sock, cmd, timeout=30, by="bench", **args)
        except Exception as exc:  # noqa: BLE001 - the bench reports and carries on
            print(f"  control {cmd} failed: {exc}")

    def polling(self, timeout: float = 60) -> None:
        wait_until(lambda: self.heartbeat().get("state") == "polling" and bot_component(self.home).get("state")
                   == "running", timeout, "a polling bot")

    # --- faults ----------------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the bot, but not while an update struck by an earlier kill is in flight: the
        poison rules quarantine an update in flight at QUARANTINE_AFTER (2) deaths, and from outside
        a kill cannot be told from a crash the update caused (that update would count as lost)."""
        def struck_in_flight() -> bool:
            struck = (read_json(self.home / "data" / "poison.json").get("struck") or {})
            return any(str(e.get("update_id")) in struck for e in self.heartbeat().get("in_flight") or [])

        try:
            wait_until(lambda: not struck_in_flight(), 30, "no struck update in flight", interval=0.05)
        except TimeoutError:
            print("  kill skipped: a struck update stayed in flight")
            return
        pid = bot_component(self.home).get("pid")
        if not pid:
            return
        answered = self.ledger.answers()
        in_flight = [e.get("update_id") for e in self.heartbeat().get("in_flight") or []]
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            return
        self.kills += 1
        time.sleep(0.05)  # a send on the wire as the kill landed is accepted by now
        answered = self.ledger.answers()
        for update_id in in_flight:
            text = self.ledger.by_update.get(update_id)
            if text and answered.get(text):
                self.kill_candidates.add(update_id)

    def restart_during_slow(self) -> None:
        self.ledger.send(CHAT0 + 99, f"slow 8 99 {self.faults['restart']}")
        time.sleep(1.0)
        self.call("restart", name="bot", cause="operator", reason="bench: restart during a slow handler")

    def burst_429(self) -> None:
        """The next reply gets 429 retry_after 10; once it did, a probe from an idle chat is timed:
        it must not wait for the held chat."""
        fault = self.emulator.add_fault("sendMessage", status=429, retry_after=10, count=1)
        try:  # a fault is dropped from the list once served
            wait_until(lambda: all(f is not fault for f in self.emulator.snapshot_faults()), 10, "the 429 served")
        except TimeoutError:
            return
        text = f"probe {self.faults['429']}"
        started = time.time()
        self.ledger.send(CHAT0 + 98, text)
        try:
            wait_until(lambda: self.ledger.answers().get(text), 15, "the probe answered", interval=0.02)
        except TimeoutError:
            pass
        got = self.ledger.answers().get(text)
        self.waits_429.append((min(got) if got else time.time()) - started)
        time.sleep(max(0.0, 10 - (time.time() - started)))

    def revoke(self) -> None:
        self.emulator.set_tokens(["987654321:AAH-revoked-for-the-bench-0123456789"])
        time.sleep(10)
        self.emulator.set_tokens(None)
        wait_until(lambda: bot_component(self.home).get("state") != "running", 30, "the bot out (exit 78)")
        self.call("start", name="bot", cause="operator", reason="bench: the token is back")

    def ids_lower(self) -> None:
        self.ledger.paused.set()
        try:
            wait_until(lambda: self.emulator.snapshot()["pending_updates"] == 0, 60, "every update confirmed")
            self.call("stop", name="bot", cause="operator", reason="bench: a week without updates")
            wait_until(lambda: bot_component(self.home).get("state") == "stopped", 30, "the bot stopped")
            lowest = min(self.ledger.by_update)
            self.emulator.set_next_update_id(max(1, lowest // 2))
            self.call("start", name="bot", cause="operator", reason="bench: ids restarted lower")
        finally:
            self.ledger.paused.clear()

    def fault(self, name: str) -> None:
        self.faults[name] += 1
        t = time.strftime("%H:%M:%S")
        print(f"  {t} fault {name}", flush=True)
        if name == "kill":
            self.kill()
        elif name == "restart":
            self.restart_during_slow()
        elif name == "429":
            self.burst_429()
        elif name == "5xx":
            for status in (500, 502, 500, 502):
                self.emulator.add_fault("sendMessage", status=status, count=1)
        elif name == "drops":
            self.emulator.add_fault("sendMessage", kind="drop", count=3)
        elif name == "update":
            self.call("deploy", reason="bench: an update", version="bench")
        elif name == "revoke":
            self.revoke()
        elif name == "ids-lower":
            self.ids_lower()

    def run(self) -> int:
        args = self.args
        rng = random.Random(args.seed)
        code = 2
        try:
            self.polling()
            users = [threading.Thread(target=self.ledger.user, args=(i, random.Random(args.seed * 100 + i)),
                                      daemon=True) for i in range(args.users)]
            for u in users:
                u.start()
            ends = time.monotonic() + args.duration
            order = list(FAULTS)
            i = 0
            while time.monotonic() < ends:
                time.sleep(rng.uniform(args.gap * 0.7, args.gap * 1.3))
                if time.monotonic() >= ends:
                    break
                if i % len(order) == 0:
                    rng.shuffle(order)
                self.fault(order[i % len(order)])
                i += 1
                try:
                    self.polling(90)
                except TimeoutError as exc:
                    print(f"  {exc}")
            self.ledger.stop.set()
            for u in users:
                u.join(5)
            self.emulator.clear_faults()
            self.drain(60)
            code = self.report()
        except BaseException:
            code = 2
            raise
        finally:
            if code or args.keep:  # the bundle's logs, for the failure
                shutil.copytree(self.home, args.keep or f"{self.home}-kept", dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("*.sock"))
                print(f"home kept in {args.keep or f'{self.home}-kept'}")
            tear_down(self.sup, self.emulator, self.home)
        return code

    def drain(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            answers = self.ledger.answers()
            if all(answers.get(t) for t in self.ledger.sent):
                return
            time.sleep(0.5)

    def report(self) -> int:
        answers = self.ledger.answers()
        sent = len(self.ledger.sent)
        answered = sum(1 for t in self.ledger.sent if answers.get(t))
        lost = [t for t in self.ledger.sent if not answers.get(t)]
        dups = {t: len(answers[t]) - 1 for t in self.ledger.sent if len(answers.get(t, [])) > 1}
        attributed = sum(n for t, n in dups.items() if self.ledger.sent[t]["update_id"] in self.kill_candidates)
        print(f"\nusers {self.args.users}, {self.args.duration:g} s, faults: "
              + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())))
        print(f"sent {sent}, answered {answered}, lost {len(lost)}, duplicated {sum(dups.values())}"
              f" (attributable to a kill inside a send: {attributed}; kills {self.kills},"
              f" kills that landed inside a send: {len(self.kill_candidates)})")
        if self.waits_429:
            print(f"an idle chat's answer time while another chat waits out a 10 s 429: max {max(self.waits_429):.3f} s"
                  f" (over {len(self.waits_429)} bursts)")
        if lost:
            print("lost:", ", ".join(lost[:20]))
        if dups:
            print("duplicated:", ", ".join(f"{t} x{n + 1}" for t, n in list(dups.items())[:20]))
        ok = not lost and sum(dups.values()) <= len(self.kill_candidates)
        print("target (0 lost, duplicates <= kills inside a send):", "met" if ok else "MISSED")
        return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of traffic and faults")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--gap", type=float, default=9.0, help="mean seconds between two faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", default="", help="copy the bundle's home (logs, data) here at the end")
    return Bench(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
