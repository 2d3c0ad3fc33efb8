"""Prometheus exposition: a custom collector that reads the current status at scrape time.

No global mutable gauges: each scrape builds its families from one StatusSource snapshot, in a
registry of this app's own (so several apps in one test process do not collide).
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..causes import Cause
from ..health.verdict import OVERALLS
from .reasons import REASONS
from .status import StatusSource


class BotkeeperCollector(Collector):
    def __init__(self, source: StatusSource):
        self.source = source

    def describe(self) -> list[Metric]:
        return []  # families depend on the live state; collect() is only called at scrape time

    def collect(self) -> Iterator[Metric]:
        snap = self.source.snapshot()
        yield from _overall(snap)
        yield from _components(snap, self.source.restarts.counts())
        yield from _heartbeat(snap["heartbeat"])
        yield from _host(snap["host"])
        yield from _uptime(snap["history"]["uptime"])
        if "outbox" in snap:
            yield from _outbox(snap["outbox"])
        yield from _errors(self.source.errors_summary(self.source.clock())["counts"])
        yield from _work(snap["work"], snap["quarantined_updates"])
        if snap.get("deadman"):
            yield from _deadman(snap["deadman"])


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(name, doc, value=value)


def _overall(snap: dict[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily("botkeeper_healthy", "1 when /health answers 200", value=int(snap["healthy"]))
    status = GaugeMetricFamily("botkeeper_status", "Overall state (1 for the current one)", labels=["status"])
    for word in OVERALLS:
        status.add_metric([word], int(snap["status"] == word))
    yield status
    cause = GaugeMetricFamily("botkeeper_cause", "Why the bundle is not healthy (1 for the current cause)",
                              labels=["cause"])
    for value in (c.value for c in Cause):
        cause.add_metric([value], int(snap["cause"] == value))
    yield cause
    yield GaugeMetricFamily("botkeeper_demo", "1 while the offline demo runs", value=int(snap["demo"]))
    yield GaugeMetricFamily("botkeeper_supervisor_up", "1 while the supervisor runs",
                            value=int(snap["supervisor"]["running"]))


def _components(snap: dict[str, Any], counts: dict[tuple[str, str], int]) -> Iterator[Metric]:
    up = GaugeMetricFamily("botkeeper_component_up", "1 while the component is running", labels=["component"])
    uptime = GaugeMetricFamily("botkeeper_component_uptime_seconds", "Seconds since the component started",
                               labels=["component"])
    mem = GaugeMetricFamily("botkeeper_process_memory_bytes", "Resident memory of the component's process tree",
                            labels=["component"])
    cpu = GaugeMetricFamily("botkeeper_process_cpu_percent", "CPU use of the component's process tree (100 = one core)",
                            labels=["component"])
    restarts = CounterMetricFamily("botkeeper_restarts", "Restarts seen by this web process, by cause",
                                   labels=["component", "reason"])
    names = [c["name"] for c in snap["components"]]
    for c in snap["components"]:
        up.add_metric([c["name"]], int(c["running"] and c["alive"]))
        if c["uptime"] is not None:
            uptime.add_metric([c["name"]], c["uptime"])
        if c["memory_bytes"] is not None:
            mem.add_metric([c["name"]], c["memory_bytes"])
            cpu.add_metric([c["name"]], c["cpu_percent"])
    # Every (component, reason) pair is exposed, zeros included, so rate() works from the start;
    # the reason label only takes the fixed REASONS (restart cause) values.
    for name in sorted(set(names) | {n for n, _ in counts}):
        for reason in REASONS:
            restarts.add_metric([name, reason], counts.get((name, reason), 0))
    yield from (up, uptime, mem, cpu, restarts)


def _heartbeat(beat: dict[str, Any]) -> Iterator[Metric]:
    yield from _gauge("botkeeper_heartbeat_age_seconds", "Age of the bot's heartbeat file", beat["age"])
    yield from _gauge("botkeeper_last_poll_age_seconds", "Seconds since the bot's last successful getUpdates",
                      beat["last_poll_age"])
    if beat["updates_handled"] is not None:
        yield CounterMetricFamily("botkeeper_updates_handled", "Telegram updates handled by the running bot",
                                  value=beat["updates_handled"])


def _host(host: dict[str, Any]) -> Iterator[Metric]:
    yield from _gauge("botkeeper_host_cpu_percent", "Host CPU use (100 = all cores)", host["cpu_percent"])
    yield from _gauge("botkeeper_host_memory_total_bytes", "Host memory", host["memory_total"])
    yield from _gauge("botkeeper_host_memory_used_bytes", "Host memory in use (total - available)", host["memory_used"])
    yield from _gauge("botkeeper_host_disk_total_bytes", "Size of the disk holding the bundle", host["disk_total"])
    yield from _gauge("botkeeper_host_disk_free_bytes", "Free space on the disk holding the bundle", host["disk_free"])


def _uptime(uptime: dict[str, float | None]) -> Iterator[Metric]:
    ratio = GaugeMetricFamily("botkeeper_uptime_ratio", "Share of the watched part of the window the bot was not in"
                              " an incident (data/history.db)", labels=["window"])
    for window, percent in uptime.items():
        if percent is not None:
            ratio.add_metric([window], percent / 100.0)
    yield ratio


def _work(work: dict[str, Any], quarantined: dict[str, Any]) -> Iterator[Metric]:
    yield CounterMetricFamily("botkeeper_quarantined_updates", "Poison updates skipped without running handlers",
                              value=quarantined["total"])
    yield GaugeMetricFamily("botkeeper_updates_in_flight", "Updates the bot is handling now",
                            value=len(work["in_flight"]))
    yield from _gauge("botkeeper_event_loop_lag_seconds", "How late the bot's event loop ran its last tick",
                      work["loop_lag"])
    errors = CounterMetricFamily("botkeeper_handler_errors", "Exceptions raised by the bot's handlers (at most 50"
                                 " handlers named)", labels=["handler"])
    for name, count in work["handler_errors"].items():
        errors.add_metric([name], count)
    yield errors


def _outbox(box: dict[str, Any]) -> Iterator[Metric]:
    depth = GaugeMetricFamily("botkeeper_outbox_pending", "Messages waiting in the outbox", labels=["priority"])
    for priority, n in box["pending"].items():
        depth.add_metric([priority], n)
    yield depth
    yield from _gauge("botkeeper_outbox_oldest_pending_age_seconds", "Age of the oldest waiting message",
                      box["oldest_pending_age"])
    for name, doc in (("sent", "Outbox messages delivered"), ("retried", "Outbox send attempts to be retried"),
                      ("dead", "Outbox messages dead-lettered")):
        yield CounterMetricFamily(f"botkeeper_outbox_{name}", doc, value=box[name])


def _deadman(dm: dict[str, Any]) -> Iterator[Metric]:
    """DEADMAN_URL: the monitor's pings to the dead man's switch (run/deadman.json via the snapshot)."""
    pings = CounterMetricFamily("botkeeper_deadman_pings", "Dead man's switch pings since the monitor started,"
                                " by result (dropped: not sent, the queue was full)", labels=["result"])
    for result in ("ok", "failed", "dropped"):
        pings.add_metric([result], dm[result])
    yield pings
    yield from _gauge("botkeeper_deadman_last_ping_timestamp_seconds", "When the last dead man's switch ping was"
                      " answered or failed (Unix time)", dm["last_at"])
    if dm["last_ok"] is not None:
        yield GaugeMetricFamily("botkeeper_deadman_last_ping_ok", "1 when the last dead man's switch ping was"
                                " answered with 2xx", value=int(dm["last_ok"]))


ERROR_LABELS = 10  # fingerprints with a label of their own; the rest are summed as "other"


def _errors(counts: list[tuple[str, int]]) -> Iterator[Metric]:
    """Handler errors by fingerprint (data/history.db), the most frequent ERROR_LABELS by name:
    the label stays bounded however many kinds of errors a bot has."""
    family = CounterMetricFamily("botkeeper_errors", "Handler errors recorded, by fingerprint (`python -m botkeeper"
                                 " errors` names them); the less frequent ones as \"other\"", labels=["fingerprint"])
    for fingerprint, n in counts[:ERROR_LABELS]:
        family.add_metric([fingerprint], n)
    family.add_metric(["other"], sum(n for _, n in counts[ERROR_LABELS:]))
    yield family


def make_registry(source: StatusSource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BotkeeperCollector(source))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
