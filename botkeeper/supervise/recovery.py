"""auto_recovery: the outer watchdog, outside the supervisor's tree, driven by `schedule`.

Every RECOVERY_INTERVAL one pass (`check()`):
  - run/stopping exists            -> a stop is under way or done: exit 0.
  - run_24_7.sh gone               -> relaunch it (bundle.spawn_runner, as start does). If the
                                      supervisor still runs, the new runner blocks on the
                                      supervisor's lock and takes over when it ends.
  - supervisor gone, runner alive  -> the runner restarts it; after HEALTH_GRACE without one the
                                      runner is stuck: replace it.
  - supervisor holds its lock but does not answer for long (SIGSTOPped, wedged) -> stop it
                                      (verified pid); the runner starts a fresh one.
  - a component stuck non-running  -> ask the supervisor to start it (see watch_policy).
  - GET /health not connecting 3x  -> ask the supervisor to restart `web` (503 is an answer).
  - disk free < MIN_FREE_DISK_MB   -> delete rotated logs and log archives, oldest first, say so,
                                      and record one `disk-full` event per spell (alerted once).
  - UPDATE_TRIGGER exists          -> remove it and run `python -m botkeeper update` detached
                                      (logs/update.log); left for the next pass while one runs.
Daily (and once at start): archive rotated logs older than a day into
logs_archive/logs_YYYYMMDD.tar.gz; delete archives older than LOG_RETENTION_DAYS.

Every action is recorded: through the supervisor's `event` command when it answers, else straight
into the history database. Single instance: flock on run/recovery.lock for the process' lifetime.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from . import bundle, control, process
from .. import runfiles
from ..causes import Cause
from ..config import PACKAGE_ROOT, Settings
from ..fsutil import write_pidfile
from ..store import Store
from ..health.watch_policy import MIB, RELAUNCH, REPLACE_RUNNER, older_than, prune_plan, roots_action, stuck_components, web_check

log = logging.getLogger("auto_recovery")
BY = "auto_recovery"
DAY = 86400.0


def health_url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def http_connects(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """(True, status) for any HTTP answer to GET /health, (False, why) when nothing answers."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/health", headers={"User-Agent": "botkeeper-auto-recovery"})
        resp = conn.getresponse()
        resp.read(65536)
        return True, str(resp.status)
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


