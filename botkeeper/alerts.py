"""Incidents and alerts: learn from the bundle's files that the bot is down, tell the owner once.

`Alerter.step()` runs every monitor tick (the monitor process owns it, so the supervisor stays
small). Each step:

1. observes: run/state.json (the bot's state), bot_health.txt (heartbeat, Telegram state) and the
   events table (crash restarts, restarts the monitor asked for and why);
2. decides with the pure `decide()`: open, update or close the incident, queue alerts;
3. delivers queued alerts from the outbox (table `alerts`), oldest first per channel.

Rules (all in `decide()`, tested with a fake clock):
- An incident is one bot-down period, from the first failure to recovery (up for MIN_UPTIME).
  Restarts inside it do not open new incidents: one "down" alert and one "recovered" alert each.
- "down" goes out at once for serious causes (crash loop, errored, needs-config, a restart the
  monitor forced for a stale heartbeat or a memory/CPU limit, Telegram unreachable longer than
  UNREACHABLE_ALERT_AFTER) and for anything else once it lasts HEALTH_GRACE. A single crash the
  supervisor fixes within HEALTH_GRACE is recorded as an incident but not alerted.
- FLAP_THRESHOLD incidents within FLAP_WINDOW make the bot "flapping": one alert says so, single
  incidents are no longer alerted, and a summary follows once it has been stable for FLAP_WINDOW.
- Unsendable alerts stay in the outbox and are retried every ALERT_RETRY_INTERVAL, in order; once
  delivered late they say so ("delayed") and are marked delayed in the database.

Alert text is built from our own cause labels and reasons, passed through the log redactor: it
never contains a token, the webhook URL or anything a user wrote to the bot.
"""

from __future__ import annotations

import copy
import errno
import fcntl
import logging
import os
import socket
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from . import heartbeat as heartbeat_mod
from . import notices, policy
from .config import ConfigError, Settings, mask_secret
from .fsutil import read_json, verified_process
from .logs import Redactor
from .store import Store

log = logging.getLogger("alerts")

UP, DOWN, UNKNOWN = "up", "down", "unknown"
FLAP_THRESHOLD = 3  # incidents within FLAP_WINDOW that make the bot "flapping"
MAX_ALERT_AGE = 7 * 86400.0  # an alert that could not be sent for a week is given up
PRUNE_EVERY = 3600.0
HTTP_TIMEOUT = (3.05, 5.0)  # connect, read: a dead network must not stall the monitor for long
MANUAL_BY = {"cli", "web", "user", "admin", "telegram", "control", "test"}

# Cause labels, with a rank: an incident's cause is upgraded to a more specific/serious one.
CRASHED = "crashed"
CRASH_LOOP = "crash loop"
ERRORED = "errored (too many quick crashes)"
NEEDS_CONFIG = "needs configuration"
CONFLICT = "conflict (another copy is polling)"
UNREACHABLE = "Telegram unreachable"
STALE = "heartbeat stale"
NO_HEARTBEAT = "no heartbeat"
MEMORY = "memory limit"
CPU = "CPU limit"
NOT_RUNNING = "bot not running"
NO_SUPERVISOR = "supervisor not running"
RANK = {
    NOT_RUNNING: 1, NO_SUPERVISOR: 1, CRASHED: 1, NO_HEARTBEAT: 2, UNREACHABLE: 2, STALE: 3, MEMORY: 3, CPU: 3,
    CRASH_LOOP: 4, CONFLICT: 5, ERRORED: 6, NEEDS_CONFIG: 7,
}
PERSISTENT = {NEEDS_CONFIG, ERRORED, CONFLICT}  # end a flapping episode early: the owner must act
HINTS = {
    NEEDS_CONFIG: "Fix the setting (`python -m botkeeper doctor` names it), then `python -m botkeeper restart bot`.",
    ERRORED: "The supervisor retries slowly. See `python -m botkeeper logs bot`.",
    CRASH_LOOP: "See `python -m botkeeper logs bot` for the error.",
    CRASHED: "See `python -m botkeeper logs bot` for the error.",
    CONFLICT: "Stop the other copy that uses this token (e.g. the Replit editor and a deployment at once).",
    UNREACHABLE: "A network or Telegram outage; the bot keeps retrying by itself.",
    STALE: "The bot stopped responding and was restarted. See `python -m botkeeper logs bot`.",
    MEMORY: "The bot was restarted for using too much memory (MAX_MEMORY_MB).",
    CPU: "The bot was restarted for using too much CPU (MAX_CPU_PERCENT).",
}


