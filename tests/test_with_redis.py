"""``scripts/with_redis.py``, through which ``make test`` runs pytest: the Redis check of
``.ci/run``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "with_redis.py"
# The child pings the URL it was given, and says which.
CHILD = (
    "import os, redis; url = os.environ['TOKENLEAN_REDIS_URL']; "
    "redis.Redis.from_url(url).ping(); print('child:', url)"
)


def _run(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENLEAN_REDIS_URL": url}
    return subprocess.run(
        [sys.executable, str(SCRIPT), sys.executable, "-c", CHILD],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_server_that_does_not_answer_elsewhere_stops_the_run_with_how_to_get_one() -> None:
    """A non-local URL that does not answer: exit 1 before running anything, saying how to get
    a server."""
    result = _run("redis://192.0.2.1:6379/0")  # TEST-NET-1: never routed
    assert result.returncode == 1
    assert "child:" not in result.stdout
    assert "no Redis server answers at redis://192.0.2.1:6379/0" in result.stderr
    assert "apt-get install redis-server" in result.stderr


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_a_local_server_that_does_not_answer_is_replaced_by_a_throwaway_one() -> None:
    """A loopback URL with nothing listening: a throwaway server is started, the command runs
    against it (its exit status is passed on), and the server is stopped after."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _run(f"redis://127.0.0.1:{port}/0")
    assert result.returncode == 0, result.stderr
    own = result.stdout.split("child: ")[1].strip()
    assert own != f"redis://127.0.0.1:{port}/0"
    assert f"started a throwaway redis-server at {own}" in result.stdout
    import redis

    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(own, socket_connect_timeout=1).ping()
