"""`python -m botkeeper update`: deploy the upstream version with a health-gated rollback.

1. Refuse, changing nothing, when: another update runs (run/update.lock), the bundle is not running,
   the home is not a git work tree, tracked files have local changes (dirty tree), there is no
   upstream, or the upstream is not a fast-forward of HEAD.
2. `git fetch` + `git merge --ff-only @{upstream}` (what `git pull --ff-only` does, in two steps so a
   non-fast-forward is named before anything changes), or UPDATE_COMMAND when set.
3. `pip install -r requirements.txt` with this interpreter, only if requirements.txt changed.
4. The supervisor restarts every component gracefully (control `deploy`, cause deploy), then
   update_policy decides, look after look, until UPDATE_HEALTH_TIMEOUT: keep the new version once the
   verdict is healthy with the new bot's own heartbeat; roll back when the new bot exits or time runs out.
5. Rollback: `git reset --hard <previous commit>` (safe only because a dirty tree was refused in 1:
   the reset throws away nothing but the update), reinstall if requirements differed, restart every
   component (cause rollback), wait for health again, and record a `rollback` event that the alerter
   sends as one alert: "update to <sha> rolled back: <cause>".

Every deploy and rollback is an event with its commits (history). Exit codes: 0 updated or already
up to date, 1 rolled back, 3 the bundle is not running, 4 refused (nothing changed), 75 another
update is running. auto_recovery runs this when UPDATE_TRIGGER (default run/update.trigger) appears.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any, Callable

from ..supervise import control
from .. import runfiles
from ..causes import Cause
from ..config import ConfigError, EX_CONFIG, Settings
from .update_policy import KEEP, ROLL_BACK, Look, Step, Watch, decide

EX_ROLLED_BACK, EX_NOT_RUNNING, EX_REFUSED, EX_BUSY = 1, 3, 4, 75
LOOK_EVERY = 0.1


class Refused(Exception):
    """The update cannot start; nothing was changed. `reason` is a short name, the message says more."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# --- git ------------------------------------------------------------------------------------------
def git(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=settings.home, capture_output=True, text=True, timeout=timeout,
                          env=os.environ | {"GIT_TERMINAL_PROMPT": "0"})


def head(settings: Settings) -> str:
    res = git(settings, "rev-parse", "HEAD")
    if res.returncode != 0:
        raise Refused("not-a-git-repository", f"{settings.home} is not a git work tree: {last_line(res)}")
    return res.stdout.strip()


def last_line(res: subprocess.CompletedProcess) -> str:
    lines = (res.stderr or res.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit code {res.returncode}"


def check_clean(settings: Settings) -> None:
    """Local changes to tracked files would be lost by a rollback's reset: refuse them. Untracked
    files (handlers.py, .env, run/ ...) are left alone by both the pull and the reset."""
    res = git(settings, "status", "--porcelain", "--untracked-files=no")
    if res.returncode != 0:
        raise Refused("not-a-git-repository", f"git status failed in {settings.home}: {last_line(res)}")
    changed = [line[3:] for line in res.stdout.splitlines() if line.strip()]
    if changed:
        raise Refused("dirty-tree", f"the work tree has local changes ({', '.join(changed[:5])}"
                                    f"{' ...' if len(changed) > 5 else ''}): commit or stash them first")


def bring_in(settings: Settings, old: str) -> str:
    """Fetch and fast-forward (or run UPDATE_COMMAND); the new HEAD (== old: nothing to do)."""
    if settings.update_command:
        res = subprocess.run(list(settings.update_command), cwd=settings.home, capture_output=True, text=True,
                             timeout=600)
        if res.returncode != 0:
            raise Refused("update-command-failed", f"UPDATE_COMMAND failed: {last_line(res)}")
        return head(settings)
    res = git(settings, "fetch", "--quiet")
    if res.returncode != 0:
        raise Refused("fetch-failed", f"git fetch failed: {last_line(res)}")
    res = git(settings, "rev-parse", "@{upstream}")
    if res.returncode != 0:
        raise Refused("no-upstream", f"the current branch has no upstream to pull from: {last_line(res)}")
    upstream = res.stdout.strip()
    if upstream == old:
        return old
    if git(settings, "merge-base", "--is-ancestor", old, upstream).returncode != 0:
        raise Refused("non-fast-forward", f"upstream {upstream[:7]} is not a fast-forward of {old[:7]}"
                                          " (local commits or a rewritten history): merge it by hand")
    res = git(settings, "merge", "--ff-only", "--quiet", upstream)
    if res.returncode != 0:
        raise Refused("merge-failed", f"git merge --ff-only failed: {last_line(res)}")
    return upstream


def requirements_differ(settings: Settings, a: str, b: str) -> bool:
    return git(settings, "diff", "--quiet", a, b, "--", "requirements.txt").returncode != 0


def own_code_changed(settings: Settings, a: str, b: str) -> tuple[bool, bool]:
    """(the supervisor's code changed, auto_recovery's code changed) between commits a and b: the
    supervisor runs botkeeper/, auto_recovery runs auto_recovery.py and botkeeper/."""
    res = git(settings, "diff", "--name-only", a, b)
    names = res.stdout.split() if res.returncode == 0 else []
    supervisor = any(n.startswith("botkeeper/") and n.endswith(".py") for n in names)
    return supervisor, supervisor or "auto_recovery.py" in names


def restart_recovery(settings: Settings) -> bool:
    """auto_recovery onto the new code: stopped here, relaunched by the supervisor (its lock is free)."""
    import signal

    proc = runfiles.root_process(settings, "recovery")
    if proc is None:
        return False
    try:
        proc.send_signal(signal.SIGTERM)
    except OSError:
        return False
    return True


def pip_install(settings: Settings) -> tuple[bool, str]:
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "requirements.txt"],
                         cwd=settings.home, capture_output=True, text=True, timeout=900)
    return res.returncode == 0, last_line(res)