# --- formatting ----------------------------------------------------------------------------------
def fmt_duration(seconds: float) -> str:
    """3 min 12 s, 45 s, 2.5 s, 2 h 5 min, 3 d 4 h."""
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f} s"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


# --- what happened: restart reasons and the bundle's current condition (pure) --------------------
@dataclass(frozen=True)
class Failure:
    """A discrete failure seen in the events table: a crash, a forced restart."""

    at: float
    cause: str
    detail: str
    severe: bool


@dataclass(frozen=True)
class Observation:
    condition: str  # up | down | unknown (starting, stopping, stopped on purpose)
    cause: str = ""
    detail: str = ""
    severe: bool = False
    since: float | None = None


def classify_restart(reason: str, by: str | None) -> tuple[str, bool] | None:
    """(cause, severe) for a restart that means a failure, None for planned/asked-for restarts."""
    text = (reason or "").lower()
    who = (by or "").lower()
    if who in MANUAL_BY or text.startswith(("initial start", "requested")):
        return None
    if text.startswith("crashed"):
        return CRASHED, False
    if "planned" in text or "max_uptime" in text:
        return None
    if "memory" in text:
        return MEMORY, True
    if "cpu" in text:
        return CPU, True
    if "heartbeat" in text or "stale" in text or "hung" in text:
        return STALE, True
    if "unreachable" in text or "outage" in text:
        return UNREACHABLE, False
    if who in ("recovery", "auto_recovery"):
        return NOT_RUNNING, True
    if who == "monitor":
        return STALE, True
    return None


def failures_from_events(events: Sequence[Mapping[str, Any]], pending_exit: float | None
                         ) -> tuple[list[Failure], float | None]:
    """Failures among the bot's new events and the crash exit still waiting for its restart.

    A crash is dated by its exit, not by the (backed-off) restart that follows it. The supervisor
    writes a fast restart before the exit it follows (with the exit's earlier time), so events are
    taken in time order. Exits of requested stops (`by` someone else) are not crashes.
    """
    found: list[Failure] = []
    for ev in sorted(events, key=lambda e: (e["at"], e["id"])):
        kind = ev.get("kind")
        if kind == "exit":
            if (ev.get("by") or "supervisor") == "supervisor":
                pending_exit = float(ev["at"])
        elif kind == "restart":
            detail = str(ev.get("detail") or "")
            cls = classify_restart(detail, ev.get("by"))
            crash = detail.startswith("crashed")
            if cls is not None:
                at = pending_exit if crash and pending_exit is not None else float(ev["at"])
                found.append(Failure(at, cls[0], detail[:200], cls[1]))
            if crash or cls is None:
                pending_exit = None
        elif kind == "start":
            pending_exit = None
    return found, pending_exit


