"""The bot's side of poison updates (decisions in botkeeper.bot.poison): what a starting bot learns from
its predecessor, and the gate every update passes.

`Guard.start()` runs once as a bot starts, before it takes any update: it reads the predecessor's last
heartbeat (read by the caller before this bot's first beat) and why the predecessor ended (its
component's `cause` in run/state.json), strikes the updates it had in flight, and saves the book.
`Guard.check(update_id, seen)` then says, per update, whether to skip it. A quarantined update is
recorded as a `poison-update` event (the alerter sends one alert per such event).

Bring-your-own bots use it too: beat with `heartbeat.beat(in_flight=[update_id, ...])` while an
update is handled, and ask `guard.check(update_id)` before handling one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from typing import Any, Callable, Mapping

from . import poison
from ..causes import Cause
from ..health.snapshot import read_heartbeat, read_snapshot
from ..store import Store

log = logging.getLogger("botkeeper.bot")
STATE_WAIT = 3.0  # seconds to wait for the supervisor to write state.json naming this bot


class Guard:
    def __init__(self, settings: Any, predecessor: Mapping[str, Any] | None = None, component: str = "bot",
                 redact: Callable[[str], str] = str, clock: Callable[[], float] = time.time,
                 shared: Any = None):
        self.settings = settings
        self.shared = shared  # botkeeper.bot.shared.Shared with REDIS_URL: strikes summed over replicas
        self.component = component
        self.redact = redact
        self.clock = clock
        self.book_file = poison.PoisonBook(settings.data_dir / "poison.json")
        self.book: dict[str, Any] = {}
        beat = predecessor if predecessor is not None else read_heartbeat(settings.heartbeat_file).data
        self.predecessor = beat if beat and beat.get("pid") != os.getpid() else None

    def start(self) -> list[dict[str, Any]]:
        """Strike what the predecessor left (blocking: up to STATE_WAIT). Returns the struck records."""
        self.book = self.book_file.load()
        cause = self._predecessor_cause() if poison.in_flight_of(self.predecessor) else None
        new = poison.strike(self.book, self.predecessor, cause, self.clock())
        if new.get("counted_beat") != self.book.get("counted_beat"):
            if self.shared is not None:  # this replica's strikes join the others'; the totals count
                struck_ids = [e["update_id"] for e in poison.in_flight_of(self.predecessor)
                              if str(e["update_id"]) in new["struck"]]
                for update_id, total in self.shared.add_strikes(struck_ids).items():
                    new = poison.with_strikes(new, update_id, total)
            self.book = new
            self.book_file.save(new)
            struck = [new["struck"][str(e["update_id"])] for e in poison.in_flight_of(self.predecessor)
                      if str(e["update_id"]) in new["struck"]]
            for rec in struck:
                log.warning("update %s (%s, chat %s) was in flight when the previous bot ended (%s): strike %d of %d%s",
                            rec["update_id"], rec.get("kind", "update"), rec.get("chat", "?"),
                            Cause.parse(cause).label, rec["strikes"], self.settings.quarantine_after,
                            "; certain: its handler blocked the event loop, so it is skipped now" if rec.get("certain") else "")
            return struck
        self.book = new
        return []

    def check(self, update_id: int, seen: Mapping[str, Any] | None = None,
              shared_strikes: int | None = None) -> poison.Decision:
        """Quarantine (and record) or let through; `seen`: chat, user, kind, handler of the update now;
        `shared_strikes`: its strikes over all replicas (from Redis), when shared."""
        if shared_strikes:
            self.book = poison.with_strikes(self.book, update_id, shared_strikes)
        decision = poison.decide(self.book, update_id, self.settings.quarantine_after)
        if decision.action == "quarantine":
            self.book, record = poison.quarantine(self.book, update_id, seen or {}, self.clock())
            self.book_file.save(self.book)
            line = self.redact(poison.describe(record))
            log.error("poison update skipped: %s; its handlers are not run (fix the handler, then the user can"
                      " send it again)", line)
            self._record(line)
        elif decision.action == "retry":
            log.info("update %s had %d strike(s): retrying it once more", update_id, decision.strikes)
        return decision

    def struck(self, update_id: int) -> bool:
        """Has the update a strike (it was in flight when a bot died or hung)? Struck updates run one
        at a time: should one bring this bot down too, no other struck one is blamed with it."""
        return str(update_id) in (self.book.get("struck") or {})

    def _predecessor_cause(self) -> Cause | None:
        """The bot component's cause once state.json names this process (or its parent: a wrapper)."""
        me = {os.getpid(), os.getppid()}
        deadline = time.monotonic() + STATE_WAIT
        while True:
            snap = read_snapshot(self.settings)
            if not snap.supervisor_alive:
                return None  # run by hand: nobody restarted anything
            comp = snap.component(self.component) or {}
            if comp.get("pid") in me:
                return Cause.parse(comp.get("cause")) if comp.get("cause") else None
            if time.monotonic() >= deadline:
                log.info("state.json does not name this bot yet: no strikes counted this start")
                return None
            time.sleep(0.05)

    def _record(self, line: str) -> None:
        try:
            store = Store(self.settings.history_db)
            try:
                store.record(Cause.POISON_UPDATE.value, self.component, line, "bot", cause=Cause.POISON_UPDATE)
            finally:
                store.close()
        except (sqlite3.Error, OSError) as exc:
            log.error("cannot record the poison update in the history: %s", exc)
