"""The status page in real headless Chromium (Debian's, driven by Playwright's Python package).

Served by real waitress on loopback; the data are real files. The page must render the components
and the SVG chart, refresh itself (a changed heartbeat shows up without a reload) and look right on
a phone; screenshots are saved under the test's temp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from botkeeper.web import create_app
from botkeeper.store import DAY, Store
from botkeeper.web.history import StoreHistory
from web_helpers import healthy_bundle, settings_for, write_heartbeat

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# A developer without Chromium gets a skip; CI (BOTKEEPER_REQUIRE_BROWSER=1, set by .ci/run) a failure.
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("BOTKEEPER_REQUIRE_BROWSER"),
                                reason=f"{CHROMIUM} is not installed (apt install chromium)")
MB = 1024 * 1024
expect = None  # playwright.sync_api.expect, set by the browser fixture (the import may be skipped)


@pytest.fixture
def served(home, sleepers):
    """A healthy bundle's files, data/history.db with 2 h of samples and two incidents (one still
    open), and the app on real waitress as keep_alive.py builds it."""
    from waitress import create_server, wasyncore

    # Long heartbeat limits: the page is watched for a few seconds of real time.
    settings = settings_for(home, DEMO="on", HEARTBEAT_INTERVAL="30", STALE_AFTER="120", RESTART_TOKEN="t" * 24)
    now = time.time()
    restarts = [
        {"at": now - 5400, "component": "bot", "cause": "crash", "detail": "exited with code 1 after 3.1 s",
         "by": "supervisor"},
        {"at": now - 3000, "component": "bot", "cause": "stale-heartbeat", "detail": "heartbeat stale for 63 s",
         "by": "monitor"},
        {"at": now - 900, "component": "monitor", "cause": "operator", "detail": "requested from the web page",
         "by": "web"},
    ]
    healthy_bundle(settings, sleepers, now, restarts)
    store = Store(settings.history_db)  # as the monitor and the alerter write it
    store.watch(now - 10 * DAY, 1)  # the monitor has been watching for 10 days
    store.watch(now, 11 * DAY)
    for i in range(120):  # one a minute for two hours
        store.add_sample("bot", int((48 + 10 * (i % 40) / 40 + (i > 70) * 6) * MB), 2.0, at=now - 7200 + i * 60)
    store.close_incident(store.open_incident("stale-heartbeat", now - 3200), now - 3000)  # around the stale restart
    store.open_incident("telegram-outage", now - 90)
    store.close()
    app = create_app(settings, history=StoreHistory(settings), refresh_seconds=1.0)
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield settings, f"http://127.0.0.1:{server.effective_port}"
    # Close every socket from inside the server's own loop (closing them from this thread races
    # with its select); an empty map ends the loop.
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    thread.join(5)
    assert not thread.is_alive(), "waitress loop did not stop"
    server.task_dispatcher.shutdown()


@pytest.fixture
def browser():
    if os.environ.get("BOTKEEPER_REQUIRE_BROWSER"):
        import playwright.sync_api as sync_api  # CI installs it: missing is a failure, not a skip
    else:
        sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    global expect
    expect = sync_api.expect
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def test_page_renders_refreshes_and_fits_a_phone(served, browser, tmp_path):
    settings, base = served
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    external: list[str] = []
    page.on("request", lambda r: r.url.startswith(base) or r.url.startswith("data:") or external.append(r.url))

    page.goto(base + "/", wait_until="load")
    assert page.text_content("#state-word").strip() == "healthy"  # the health heads the page, not "demo"
    assert "DEMO" in page.text_content("#demo-pill")
    assert "DEMO" in page.text_content("#demo-banner")
    assert page.locator("#components .card").count() == 3
    assert page.locator("#components .card h3").all_text_contents() == ["bot", "web", "monitor"]
    assert page.locator("#chart svg .memory-line").count() >= 1
    assert page.locator("#chart svg .restart-marker").count() == 3
    assert page.locator("#chart svg .band-down").count() == 2  # the closed incident and the open one
    # 24 h / 7 d / 30 d (the database is 10 days old): 99.66%, 99.95%, 99.96%, a little less each second
    assert [t[:5] for t in page.locator("#uptime b").all_text_contents()] == ["99.66", "99.95", "99.96"]
    assert "Open incident: Telegram unreachable since" in page.text_content("#incident")
    assert "of 10d 0h watched" in page.text_content("#uptime")
    assert page.locator("#restarts tr").count() == 3
    box = page.locator("#chart svg").bounding_box()
    assert box and box["width"] > 600 and box["height"] > 150
    page.screenshot(path=str(tmp_path / "status-desktop.png"), full_page=True)

    # The page's own refresh (fetching /api/status) picks up new files; no reload happens.
    page.evaluate("window.__noReload = true")
    write_heartbeat(settings, time.time(), updates_handled=4242, started_at=time.time() - 50)
    # Locator waits (not wait_for_function): the page's CSP forbids eval, which that one needs.
    expect(page.locator("#updates")).to_have_text("4242", timeout=10_000)
    state = json.loads(settings.state_file.read_text())
    state["components"][2] |= {"state": "backoff", "pid": None, "last_exit": "exited with code 2",
                               "last_exit_at": time.time()}
    settings.state_file.write_text(json.dumps(state))
    expect(page.locator("#components .card[data-name=monitor] .pill")).to_have_text("backoff", timeout=10_000)
    assert page.text_content("#state-word").strip() == "degraded"
    assert "component:monitor" in page.text_content("#failing")
    assert "Telegram unreachable" in page.text_content("#incident")  # redrawn by the refresh
    assert "a component is down" in page.text_content("#cause")
    assert page.evaluate("window.__noReload") is True

    # A phone: nothing wider than the screen, the state word still big.
    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    phone.goto(base + "/", wait_until="load")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.locator("#state-word").bounding_box()["height"] >= 40
    # The script redraws the chart for the phone's width, so its labels keep their size.
    expect(phone.locator("#chart svg")).not_to_have_attribute("data-width", "640", timeout=5_000)
    assert phone.locator("#chart svg .restart-marker").count() == 3
    phone.screenshot(path=str(tmp_path / "status-phone.png"), full_page=True)
    phone.locator("#hero").screenshot(path=str(tmp_path / "hero-phone.png"))
    phone.locator("#chart").screenshot(path=str(tmp_path / "chart-phone.png"))

    assert problems == [], problems
    assert external == [], external  # no CDN, no fonts, nothing leaves the machine
    for name in ("status-desktop.png", "status-phone.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    keep = os.environ.get("WEB_SCREENSHOTS")  # to look at them after the run
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name in ("status-desktop.png", "status-phone.png", "hero-phone.png", "chart-phone.png"):
            shutil.copy(tmp_path / name, Path(keep) / name)