def observe(state: Mapping[str, Any] | None, supervisor_alive: bool, hb: Mapping[str, Any] | None,
            now: float, settings: Any, stopping: bool = False) -> Observation:
    """The bot's condition right now from run/state.json and bot_health.txt (pure)."""
    if not supervisor_alive or not state:
        if stopping or (state or {}).get("supervisor", {}).get("shutting_down"):
            return Observation(UNKNOWN)  # stopped on purpose
        return Observation(DOWN, NO_SUPERVISOR, "the supervisor is not running", False,
                           (state or {}).get("updated_at"))
    if state.get("supervisor", {}).get("shutting_down"):
        return Observation(UNKNOWN)
    bot = next((c for c in state.get("components", []) if c.get("name") == "bot"), None)
    if bot is None:
        return Observation(UNKNOWN)
    st = bot.get("state")
    exit_at = bot.get("last_exit_at")
    if st == "needs-config":
        return Observation(DOWN, NEEDS_CONFIG, str(bot.get("last_restart_reason") or "")[:200], True, exit_at)
    if st == "errored":
        return Observation(DOWN, ERRORED, str(bot.get("last_exit") or ""), True, exit_at)
    if st == "backoff":
        return Observation(DOWN, CRASHED, str(bot.get("last_exit") or ""), False, exit_at)
    if st != "running":
        return Observation(UNKNOWN)  # starting, stopping, stopped on request
    started = bot.get("started_at") or 0.0
    if not bot.get("heartbeat"):
        return Observation(UP, since=now)
    written = (hb or {}).get("written_at")
    if not isinstance(written, (int, float)) or written < started:  # none yet, or an older process's
        if now - started < settings.heartbeat_grace:
            return Observation(UNKNOWN)
        return Observation(DOWN, NO_HEARTBEAT, f"no heartbeat {now - started:.0f} s after start", False,
                           started + settings.heartbeat_grace)
    verdict = policy.staleness(hb, now, settings.heartbeat_interval, settings.stale_after)
    if verdict == policy.STALE:
        return Observation(DOWN, STALE, f"heartbeat {now - written:.0f} s old", False, written + settings.stale_after)
    hb_state = hb.get("state")
    if hb_state == "conflict":
        since = hb.get("conflict_since")
        return Observation(DOWN, CONFLICT, "Telegram answers 409 Conflict", False,
                           since if isinstance(since, (int, float)) else now)
    if hb_state == "telegram-unreachable":
        since = hb.get("unreachable_since")
        since = float(since) if isinstance(since, (int, float)) else now
        if now - since >= settings.unreachable_alert_after:
            return Observation(DOWN, UNREACHABLE, f"for {fmt_duration(now - since)}", True, since)
        return Observation(UNKNOWN)
    if hb_state in ("starting", "stopping"):
        return Observation(UNKNOWN)
    return Observation(UP, since=now)


# --- decisions (pure) ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Rules:
    confirm_after: float  # a non-serious down is alerted once it lasts this long (HEALTH_GRACE)
    stable_after: float  # up this long = recovered (MIN_UPTIME)
    flap_window: float
    flap_threshold: int = FLAP_THRESHOLD

    @classmethod
    def from_settings(cls, s: Any) -> "Rules":
        return cls(s.health_grace, s.min_uptime, s.flap_window)


def new_tracker() -> dict[str, Any]:
    return {"incident": None, "flapping": False, "flap_recent": [], "last_end": None, "pending_exit": None}


