"""The Redis server the Redis backends' tests run against, and a fresh key prefix per store.

The tests use the server at ``TOKENLEAN_REDIS_URL`` (the Makefile sets
``redis://127.0.0.1:6379/0``). They fail, never skip, when it does not answer: the message says
how to start one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator

import pytest
from scripts.with_redis import answers, start_server

URL = os.environ.get("TOKENLEAN_REDIS_URL", "redis://127.0.0.1:6379/0")
START = (
    "start one with `apt-get install redis-server && redis-server --port 6379 --daemonize yes` "
    "(or point TOKENLEAN_REDIS_URL at another server)"
)


def require_server() -> None:
    """Fail the test, saying how to start a server, unless Redis answers at ``URL``."""
    problem = answers(URL)
    if problem is not None:
        pytest.fail(f"no Redis server answers at {URL} ({problem}); {START}", pytrace=False)


class Prefixes:
    """Hands out random key prefixes and deletes their keys afterwards."""

    def __init__(self) -> None:
        self.used: list[str] = []

    def new(self) -> str:
        prefix = f"tokenlean-test-{secrets.token_hex(6)}:"
        self.used.append(prefix)
        return prefix

    def cleanup(self) -> None:
        import redis

        client = redis.Redis.from_url(URL)
        try:
            for prefix in self.used:
                keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                for at in range(0, len(keys), 1000):
                    client.delete(*keys[at : at + 1000])
        finally:
            client.close()


@pytest.fixture
def prefixes() -> Iterator[Prefixes]:
    """Fresh key prefixes on the test server, deleted after the test."""
    require_server()
    made = Prefixes()
    yield made
    made.cleanup()


@contextlib.contextmanager
def own_server(port: int | None = None) -> Iterator[str]:
    """A throwaway redis-server on ``port`` (default: a free one), stopped on exit (to lose a
    server on purpose); yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server is not installed; {START}", pytrace=False)
    process, url = start_server(binary, port)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
