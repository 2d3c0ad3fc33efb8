"""A real redis-server for the tests (Debian's package; .ci/run installs it): started on a free port
without persistence, stopped after the test. Import with `from redisfixtures import redis_url`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import free_port, wait_for

__all__ = ["redis_url", "RedisServer"]


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, password: str | None = None):
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--loglevel", "warning", *(["--requirepass", password] if password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1, password=password)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                assert self.proc.poll() is None, "redis-server exited"
                return False

        wait_for(answers, 10, message="redis-server answering PING")
        client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def redis_url(tmp_path: Path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    server = RedisServer(tmp_path)
    yield server.url
    server.stop()
