"""Redis trouble is visible and safe (REDIS_URL): real bots, a real redis-server, the emulator.

A fresh poller with Redis unreachable stands by, saying why (heartbeat redis_down_since, verdict
degraded with cause redis-unreachable), or polls alone when REDIS_DOWN_POLLING=alone; a poller that
holds the lock keeps polling when Redis goes; a wrong password is the same trouble; a webhook replica
never runs a redelivered update twice without Redis, and counts the cross-replica duplicates it could
not prevent once Redis is back."""

from __future__ import annotations

from botfixtures import *  # noqa: F401,F403  (emulator, ask, BotProcess, wait_for)
from conftest import bk_env, free_port
from redisfixtures import RedisServer, redis_url  # noqa: F401 - fixture
from test_replicas import SECRET, Replica, answers_to, poller

from botkeeper.emulator import Emulator


def test_a_fresh_poller_without_redis_stands_by_and_says_why_or_polls_alone_if_allowed(tmp_path, emulator):
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    waiting = poller(tmp_path, "waiting", emulator, REDIS_URL=nowhere).start()
    try:
        hb = waiting.wait_state("standby", 20)
        assert hb["detail"] == "waiting for Redis to hold the poller lock"
        hb = wait_for(lambda: (b := waiting.heartbeat()).get("redis_down_since") and b, 10, message="redis_down_since")
        assert hb["redis_error"] == "ConnectionError" and nowhere not in waiting.stderr
    finally:
        waiting.stop()
    alone = poller(tmp_path, "alone", emulator, REDIS_URL=nowhere, REDIS_DOWN_POLLING="alone").start()
    try:
        alone.wait_polled(20)
        ask(emulator, "/ping", "pong", 10, chat_id=31)
        assert alone.heartbeat()["redis_down_since"]
        assert "polling from this copy alone (REDIS_DOWN_POLLING=alone)" in alone.stderr
    finally:
        alone.stop()


def test_a_poller_holding_the_lock_keeps_polling_when_redis_goes_or_refuses_the_password(tmp_path, emulator):
    server = RedisServer(tmp_path)
    proc = poller(tmp_path, "holder", emulator, REDIS_URL=server.url, HEARTBEAT_INTERVAL="0.3").start()
    try:
        proc.wait_polled(20)
        server.stop()
        wait_for(lambda: proc.heartbeat().get("redis_down_since"), 15, message="Redis seen down")
        ask(emulator, "/ping", "pong", 10, chat_id=32)  # still polling, still answering
        assert proc.heartbeat()["state"] == "polling"
        # Redis back, but with a password this copy does not know: the same trouble, said as such
        server = RedisServer(tmp_path, port=server.port, password="not-the-one-in-REDIS_URL")
        wait_for(lambda: proc.heartbeat().get("redis_error") == "AuthenticationError", 15,
                 message=f"the refused password seen: {proc.heartbeat().get('redis_error')}")
        ask(emulator, "/ping", "pong", 10, chat_id=32)
    finally:
        proc.stop()
        server.stop()


def test_webhook_replicas_without_redis_run_a_redelivery_once_and_count_what_they_could_not_prevent(
        tmp_path, emulator: Emulator):
    server = RedisServer(tmp_path)
    ports = [free_port(), free_port()]
    reps = []
    try:
        for i, port in enumerate(ports):
            home = tmp_path / f"replica{i}"
            home.mkdir()
            env = bk_env(home, TELEGRAM_API_BASE_URL=emulator.url, TELEGRAM_BOT_TOKEN=FAKE_TOKEN,
                         TELEGRAM_MODE="webhook", WEBHOOK_PORT=str(port), WEBHOOK_SECRET=SECRET,
                         WEBHOOK_URL=f"http://127.0.0.1:{ports[0]}/telegram", REDIS_URL=server.url,
                         HEARTBEAT_INTERVAL="0.3")
            reps.append(Replica(home, env, port).start())
        a, b = reps
        for rep in reps:
            rep.wait_state("webhook", 20)
        server.stop()
        again = emulator.new_message_update("/ping", chat_id=6100)
        assert a.post(again) == 200 and a.post(again) == 200  # a redelivery to the same replica
        wait_for(lambda: answers_to(emulator, again, 0), 10, message="the answer")
        both = emulator.new_message_update("/ping", chat_id=6200)
        assert a.post(both) == 200 and b.post(both) == 200  # to both: nothing can tell them apart now
        wait_for(lambda: len(answers_to(emulator, both, 0)) == 2, 10, message="both replicas answering")
        assert wait_for(lambda: a.heartbeat().get("redis_down_since") and b.heartbeat().get("redis_down_since"),
                        10, message="both replicas see Redis down")
        server = RedisServer(tmp_path, port=server.port)
        later = emulator.new_message_update("/ping", chat_id=6300)
        assert a.post(later) == 200 and b.post(later) == 200  # Redis back: the claims decide again
        wait_for(lambda: a.heartbeat().get("duplicates_unprevented", 0) + b.heartbeat().get(
            "duplicates_unprevented", 0) == 1, 15, message="the one duplicate counted")
        assert len(answers_to(emulator, again, 0)) == 1 and len(answers_to(emulator, later, 1)) == 1
    finally:
        for rep in reps:
            rep.stop()
        server.stop()
