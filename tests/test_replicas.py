"""Two bundles' bots on one token against the emulator and a real redis-server: webhook mode with
the secret header, exactly-once handling, the shared send limits, a replica killed; and polling with
REDIS_URL (a second poller stands by) and without it (no redis import on that path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from botfixtures import BotProcess, emulator  # noqa: F401 - fixture
from conftest import FAKE_TOKEN, ROOT, bk_env, free_port, wait_for
from redisfixtures import redis_url  # noqa: F401 - fixture

from botkeeper.emulator import Emulator, Limits

SECRET = "s3cret-for-the-tests_0123456789"


class Replica(BotProcess):
    def __init__(self, home: Path, env: dict[str, str], port: int):
        super().__init__(home, env)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/telegram"

    def post(self, update: dict, secret: str | None = SECRET) -> int:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        return requests.post(self.url, json=update, headers=headers, timeout=10).status_code


@pytest.fixture
def replicas(tmp_path: Path, emulator: Emulator, redis_url: str):  # noqa: F811
    """Factory: replicas(n, **env) starts n webhook-mode bots in n homes, sharing Redis; all stopped after.
    They register one URL (the first replica's), as replicas behind one load balancer do."""
    started: list[Replica] = []

    def make(n: int = 2, **extra: str) -> list[Replica]:
        ports = [free_port() for _ in range(n)]
        for i, port in enumerate(ports):
            home = tmp_path / f"replica{i}"
            home.mkdir()
            env = bk_env(home, TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN,
                         TELEGRAM_MODE="webhook", WEBHOOK_PORT=str(port), WEBHOOK_SECRET=SECRET,
                         WEBHOOK_URL=f"http://127.0.0.1:{ports[0]}/telegram", REDIS_URL=redis_url, **extra)
            started.append(Replica(home, env, port).start())
        for rep in started[-n:]:
            rep.wait_state("webhook", 20)
        return started[-n:]

    yield make
    for rep in started:
        rep.stop()


def answers_to(emulator: Emulator, update: dict, wait: float = 10.0) -> list[dict]:
    """The bot's messages in the update's chat (each test update has a chat of its own)."""
    msg = update["message"]
    return emulator.sent_messages(chat_id=msg["chat"]["id"], after=msg["message_id"], wait=wait)


def test_either_replica_answers_and_a_duplicate_is_answered_once(replicas, emulator: Emulator):  # noqa: F811
    a, b = replicas(2)
    for i, rep in enumerate([a, b, a, b]):
        update = emulator.new_message_update("/ping", chat_id=5000 + i)
        assert rep.post(update) == 200
        assert answers_to(emulator, update), f"no answer from replica {rep.port}"
    twice = emulator.new_message_update("/ping", chat_id=6000)
    assert a.post(twice) == 200 and b.post(twice) == 200  # both confirm to Telegram
    wait_for(lambda: a.heartbeat().get("duplicates_skipped", 0) + b.heartbeat().get("duplicates_skipped", 0) == 1,
             10, message="one replica skipping the duplicate")
    wait_for(lambda: answers_to(emulator, twice, 0), 10, message="the answer")
    assert len(answers_to(emulator, twice, 0)) == 1


def test_a_wrong_or_missing_secret_is_refused_before_any_handler(replicas, emulator: Emulator):  # noqa: F811
    a, _ = replicas(2)
    bad = emulator.new_message_update("/ping", chat_id=7000)
    assert a.post(bad, secret="wrong") == 403
    assert a.post(bad, secret=None) == 403
    assert requests.get(a.url, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}, timeout=5).status_code == 405
    wait_for(lambda: a.heartbeat().get("webhook_refused") == 2, 10, message="two refusals in the heartbeat")
    good = emulator.new_message_update("/ping", chat_id=7001)
    assert a.post(good) == 200
    assert answers_to(emulator, good)
    assert not answers_to(emulator, bad, 0)  # the refused update reached no handler
    hb = wait_for(lambda: (hb := a.heartbeat()).get("updates_handled") == 1 and hb, 10, message="one handled")
    assert hb["webhook_received"] == 1
    assert SECRET not in a.stderr


