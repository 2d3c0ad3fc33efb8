"""One look at the bundle: the only place that reads run/state.json, the supervisor's PID file and
bot_health.txt to judge health.

`read_snapshot(settings)` returns plain data; `botkeeper.health.verdict.judge()` turns it into the one
verdict. /health, /api/*, the page, /metrics, `status`, `start --detach`, the monitor, the alerter
and `doctor` all call these two, so they cannot disagree about the same moment.

Reading is cheap (a few small files and /proc entries, no psutil) because probes hammer /health.
"""

from __future__ import annotations

import json
import os
import stat as statmod
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import runfiles
from ..fsutil import create_time

MAX_HEARTBEAT_BYTES = 64 * 1024  # a heartbeat is a few hundred bytes; bigger is corrupt
MAX_STATE_BYTES = 4 * 1024 * 1024
TORN_RETRY = 0.005  # seconds before reading a garbled heartbeat once more
LINEAGE_DEPTH = 4  # a heartbeat written by a child of the bot's process (a shell wrapper's child)
ASK_TIMEOUT = 0.5  # seconds to wait for the supervisor's answer when run/state.json is behind


@dataclass(frozen=True)
class Heartbeat:
    """bot_health.txt as read: `data` when valid, else `error` says why (never both)."""

    data: dict[str, Any] | None
    error: str | None = None
    problem: str | None = None  # missing | unreadable | oversized | corrupt (None when data)
    lineage: tuple[int, ...] = ()  # the writer's pid and its ancestors, nearest first
    mtime: float | None = None  # when the file was last written, valid or not: a sign of life


@dataclass(frozen=True)
class Snapshot:
    now: float
    state: dict[str, Any] | None  # run/state.json of the living supervisor, shapes checked
    state_error: str | None  # why `state` is None while a supervisor runs
    supervisor_alive: bool
    supervisor_pid: int | None
    stopping: bool  # run/stopping: a stop is in progress or the bundle was stopped
    heartbeat: Heartbeat
    answered: bool = False  # the state came from the supervisor's own answer on the control socket
    took: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    deadman: dict[str, Any] | None = None  # run/deadman.json (DEADMAN_URL set): the last pings and their answers

    def component(self, name: str) -> dict[str, Any] | None:
        for comp in (self.state or {}).get("components", []):
            if comp.get("name") == name:
                return comp
        return None


def sane_state(state: Any) -> dict[str, Any] | None:
    """state.json with the shapes every reader relies on, or None for something else entirely."""
    if not isinstance(state, dict) or not isinstance(state.get("components"), list):
        return None
    fixed = dict(state)
    fixed["components"] = [c for c in state["components"] if isinstance(c, dict) and isinstance(c.get("name"), str)]
    recent = state.get("recent_restarts")
    fixed["recent_restarts"] = [r for r in recent if isinstance(r, dict)] if isinstance(recent, list) else []
    if not isinstance(state.get("supervisor"), dict):
        fixed["supervisor"] = {}
    return fixed


def _read_capped(path: Path, limit: int) -> tuple[bytes | None, float | None, str | None, str | None]:
    """(bytes, mtime, problem, error): the size is checked before anything is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, None, "missing", f"{path.name} does not exist yet"
    except OSError as exc:
        return None, None, "unreadable", f"{path.name} cannot be read: {exc.strerror or exc}"
    try:
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):
            what = "a directory" if statmod.S_ISDIR(st.st_mode) else "not a regular file"
            return None, None, "unreadable", f"{path.name} is {what}, expected a small JSON file"
        if st.st_size > limit:
            return None, st.st_mtime, "oversized", f"{path.name} is {st.st_size} bytes, more than {limit}"
        data = os.read(fd, limit + 1)
        return data, st.st_mtime, None, None
    except OSError as exc:
        return None, None, "unreadable", f"{path.name} cannot be read: {exc.strerror or exc}"
    finally:
        os.close(fd)


def parse_heartbeat(raw: bytes, mtime: float, name: str = "bot_health.txt") -> tuple[dict | None, str | None]:
    """(data, error). An empty (touched) file counts by its modification time."""
    if not raw.strip():
        return {"written_at": mtime, "state": "alive", "touched": True}, None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, f"{name} is corrupt: not JSON"
    written = data.get("written_at") if isinstance(data, dict) else None
    if not isinstance(written, (int, float)) or isinstance(written, bool) or written != written:
        return None, f"{name} is corrupt: expected a JSON object with a numeric written_at"
    return data, None


def read_heartbeat(path: Path) -> Heartbeat:
    for attempt in (1, 2):
        raw, mtime, problem, error = _read_capped(path, MAX_HEARTBEAT_BYTES)
        if raw is None:
            return Heartbeat(None, error, problem, mtime=mtime)
        data, error = parse_heartbeat(raw, mtime or 0.0, path.name)
        if data is not None:
            break
        if attempt == 1:
            time.sleep(TORN_RETRY)  # caught in the middle of an in-place write (disk full): once more
    if data is None:
        return Heartbeat(None, error, "corrupt", mtime=mtime)
    return Heartbeat(data, None, None, _lineage(data.get("pid")), mtime)


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _lineage(pid: Any) -> tuple[int, ...]:
    """The heartbeat writer and its ancestors, so the verdict can tell whether the current bot (or
    a child of it) wrote the beat; () when the writer is gone."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return ()
    chain = [pid]
    for _ in range(LINEAGE_DEPTH):
        parent = _ppid(chain[-1])
        if parent is None or parent <= 1:
            break
        chain.append(parent)
    if _ppid(pid) is None:
        return ()
    return tuple(chain)