class Recovery:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, call: Callable[..., Any] = control.call,
                 spawn_runner: Callable[[Settings], int] = bundle.spawn_runner,
                 probe_web: Callable[[str, int, float], tuple[bool, str]] = http_connects,
                 disk_free: Callable[[], int] | None = None):
        self.settings = settings
        self.clock, self.wall, self.call = clock, wall, call
        self.spawn_runner = spawn_runner
        self.probe_web = probe_web
        self.disk_free = disk_free or (lambda: shutil.disk_usage(settings.home).free)
        self.stopping = threading.Event()
        self.supervisor_gone_since: float | None = None
        self.unanswered_since: float | None = None
        self.first_seen: dict[str, float] = {}
        self.web_failures = 0
        self.web_pid: int | None = None
        self.disk_low = False
        self.disk_noticed = False  # this low-space spell's disk-full event is recorded
        self._lock_fd: int | None = None

    # --- single instance ---------------------------------------------------------------------------
    def acquire_lock(self, wait: float = 0.3) -> bool:
        """Hold run/recovery.lock for our lifetime. A short retry rides out a probe by the
        supervisor (it takes the lock for an instant to see whether we run)."""
        fd = runfiles.wait_lock(self.settings, "recovery", wait)
        if fd is None:
            return False
        self._lock_fd = fd
        write_pidfile(runfiles.pidfile(self.settings, "recovery"))
        return True

    def release(self) -> None:
        if self._lock_fd is not None:
            try:  # ours: nobody else writes it while we hold the lock
                runfiles.pidfile(self.settings, "recovery").unlink()
            except FileNotFoundError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- one pass ----------------------------------------------------------------------------------
    def stop_requested(self) -> bool:
        return self.stopping.is_set() or runfiles.is_stopping(self.settings)

    def check(self) -> list[str]:
        """One watchdog pass; returns what it did (tests read it)."""
        if self.stop_requested():
            self.stopping.set()
            return ["stopping"]
        s, now = self.settings, self.clock()
        runner_alive = runfiles.lock_held(s, "runner") or runfiles.root_process(s, "runner") is not None
        sup_alive = runfiles.lock_held(s, "supervisor")
        if runner_alive and not sup_alive:
            self.supervisor_gone_since = self.supervisor_gone_since or now
        else:
            self.supervisor_gone_since = None
        gone_for = None if self.supervisor_gone_since is None else now - self.supervisor_gone_since
        action = roots_action(runner_alive, sup_alive, gone_for, s.health_grace)
        done: list[str] = []
        if action == RELAUNCH:
            why = ("run_24_7.sh was not running; the supervisor still runs, the new runner takes over"
                   " when it ends") if sup_alive else "run_24_7.sh and the supervisor were not running"
            done += self.relaunch_runner(why, sup_alive)
        elif action == REPLACE_RUNNER:
            done += self.replace_runner(gone_for or 0.0)
        if sup_alive:
            done += self.check_supervisor(now)
            done += self.check_update_trigger()
        else:
            self.unanswered_since = None
        done += self.trim_plain_logs()
        done += self.check_disk()
        return done

    # Outputs written by shells and crash tracebacks, not by our rotating handler.
    PLAIN_LOGS = ("runner.log", "auto_recovery.out")

    def trim_plain_logs(self) -> list[str]:
        """Keep runner.log and auto_recovery.out within LOG_MAX_BYTES: copy to NAME.1, then
        truncate in place (their writers append with O_APPEND, so they carry on at the new end)."""
        s, done = self.settings, []
        for name in self.PLAIN_LOGS:
            path = s.logs_dir / name
            try:
                if path.stat().st_size <= s.log_max_bytes:
                    continue
                shutil.copyfile(path, path.with_name(name + ".1"))
                os.truncate(path, 0)
            except OSError as exc:
                log.warning("logs: cannot trim %s: %s", name, exc)
                continue
            log.info("logs: %s reached LOG_MAX_BYTES=%s; moved to %s.1", name, s.log_max_bytes, name)
            done.append(f"trim-{name}")
        return done

    def relaunch_runner(self, why: str, supervisor_alive: bool) -> list[str]:
        if self.stop_requested():  # a stop began during this pass: never start anything now
            return []
        pid = self.spawn_runner(self.settings)
        log.warning("run_24_7.sh: relaunched (pid %s): %s", pid, why)
        self.record("relaunch", "run_24_7.sh", f"{why}; relaunched as pid {pid}", supervisor_alive,
                    Cause.SUPERVISOR_DOWN)
        self.supervisor_gone_since = None
        return ["relaunch-runner"]

    def replace_runner(self, gone_for: float) -> list[str]:
        runner = runfiles.root_process(self.settings, "runner")
        why = f"the supervisor has been gone for {gone_for:.0f} s (HEALTH_GRACE={self.settings.health_grace:g})" \
              " while run_24_7.sh ran"
        if runner is not None:
            log.warning("run_24_7.sh: pid %s is not restarting the supervisor: replacing it", runner.pid)
            process.stop_verified(runner.pid, runner.create_time(), 5.0)
        return self.relaunch_runner(why, False)

    def check_supervisor(self, now: float) -> list[str]:
        s = self.settings
        try:
            state = self.call(s, "status", timeout=max(1.0, min(3.0, s.recovery_interval)))
        except (control.SupervisorUnavailable, control.ControlError) as exc:
            self.unanswered_since = self.unanswered_since or now
            waited = now - self.unanswered_since
            limit = self.hung_after()
            log.info("supervisor: holds its lock but does not answer (%.1f s of %g s): %s", waited, limit, exc)
            if waited > limit:
                return self.stop_hung_supervisor(waited)
            return []
        self.unanswered_since = None
        if not isinstance(state, dict) or state.get("supervisor", {}).get("shutting_down"):
            return []
        comps = [c for c in state.get("components", []) if isinstance(c, dict)]
        done = []
        stuck, self.first_seen = stuck_components(comps, self.wall(), self.first_seen, s.health_grace)
        for name, why in stuck:
            done += self.ask(name, "start", Cause.STUCK, f"{name} {why} (HEALTH_GRACE={s.health_grace:g} s)")
        web = next((c for c in comps if c.get("name") == "web"), None)
        done += self.check_web(web)
        return done

    def check_update_trigger(self) -> list[str]:
        """UPDATE_TRIGGER appeared (a CI job, a git hook touched it): run one update, detached, so this
        watchdog goes on watching while the update waits for the new bot's health."""
        s = self.settings
        path = s.update_trigger_file
        if not path.exists() or runfiles.lock_held(s, "update") or self.stop_requested():
            return []
        try:
            path.unlink()
        except FileNotFoundError:
            return []
        env = os.environ | {"BOTKEEPER_HOME": str(s.home)}
        pid = process.spawn_detached([sys.executable, "-m", "botkeeper", "update", "--by", "trigger"], env,
                                     PACKAGE_ROOT, s.logs_dir / "update.log")
        log.info("update: %s appeared: running `botkeeper update` (pid %s, output in logs/update.log)", path, pid)
        return ["update"]

    def hung_after(self) -> float:
        """How long a supervisor may hold its lock without answering: its start-up cleanup can
        block for a kill_timeout per leftover component."""
        s = self.settings
        kill = max([c.kill_timeout for c in s.components] + [s.kill_timeout])
        return max(s.health_grace, 4 * kill)

    def stop_hung_supervisor(self, waited: float) -> list[str]:
        sup = runfiles.root_process(self.settings, "supervisor")
        if sup is None or self.stop_requested():
            return []
        why = f"the supervisor (pid {sup.pid}) held its lock without answering for {waited:.0f} s"
        log.error("supervisor: %s: stopping it so run_24_7.sh starts a fresh one", why)
        self.record("hung", "supervisor", why, False, Cause.SUPERVISOR_HUNG)
        process.stop_verified(sup.pid, sup.create_time(), self.settings.kill_timeout + 5)
        self.unanswered_since = None
        return ["stop-hung-supervisor"]

    def check_web(self, web: dict | None) -> list[str]:
        s = self.settings
        started = (web or {}).get("started_at")
        if (not web or web.get("state") != "running" or not web.get("pid")
                or not isinstance(started, (int, float)) or self.wall() - started < s.health_grace):
            self.web_failures, self.web_pid = 0, None
            return []
        if web["pid"] != self.web_pid:
            self.web_failures, self.web_pid = 0, web["pid"]
        host = health_url_host(s.host)
        ok, detail = self.probe_web(host, s.port, max(1.0, min(5.0, s.recovery_interval)))
        self.web_failures, restart = web_check(self.web_failures, ok)
        if not ok:
            log.warning("web: GET http://%s:%s/health failed (%d in a row): %s", host, s.port, self.web_failures, detail)
        if not restart:
            return []
        self.web_failures = 0
        return self.ask("web", "restart", Cause.WEB_UNRESPONSIVE,
                        f"status page not answering on port {s.port} for 3 checks ({detail})")

    def ask(self, name: str, cmd: str, cause: Cause, reason: str) -> list[str]:
        log.warning("%s: asking the supervisor to %s it: %s", name, cmd, reason)
        try:
            self.call(self.settings, cmd, name=name, cause=cause.value, reason=reason, by=BY, timeout=3.0)
        except (control.SupervisorUnavailable, control.ControlError) as exc:
            log.error("%s: the supervisor did not %s it: %s", name, cmd, exc)
            return []
        return [f"{cmd}-{name}"]

    # --- disk and logs -------------------------------------------------------------------------------
    def rotated_logs(self) -> list[tuple[str, float, int]]:
        return _files(p for p in self.settings.logs_dir.glob("*.log.*") if p.suffix[1:].isdigit())

    def log_archives(self) -> list[tuple[str, float, int]]:
        return _files(self.settings.archive_dir.glob("logs_*.tar.gz"))

    def check_disk(self) -> list[str]:
        s = self.settings
        need = s.min_free_disk_mb * MIB
        try:
            free = self.disk_free()
        except OSError as exc:
            log.warning("disk: cannot read free space: %s", exc)
            return []
        if free >= need:
            if self.disk_low:
                log.info("disk: %.0f MB free again", free / MIB)
            self.disk_low = self.disk_noticed = False
            return []
        done = self.prune_for_space(free, need)
        if not self.disk_noticed:
            self.disk_noticed = self.notice_disk_full(free)
        return done

    def notice_disk_full(self, free: int) -> bool:
        """Record one `disk-full` event per low-space spell (the alerter sends it once). Written
        straight into the store, after pruning, so a failure is seen and retried on the next pass."""
        s = self.settings
        try:
            free = self.disk_free()  # after pruning
        except OSError:
            pass
        detail = (f"free space {free / MIB:.1f} MB is below MIN_FREE_DISK_MB={s.min_free_disk_mb}"
                  f" on the disk of {s.home}: old logs are pruned; free space or add disk")
        store = Store(s.history_db)
        try:
            store.record(Cause.DISK_FULL.value, None, detail, BY)
            return True
        except sqlite3.Error as exc:
            log.error("disk: could not record that the disk is full (retrying next pass): %s", exc)
            return False
        finally:
            store.close()

    def prune_for_space(self, free: int, need: int) -> list[str]:
        """Delete rotated logs and log archives, oldest first, until `need` bytes are free."""
        s = self.settings
        rotated = self.rotated_logs() + self.log_archives()
        plan = prune_plan(rotated, free, need)
        sizes = {p: size for p, _, size in rotated}
        removed, freed = [], 0
        for path in plan:
            try:
                os.unlink(path)
            except OSError as exc:
                log.warning("disk: cannot delete %s: %s", path, exc)
                continue
            removed.append(Path(path).name)
            freed += sizes[path]
        if removed:
            detail = (f"free space {free / MIB:.0f} MB below MIN_FREE_DISK_MB={s.min_free_disk_mb}: deleted"
                      f" {len(removed)} old logs ({freed / MIB:.1f} MB), oldest first: {', '.join(removed[:10])}")
            log.warning("disk: %s", detail)
            self.record("logs-pruned", None, detail)
            self.disk_low = True
            return ["prune-logs"]
        if not self.disk_low:
            detail = f"free space {free / MIB:.0f} MB below MIN_FREE_DISK_MB={s.min_free_disk_mb}; no rotated logs left to delete"
            log.warning("disk: %s", detail)
            self.record("disk-low", None, detail)
            self.disk_low = True
        return []

    def daily(self) -> list[str]:
        """Archive rotated logs older than a day; delete archives older than LOG_RETENTION_DAYS."""
        if self.stop_requested():
            return []
        s, now = self.settings, self.wall()
        done = []
        old = older_than([(p, m) for p, m, _ in self.rotated_logs()], now, DAY)
        if old:
            archive = self.archive(old, now)
            detail = f"archived {len(old)} rotated logs older than a day into {s.archive_dir.name}/{archive.name}"
            log.info("logs: %s", detail)
            self.record("logs-archived", None, detail)
            done.append("archive")
        archives = [(path, mtime) for path, mtime, _ in self.log_archives()]
        expired = older_than(archives, now, s.log_retention_days * DAY)
        for path in expired:
            try:
                os.unlink(path)
            except OSError as exc:
                log.warning("logs: cannot delete %s: %s", path, exc)
        if expired:
            detail = (f"deleted {len(expired)} log archives older than LOG_RETENTION_DAYS={s.log_retention_days}: "
                      + ", ".join(Path(p).name for p in expired[:10]))
            log.info("logs: %s", detail)
            self.record("archives-deleted", None, detail)
            done.append("delete-archives")
        return done

    def archive(self, paths: list[str], now: float) -> Path:
        s = self.settings
        s.archive_dir.mkdir(parents=True, exist_ok=True)
        stem = "logs_" + time.strftime("%Y%m%d", time.localtime(now))
        target, n = s.archive_dir / f"{stem}.tar.gz", 1
        while target.exists():  # a second archive the same day (we were restarted)
            n += 1
            target = s.archive_dir / f"{stem}-{n}.tar.gz"
        tmp = target.with_name("." + target.name + ".tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            for path in paths:
                tar.add(path, arcname=Path(path).name)
        os.replace(tmp, target)
        for path in paths:
            try:
                os.unlink(path)
            except OSError as exc:
                log.warning("logs: archived %s but cannot delete it: %s", path, exc)
        return target

    # --- recording ---------------------------------------------------------------------------------
    def record(self, kind: str, component: str | None, detail: str, via_supervisor: bool = True,
               cause: Cause | None = None) -> None:
        """Through the supervisor when it answers (one writer of record), else into the store."""
        if via_supervisor:
            try:
                self.call(self.settings, "event", kind=kind, component=component, detail=detail, by=BY,
                          cause=cause.value if cause else None, timeout=3.0)
                return
            except (control.SupervisorUnavailable, control.ControlError):
                pass
        store = Store(self.settings.history_db)
        try:
            store.record(kind, component, detail, BY, cause=cause)
        except sqlite3.Error as exc:
            log.error("history: could not record %s: %s", kind, exc)
        finally:
            store.close()

    # --- the loop ----------------------------------------------------------------------------------
    def guarded(self, job: Callable[[], list[str]]) -> None:
        try:
            job()
        except Exception:  # one failed pass must not end the watchdog; the next pass retries
            log.exception("auto_recovery: %s pass failed", job.__name__)

    def run(self) -> int:
        import schedule

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.stopping.set())
        s = self.settings
        logging.getLogger("schedule").setLevel(logging.WARNING)  # it logs every job run at DEBUG
        log.info("auto_recovery pid %s watching %s every %g s", os.getpid(), s.home, s.recovery_interval)
        sched = schedule.Scheduler()
        sched.every(s.recovery_interval).seconds.do(self.guarded, self.check)
        sched.every(1).days.do(self.guarded, self.daily)
        self.guarded(self.check)
        self.guarded(self.daily)
        while not self.stop_requested():
            sched.run_pending()
            idle = sched.idle_seconds
            self.stopping.wait(min(max(0.01, idle if idle is not None else s.recovery_interval), s.recovery_interval))
        log.info("auto_recovery stopping (%s)", "stop requested" if runfiles.is_stopping(s) else "signal")
        return 0


def _files(paths: Iterable[Path]) -> list[tuple[str, float, int]]:
    """(path, mtime, size) of each file that still exists."""
    out = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime, st.st_size))
    return out


def main(settings: Settings) -> int:
    recovery = Recovery(settings)
    if not recovery.acquire_lock():
        return 0  # another auto_recovery already watches this bundle
    try:
        return recovery.run()
    except Exception:  # process boundary: the supervisor relaunches us
        log.exception("auto_recovery crashed")
        return 1
    finally:
        recovery.release()