def test_telegram_delivers_to_the_registered_webhook_and_a_killed_replica_leaves_the_other(
        replicas, emulator: Emulator):  # noqa: F811
    a, b = replicas(2)
    assert list(emulator.webhooks().values())[0]["url"] == a.url
    sent = emulator.inject_message("/ping", chat_id=8000)  # the emulator POSTs it, as Telegram would
    assert emulator.sent_messages(chat_id=8000, after=sent["message_id"], wait=10)
    wait_for(lambda: a.heartbeat().get("webhook", {}).get("url_ok") is True, 10, message="getWebhookInfo seen")
    a.kill()
    update = emulator.new_message_update("/ping", chat_id=8001)
    assert b.post(update) == 200
    assert answers_to(emulator, update)
    # Telegram (the emulator) now fails to deliver to the dead URL: the survivor's verdict says so.
    emulator.inject_message("/ping", chat_id=8002)
    hb = wait_for(lambda: (hb := b.heartbeat()).get("webhook", {}).get("last_error_at") and hb, 10,
                  message="getWebhookInfo reporting the failed delivery")
    assert hb["webhook"]["pending"] >= 1 and hb["state"] == "webhook"


def test_combined_sends_stay_within_telegrams_limit(replicas, emulator: Emulator):  # noqa: F811
    emulator.set_limits(Limits(per_second=10, chat_interval=1.0))  # 429 for anything over 10/s together
    a, b = replicas(2, OUTBOX_RATE="10")  # each alone may send 10/s: 20/s together without Redis
    emulator.rates(reset=True)
    updates = [emulator.new_message_update("/ping", chat_id=9000 + i) for i in range(40)]
    for i, update in enumerate(updates):
        assert (a if i % 2 else b).post(update) == 200
    wait_for(lambda: emulator.rates()["accepted"] >= 40, 30, message="40 answers")
    rates = emulator.rates()
    assert rates["rejected"] == 0, rates
    assert rates["max_per_second"] <= 10, rates


def poller(tmp_path: Path, name: str, emulator: Emulator, **extra: str) -> BotProcess:  # noqa: F811
    home = tmp_path / name
    home.mkdir()
    env = bk_env(home, TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN, **extra)
    return BotProcess(home, env)


def test_a_second_poller_stands_by_with_redis_and_takes_over(tmp_path, emulator: Emulator, redis_url):  # noqa: F811
    first = poller(tmp_path, "one", emulator, REDIS_URL=redis_url).start()
    second = None
    try:
        first.wait_polled()
        second = poller(tmp_path, "two", emulator, REDIS_URL=redis_url).start()
        hb = second.wait_state("standby")
        assert "holds the lock" in hb["detail"]
        sent = emulator.inject_message("/ping", chat_id=4242)
        assert emulator.sent_messages(chat_id=4242, after=sent["message_id"], wait=10)
        assert not [c for c in emulator.calls()["recent"] if c["status"] == 409]  # no fight
        first.stop()
        second.wait_polled()  # the lock was released at the first's stop: taken over at once
        sent = emulator.inject_message("/ping", chat_id=4243)
        assert emulator.sent_messages(chat_id=4243, after=sent["message_id"], wait=10)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_polling_without_redis_url_imports_nothing_new(tmp_path, emulator: Emulator):  # noqa: F811
    bot = poller(tmp_path, "solo", emulator).start()
    try:
        bot.wait_polled()
        sent = emulator.inject_message("/ping", chat_id=4244)
        assert emulator.sent_messages(chat_id=4244, after=sent["message_id"], wait=10)
    finally:
        bot.stop()
    code = ("import sys, botkeeper.bot.app, botkeeper.bot.keeper, botkeeper.bot.delivery; import json;"
            "print(json.dumps([m for m in ('redis', 'tornado', 'botkeeper.bot.shared', 'botkeeper.bot.webhook')"
            " if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == [], out.stderr
