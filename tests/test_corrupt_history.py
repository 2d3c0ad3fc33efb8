"""A corrupt data/history.db (random bytes at start or while running) is set aside, kept, replaced by
a fresh database, recorded once and alerted once through the fresh database; `history` and
`doctor` work on it. Real processes: the supervisor, its monitor (which sends alerts) and the CLI."""

import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import ROOT, bk_env, py_command, wait_for
from botkeeper.ops.doctor import FAIL, OK, check_history
from botkeeper.store import Store
from test_alerts import Receiver

BEATING_BOT = py_command(f"""
    import sys, time
    sys.path.insert(0, {str(ROOT)!r})
    from botkeeper import heartbeat
    while True:
        heartbeat.beat(state="polling", last_poll_at=time.time())
        time.sleep(0.1)
""")


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def corrupt(db):
    """Random bytes over the whole file, in place (the inode the processes hold stays the same)."""
    size = max(db.stat().st_size if db.exists() else 0, 8192)
    with open(db, "r+b" if db.exists() else "wb") as fh:
        fh.write(os.urandom(size))


def started_events(db):
    try:
        return db.exists() and Store(db, readonly=True).events(kinds=("start",))
    except sqlite3.Error:  # created, schema not written yet
        return False


def set_aside(home):
    return sorted(p.name for p in (home / "data").glob("history.db.corrupt-*"))


def corrupt_alerts(receiver):
    return [b for b in receiver.bodies if b["event"] == "corrupt-file"]


def bundle(supervised, receiver):
    return supervised({"bot": {"command": BEATING_BOT}, "web": {"enabled": False}},
                      ALERTS="on", MONITORING_WEBHOOK=receiver.url)


def assert_recovered(home, receiver):
    alert = wait_for(lambda: corrupt_alerts(receiver), 20, message="the corrupt-file alert")[0]
    assert alert["cause"] == "corrupt-file" and "moved aside to history.db.corrupt-" in alert["text"]
    kept = set_aside(home)
    assert any(not n.endswith(("-wal", "-shm")) for n in kept), kept
    # Delivered through the fresh database: its outbox holds the sent alert (marked sent just after
    # the receiver answered, so waited for).
    store = Store(home / "data" / "history.db")
    statuses = lambda: [a["status"] for a in store.alerts(channel="webhook") if a["kind"] == "corrupt-file"]  # noqa: E731
    wait_for(lambda: statuses() == ["sent"], 5, message="the corrupt-file alert marked sent")
    assert len(store.events(kinds=("corrupt-file",))) == 1
    store.close()
    done = subprocess.run([sys.executable, "-m", "botkeeper", "history", "--since", "all"], cwd=ROOT,
                          env=bk_env(home), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "corrupt-file" in done.stdout, done
    assert check_history(home / "data" / "history.db").status == OK


def test_corrupt_at_start_is_set_aside_and_alerted_once(home, supervised, receiver):
    (home / "data").mkdir()
    corrupt(home / "data" / "history.db")
    assert check_history(home / "data" / "history.db").status == FAIL
    bundle(supervised, receiver)
    assert_recovered(home, receiver)
    wait_for(lambda: len(receiver.bodies) >= 1, 5, message="alerts")
    assert len(corrupt_alerts(receiver)) == 1


def test_corrupt_while_running_is_set_aside_and_alerted_once(home, supervised, receiver):
    bundle(supervised, receiver)
    db = home / "data" / "history.db"
    wait_for(lambda: started_events(db), 10, message="history written")
    with sqlite3.connect(db) as conn:  # what SQLite does on its own every 1000 pages
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt(db)
    assert_recovered(home, receiver)
    assert len(corrupt_alerts(receiver)) == 1


def test_a_read_only_reader_reports_and_never_moves(home):
    (home / "data").mkdir()
    db = home / "data" / "history.db"
    corrupt(db)
    with pytest.raises(sqlite3.DatabaseError):
        Store(db, readonly=True).summary()
    assert set_aside(home) == [] and db.exists()
    # The first writer repairs it, once; a second writer finds the fresh file and moves nothing.
    first, second = Store(db), Store(db)
    first.record("start", "bot")
    second.record("start", "bot")
    assert len(set_aside(home)) == 1
    assert [e["kind"] for e in second.events()] == ["start", "start", "corrupt-file"]
