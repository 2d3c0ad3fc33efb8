"""The page's chart and uptime from the persistent history (data/history.db), as keep_alive.py serves it.

The database is written by the real `Store`, as the monitor and the alerter write it; the app is
the real one, through Flask's test client.
"""

from __future__ import annotations

import logging
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from botkeeper.store import DAY, Store
from botkeeper.web import create_app, start_background, stop_background
from botkeeper.web.history import Sample, StoreHistory
from web_helpers import healthy_bundle, settings_for

MB = 1024 * 1024


def write_history(settings, now: float) -> None:
    """Two hours of bot samples (one a minute), a closed 5-minute incident an hour ago and an
    incident open for the last 2 minutes, in a database created 10 days ago."""
    store = Store(settings.history_db)
    try:
        store.connect().execute("INSERT INTO watched(started_at, ended_at) VALUES (?, ?)", (now - 10 * DAY, now))
        for i in range(120):
            store.add_sample("bot", (50 + i % 10) * MB, 1.5, at=now - 7200 + i * 60)
        closed = store.open_incident("crash-loop", now - 3600, "exited with code 1")
        store.close_incident(closed, now - 3300)
        store.open_incident("stale-heartbeat", now - 120, "no heartbeat for 120 s")
    finally:
        store.close()


@pytest.fixture
def persisted(home, sleepers, clock):
    """(settings, app, client) for a healthy bundle whose history.db has samples and incidents."""
    settings = settings_for(home)
    healthy_bundle(settings, sleepers, clock.now)
    write_history(settings, clock.now)
    app = create_app(settings, clock=clock, history=StoreHistory(settings, clock=clock), cache_ttl=0.0)
    return settings, app, app.test_client()


def test_store_history_marks_samples_inside_incidents_down(persisted, clock):
    settings, _, _ = persisted
    history = StoreHistory(settings, clock=clock)
    samples = history.since(clock.now - DAY)
    assert len(samples) == 120 and samples[0] == Sample(clock.now - 7200, 50 * MB, 1.5, "healthy")
    down = [round(clock.now - s.at) for s in samples if s.overall == "down"]
    assert down == [3600, 3540, 3480, 3420, 3360, 3300, 120, 60]  # the closed one, then the open one to now
    assert len(history.since(clock.now - 600)) == 10
    history.add(Sample(clock.now, MB, 0.0, "healthy"))  # the monitor is the only writer
    assert len(history.since(clock.now - DAY)) == 120


def test_api_status_has_uptime_and_the_open_incident(persisted, clock):
    _, _, client = persisted
    clock.advance(30)
    history = client.get("/api/status").get_json()["data"]["history"]
    down = 300 + 150  # the closed incident and the open one, up to now
    assert history["uptime"]["24h"] == pytest.approx(100 * (1 - down / DAY))
    assert history["uptime"]["7d"] == pytest.approx(100 * (1 - down / (7 * DAY)))
    assert history["uptime"]["30d"] == pytest.approx(100 * (1 - down / (10 * DAY + 30)))  # 10 days watched
    assert history["observed_seconds"]["30d"] == pytest.approx(10 * DAY + 30)
    incident = history["open_incident"]
    assert (incident["cause"], incident["cause_label"], incident["ended_at"]) == (
        "stale-heartbeat", "heartbeat stale (hung)", None)
    assert incident["started_at"] == pytest.approx(clock.now - 150)
    assert incident["duration_seconds"] == pytest.approx(150, abs=0.1)


def test_page_shows_uptime_incident_and_the_chart_from_the_database(persisted, clock):
    _, _, client = persisted
    html = client.get("/").get_data(as_text=True)
    assert re.search(r'24 h: <b data-w="24h">99\.51%</b>', html), html  # the label first: never "– 24 h"
    assert re.search(r'30 d: <b data-w="30d">99\.95%</b>', html)
    assert re.search(r'id="incident">Open incident: <b>heartbeat stale \(hung\)</b>', html)
    assert "of 10d 0h watched" in html
    assert "(2m 0s)" in html
    svg = client.get("/chart.svg").get_data(as_text=True)
    assert 'data-samples="120"' in svg and 'class="memory-line"' in svg
    assert svg.count('class="band-down"') == 2


def test_chart_survives_a_restart_of_the_web_and_no_sampler_runs(persisted, clock):
    settings, app, _ = persisted
    ctx = start_background(app)
    try:
        assert ctx.threads == []  # the monitor samples into the database; the web does not
    finally:
        stop_background(app)
    again = create_app(settings, clock=clock, history=StoreHistory(settings, clock=clock))
    assert 'data-samples="120"' in again.test_client().get("/chart.svg").get_data(as_text=True)


def test_metrics_have_the_uptime_ratio(persisted):
    _, _, client = persisted
    text = client.get("/metrics").get_data(as_text=True)
    family = next(f for f in text_string_to_metric_families(text) if f.name == "botkeeper_uptime_ratio")
    ratios = {s.labels["window"]: s.value for s in family.samples}
    assert set(ratios) == {"24h", "7d", "30d"}
    assert ratios["24h"] == pytest.approx(1 - 420 / DAY, abs=1e-6)
    assert ratios["24h"] < ratios["7d"] < ratios["30d"] < 1


@pytest.mark.parametrize("content", [None, b"this is not a sqlite database, just some bytes" * 100])
def test_missing_or_unreadable_database_is_empty_not_an_error(home, sleepers, clock, caplog, content):
    settings = settings_for(home)
    healthy_bundle(settings, sleepers, clock.now)
    if content is not None:
        settings.history_db.parent.mkdir(parents=True, exist_ok=True)
        settings.history_db.write_bytes(content)
    history = StoreHistory(settings, clock=clock)
    client = create_app(settings, clock=clock, history=history, cache_ttl=0.0).test_client()
    with caplog.at_level(logging.INFO, logger="botkeeper.web.history"):
        for _ in range(3):
            assert client.get("/").status_code == 200
            assert history.since(0) == []
            clock.advance(10)  # past the summary cache: it is read again
        data = client.get("/api/status").get_json()["data"]
    assert data["history"] == {"uptime": {"24h": None, "7d": None, "30d": None},
                               "observed_seconds": {"24h": 0.0, "7d": 0.0, "30d": 0.0}, "open_incident": None}
    assert 'data-samples="0"' in client.get("/chart.svg").get_data(as_text=True)
    assert client.get("/metrics").status_code == 200
    lines = [r.getMessage() for r in caplog.records if "history.db" in r.getMessage()]
    assert len(lines) == 1, lines  # logged once, not on every read
    assert ("does not exist yet" if content is None else "cannot be read") in lines[0]
    assert settings.history_db.exists() == (content is not None)  # the web never creates it
