"""History store: uptime arithmetic against hand computations, incidents, samples, the outbox,
pruning, and a writer SIGKILLed in the middle of writes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from botkeeper import store as store_mod
from botkeeper.store import DAY, Store, downtime, uptime_percent
from conftest import ROOT, wait_for

H = 3600.0


# --- pure uptime ----------------------------------------------------------------------------------
def test_downtime_merges_overlaps_and_clips_to_the_window():
    spans = [(10, 20), (15, 30), (50, 60), (95, None)]  # union: 10-30, 50-60, 95-now
    assert downtime(spans, 0, 100) == 20 + 10 + 5
    assert downtime(spans, 25, 55) == 5 + 5
    assert downtime([], 0, 100) == 0
    assert downtime([(40, 40)], 0, 100) == 0


def test_uptime_percent_matches_a_hand_computation():
    now = 40 * DAY
    # Synthetic history: 36 min down 2 h ago, 1 h down 3 days ago, 12 h down 20 days ago,
    # 2 h down 35 days ago (outside every window).
    spans = [
        (now - 2 * H, now - 2 * H + 36 * 60),
        (now - 3 * DAY, now - 3 * DAY + H),
        (now - 20 * DAY, now - 20 * DAY + 12 * H),
        (now - 35 * DAY, now - 35 * DAY + 2 * H),
    ]
    # 24 h: 0.6 h down of 24 h -> 97.5 %
    assert uptime_percent(spans, now, DAY) == pytest.approx(97.5)
    # 7 d: 1.6 h down of 168 h -> 99.047619 %
    assert uptime_percent(spans, now, 7 * DAY) == pytest.approx(100 * (1 - 1.6 / 168))
    # 30 d: 13.6 h down of 720 h -> 98.1111 %
    assert uptime_percent(spans, now, 30 * DAY) == pytest.approx(100 * (1 - 13.6 / 720))


def test_uptime_counts_only_observed_time_and_open_incidents():
    now = 1000.0
    # Tracking began 100 s ago; the bot has been down for the last 25 s (open incident).
    assert uptime_percent([(975.0, None)], now, DAY, observed_since=900.0) == pytest.approx(75.0)
    assert uptime_percent([], now, DAY, observed_since=now) is None
    # An incident that started before tracking counts only from then.
    assert uptime_percent([(800.0, 950.0)], now, DAY, observed_since=900.0) == pytest.approx(50.0)


def test_store_uptime_from_incidents_with_a_fake_clock(tmp_path):
    s = Store(tmp_path / "h.db")
    now = 1_000 * DAY
    s.connect().execute("INSERT INTO watched(started_at, ended_at) VALUES (?, ?)", (now - 10 * DAY, now - 60))
    a = s.open_incident("crash loop", now - 5 * H)
    s.close_incident(a, now - 5 * H + 18 * 60)  # 18 min
    b = s.open_incident("heartbeat stale", now - 2 * DAY)
    s.close_incident(b, now - 2 * DAY + 2 * H)  # 2 h
    s.open_incident("needs configuration", now - 6 * 60)  # open, 6 min so far
    up = s.uptime(now)
    assert up["24h"] == pytest.approx(100 * (1 - (0.3 + 0.1) / 24))
    assert up["7d"] == pytest.approx(100 * (1 - 2.4 / 168))
    assert up["30d"] == pytest.approx(100 * (1 - 2.4 / 240))  # only 10 days watched
    assert s.summary(now)["observed_seconds"]["30d"] == pytest.approx(10 * DAY)  # the open incident is watched
    summary = s.summary(now)
    assert summary["open_incident"]["cause"] == "needs configuration"
    assert summary["open_incident"]["duration_seconds"] == pytest.approx(360)


def test_the_uptime_denominator_never_goes_backwards(tmp_path):
    """Read every second while an incident opens and closes between the monitor's watch() calls
    (60 s apart in production): the watched time only grows, and so does the 24 h window's."""
    s = Store(tmp_path / "h.db")
    gap = 60 * 2.5
    start = 1_000 * DAY
    s.watch(start, gap)
    seen, inc = [], None
    for t in range(1, 400):
        now = start + t
        if t % 60 == 0:
            s.watch(now, gap)  # the monitor's sample
        if t == 70:
            inc = s.open_incident("crash", now)
        if t == 130:
            s.close_incident(inc, now)
        seen.append(s.summary(now, gap=gap)["observed_seconds"]["24h"])
    assert all(b >= a for a, b in zip(seen, seen[1:])), [(i, a, b) for i, (a, b) in enumerate(zip(seen, seen[1:]))
                                                          if b < a][:3]
    assert seen[-1] == pytest.approx(399)


# --- tables -----------------------------------------------------------------------------------------
def test_existing_events_api_still_works(tmp_path):
    s = Store(tmp_path / "h.db")
    first = s.record("start", "bot", "initial start", "supervisor")
    s.record("restart", "bot", "crashed: exited with code 1", "supervisor", 1)
    rows = s.events(kinds=("restart",), component="bot")
    assert [r["detail"] for r in rows] == ["crashed: exited with code 1"]
    assert [r["kind"] for r in s.events_after(first)] == ["restart"]
    assert s.last_event_id() == first + 1