# --- the update -----------------------------------------------------------------------------------
class Updater:
    def __init__(self, settings: Settings, by: str = "cli", say: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.by, self.say, self.clock = settings, by, say, clock

    def call(self, cmd: str, **args: Any) -> Any:
        return control.call(self.settings, cmd, timeout=10.0, **args)

    def record(self, kind: Cause, detail: str) -> None:
        """A history row of kind deploy/rollback, through the supervisor (the one writer of record)."""
        self.call("event", kind=kind.value, cause=kind.value, detail=detail, by=self.by)

    def bot_row(self, state: dict[str, Any]) -> dict[str, Any]:
        return next((c for c in state.get("components", []) if c.get("name") == "bot"), {})

    def look(self) -> Look:
        from ..health.verdict import read_and_judge

        state = self.call("status")
        _, verdict = read_and_judge(self.settings, answered_state=state)
        bot = self.bot_row(state)
        detail = "; ".join(str(x) for x in (bot.get("last_exit"), bot.get("last_restart_reason")) if x)
        return Look(now=self.clock(), bot_pid=bot.get("pid"), bot_state=bot.get("state"),
                    bot_restarts=int(bot.get("restarts") or 0), bot_cause=bot.get("cause"), bot_detail=detail,
                    healthy=verdict.healthy, heartbeat_own=verdict.heartbeat.own,
                    heartbeat_used=verdict.heartbeat.enabled, verdict_cause=verdict.cause.value if verdict.cause else None,
                    verdict_detail=verdict.detail)

    def roll_out(self, cause: Cause, version: str, reason: str, reexec: bool = False) -> Step:
        """Restart every component on what is now on disk; wait for update_policy's verdict. With
        `reexec` (botkeeper's own code changed) the supervisor stops them, execs the new code in its
        own process and starts them again: still one restart of the bot, counted from a fresh record."""
        state = self.call("status")
        bot = self.bot_row(state)
        old_supervisor = (state.get("supervisor") or {}).get("started_at")
        watch = Watch(old_pid=bot.get("pid"), base_restarts=-1 if reexec else int(bot.get("restarts") or 0),
                      deadline=self.clock() + self.settings.update_health_timeout,
                      timeout=self.settings.update_health_timeout)
        if reexec:
            self.say("botkeeper's own code changed: the supervisor re-executes with it")
            self.call("reexec", cause=cause.value, version=version, reason=reason, by=self.by)
        else:
            self.call("deploy", cause=cause.value, version=version, reason=reason, by=self.by)
        while True:
            if reexec:
                try:
                    started = (self.call("status").get("supervisor") or {}).get("started_at")
                except control.SupervisorUnavailable:
                    started = old_supervisor  # between the old supervisor and the new one
                if started == old_supervisor:
                    if self.clock() >= watch.deadline:
                        return Step(ROLL_BACK, Cause.SUPERVISOR_DOWN, "the supervisor did not come back with the"
                                    f" new code within UPDATE_HEALTH_TIMEOUT={watch.timeout:g} s")
                    time.sleep(LOOK_EVERY)
                    continue
            step = decide(watch, self.look())
            if step.action != "wait":
                return step
            time.sleep(LOOK_EVERY)

    def run(self) -> int:
        s = self.settings
        started = self.clock()
        old = head(s)
        check_clean(s)
        new = bring_in(s, old)
        if new == old:
            self.say(f"already up to date at {old[:7]}")
            return 0
        short_old, short_new = old[:7], new[:7]
        self.say(f"{short_old} -> {short_new}: fetched")
        reinstall = requirements_differ(s, old, new)
        step = Step(KEEP)
        if reinstall:
            self.say("requirements.txt changed: pip install -r requirements.txt")
            ok, why = pip_install(s)
            if not ok:
                step = Step(ROLL_BACK, Cause.NEEDS_CONFIG, f"pip install failed: {why}")
        self.record(Cause.DEPLOY, f"update {short_old} -> {short_new} [by {self.by}]")
        self.own = own_code_changed(s, old, new)
        if step.action == KEEP:
            step = self.roll_out(Cause.DEPLOY, short_new, f"update {short_old} -> {short_new}", reexec=self.own[0])
        if step.action == KEEP:
            if self.own[1] and restart_recovery(s):
                self.say("auto_recovery restarted onto the new code")
            self.say(f"updated to {short_new}: healthy with the new bot after {self.clock() - started:.1f} s")
            return 0
        return self.roll_back(old, new, reinstall, step, started)

    def roll_back(self, old: str, new: str, reinstall: bool, failed: Step, started: float) -> int:
        s, short_old, short_new = self.settings, old[:7], new[:7]
        why = f"{failed.cause.value if failed.cause else 'unknown'}: {failed.detail}"
        self.say(f"{short_new} failed ({why}): rolling back to {short_old}")
        res = git(s, "reset", "--hard", "--quiet", old)
        if res.returncode != 0:
            self.say(f"ROLLBACK FAILED: git reset --hard {short_old}: {last_line(res)}")
        if reinstall:
            ok, pip_why = pip_install(s)
            if not ok:
                self.say(f"pip install of the previous requirements failed: {pip_why}")
        self.record(Cause.ROLLBACK, f"update to {short_new} rolled back: {why}")
        reexec = getattr(self, "own", (False, False))[0]
        step = self.roll_out(Cause.ROLLBACK, short_old, f"update to {short_new} rolled back", reexec=reexec)
        if getattr(self, "own", (False, False))[1]:
            restart_recovery(s)
        if step.action == KEEP:
            self.say(f"rolled back to {short_old}: healthy again after {self.clock() - started:.1f} s")
        else:
            self.say(f"rolled back to {short_old}, but it is not healthy either: {step.detail}")
        return EX_ROLLED_BACK


def update(settings: Settings, by: str = "cli", say: Callable[[str], None] = print) -> int:
    fd = runfiles.try_lock(settings, "update")
    if fd is None:
        say("refused (busy): another update is running")
        return EX_BUSY
    try:
        try:
            control.call(settings, "status", timeout=3.0)
        except control.SupervisorUnavailable:
            say(f"refused (not-running): botkeeper is not running in {settings.home}")
            return EX_NOT_RUNNING
        try:
            return Updater(settings, by, say).run()
        except Refused as exc:
            say(f"refused ({exc.reason}): {exc}; nothing was changed")
            return EX_REFUSED
        except (control.SupervisorUnavailable, control.ControlError) as exc:
            say(f"the supervisor stopped answering during the update ({exc}): see `python -m botkeeper status`")
            return EX_ROLLED_BACK
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="botkeeper update", description="deploy the upstream version; roll it back"
                                " if the new bot is not healthy within UPDATE_HEALTH_TIMEOUT")
    p.add_argument("--by", default="cli", help=argparse.SUPPRESS)  # auto_recovery says "trigger"
    args = p.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"botkeeper: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    stamp = args.by != "cli"  # into logs/update.log: with the time
    say = (lambda line: print(time.strftime("%F %T ") + "update: " + line, flush=True)) if stamp else \
        (lambda line: print("botkeeper: update: " + line, flush=True))
    return update(settings, args.by[:40], say)
