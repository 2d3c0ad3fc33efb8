"""CPU and memory of the supervised processes and of the host, cached briefly: the one meter the
monitor, the page and `status` share.

psutil's cpu_percent(None) measures since its previous call on the *same* Process object, so the
objects are kept across requests, keyed by (pid, create_time) so a reused PID never inherits an
old process's numbers. Results are cached for `ttl` seconds: the page, /api/* and /metrics may be
hit many times a second and the numbers do not change that fast.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Iterable

import psutil

from ..fsutil import verified_process

Target = tuple[str, "int | None", "float | None"]  # (component, pid, create_time)


def _process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    # verified_process refuses our own pid (a PID file naming us is stale), but the web
    # component's entry in state.json *is* us.
    if pid == os.getpid():
        return psutil.Process()
    return verified_process(pid, create_time)


class ProcessStats:
    """Memory (RSS of the whole process tree) and CPU % per component."""

    def __init__(self, ttl: float = 1.0, monotonic: Callable[[], float] = time.monotonic, tree: bool = True):
        self.ttl = ttl
        self.tree = tree  # a component counts its whole tree; the supervisor is not its children
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._procs: dict[tuple[int, float], psutil.Process] = {}
        self._cached: tuple[tuple, float, dict[str, dict[str, Any] | None]] | None = None

    def measure(self, targets: Iterable[Target]) -> dict[str, dict[str, Any] | None]:
        """{component: {"alive", "memory_bytes", "cpu_percent", "processes", "pids"} or None if gone}."""
        key = tuple(targets)
        with self._lock:
            now = self._monotonic()
            if self._cached and self._cached[0] == key and now - self._cached[1] < self.ttl:
                return self._cached[2]
            seen: set[tuple[int, float]] = set()
            result = {name: self._measure_tree(pid, ct, seen) for name, pid, ct in key}
            self._procs = {k: p for k, p in self._procs.items() if k in seen}
            self._cached = (key, now, result)
            return result

    def _measure_tree(self, pid: int | None, create_time: float | None, seen: set) -> dict[str, Any] | None:
        root = _process(pid, create_time)
        if root is None:
            return None
        try:
            tree = [root] + (root.children(recursive=True) if self.tree else [])
        except psutil.Error:
            return None
        rss, cpu, pids = 0, 0.0, []
        for proc in tree:
            try:
                proc = self._keep(proc, seen)
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    cpu += proc.cpu_percent(None)  # since our previous look (0.0 the first time)
                pids.append(proc.pid)
            except psutil.Error:  # a child that ended between listing and reading
                continue
        if not pids:
            return None
        return {"alive": True, "memory_bytes": rss, "cpu_percent": round(cpu, 1), "processes": len(pids),
                "pids": pids}

    def _keep(self, proc: psutil.Process, seen: set) -> psutil.Process:
        key = (proc.pid, proc.create_time())
        seen.add(key)
        return self._procs.setdefault(key, proc)


class HostStats:
    """Host CPU %, memory and the disk holding the bundle, cached for `ttl` seconds."""

    def __init__(self, disk_path: str, ttl: float = 1.0, monotonic: Callable[[], float] = time.monotonic):
        self.disk_path = disk_path
        self.ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None
        psutil.cpu_percent(None)  # prime: the first call has nothing to compare against

    def read(self) -> dict[str, Any]:
        with self._lock:
            now = self._monotonic()
            if self._cached and now - self._cached[0] < self.ttl:
                return self._cached[1]
            mem = psutil.virtual_memory()
            data: dict[str, Any] = {
                "cpu_percent": psutil.cpu_percent(None),
                "cpu_count": psutil.cpu_count() or 1,
                "load": [round(x, 2) for x in os.getloadavg()],
                "memory_total": mem.total,
                "memory_used": mem.total - mem.available,
                "memory_available": mem.available,
                "memory_percent": mem.percent,
            }
            try:
                disk = psutil.disk_usage(self.disk_path)
                data |= {"disk_total": disk.total, "disk_used": disk.used, "disk_free": disk.free,
                         "disk_percent": disk.percent}
            except OSError:
                data |= {"disk_total": None, "disk_used": None, "disk_free": None, "disk_percent": None}
            self._cached = (now, data)
            return data