def test_samples_and_pruning_keep_the_database_bounded(tmp_path, monkeypatch):
    s = Store(tmp_path / "h.db")
    now = 100 * DAY
    s.add_sample("bot", 50_000_000, 1.5, at=now - 8 * DAY)
    s.add_sample("bot", 60_000_000, 2.5, at=now - 60)
    assert [x["rss_bytes"] for x in s.samples(now - 9 * DAY)] == [50_000_000, 60_000_000]
    s.record("exit", "bot", "old", at=now - 31 * DAY)
    s.record("exit", "bot", "new", at=now - 1)
    old = s.open_incident("crashed", now - 91 * DAY)
    s.close_incident(old, now - 91 * DAY + 5)
    still_open = s.open_incident("needs configuration", now - 95 * DAY)
    s.prune(now)
    assert [x["rss_bytes"] for x in s.samples(0)] == [60_000_000]
    assert [e["detail"] for e in s.events()] == ["new"]
    assert [i["id"] for i in s.incidents(0)] == [still_open]  # open incidents are never pruned
    # Row caps hold too.
    monkeypatch.setitem(store_mod.LIMITS, "events", (30 * DAY, 10))
    for i in range(25):
        s.record("restart", "bot", f"r{i}", at=now)
    s.prune(now)
    assert len(s.events()) == 10 and s.events()[0]["detail"] == "r24"


def test_outbox_keeps_order_and_state(tmp_path):
    s = Store(tmp_path / "h.db")
    ids = [s.enqueue_alert("webhook", "down", f"alert {i}", {"cause": "x"}, at=100.0 + i) for i in range(3)]
    s.enqueue_alert("telegram", "down", "other channel", at=100.0)
    assert [a["id"] for a in s.pending_alerts("webhook")] == ids
    s.alert_failed(ids[0], "connection refused", retry_at=200.0)
    row = s.pending_alerts("webhook")[0]
    assert (row["attempts"], row["next_attempt_at"], row["last_error"]) == (1, 200.0, "connection refused")
    s.alert_sent(ids[0], 201.0, delayed=True)
    s.alert_failed(ids[1], "HTTP 404", retry_at=None)
    assert [a["id"] for a in s.pending_alerts("webhook")] == [ids[2]]
    by_id = {a["id"]: a for a in s.alerts()}
    assert by_id[ids[0]]["status"] == "sent" and by_id[ids[0]]["delayed"] is True
    assert by_id[ids[1]]["status"] == "failed"
    assert by_id[ids[0]]["data"] == {"cause": "x"}


def test_transaction_is_all_or_nothing(tmp_path):
    s = Store(tmp_path / "h.db")
    with pytest.raises(RuntimeError):
        with s.transaction() as conn:
            s.enqueue_alert("webhook", "down", "a", conn=conn)
            raise RuntimeError("boom")
    assert s.alerts() == []


# --- several writers and SIGKILL --------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from botkeeper.store import Store
    s = Store(sys.argv[1])
    i = 0
    while True:
        i += 1
        with s.transaction() as conn:
            cur = conn.execute("INSERT INTO incidents(started_at, cause, detail) VALUES (?, 'crashed', ?)",
                               (time.time(), f"batch {i}"))
            for ch in ("telegram", "webhook", "extra"):
                s.enqueue_alert(ch, "down", f"batch {i}", {"i": i}, cur.lastrowid, conn=conn)
        s.record("restart", "bot", f"batch {i}", "writer")
        s.add_sample("bot", i, 0.0)
        if i == 50:
            print("writing", flush=True)
""")


def test_sigkill_of_a_writer_mid_writes_leaves_the_database_consistent(tmp_path):
    db = tmp_path / "data" / "history.db"
    parent = Store(db)
    parent.record("start", "bot", "parent writer")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(ROOT)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"writing"
        # Write from this process at the same time: the busy timeout serialises us.
        for i in range(30):
            parent.record("exit", "web", f"parent {i}")
        wait_for(lambda: len(parent.events(kinds=("restart",), limit=10_000)) > 200, 20, message="child writes")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    parent.close()

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    incidents = conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
    alerts = conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
    assert incidents > 50
    # Each incident and its three alert rows landed together or not at all.
    assert alerts == 3 * incidents
    orphans = conn.execute("SELECT COUNT(*) FROM alerts WHERE incident_id NOT IN (SELECT id FROM incidents)").fetchone()[0]
    assert orphans == 0
    per_incident = conn.execute("SELECT MIN(n), MAX(n) FROM (SELECT COUNT(*) n FROM alerts GROUP BY incident_id)").fetchone()
    assert per_incident == (3, 3)
    # The single-statement writes are each there or not: at most one batch apart from the incidents.
    restarts = conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'restart'").fetchone()[0]
    assert incidents - 1 <= restarts <= incidents
    assert conn.execute("SELECT COUNT(*) FROM events WHERE detail GLOB 'parent [0-9]*'").fetchone()[0] == 30
    conn.close()
    # And the store opens and writes again.
    again = Store(db)
    again.record("start", "bot", "after the kill")
    assert again.events(limit=1)[0]["detail"] == "after the kill"
