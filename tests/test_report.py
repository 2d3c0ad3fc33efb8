"""The daily report: due at the configured minute once, not twice after a monitor restart, a missed
minute sent late once (fake clock); the text carries the day's figures."""

from __future__ import annotations

from datetime import datetime

from botkeeper.alerting.alerts import Alerter
from botkeeper.config import Settings
from botkeeper.bot.errorstats import ErrorLog
from botkeeper.logs import Redactor
from botkeeper.alerting.report import due
from conftest import bk_env


def at(day: int, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 11, day, hh, mm, ss)


def test_due_at_the_minute_once_a_day_and_late_once_after_a_missed_minute():
    assert due(at(27, 9, 0), None, None) is None  # off
    assert due(at(27, 8, 59, 59), "09:00", "2026-11-26") is None
    first = due(at(27, 9, 0, 3), "09:00", "2026-11-26")
    assert first.send and not first.late and first.day == "2026-11-27"
    assert due(at(27, 9, 0, 40), "09:00", first.day) is None  # sent: not again (a restarted monitor reads the day)
    assert due(at(27, 23, 59), "09:00", first.day) is None
    missed = due(at(28, 11, 17), "09:00", first.day)  # the monitor was down at 09:00 on the 28th
    assert missed.send and missed.late and missed.day == "2026-11-28" and missed.slot == at(28, 9, 0)
    assert due(at(28, 11, 18), "09:00", missed.day) is None  # late once
    assert due(at(28, 0, 30), "00:15", "2026-11-27").send  # just after midnight
    # Never sent before: at the minute it goes; past it, the first one waits for tomorrow.
    assert due(at(27, 9, 0, 30), "09:00", None).send
    skip = due(at(27, 15, 0), "09:00", None)
    assert not skip.send and skip.day == "2026-11-27"
    assert due(at(28, 9, 0), "09:00", skip.day).send


def test_the_alerter_queues_one_report_a_day_even_across_a_restart(home):
    env = bk_env(home, ALERTS="on", MONITORING_WEBHOOK="http://127.0.0.1:9/hook", DAILY_REPORT_AT="09:00")
    settings = Settings.from_env(env)
    alerter = Alerter(settings)
    alerter.step(now=at(26, 9, 0, 1).timestamp())  # the day before: the first report
    alerter.store.record("restart", "bot", "exited with code 1", "supervisor", at=at(27, 3, 0).timestamp(),
                         cause="crash")
    alerter.store.record("restart", "bot", "heartbeat stale", "monitor", at=at(27, 4, 0).timestamp(),
                         cause="stale-heartbeat")
    errors = ErrorLog(settings.history_db, Redactor(), clock=lambda: at(27, 5, 0).timestamp())
    for _ in range(3):
        try:
            {}["missing"]
        except KeyError as exc:
            errors.add(exc)

    def reports():
        return [a for a in alerter.store.alerts() if a["kind"] == "daily-report"]

    alerter.step(now=at(27, 8, 59, 59).timestamp())
    assert len(reports()) == 1
    alerter.step(now=at(27, 9, 0, 2).timestamp())
    assert len(reports()) == 2
    text = reports()[0]["text"]
    assert "daily report" in text and "2026-11-27" in text and "late" not in text
    for part in ("Uptime (24 h):", "Incidents:", "Restarts: 2 (", "crash 1", "stale-heartbeat 1",
                 "Updates handled:", "Errors (24 h): 3", "3× KeyError in test_report.py:", "Outbox: 0 waiting",
                 "Disk:", "memory:"):
        assert part in text, (part, text)
    alerter.close()
    restarted = Alerter(Settings.from_env(env))  # the monitor restarts within the minute
    restarted.step(now=at(27, 9, 0, 40).timestamp())
    assert len([a for a in restarted.store.alerts() if a["kind"] == "daily-report"]) == 2
    restarted.step(now=at(28, 10, 5).timestamp())  # down over the 28th's 09:00: sent late, once
    restarted.step(now=at(28, 10, 6).timestamp())
    late = [a for a in restarted.store.alerts() if a["kind"] == "daily-report"]
    assert len(late) == 3 and "(sent late at 10:05: the monitor was not running at 09:00)" in late[0]["text"]
    restarted.close()
