"""Alerts: turn the verdict and the restart history into incidents, and tell the owner once.

`Alerter.step(now, snapshot, verdict)` runs every monitor tick (the monitor process owns it, so the
supervisor stays small), with the same snapshot and verdict the monitor judged by. Each step:

1. reads the bot's new events (restarts with their typed causes) from the events table;
2. lets the pure incident machine (botkeeper/alerting/incidents.py) decide: open, update or close the
   incident, raise alerts;
3. records that, and delivers queued alerts from the outbox (table `alerts`), oldest first per
   channel, through botkeeper/alerting/alert_channels.py. Unsendable alerts stay in the outbox and are
   retried every ALERT_RETRY_INTERVAL, in order; delivered late they say so ("delayed").

What the history says of an alert is what happened to it: queued, sent, failed, or not sent (and
why: ALERTS=off, no channel).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import sys
import time
from datetime import datetime
from typing import Any, Callable, Mapping

from . import notices, report
from .. import fmt, runfiles
from .alert_channels import channels, check_alert_urls, make_redactor, webhook_payload, with_delay_note
from ..causes import Cause
from ..config import ConfigError, Settings
from .incidents import (Action, Alert, Close, Incident, Open, Rules, Tracker, Update, decide,
                        failures_from_events, fmt_time, observe)
from ..health.snapshot import Snapshot
from ..store import Store
from ..health.verdict import Verdict, read_and_judge

log = logging.getLogger("alerts")

MAX_ALERT_AGE = 7 * 86400.0  # an alert that could not be sent for a week is given up
PRUNE_EVERY = 3600.0


# --- the alerter ---------------------------------------------------------------------------------
class Alerter:
    """Incident tracking and alert delivery for one bundle home. Call `step()` every tick."""

    def __init__(self, settings: Settings, store: Store | None = None, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = store if store is not None else Store(settings.history_db)
        self.clock = clock
        self.rules = Rules.from_settings(settings)
        self.redact = make_redactor(settings)
        self.channels = channels(settings, self.redact)
        self.tracker: Tracker | None = None
        self.last_event_id: int | None = None
        self.next_prune = 0.0
        self._lock_fd: int | None = None
        self._lock_warned = False
        self._db_file: tuple[int, int] | None = None

    # --- one tick --------------------------------------------------------------------------------
    def step(self, now: float | None = None, snapshot: Snapshot | None = None,
             verdict: Verdict | None = None) -> list[Action]:
        """Decide, record, deliver. The monitor passes the snapshot and verdict it judged by;
        without them (tests, tools) they are read here. Returns the actions taken."""
        if verdict is None:
            snapshot, verdict = read_and_judge(self.settings, now=now, clock=self.clock)
        now = snapshot.now if now is None else now
        if not self._acquire():
            return []
        try:
            self.store.connect()
            if self.store.opened_file != self._db_file:  # the database was set aside: reload from the fresh one
                self.tracker, self._db_file = None, self.store.opened_file
            self._load()
            obs = observe(verdict, now, self.settings.unreachable_alert_after)
            events = self.store.events_after(self.last_event_id, component="bot")
            failures, pending = failures_from_events(events, self.tracker.pending_exit)
            if events:
                self.last_event_id = int(events[-1]["id"])
            tracker, acts = decide(self.tracker, obs, failures, now, self.rules)
            tracker.pending_exit = pending
            self._apply(acts, now)
            # a corrupt database set aside, a full disk, a new kind of error (ERROR_ALERTS=new)
            due, seen = notices.due(self.store, now, kinds=notices.kinds_for(self.settings))
            for notice in due:
                self.enqueue(notice["kind"], notices.alert_text(notice), {"cause": notice["kind"]}, None, now)
            if seen is not None:
                notices.handled(self.store, seen)
            self._daily_report(now, snapshot)
            if tracker.as_json() != self.tracker.as_json() or events:
                self.tracker = tracker
                self.store.set_meta("alerter", {"tracker": tracker.as_json(), "last_event_id": self.last_event_id})
            if self.settings.alerts:
                self.deliver(now)
            if now >= self.next_prune:
                self.next_prune = now + PRUNE_EVERY
                self.store.prune(now)
            return acts
        except sqlite3.Error as exc:  # history unavailable this tick: try again on the next
            log.warning("alerts: history database error, retrying next tick: %s", exc)
            return []

    def _acquire(self) -> bool:
        """One alerter per bundle home (a flock on run/alerter.lock), so alerts are never doubled."""
        if self._lock_fd is not None:
            return True
        try:
            self._lock_fd = runfiles.try_lock(self.settings, "alerter")
        except OSError as exc:
            log.warning("alerts: cannot open run/alerter.lock: %s", exc)
            return False
        if self._lock_fd is None:
            if not self._lock_warned:
                log.info("alerts: another process already sends this bundle's alerts; standing by")
                self._lock_warned = True
            return False
        return True

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load(self) -> None:
        """The tracker survives monitor restarts through the meta table; the database is the truth
        about which incident is open (a stop may have closed it meanwhile)."""
        if self.tracker is not None:
            return
        saved = self.store.get_meta("alerter") or {}
        tracker = Tracker.from_json(saved.get("tracker"))
        last = saved.get("last_event_id")
        self.last_event_id = int(last) if isinstance(last, int) else self.store.last_event_id()
        open_rows = self.store.open_incidents()
        inc = tracker.incident
        if inc is not None and not any(r["id"] == inc.id for r in open_rows):
            tracker.incident = inc = None
        if inc is None and open_rows:  # recorded, but we died before remembering it
            row = open_rows[-1]
            tracker.incident = Incident(row["started_at"], Cause.parse(row["cause"]), row["detail"], False,
                                        row["failures"], row["id"], row["alerted"])
        self.tracker = tracker

    def _apply(self, acts: list[Action], now: float) -> None:
        for act in acts:
            if isinstance(act, Open):
                inc = act.incident
                inc.id = self.store.open_incident(inc.cause.value, inc.started_at, self.redact(inc.detail),
                                                  failures=inc.failures)
                log.warning("bot: incident %s opened: %s (%s)", inc.id, inc.cause.value, self.redact(inc.detail))
            elif isinstance(act, Update):
                inc = act.incident
                if inc.id is not None:
                    self.store.update_incident(inc.id, cause=inc.cause.value, detail=self.redact(inc.detail),
                                               failures=inc.failures)
            elif isinstance(act, Close):
                inc = act.incident
                if inc.id is not None:
                    self.store.close_incident(inc.id, act.ended_at, act.end_cause)
                log.info("bot: incident %s closed after %s: %s%s", inc.id, fmt.duration(act.ended_at - inc.started_at, "words"),
                         inc.cause.value, " (stopped by an operator)" if act.end_cause else "")
            elif isinstance(act, Alert):
                inc = act.incident
                data = dict(act.data) | ({"cause": act.cause.value} if act.cause else {})
                data |= {"started_at": inc.started_at} if inc else {}
                queued = self.enqueue(act.kind, act.text, data, inc.id if inc else None, now)
                if queued and inc is not None and inc.id is not None and act.kind in ("down", "flapping"):
                    self.store.update_incident(inc.id, alerted=1)

    def _daily_report(self, now: float, snapshot: Snapshot | None) -> None:
        """DAILY_REPORT_AT: queue the day's report once (the day it covers is remembered in the same
        transaction, so a monitor restart does not send it twice)."""
        if self.settings.daily_report_at is None:
            return
        memory = self.store.get_meta(report.SEEN) or {}
        last = memory.get("day") if isinstance(memory, dict) else None
        due = report.due(datetime.fromtimestamp(now), self.settings.daily_report_at, last)
        if due is None:
            return
        remember = (report.SEEN, {"day": due.day, "at": now, "sent": due.send})
        if not due.send:
            log.info("alerts: DAILY_REPORT_AT %s already passed today; the first daily report goes out tomorrow",
                     self.settings.daily_report_at)
            self.store.set_meta(*remember)
            return
        self.enqueue("daily-report", report.compose(self.settings, self.store, now, snapshot, due),
                     {"day": due.day, "late": due.late}, None, now, remember=remember)

    def enqueue(self, kind: str, text: str, data: Mapping[str, Any], incident_id: int | None, now: float,
                remember: tuple[str, Any] | None = None) -> bool:
        """Queue an alert on every channel; the history says what really happened to it. True if queued.
        `remember`: a (meta key, value) written in the same transaction as the queued alert."""
        text = self.redact(text)
        if self.settings.demo_active:
            text = "[DEMO] " + text
        unsent = "ALERTS=off" if not self.settings.alerts else ("no channel configured" if not self.channels else "")
        what = f"{kind}: {text.splitlines()[-1][:300]}"
        cause = Cause.parse(data.get("cause")) if data.get("cause") else None
        if unsent:
            self.store.record("alert-not-sent", "bot", f"{what} (not sent: {unsent})", "alerts", at=now, cause=cause)
            if remember is not None:
                self.store.set_meta(*remember)
            if not self.settings.alerts:
                log.info("alerts: %s alert not sent (ALERTS=off): %s", kind, text)
            else:
                log.warning("alerts: %s alert not sent, no channel configured (set ADMIN_CHAT_ID,"
                            " MONITORING_WEBHOOK or ALERT_URLS): %s", kind, text)
            return False
        with self.store.transaction() as conn:
            for ch in self.channels:
                self.store.enqueue_alert(ch.name, kind, text, dict(data), incident_id, at=now, conn=conn)
            if remember is not None:
                self.store.set_meta(*remember, conn=conn)
        self.store.record("alert", "bot", f"{what} (queued for {', '.join(ch.name for ch in self.channels)})",
                          "alerts", at=now, cause=cause)
        log.info("alerts: %s alert queued for %s", kind, ", ".join(ch.name for ch in self.channels))
        return True

    # --- delivery --------------------------------------------------------------------------------
    def deliver(self, now: float | None = None) -> int:
        """Send what the outbox holds, oldest first per channel; stop a channel at its first
        failure so order is kept. Returns the number sent."""
        now = self.clock() if now is None else now
        sent = 0
        for ch in self.channels:
            for row in self.store.pending_alerts(ch.name):
                if row["next_attempt_at"] > now:
                    break
                if now - row["created_at"] > MAX_ALERT_AGE:
                    self.store.alert_failed(row["id"], "given up: not deliverable for a week", None)
                    continue
                # Late: a failed attempt, or held back behind one (the outbox keeps order).
                delayed = row["attempts"] > 0 or now - row["created_at"] > self.settings.alert_retry_interval
                text = with_delay_note(row["text"], row["created_at"], now) if delayed else row["text"]
                payload = webhook_payload(row["kind"], text, row["data"], row["created_at"], now, delayed,
                                          row["incident_id"], self.settings.demo_active)
                result = ch.send(text, payload)
                if result.ok:
                    self.store.alert_sent(row["id"], now, delayed)
                    self.store.record("alert-sent", "bot", f"{row['kind']} via {ch.name}" + (" (delayed)" if delayed else ""),
                                      "alerts", at=now)
                    log.info("alerts: %s alert %s sent via %s%s", row["kind"], row["id"], ch.name,
                             " (delayed)" if delayed else "")
                    sent += 1
                    continue
                if result.permanent:
                    self.store.alert_failed(row["id"], result.error, None)
                    self.store.record("alert-failed", "bot", f"{row['kind']} via {ch.name}: {result.error}", "alerts", at=now)
                    log.error("alerts: %s alert %s via %s failed for good: %s", row["kind"], row["id"], ch.name, result.error)
                    continue
                wait = max(self.settings.alert_retry_interval, result.retry_after or 0.0)
                self.store.alert_failed(row["id"], result.error, now + wait)
                if row["attempts"] == 0:
                    self.store.record("alert-failed", "bot", f"{row['kind']} via {ch.name}: {result.error}; will retry",
                                      "alerts", at=now)
                log.warning("alerts: %s alert %s via %s not sent (%s); retrying in %g s", row["kind"], row["id"],
                            ch.name, result.error, wait)
                break
        return sent


# --- `python -m botkeeper alert-test` ------------------------------------------------------------
def main_test(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m botkeeper alert-test",
                                     description="Send a test alert through every configured channel.")
    parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        check_alert_urls(settings)
    except ConfigError as exc:
        print(f"botkeeper: configuration error: {exc}", file=sys.stderr)
        return 78
    chans = channels(settings)
    if not chans:
        print("botkeeper: no alert channel is configured. Set ADMIN_CHAT_ID (your Telegram chat id; alerts are"
              " sent with ALERT_BOT_TOKEN or the bot's token) and/or MONITORING_WEBHOOK (a URL that receives"
              " JSON, e.g. a Slack or Discord webhook) and/or ALERT_URLS (Apprise URLs: discord://, slack://, ntfys://,"
              " mailto://, json://, ...).", file=sys.stderr)
        return 1
    if not settings.alerts:
        print("note: ALERTS is off, so real incidents are not sent; this test is sent anyway.")
    now = time.time()
    text = (f"🔔 botkeeper test alert from {socket.gethostname()} at {fmt_time(now)}: alerts reach you."
            + (" [DEMO]" if settings.demo_active else ""))
    failed = 0
    for ch in chans:
        result = ch.send(text, webhook_payload("test", text, {}, now, now, False, None, settings.demo_active))
        if result.ok:
            print(f"  ok    {ch.describe()}")
        else:
            failed += 1
            print(f"  FAIL  {ch.describe()}: {result.error}")
    print("all alert channels work" if not failed else f"{failed} of {len(chans)} alert channel(s) failed")
    return 0 if not failed else 1