def decide(tracker: Mapping[str, Any], obs: Observation, failures: Sequence[Failure], now: float,
           rules: Rules) -> tuple[dict[str, Any], list[tuple]]:
    """New tracker and the actions to apply, in order:
    ("open", inc) ("update", inc) ("close", inc) ("alert", kind, text, data, inc)."""
    t = copy.deepcopy(dict(tracker))
    acts: list[tuple] = []
    inc = t.get("incident")

    def open_incident(at: float, cause: str, detail: str, severe: bool, n: int) -> dict[str, Any]:
        new = {"id": None, "started_at": min(at, now), "cause": cause, "detail": detail, "severe": severe,
               "alerted": False, "failures": n, "up_since": None}
        t["incident"] = new
        acts.append(("open", new))
        recent = [r for r in t["flap_recent"] if t["flapping"] or now - r[0] <= rules.flap_window]
        recent.append([new["started_at"], None, cause])
        t["flap_recent"] = recent
        if not t["flapping"] and len(recent) >= rules.flap_threshold:
            t["flapping"] = True
            new["alerted"] = True  # the flapping alert speaks for this incident
            span = now - recent[0][0]
            text = (f"⚠️ Your bot is flapping: {len(recent)} outages in {fmt_duration(span)}; latest cause: {cause}. "
                    f"Alerts for single outages are paused; a summary follows once it has been stable for "
                    f"{fmt_duration(rules.flap_window)}.")
            acts.append(("alert", "flapping", text, {"cause": cause, "outages": len(recent)}, new))
        return new

    def upgrade(cur: dict[str, Any], cause: str, detail: str, severe: bool) -> bool:
        changed = False
        if RANK.get(cause, 0) > RANK.get(cur["cause"], 0):
            cur["cause"], cur["detail"] = cause, detail
            changed = True
        if severe and not cur["severe"]:
            cur["severe"] = changed = True
        return changed

    for f in failures:
        if inc is None:
            inc = open_incident(f.at, f.cause, f.detail, f.severe, 1)
            continue
        inc["failures"] += 1
        inc["up_since"] = None
        cause, severe = (CRASH_LOOP, True) if f.cause == CRASHED and inc["failures"] >= 2 else (f.cause, f.severe)
        upgrade(inc, cause, f.detail, severe)
        acts.append(("update", inc))

    if obs.condition == DOWN:
        if inc is None:
            inc = open_incident(obs.since if obs.since is not None else now, obs.cause, obs.detail, obs.severe, 0)
        else:
            inc["up_since"] = None
            if upgrade(inc, obs.cause, obs.detail, obs.severe):
                acts.append(("update", inc))
    elif inc is not None and obs.condition == UP:
        if inc["up_since"] is None:
            inc["up_since"] = obs.since if obs.since is not None else now
        if now - inc["up_since"] >= rules.stable_after:
            ended = max(inc["up_since"], inc["started_at"])
            acts.append(("close", inc, ended))
            t["incident"], t["last_end"] = None, ended
            if t["flap_recent"]:
                t["flap_recent"][-1][1:] = [ended, inc["cause"]]
            if inc["alerted"] and not t["flapping"]:
                took = ended - inc["started_at"]
                extra = f" ({inc['failures']} restarts during the outage)" if inc["failures"] > 1 else ""
                text = f"✅ Your bot is back up after {fmt_duration(took)}; cause: {inc['cause']}{extra}."
                acts.append(("alert", "recovered", text,
                             {"cause": inc["cause"], "ended_at": ended, "duration_seconds": round(took, 1)}, inc))
            inc = None
    elif inc is not None:
        inc["up_since"] = None

    if inc is not None and not inc["alerted"] and not t["flapping"] and (
            inc["severe"] or now - inc["started_at"] >= rules.confirm_after):
        inc["alerted"] = True
        acts.append(("update", inc))
        acts.append(("alert", "down", down_text(inc, now), {"cause": inc["cause"]}, inc))

    if t["flapping"]:
        recent = t["flap_recent"]
        if inc is None and t["last_end"] is not None and now - t["last_end"] >= rules.flap_window:
            acts.append(("alert", "flap-summary", flap_summary(recent), {"outages": len(recent)}, None))
            t["flapping"], t["flap_recent"] = False, []
        elif inc is not None and (now - inc["started_at"] >= rules.flap_window or (
                inc["cause"] in PERSISTENT and now - inc["started_at"] >= rules.confirm_after)):
            inc["alerted"] = True
            acts.append(("update", inc))
            text = f"{flap_summary(recent[:-1], stable=False)}\n{down_text(inc, now)}"
            acts.append(("alert", "down", text, {"cause": inc["cause"], "outages": len(recent)}, inc))
            t["flapping"], t["flap_recent"] = False, [recent[-1]]
    return t, acts


def down_text(inc: Mapping[str, Any], now: float) -> str:
    detail = f" ({inc['detail']})" if inc.get("detail") else ""
    hint = HINTS.get(inc["cause"], "")
    return (f"🔴 Your bot is DOWN: {inc['cause']}{detail}. Down since {fmt_time(inc['started_at'])}"
            f" ({fmt_duration(now - inc['started_at'])} ago).{(' ' + hint) if hint else ''}")