def process_matches(pid: Any, recorded_create_time: Any) -> bool:
    """The process is alive (not a zombie) and is the one recorded (same create time)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        if stat[stat.rindex(b")") + 2:].split()[0] in (b"Z", b"X"):
            return False
    except (OSError, ValueError):
        return False
    if not isinstance(recorded_create_time, (int, float)):
        return True
    created = create_time(pid)
    return created is not None and abs(created - float(recorded_create_time)) <= 0.05


MAX_DEADMAN_BYTES = 16 * 1024


def read_deadman(settings: Any) -> dict[str, Any] | None:
    """The monitor's dead man's switch figures, or None (not configured, not written yet, unreadable)."""
    if not getattr(settings, "deadman_url", None):
        return None
    raw, _, _, _ = _read_capped(runfiles.deadman_file(settings), MAX_DEADMAN_BYTES)
    try:
        doc = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def deadman_view(doc: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """What the page, `status` and /metrics show of the dead man's switch, from the snapshot's figures."""
    doc = doc or {}
    last = doc.get("last") if isinstance(doc.get("last"), dict) else None
    num = lambda v: v if isinstance(v, (int, float)) and not isinstance(v, bool) else None  # noqa: E731
    counts = {k: int(num(doc.get(k)) or 0) for k in ("sent", "ok", "failed", "dropped")}
    at = num(last.get("at")) if last else None
    view = {"service": doc.get("service"), "interval": num(doc.get("interval")),
            "last_kind": last.get("kind") if last else None, "last_at": at,
            "last_age": None if at is None else round(max(0.0, now - at), 1),
            "last_ok": bool(last.get("ok")) if last else None,
            "last_answer": str(last.get("answer"))[:100] if last else None,
            "last_ok_at": num(doc.get("last_ok_at"))} | counts
    if last is None:
        view["text"] = "no ping sent yet"
    else:
        view["text"] = (f"{view['last_kind']} ping {'answered' if view['last_ok'] else 'failed'}: {view['last_answer']}"
                        f"; {counts['sent']} sent, {counts['failed']} failed"
                        + (f", {counts['dropped']} dropped" if counts["dropped"] else ""))
    return view


def read_supervisor(settings: Any) -> tuple[bool, int | None]:
    """(alive, pid) from run/supervisor.pid, verified by create time (a reused PID is not ours)."""
    record = runfiles.read_pid_record(settings, "supervisor")
    if record is None:
        return False, None
    pid = record["pid"]
    return (True, pid) if process_matches(pid, record.get("create_time")) else (False, None)


def read_snapshot(settings: Any, now: float | None = None, answered_state: dict | None = None,
                  clock=time.time, ask: bool = True) -> Snapshot:
    """Everything the verdict needs, read once. `answered_state`: the state the supervisor just
    sent on the control socket (it is alive then, and its answer beats the file). `ask`: when the
    file is behind a living supervisor (see _file_behind), ask the supervisor for its state."""
    started = time.perf_counter()
    stopping = runfiles.is_stopping(settings)
    if answered_state is not None:
        state = sane_state(answered_state)
        alive = True
        pid = (state or {}).get("supervisor", {}).get("pid")
        state_error = None if state else "the supervisor's answer was not a state"
    else:
        alive, pid = read_supervisor(settings)
        state, state_error = None, None
        raw, _, problem, error = _read_capped(Path(settings.state_file), MAX_STATE_BYTES)
        if raw is not None:
            try:
                state = sane_state(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, ValueError):
                state = None
            if state is None:
                state_error = "run/state.json is corrupt"
        else:
            state_error = error
        if state is not None and alive and state.get("supervisor", {}).get("pid") != pid:
            state, state_error = None, "run/state.json was written by an earlier supervisor"
        if not alive and state is not None:
            # A dead supervisor's state says what was running when it died; keep it for the
            # leftovers and the "since", but it is not the truth about now.
            state_error = None
    beat = read_heartbeat(Path(settings.heartbeat_file))
    if answered_state is None and alive and ask and _file_behind(state, beat):
        asked = ask_supervisor(settings)
        if asked is not None and sane_state(asked) is not None:
            state, state_error, answered_state = sane_state(asked), None, asked
    deadman = read_deadman(settings)
    now = clock() if now is None else now
    return Snapshot(now, state, state_error, alive, pid if isinstance(pid, int) else None, stopping, beat,
                    answered=answered_state is not None, took=time.perf_counter() - started, deadman=deadman)


def _file_behind(state: dict[str, Any] | None, beat: Heartbeat) -> bool:
    """run/state.json may not be the living supervisor's truth: it is unreadable, or its bot is not
    the one beating (or no longer alive). The supervisor may be unable to write it (run/ read-only,
    the disk full): then only its answer tells. Cheap checks first; most reads never ask."""
    if state is None:
        return True
    bot = next((c for c in state["components"] if c.get("name") == "bot"), None)
    if bot is None or bot.get("state") not in ("starting", "running"):
        return False
    bot_pid = bot.get("pid")
    hb_pid = (beat.data or {}).get("pid")
    if isinstance(hb_pid, int) and hb_pid != bot_pid and bot_pid not in beat.lineage:
        return True
    return not process_matches(bot_pid, bot.get("create_time"))


def ask_supervisor(settings: Any, timeout: float = ASK_TIMEOUT) -> dict[str, Any] | None:
    """The supervisor's state from its answer on run/control.sock, or None. (An upward import,
    named in ARCHITECTURE.md: the control client needs nothing but the standard library and runfiles.)"""
    from ..supervise import control

    if getattr(settings, "control_socket", None) is None:
        return None
    try:
        answer = control.call(settings, "status", timeout=timeout)
    except (control.SupervisorUnavailable, control.ControlError):
        return None
    return answer if isinstance(answer, dict) else None
