"""Which outer supervisor runs us, if any: systemd, a container runtime (Docker, Kubernetes) or PM2.

Under one of them `start` runs the supervisor itself in the foreground, without run_24_7.sh and
auto_recovery: the outer system already restarts it, and two layers restarting the same process
fight each other (and hide it from the outer system's stop and health checks).

`detect` is a pure function of a few facts so it is tested without a container or systemd.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

MODES = ("none", "systemd", "container", "pm2")
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")  # Docker, Podman


@dataclass(frozen=True)
class Facts:
    environ: Mapping[str, str] = field(default_factory=dict)
    pid: int = 2
    ppid: int = 1
    container_marker: bool = False  # one of CONTAINER_MARKERS exists


def detect(facts: Facts) -> str:
    env = facts.environ
    if env.get("REPL_ID"):
        return "none"  # Replit's Run button restarts nothing: the bundle's own layers are needed
    if env.get("pm_id") is not None or env.get("PM2_HOME"):
        return "pm2"
    # INVOCATION_ID alone also leaks into shells of desktop terminals: require systemd's notify
    # socket (Type=notify) or systemd as our direct parent.
    if env.get("INVOCATION_ID") and (env.get("NOTIFY_SOCKET") or facts.ppid == 1):
        return "systemd"
    # A container's runtime restarts only its entry command: PID 1, or a child of the container's init
    # (`sh -c "..."`, tini). A shell opened inside a container (devcontainer, Codespaces, `docker
    # exec`) has the marker too, but nothing there restarts what it starts: the bundle keeps its layers.
    if facts.pid == 1 or (facts.container_marker and facts.ppid == 1) or env.get("KUBERNETES_SERVICE_HOST"):
        return "container"
    return "none"


def resolve(setting: str, facts: Facts) -> str:
    """BOTKEEPER_OUTER: auto detects; any other value is taken as it is."""
    return detect(facts) if setting == "auto" else setting


def current_facts(environ: Mapping[str, str] | None = None) -> Facts:
    env = dict(os.environ if environ is None else environ)
    # BOTKEEPER_CONTAINER_MARKERS (paths, ':'-separated) stands in for the markers: tests fake a container.
    markers = env.get("BOTKEEPER_CONTAINER_MARKERS", "").split(os.pathsep) if env.get(
        "BOTKEEPER_CONTAINER_MARKERS") else CONTAINER_MARKERS
    return Facts(environ=env, pid=os.getpid(), ppid=os.getppid(),
                 container_marker=any(Path(p).exists() for p in markers if p))


def mode(settings) -> str:
    return resolve(settings.outer, current_facts())


def describe(mode_: str) -> str:
    """One line for status and the page: who restarts the supervisor."""
    if mode_ == "none":
        return "none: run_24_7.sh and auto_recovery keep the supervisor alive"
    return f"{mode_}: it restarts the supervisor (run_24_7.sh and auto_recovery are not used)"
