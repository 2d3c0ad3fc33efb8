"""The supervisor: the one owner of every component's lifecycle.

A single-threaded event loop over a selector: child exits arrive as SIGCHLD through the signal
wakeup fd (noticed at once, not on a tick), child output through pipes, requests through the control
socket, and everything else through timers. Decisions come from policy.py; this module applies them.
Beside it: childlogs.py (where the children's output goes), control_server.py (the control socket),
bundle.relaunch_recovery (auto_recovery when it is gone), and process.OS, the one seam to the
operating system, which a test replaces to run restarts and timers under a fake clock.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import bundle, gitinfo, outer, policy, process, reload_plan, sdnotify, warm
from .. import logs, runfiles
from ..causes import Cause
from .childlogs import OutputFanout
from ..config import EX_CONFIG, ComponentSpec, ConfigError, Settings
from .control_server import ControlServer
from ..fsutil import atomic_write_json, create_time, make_private, read_json, write_pidfile
from ..logs import Redactor, escape
from ..states import LIVE, State, check_transition
from ..store import Store

log = logging.getLogger("supervisor")
STOPPED_LAST = ("emulator",)  # the demo's Telegram: its bot stops first
EX_LOCKED = 75  # EX_TEMPFAIL: another supervisor owns this directory
RECENT_RESTARTS = 50
STATE_CHECK_INTERVAL = 1.0  # how often we check that run/state.json is still the one we wrote
BOOKKEEPING_DELAY = 0.005  # a fast restart's history and state.json wait this long at most for the child's first output
OPERATORS = {"cli", "web", "user", "admin", "telegram"}  # who asks = a person: the cause is operator


@dataclass
class Component:
    spec: ComponentSpec
    state: State = State.STOPPED
    proc: subprocess.Popen | None = None
    pid: int | None = None
    create_time: float | None = None
    started_at: float | None = None  # wall clock, for display
    started_mono: float = 0.0
    restarts: int = 0
    failures: tuple[float, ...] = ()
    last_exit_code: int | None = None
    last_exit_signal: int | None = None
    last_exit: str | None = None
    last_exit_at: float | None = None
    last_restart_reason: str | None = None  # the detail sentence beside `cause`
    last_restart_at: float | None = None
    cause: Cause | None = None  # why it last (re)started, or why it is not running now
    stopped_at: float | None = None  # wall clock: when it was stopped on purpose
    next_start_at: float | None = None  # monotonic
    next_start_cause: Cause = Cause.CRASH
    next_start_reason: str = ""
    stop_deadline: float | None = None  # monotonic: SIGKILL after this
    after_stop: str = "stopped"  # restart | stopped
    stop_cause: Cause = Cause.OPERATOR
    stop_reason: str = ""
    stop_by: str = ""
    ever_started: bool = False
    retired: bool = False  # no longer in the configuration (reload): dropped once it has stopped

    @property
    def name(self) -> str:
        return self.spec.name

    def snapshot(self, mono_now: float, wall_now: float) -> dict[str, Any]:
        next_start = None if self.next_start_at is None else wall_now + max(0.0, self.next_start_at - mono_now)
        return {
            "name": self.name, "state": self.state.value, "pid": self.pid, "create_time": self.create_time,
            "started_at": self.started_at, "restarts": self.restarts,
            "last_exit_code": self.last_exit_code, "last_exit_signal": self.last_exit_signal,
            "last_exit": self.last_exit, "last_exit_at": self.last_exit_at,
            "last_restart_reason": self.last_restart_reason, "last_restart_at": self.last_restart_at,
            "cause": self.cause.value if self.cause else None,
            "stopped_at": self.stopped_at if self.state == State.STOPPED else None,
            "stop_cause": self.stop_cause.value if self.state == State.STOPPING else None,
            "after_stop": self.after_stop if self.state == State.STOPPING else None,  # restart | stopped
            "next_start_at": next_start, "heartbeat": self.spec.heartbeat, "command": list(self.spec.command),
        }


class Supervisor:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, os_: process.OS | None = None):
        self.settings = settings
        self.start_environ = dict(os.environ)  # a reload reads the files again, over this environment
        self.version = gitinfo.short_sha(settings.home)  # once: the page and `status` show it, no git per request
        self.clock, self.wall = clock, wall
        self.os = os_ if os_ is not None else process.OS()
        self.components = {spec.name: Component(spec) for spec in settings.components}
        self.by_pid: dict[int, Component] = {}
        self.recent_restarts: collections.deque = collections.deque(maxlen=RECENT_RESTARTS)
        self.redact = Redactor(settings.secrets() + [settings.bot_token or ""])
        self.selector = selectors.DefaultSelector()
        self.shutting_down = False
        self.shutdown_reason = ""
        self.shutdown_by = "supervisor"
        self.reexec = False  # after the shutdown, exec the code on disk in this same process (update)
        self.exit_code = 0
        self.started_at = wall()
        self.store = Store(settings.history_db)
        self.next_recovery_check = clock() + settings.recovery_interval
        self.next_state_check = clock() + STATE_CHECK_INTERVAL
        self._state_key: tuple[int, int] | None = None  # (inode, mtime_ns) of the state.json we wrote
        # file -> {"file", "cause", "since", "detail"}: our own files we cannot write (run/state.json,
        # a log that cannot rotate). In the state (and the control socket's answer): degraded, typed.
        self.faults: dict[str, dict[str, Any]] = {}
        self._faults_changed = False  # written to run/state.json on the next timer pass
        self._lock_fd: int | None = None
        self._wake_r: int | None = None
        self.warm_possible = True  # False when the kernel refuses PR_SET_CHILD_SUBREAPER
        self._forkserver_restart: tuple[Cause, str] | None = None  # asked for by a refused warm start
        # A fast restart's bookkeeping (history rows, state.json), done after the loop has served
        # what is ready (the new child's first output) or BOOKKEEPING_DELAY later.
        self._deferred: list[Callable[[], None]] = []
        self._deferred_by: float | None = None
        # Under systemd/a container/PM2 the outer system restarts us: no auto_recovery, sd_notify.
        self.outer = outer.mode(settings)
        self.output = OutputFanout(settings, self.redact, to_stdout=self.outer != "none")
        self.control = ControlServer(settings.control_socket, self.selector, self.handle)
        self.notifier = (sdnotify.Notifier.from_environ(os.environ, clock, settings.start_timeout)
                         if self.outer == "systemd" else sdnotify.Notifier(None, None, clock, 0))

    # --- start-up --------------------------------------------------------------------------------
    def acquire_lock(self) -> bool:
        self._lock_fd = runfiles.try_lock(self.settings, "supervisor")
        return self._lock_fd is not None

    def setup(self) -> None:
        s = self.settings
        for d in (s.logs_dir, s.data_dir, s.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        opened = make_private(s.run_dir, s.logs_dir, s.data_dir, s.archive_dir)  # before any new file
        previous = read_json(s.run_dir / "supervisor.pid")  # removed on a clean exit: still there = it died
        write_pidfile(s.run_dir / "supervisor.pid")
        logs.on_rotation = self._rotation  # before the handlers exist: a log full at start counts too
        self.output.setup(self.components)
        if opened:
            log.warning("private files: %d file(s) and directories under run/, logs/, data/ and logs_archive/ "
                        "were open to other users of this machine (e.g. %s); now owner-only", len(opened), opened[0])
        if isinstance(previous, dict) and previous.get("pid") not in (None, os.getpid()):
            log.warning("supervisor pid %s ended without shutting down (killed or crashed)", previous["pid"])
            self.store_event("exit", "supervisor", f"pid {previous['pid']} ended without shutting down"
                             " (killed or crashed)", "supervisor", cause=Cause.SUPERVISOR_DOWN)
        self.cleanup_leftovers()
        if "forkserver" in self.components and not self.os.become_subreaper():
            log.warning("cannot become a child subreaper: every bot start is a cold start")
            self.warm_possible = False
        self.control.open()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_r = r
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)  # the wakeup fd carries the signal to the loop
        self.selector.register(r, selectors.EVENT_READ, ("signals", None))

    def cleanup_leftovers(self) -> None:
        """End what a previous (killed) supervisor left running, before starting anything."""
        timeout = lambda name: (self.settings.component(name) or self.settings).kill_timeout  # noqa: E731
        for name, pid in runfiles.stop_leftovers(self.settings, timeout, self.os.stop_all):
            log.warning("%s: stopped pid %s left behind by a previous supervisor", name, pid)
            self.store_event("orphan-stopped", name, f"pid {pid} left by a previous supervisor",
                             cause=Cause.SUPERVISOR_DOWN)

    # --- the loop --------------------------------------------------------------------------------
    def run(self) -> int:
        log.info("supervisor pid %s starting %s in %s%s", os.getpid(),
                 ", ".join(self.components), self.settings.home, " (DEMO)" if self.settings.demo_active else "")
        for comp in self.components.values():
            self.start(comp, Cause.INITIAL_START, "initial start", "supervisor")  # each writes run/state.json
        process.release_free_memory()  # start-up garbage (imports, parsing) back to the OS
        while not self.finished():
            self.step()
        self.close()
        return self.exit_code

    def finished(self) -> bool:
        return self.shutting_down and not any(c.state in LIVE for c in self.components.values())

    def step(self) -> None:
        pending = bool(self._deferred)  # queued by an earlier step: done after this one's events
        timeout = self.next_timeout()
        for key, _ in self.selector.select(timeout):
            kind, comp = key.data
            if kind == "signals":
                self._on_signals()
            elif kind == "pipe":
                self._on_pipe(key.fileobj, comp)
            else:
                self.control.on_event(kind, key.fileobj)
        if pending:
            self.run_deferred()
        self.on_timers()

    def later(self, job: Callable[[], None]) -> None:
        self._deferred.append(job)
        if self._deferred_by is None:
            self._deferred_by = self.clock() + BOOKKEEPING_DELAY

    def run_deferred(self) -> None:
        jobs, self._deferred, self._deferred_by = self._deferred, [], None
        for job in jobs:
            job()

    def next_timeout(self) -> float:
        now = self.clock()
        due = [self.next_recovery_check, self.next_state_check]
        if self._deferred_by is not None:
            due.append(self._deferred_by)
        if self.notifier.due() is not None:
            due.append(self.notifier.due())
        for comp in self.components.values():
            if comp.next_start_at is not None:
                due.append(comp.next_start_at)
            if comp.stop_deadline is not None:
                due.append(comp.stop_deadline)
            if comp.state == State.STARTING:
                due.append(comp.started_mono + comp.spec.start_seconds)
        return max(0.0, min(due) - now)

    def on_timers(self) -> None:
        now = self.clock()
        changed = False
        for comp in self.components.values():
            if comp.state == State.STARTING and now >= comp.started_mono + comp.spec.start_seconds:
                self._set(comp, State.RUNNING)
                changed = True
            if comp.next_start_at is not None and now >= comp.next_start_at and not self.shutting_down:
                comp.next_start_at = None
                self.start(comp, comp.next_start_cause, comp.next_start_reason, "supervisor")
                changed = True
            if comp.stop_deadline is not None and now >= comp.stop_deadline and comp.proc is not None:
                log.warning("%s: pid %s ignored SIGTERM for %.1f s: SIGKILL", comp.name, comp.pid, comp.spec.kill_timeout)
                self.os.signal_group(comp.pid, signal.SIGKILL)
                comp.stop_deadline = None
        if now >= self.next_recovery_check:
            self.next_recovery_check = now + self.settings.recovery_interval
            self.watch_recovery()
        if now >= self.next_state_check:
            self.next_state_check = now + STATE_CHECK_INTERVAL
            changed = changed or not self._state_is_ours()
        self.notifier.tick(lambda: sdnotify.health_line(self.settings, self.state(), self.redact))
        if changed or self._faults_changed:
            self._faults_changed = False
            self.write_state()

    # --- signals and exits -----------------------------------------------------------------------
    def _on_signals(self) -> None:
        try:
            data = os.read(self._wake_r, 4096)
        except BlockingIOError:
            data = b""
        sigs = set(data)
        if signal.SIGCHLD in sigs or not sigs:
            self.reap()
        if {signal.SIGTERM, signal.SIGINT} & sigs:
            self.shutdown("received SIGTERM" if signal.SIGTERM in sigs else "received SIGINT", "signal")
        if signal.SIGHUP in sigs and not self.shutting_down:
            self.reload("signal")

    def reap(self) -> None:
        for pid, status in self.os.reap():
            comp = self.by_pid.pop(pid, None)
            if comp is not None:
                self.on_exit(comp, status)

    def on_exit(self, comp: Component, status: int) -> None:
        now, wall = self.clock(), self.wall()
        code = os.waitstatus_to_exitcode(status)
        exit_code, exit_signal = (code, None) if code >= 0 else (None, -code)
        if comp.proc is not None:
            comp.proc.returncode = code  # we reaped it; keep Popen from waiting again
        self._drain(comp)
        self.os.signal_group(comp.pid, signal.SIGKILL)  # nothing of a dead component lingers
        ran_for = now - comp.started_mono
        old_pid = comp.pid
        comp.last_exit_code, comp.last_exit_signal, comp.last_exit_at = exit_code, exit_signal, wall
        comp.last_exit = policy.describe_exit(exit_code, exit_signal)
        comp.proc, comp.pid, comp.create_time = None, None, None
        comp.stop_deadline = None
        exit_detail = f"pid {old_pid} {comp.last_exit} after {ran_for:.1f} s"
        note = runfiles.take_exit_note(runfiles.exit_note_path(self.settings, comp.name), old_pid)

        if comp.state == State.STOPPING or self.shutting_down:
            if comp.after_stop == "restart" and not self.shutting_down:
                self.start(comp, comp.stop_cause, comp.stop_reason, comp.stop_by)
            else:
                self._set(comp, State.STOPPED)
                comp.cause = Cause.SHUTDOWN if self.shutting_down else comp.stop_cause
                comp.stopped_at = wall
                log.info("%s stopped (%s)", comp.name, comp.last_exit)
                if comp.retired and self.components.get(comp.name) is comp:
                    del self.components[comp.name]
            self.store_event("exit", comp.name, exit_detail, comp.stop_by or "supervisor", exit_code,
                             cause=comp.stop_cause if not self.shutting_down else Cause.SHUTDOWN)
            self.stop_the_last()
            self.write_state()
            return

        decision = policy.after_exit(comp.spec, exit_code, exit_signal, ran_for, comp.failures, now)
        comp.failures = decision.failures
        if decision.state == State.STARTING:
            # The fast path: respawn first, book-keep after the new child's first output is
            # served (or BOOKKEEPING_DELAY), so the restart costs milliseconds.
            self.start(comp, decision.cause, decision.detail, "supervisor", defer=True)
            self.later(lambda: self.store_event("exit", comp.name, exit_detail, "supervisor", exit_code, at=wall,
                                                cause=decision.cause))
            return
        cause, detail = note if note is not None else (decision.cause, decision.detail)
        self.store_event("exit", comp.name, exit_detail, "supervisor", exit_code, cause=cause)
        comp.cause = cause
        if decision.state == State.NEEDS_CONFIG:
            if note is None:
                detail = f"{decision.detail}: see logs/{comp.name}.log"
            comp.last_restart_reason = detail
            self._set(comp, State.NEEDS_CONFIG)
            log.error("%s exited with code %s (%s): %s. Not restarting until the setting is fixed"
                      " and `python -m botkeeper restart %s` is run.", comp.name, EX_CONFIG, cause.value, detail,
                      comp.name)
            self.store_event("needs-config", comp.name, detail, "supervisor", exit_code, cause=cause)
        else:
            self._set(comp, decision.state)
            comp.next_start_at = now + decision.delay
            comp.next_start_cause, comp.next_start_reason = cause, detail
            if decision.state == State.ERRORED:
                log.error("%s is errored: %s", comp.name, detail)
                self.store_event("errored", comp.name, detail, "supervisor", exit_code, cause=cause)
            else:
                log.warning("%s %s; restarting in %.1f s", comp.name, detail, decision.delay)
        self.write_state()

    # --- actions ---------------------------------------------------------------------------------
    def start(self, comp: Component, cause: Cause, reason: str, by: str, defer: bool = False) -> None:
        env = os.environ.copy()
        env.update(dict(comp.spec.env))
        env["BOTKEEPER_HOME"] = str(self.settings.home)
        env["BOTKEEPER_COMPONENT"] = comp.name
        env[runfiles.EXIT_NOTE_ENV] = str(runfiles.exit_note_path(self.settings, comp.name))
        env["PYTHONUNBUFFERED"] = "1"
        if self.settings.demo_active and comp.name == "bot":
            env["BOTKEEPER_DEMO"] = "1"
        try:
            proc = self._spawn(comp, env)
        except OSError as exc:
            # A missing program is a configuration problem, not something a restart loop fixes.
            self._set(comp, State.STARTING)
            comp.last_restart_reason = f"cannot run {comp.spec.command[0]!r}: {exc.strerror}"
            comp.cause = Cause.NEEDS_CONFIG
            self._set(comp, State.NEEDS_CONFIG)
            log.error("%s: %s", comp.name, comp.last_restart_reason)
            self.store_event("needs-config", comp.name, comp.last_restart_reason, by, cause=Cause.NEEDS_CONFIG)
            self.write_state()
            return
        now = self.clock()
        comp.proc, comp.pid = proc, proc.pid
        comp.started_mono, comp.started_at = now, self.wall()
        comp.create_time = self.os.create_time(proc.pid)  # None if already gone: its exit is reaped normally
        self.by_pid[proc.pid] = comp
        os.set_blocking(proc.stdout.fileno(), False)
        self.selector.register(proc.stdout, selectors.EVENT_READ, ("pipe", comp))
        comp.next_start_at = None
        comp.cause = cause
        self._set(comp, State.STARTING)
        if comp.ever_started:
            comp.restarts += 1
            comp.last_restart_reason, comp.last_restart_at = reason, comp.started_at
            self.recent_restarts.append({"at": comp.started_at, "component": comp.name, "cause": cause.value,
                                         "detail": self.redact(reason), "by": by})
            log.info("%s restarted (pid %s): %s: %s [by %s]", comp.name, proc.pid, cause.value, reason, by,
                     extra={"cause": cause.value})  # a field of its own in LOG_FORMAT=json
            event = ("restart", comp.name, reason, by)
        else:
            log.info("%s started (pid %s)", comp.name, proc.pid)
            event = ("start", comp.name, reason, by)
        comp.ever_started = True
        if defer:
            started_at = comp.started_at
            self.later(lambda: self.store_event(*event, at=started_at, cause=cause))
            self.later(self.write_state)
        else:
            self.store_event(*event, cause=cause)
            self.write_state()
        if self._forkserver_restart is not None:  # after the bot's start is on record
            (cause, reason), self._forkserver_restart = self._forkserver_restart, None
            self.stop(self.components["forkserver"], "restart", cause, reason, "supervisor")

    def _spawn(self, comp: Component, env: dict[str, str]):
        """A warm bot from the fork server when it is up (botkeeper/supervise/warm.py), else a cold spawn.
        Either way the previous bot is already reaped: never two pollers."""
        server = self.components.get("forkserver")
        argv = warm.python_argv(comp.spec.command, sys.executable) if comp.name == "bot" else None
        if argv is None or server is None or server.state not in (State.STARTING, State.RUNNING) \
                or not self.warm_possible or self.shutting_down:
            return self.os.spawn(comp.spec.command, env, self.settings.home)
        try:
            proc = self.os.spawn_warm(runfiles.forkserver_socket(self.settings), argv, env, self.settings.home)
            log.info("%s: warm start from the fork server", comp.name)
            return proc
        except warm.WarmRefused as refused:
            proc = self.os.spawn(comp.spec.command, env, self.settings.home)
            log.info("%s: cold start: %s", comp.name, refused)
            if refused.stale or refused.unresponsive:  # it reloads the code (or gets well) by a restart
                self._forkserver_restart = (Cause.DEPLOY if refused.stale else Cause.STUCK, str(refused))
            return proc

    def stop(self, comp: Component, then: str, cause: Cause, reason: str, by: str) -> None:
        """Ask a component to stop: SIGTERM+SIGCONT to its group now, SIGKILL at the deadline."""
        comp.after_stop, comp.stop_cause, comp.stop_reason, comp.stop_by = then, cause, reason, by
        if comp.state in (State.STARTING, State.RUNNING) and then == "restart" and cause.hang:
            # Known hung (its stack is already logged): a blocked loop cannot act on SIGTERM, and
            # waiting kill_timeout for it would only keep everybody else unanswered longer.
            self._set(comp, State.STOPPING)
            comp.stop_deadline = None
            self.os.signal_group(comp.pid, signal.SIGKILL)
            log.warning("%s killed (pid %s), known hung: %s [by %s]", comp.name, comp.pid, reason, by)
        elif comp.state in (State.STARTING, State.RUNNING):
            self._set(comp, State.STOPPING)
            comp.stop_deadline = self.clock() + comp.spec.kill_timeout
            self.os.terminate_group(comp.pid)
            log.info("%s stopping (pid %s): %s [by %s]", comp.name, comp.pid, reason, by)
        elif comp.state == State.STOPPING:
            pass  # already on its way; after_stop updated above
        else:  # not running: nothing to signal
            comp.next_start_at = None
            if then == "restart" and not self.shutting_down:
                self.start(comp, cause, reason, by)
            elif comp.state != State.STOPPED:
                self._set(comp, State.STOPPED)
                comp.cause, comp.stopped_at = cause, self.wall()
        self.write_state()

    def shutdown(self, reason: str, by: str) -> None:
        if not self.shutting_down and self.reexec:
            log.info("re-executing with the updated code: stopping the components first: %s", reason)
        elif not self.shutting_down:
            log.info("shutting down: %s", reason)
            self.notifier.stopping(reason)
            self.store_event("shutdown", None, reason, by, cause=Cause.SHUTDOWN)
            self.close_incidents("the bundle was stopped", Cause.SHUTDOWN)
        self.shutting_down, self.shutdown_reason, self.shutdown_by = True, reason, by
        # All at once (each with its own kill_timeout), but the demo's emulator last: it is the bot's
        # Telegram, and a bot whose server vanished mid-poll dies with a traceback instead of its goodbye.
        for comp in self.components.values():
            if comp.name not in STOPPED_LAST:
                self.stop(comp, "stopped", Cause.SHUTDOWN, reason, by)
        self.stop_the_last()

    def stop_the_last(self) -> None:
        """During a shutdown: once nothing else lives, stop the components kept for last."""
        if not self.shutting_down or any(c.state in LIVE for c in self.components.values()
                                         if c.name not in STOPPED_LAST):
            return
        for name in STOPPED_LAST:
            comp = self.components.get(name)
            if comp is not None and comp.state not in (State.STOPPING, State.STOPPED):
                self.stop(comp, "stopped", Cause.SHUTDOWN, self.shutdown_reason, self.shutdown_by)

    def watch_recovery(self) -> None:
        """auto_recovery.py watches us; we relaunch it when it is gone (unless an outer supervisor
        stands in for it, or we are stopping)."""
        if self.outer != "none" or self.shutting_down:
            return
        pid = bundle.relaunch_recovery(self.settings, self.os.spawn_detached)
        if pid is not None:
            log.warning("auto_recovery was not running: relaunched it (pid %s)", pid)
            self.store_event("relaunch", "auto_recovery", "auto_recovery was not running", "supervisor",
                             cause=Cause.CRASH)

    # --- bookkeeping -----------------------------------------------------------------------------
    def _set(self, comp: Component, new: State) -> None:
        comp.state = check_transition(comp.state, new)

    def store_event(self, kind: str, component: str | None, detail: str, by: str | None = None,
                    exit_code: int | None = None, at: float | None = None, cause: Cause | None = None) -> None:
        try:
            self.store.record(kind, component, self.redact(detail), by, exit_code, at, cause=cause)
        except Exception as exc:  # history must never take the supervisor down
            log.error("history: could not record %s for %s: %s", kind, component, exc)

    def close_incidents(self, why: str, cause: Cause = Cause.OPERATOR) -> None:
        """An operator's stop ends the open incident: the time after it is not downtime."""
        try:
            for inc in self.store.close_open_incidents(self.wall(), cause):
                log.info("incident %s closed: %s", inc, why)
        except Exception as exc:  # history must never take the supervisor down
            log.error("history: could not close the open incident: %s", exc)

    def state(self) -> dict[str, Any]:
        mono, wall = self.clock(), self.wall()
        return {
            "version": 1,
            "updated_at": wall,
            "supervisor": {"pid": os.getpid(), "create_time": _own_create_time(), "started_at": self.started_at,
                           "demo": self.settings.demo_active, "home": str(self.settings.home),
                           "shutting_down": self.shutting_down, "outer": self.outer, "version": self.version},
            "components": [c.snapshot(mono, wall) for c in self.components.values()],
            "recent_restarts": list(self.recent_restarts),
        } | ({"faults": list(self.faults.values())} if self.faults else {})

    def write_state(self) -> None:
        """run/state.json, atomically. When it cannot be written (run/ read-only, the disk full) the
        bundle runs on: readers ask us on the control socket instead (health/snapshot.py), the
        verdict says degraded with the cause, and the log says so once per episode, not per try."""
        path = self.settings.state_file
        try:
            runfiles.move_aside_if_not_file(path, self._moved_aside)
            atomic_write_json(path, self.state())
            st = os.stat(path)
            self._state_key = (st.st_ino, st.st_mtime_ns)
        except OSError as exc:
            self._state_key = None
            self.fault("run/state.json", exc, "readers ask the supervisor on run/control.sock instead")
            return
        if self.clear_fault("run/state.json"):
            self.write_state()  # once more, without the fault

    def fault(self, name: str, exc: OSError | None, consequence: str, cause: Cause | None = None) -> None:
        """One of our files cannot be written: logged once per episode (and again if the cause changes)."""
        cause = cause or runfiles.write_fault_cause(exc)
        why = (exc.strerror or str(exc)) if exc is not None else cause.label
        old = self.faults.get(name)
        detail = f"{name} cannot be {'rotated' if cause == Cause.LOG_ROTATION else 'written'} ({why}): {consequence}"
        self.faults[name] = {"file": name, "cause": cause.value, "detail": detail,
                             "since": old["since"] if old else self.wall()}
        if old is None or old["cause"] != cause.value:  # once per episode: a notice, alerted once
            self._faults_changed = True
            log.error("%s", detail)
            self.store_event(cause.value, None, detail, "supervisor", cause=cause)

    def clear_fault(self, name: str) -> bool:
        if self.faults.pop(name, None) is None:
            return False
        log.info("%s can be written again", name)
        self._faults_changed = True
        return True

    def _rotation(self, path: str, exc: OSError | None) -> None:
        """logs.on_rotation: a log of ours cannot rotate (capped), or can again."""
        name = os.path.relpath(path, self.settings.home)
        if exc is None:
            self.clear_fault(name)
        else:
            self.fault(name, exc, f"capped at LOG_MAX_BYTES={self.settings.log_max_bytes}: lines are dropped"
                       " until it can rotate", Cause.LOG_ROTATION)

    def _moved_aside(self, path, target) -> None:
        log.warning("%s was not a file: moved aside to %s", path, target.name)
        self.store_event(Cause.CORRUPT_FILE.value, None, f"{path.name} was not a file: moved aside to {target.name}",
                         "supervisor", cause=Cause.CORRUPT_FILE)

    def _state_is_ours(self) -> bool:
        """False when run/state.json is gone or was replaced by someone else (then we rewrite it)."""
        if "run/state.json" in self.faults:
            return False  # try again (quietly) each STATE_CHECK_INTERVAL: the fault may be over
        try:
            st = os.stat(self.settings.state_file)
        except OSError:
            return False
        if (st.st_ino, st.st_mtime_ns) == self._state_key:
            return True
        log.warning("run/state.json was changed by someone else: rewriting it")
        return False

    # --- child output ---------------------------------------------------------------------------
    def _on_pipe(self, pipe, comp: Component) -> None:
        if pipe.closed:  # closed earlier in this same batch of events (drained at exit)
            return
        if not self.output.read(pipe, comp.name):
            self._close_pipe(pipe, comp)

    def _drain(self, comp: Component) -> None:
        pipe = comp.proc.stdout if comp.proc else None
        if pipe is not None and not pipe.closed and not self.output.drain(pipe, comp.name):
            self._close_pipe(pipe, comp)

    def _close_pipe(self, pipe, comp: Component) -> None:
        self.output.finish(pipe, comp.name)
        try:
            self.selector.unregister(pipe)
        except (KeyError, ValueError):
            pass
        pipe.close()

    # --- control channel: botkeeper/supervise/control_server.py serves it, this answers ------------------------
    def handle(self, request: dict[str, Any]) -> Any:
        cmd = request.get("cmd")
        by = escape(str(request.get("by") or "control"), 40)
        # Operator-typed text (restart --reason) lands in state.json, history and logs: masked and
        # escaped here, once, whoever sent it.
        reason = escape(self.redact(str(request.get("reason") or f"requested by {by}")), 300)
        default = Cause.OPERATOR if by in OPERATORS else Cause.UNKNOWN
        cause = Cause.parse(request.get("cause"), default) if request.get("cause") else default
        if cmd == "status":
            return self.state()
        if cmd == "shutdown":
            self.shutdown(reason, by)
            return {"stopping": list(self.components)}
        if cmd == "reload":
            return self.reload(by)
        if cmd == "reexec":  # `update` changed botkeeper's own code: stop everything, exec the new code
            if isinstance(request.get("version"), str) and request["version"]:
                self.version = request["version"][:40]
            self.reexec = True
            self.shutdown(reason, by)
            return {"reexec": os.getpid()}
        if cmd == "deploy":
            return self.deploy(cause if request.get("cause") else Cause.DEPLOY, reason, by, request.get("version"))
        if cmd == "event":
            kind = str(request.get("kind") or "")[:40]
            if not kind:
                raise ValueError("event needs a kind")
            self.store_event(kind, request.get("component"), str(request.get("detail") or "")[:500], by,
                             cause=cause if request.get("cause") else None)
            return {"recorded": kind}
        if cmd not in ("restart", "start", "stop"):
            raise ValueError(f"unknown command {cmd!r}: expected status, restart, start, stop, shutdown, event,"
                             " reload or deploy")
        name = request.get("name")
        comp = self.components.get(name)
        if comp is None:
            raise KeyError(f"unknown component {name!r}: expected one of {', '.join(self.components)}")
        if self.shutting_down:
            raise ValueError("the supervisor is shutting down")
        if cmd == "restart":
            comp.failures = ()  # an asked-for restart starts a fresh backoff record
            self.stop(comp, "restart", cause, reason, by)
        elif cmd == "start":
            if comp.state not in LIVE:
                comp.failures = ()
                comp.next_start_at = None
                self.start(comp, cause, reason, by)
        else:
            if comp.name == "bot" and cause.planned:  # before the new state is written: one "when"
                self.close_incidents(f"the bot was stopped ({cause.value})")
            self.stop(comp, "stopped", cause, reason, by)
        return comp.snapshot(self.clock(), self.wall())

    # --- live reload and deploys ----------------------------------------------------------------------
    def reload(self, by: str) -> dict[str, Any]:
        """Re-read .env and botkeeper.toml over the environment we started with. A bad configuration is
        refused with its named error and the running one kept; otherwise reload_plan says what to do."""
        if self.shutting_down:
            raise ValueError("the supervisor is shutting down")
        try:
            new = Settings.from_env(self.start_environ, home=self.settings.home)
        except ConfigError as exc:
            log.error("reload refused, keeping the running settings: configuration error: %s", exc)
            return {"error": f"configuration error: {exc}"}
        plan = reload_plan.plan(self.settings, new)
        log.info("reload [by %s]: %s", by, "nothing changed" if plan.nothing else
                 "; ".join(f"{k} {', '.join(v)}" for k, v in plan.as_dict().items() if v))
        if plan.nothing:
            return plan.as_dict()
        self.settings = new
        self.redact.add(new.secrets() + [new.bot_token or ""])  # the same object the log filters hold
        reason = "configuration reloaded: " + (", ".join(plan.changed) or "components changed")
        for name in plan.remove:
            comp = self.components[name]
            comp.retired = True
            if comp.state in LIVE:
                self.stop(comp, "stopped", Cause.RELOAD, reason, by)
            else:
                del self.components[name]
        for name in plan.respec:
            self.components[name].spec = new.component(name)
        for name in plan.restart:
            comp = self.components[name]
            comp.failures = ()
            if comp.state in LIVE:
                self.stop(comp, "restart", Cause.RELOAD, reason, by)
            elif comp.state != State.STOPPED:  # waiting in backoff, errored or needs-config: try the new one now
                comp.next_start_at = None
                self.start(comp, Cause.RELOAD, reason, by)
        for name in plan.start:
            comp = self.components[name] = Component(new.component(name))
            self.output.add_child(name)
            self.start(comp, Cause.RELOAD, reason, by)
        self.store_event("reload", None, reason, by, cause=Cause.RELOAD)
        self.write_state()
        return plan.as_dict()

    def deploy(self, cause: Cause, reason: str, by: str, version: Any) -> dict[str, Any]:
        """A new (or the previous) version is on disk: restart every component gracefully."""
        if self.shutting_down:
            raise ValueError("the supervisor is shutting down")
        if isinstance(version, str) and version:
            self.version = version[:40]
        for comp in self.components.values():
            comp.failures = ()  # the new version starts a fresh backoff record
            if comp.state in LIVE:
                self.stop(comp, "restart", cause, reason, by)
            else:
                comp.next_start_at = None
                self.start(comp, cause, reason, by)
        self.write_state()
        return {"version": self.version, "restarting": list(self.components)}

    # --- shutdown --------------------------------------------------------------------------------
    def close(self) -> None:
        self.run_deferred()
        self.write_state()
        log.info("supervisor stopped: %s", self.shutdown_reason)
        self.control.close()
        try:
            (self.settings.run_dir / "supervisor.pid").unlink()
        except FileNotFoundError:
            pass
        self.store.close()


_CREATE_TIME: float | None = None


def _own_create_time() -> float:
    global _CREATE_TIME
    if _CREATE_TIME is None:
        _CREATE_TIME = create_time(os.getpid())
    return _CREATE_TIME


def main(settings: Settings) -> int:
    supervisor = Supervisor(settings)
    if not supervisor.acquire_lock():
        pid = (read_json(settings.run_dir / "supervisor.pid") or {}).get("pid", "?")
        print(f"botkeeper: another supervisor (pid {pid}) already owns {settings.home}", file=sys.stderr)
        return EX_LOCKED
    supervisor.setup()
    try:
        code = supervisor.run()
    except Exception:
        log.exception("supervisor crashed")  # run_24_7.sh restarts us; the next start cleans up
        return 1
    if supervisor.reexec:
        # Same pid (run_24_7.sh, systemd and a container still see their child), new code. Our fds are
        # close-on-exec: the lock and the control socket are free for the new supervisor.
        log.info("re-executing %s -m botkeeper supervise", sys.executable)
        logging.shutdown()
        os.execve(sys.executable, [sys.executable, "-m", "botkeeper", "supervise"], supervisor.start_environ)
    return code