def flap_summary(recent: Sequence[Sequence[Any]], stable: bool = True) -> str:
    if not recent:
        return "Flapping is over."
    down = sum((r[1] if r[1] is not None else r[0]) - r[0] for r in recent)
    causes = Counter(r[2] for r in recent)
    listed = ", ".join(f"{c} ×{n}" for c, n in causes.most_common())
    span = f"{fmt_time(recent[0][0])} to {fmt_time(recent[-1][1] or recent[-1][0])}"
    head = "✅ Your bot is stable again after flapping" if stable else "Flapping has ended"
    return f"{head}: {len(recent)} outages from {span}, {fmt_duration(down)} down in total; causes: {listed}."


# --- channels ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    ok: bool
    error: str = ""
    permanent: bool = False  # retrying will not help (bad token, chat not found, 4xx)
    retry_after: float | None = None


def _http_error(exc: Exception, redact: Callable[[str], str]) -> str:
    import requests

    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        inner = str(exc)
        for words, label in (("refused", "connection refused"), ("Name or service", "host not found"),
                             ("resolve", "host not found"), ("unreachable", "network unreachable")):
            if words in inner:
                return label
        return "connection failed"
    return redact(f"{type(exc).__name__}: {exc}")[:200]


class TelegramChannel:
    name = "telegram"

    def __init__(self, base_url: str, token: str, chat_id: int, redact: Callable[[str], str]):
        self.base_url, self._token, self.chat_id, self.redact = base_url.rstrip("/"), token, chat_id, redact

    def describe(self) -> str:
        return f"Telegram message to chat {self.chat_id} via {mask_secret(self._token)}"

    def send(self, text: str, payload: Mapping[str, Any]) -> Delivery:
        import requests

        try:
            resp = requests.post(f"{self.base_url}/bot{self._token}/sendMessage",
                                 json={"chat_id": self.chat_id, "text": text[:4000], "disable_web_page_preview": True},
                                 timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            return Delivery(False, _http_error(exc, self.redact))
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code == 200 and body.get("ok"):
            return Delivery(True)
        desc = self.redact(str(body.get("description") or resp.reason or ""))[:200]
        error = f"Telegram answered HTTP {resp.status_code}: {desc}"
        if resp.status_code == 429:
            retry = (body.get("parameters") or {}).get("retry_after")
            return Delivery(False, error, retry_after=float(retry) if isinstance(retry, (int, float)) else None)
        return Delivery(False, error, permanent=400 <= resp.status_code < 500)


class WebhookChannel:
    """JSON POST. Payload: see `webhook_payload()` and docs/alerts.md."""

    name = "webhook"

    def __init__(self, url: str, redact: Callable[[str], str]):
        self._url, self.redact = url, redact

    def describe(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self._url)
        port = f":{parts.port}" if parts.port else ""
        return f"webhook POST to {parts.scheme}://{parts.hostname}{port}/***"

    def send(self, text: str, payload: Mapping[str, Any]) -> Delivery:
        import requests

        try:
            resp = requests.post(self._url, json=dict(payload), timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            return Delivery(False, _http_error(exc, self.redact))
        if 200 <= resp.status_code < 300:
            return Delivery(True)
        error = f"webhook answered HTTP {resp.status_code}"
        if resp.status_code == 429:
            retry = resp.headers.get("Retry-After", "")
            return Delivery(False, error, retry_after=float(retry) if retry.isdigit() else None)
        return Delivery(False, error, permanent=400 <= resp.status_code < 500 and resp.status_code != 408)


def make_redactor(settings: Settings) -> Redactor:
    return Redactor(settings.secrets() + [settings.bot_token or ""])


def channels(settings: Settings, redact: Callable[[str], str] | None = None) -> list[Any]:
    """Every configured alert channel."""
    redact = redact or make_redactor(settings)
    found: list[Any] = []
    token = settings.alert_bot_token or settings.bot_token
    if settings.admin_chat_id is not None and token:
        found.append(TelegramChannel(settings.bot_api_base_url, token, settings.admin_chat_id, redact))
    if settings.monitoring_webhook:
        found.append(WebhookChannel(settings.monitoring_webhook, redact))
    return found


def webhook_payload(kind: str, text: str, data: Mapping[str, Any], created_at: float, now: float,
                    delayed: bool, incident_id: int | None, demo: bool = False) -> dict[str, Any]:
    """The documented JSON body: `text` (Slack), `content` (Discord) and the facts."""
    return {
        "text": text, "content": text[:2000], "source": "botkeeper", "event": kind,
        "incident_id": incident_id, "created_at": created_at, "sent_at": now, "delayed": delayed,
        "host": socket.gethostname(), "demo": demo,
        **{k: v for k, v in data.items() if k in ("cause", "started_at", "ended_at", "duration_seconds", "outages")},
    }


def with_delay_note(text: str, created_at: float, now: float) -> str:
    return f"(delayed: raised {fmt_time(created_at)}, sent {fmt_duration(now - created_at)} later)\n{text}"


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
        self.tracker: dict[str, Any] | None = None
        self.last_event_id: int | None = None
        self.next_prune = 0.0
        self._lock_fd: int | None = None
        self._lock_warned = False
        self._db_file: tuple[int, int] | None = None

    # --- one tick --------------------------------------------------------------------------------
    def step(self, now: float | None = None) -> list[tuple]:
        """Observe, decide, record, deliver. Returns the actions taken (for tests and logs)."""
        now = self.clock() if now is None else now
        if not self._acquire():
            return []
        try:
            self.store.connect()
            if self.store.opened_file != self._db_file:  # the database was set aside: reload from the fresh one
                self.tracker, self._db_file = None, self.store.opened_file
            self._load()
            obs = self.observe(now)
            events = self.store.events_after(self.last_event_id, component="bot")
            failures, pending = failures_from_events(events, self.tracker.get("pending_exit"))
            if events:
                self.last_event_id = int(events[-1]["id"])
            tracker, acts = decide(self.tracker, obs, failures, now, self.rules)
            tracker["pending_exit"] = pending
            self._apply(acts, now)
            due, seen = notices.due(self.store, now)  # a corrupt database set aside, a full disk
            for notice in due:
                self.enqueue(notice["kind"], notices.alert_text(notice), {"cause": notice["kind"]}, None, now)
            if seen is not None:
                notices.handled(self.store, seen)
            if tracker != self.tracker or events:
                self.tracker = tracker
                self.store.set_meta("alerter", {"tracker": tracker, "last_event_id": self.last_event_id})
            if self.settings.alerts:
                self.deliver(now)
            if now >= self.next_prune:
                self.next_prune = now + PRUNE_EVERY
                self.store.prune(now)
            return acts
        except sqlite3.Error as exc:  # history unavailable this tick: try again on the next
            log.warning("alerts: history database error, retrying next tick: %s", exc)
            return []

    def observe(self, now: float) -> Observation:
        s = self.settings
        state = read_json(s.state_file)
        state = state if isinstance(state, dict) else None
        sup = (state or {}).get("supervisor", {})
        alive = verified_process(sup.get("pid"), sup.get("create_time")) is not None
        hb = None
        if alive and state:
            hb, _ = heartbeat_mod.read_or_error(s.heartbeat_file)
        return observe(state, alive, hb, now, s, stopping=(s.run_dir / "stopping").exists())

    def _acquire(self) -> bool:
        """One alerter per bundle home (a flock on run/alerter.lock), so alerts are never doubled."""
        if self._lock_fd is not None:
            return True
        run_dir = self.settings.run_dir
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(run_dir / "alerter.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("alerts: cannot open run/alerter.lock: %s", exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            if not self._lock_warned:
                log.info("alerts: another process already sends this bundle's alerts; standing by")
                self._lock_warned = True
            return False
        self._lock_fd = fd
        return True

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load(self) -> None:
        """The tracker survives monitor restarts through the meta table."""
        if self.tracker is not None:
            return
        saved = self.store.get_meta("alerter") or {}
        tracker = new_tracker() | (saved.get("tracker") or {})
        last = saved.get("last_event_id")
        self.last_event_id = int(last) if isinstance(last, int) else self.store.last_event_id()
        open_rows = self.store.open_incidents()
        inc = tracker.get("incident")
        if inc is not None and not any(r["id"] == inc.get("id") for r in open_rows):
            tracker["incident"] = inc = None
        if inc is None and open_rows:  # recorded, but we died before remembering it
            row = open_rows[-1]
            tracker["incident"] = {"id": row["id"], "started_at": row["started_at"], "cause": row["cause"],
                                   "detail": row["detail"], "severe": False, "alerted": row["alerted"],
                                   "failures": row["failures"], "up_since": None}
        self.tracker = tracker

    def _apply(self, acts: list[tuple], now: float) -> None:
        for act in acts:
            what = act[0]
            if what == "open":
                inc = act[1]
                inc["id"] = self.store.open_incident(inc["cause"], inc["started_at"], self.redact(inc["detail"]),
                                                     failures=inc["failures"])
                log.warning("bot: incident %s opened: %s (%s)", inc["id"], inc["cause"], self.redact(inc["detail"]))
            elif what == "update":
                inc = act[1]
                if inc.get("id") is not None:
                    self.store.update_incident(inc["id"], cause=inc["cause"], detail=self.redact(inc["detail"]),
                                               failures=inc["failures"], alerted=int(inc["alerted"]))
            elif what == "close":
                inc, ended = act[1], act[2]
                if inc.get("id") is not None:
                    self.store.close_incident(inc["id"], ended)
                log.info("bot: incident %s closed after %s: %s", inc.get("id"), fmt_duration(ended - inc["started_at"]),
                         inc["cause"])
            elif what == "alert":
                _, kind, text, data, inc = act
                self.enqueue(kind, text, data | ({"started_at": inc["started_at"]} if inc else {}),
                             inc.get("id") if inc else None, now)

    def enqueue(self, kind: str, text: str, data: Mapping[str, Any], incident_id: int | None, now: float) -> None:
        text = self.redact(text)
        if self.settings.demo_active:
            text = "[DEMO] " + text
        unsent = "ALERTS=off" if not self.settings.alerts else ("no channel configured" if not self.channels else "")
        note = f" (not sent: {unsent})" if unsent else ""
        self.store.record("alert", "bot", f"{kind}: {text.splitlines()[-1][:300]}{note}", "alerts", at=now)
        if not self.settings.alerts:
            log.info("alerts: %s alert not sent (ALERTS=off): %s", kind, text)
            return
        if not self.channels:
            log.warning("alerts: %s alert not sent, no channel configured (set ADMIN_CHAT_ID or"
                        " MONITORING_WEBHOOK): %s", kind, text)
            return
        with self.store.transaction() as conn:
            for ch in self.channels:
                self.store.enqueue_alert(ch.name, kind, text, dict(data), incident_id, at=now, conn=conn)
        log.info("alerts: %s alert queued for %s", kind, ", ".join(ch.name for ch in self.channels))

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
    except ConfigError as exc:
        print(f"botkeeper: configuration error: {exc}", file=sys.stderr)
        return 78
    chans = channels(settings)
    if not chans:
        print("botkeeper: no alert channel is configured. Set ADMIN_CHAT_ID (your Telegram chat id; alerts are"
              " sent with ALERT_BOT_TOKEN or the bot's token) and/or MONITORING_WEBHOOK (a URL that receives"
              " JSON, e.g. a Slack or Discord webhook).", file=sys.stderr)
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
