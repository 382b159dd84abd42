"""Run a command (the test suite) with a Redis server answering at ``TOKENLEAN_REDIS_URL``.

``make test`` (and so ``.ci/run``) runs pytest through this. The Redis backends' tests need a
real server (plain Redis 7, no modules):

- when the server at ``TOKENLEAN_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) answers,
  the command runs against it;
- when it does not, the URL is on this machine and ``redis-server`` is installed, a throwaway
  server is started on a free port for the command (nothing saved to disk) and stopped after;
- otherwise it stops before running anything, saying how to get a server.

Usage: ``python scripts/with_redis.py COMMAND [ARGS...]``; the exit status is the command's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

DEFAULT_URL = "redis://127.0.0.1:6379/0"
INSTALL = (
    "install one (Debian: `apt-get install redis-server`) and start it, e.g. "
    "`redis-server --port 6379 --daemonize yes`, or point TOKENLEAN_REDIS_URL at a server"
)


def answers(url: str) -> str | None:
    """None when a Redis server answers PING at ``url``, else why not."""
    try:
        import redis
    except ImportError:
        return "redis-py is not installed (pip install -e '.[redis]')"
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return str(exc)
    finally:
        client.close()
    return None


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(binary: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server on ``port`` (default: a free loopback port), once it accepts
    connections."""
    port = port or free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while answers(url) is not None:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"tests: redis-server did not start on port {port}")
        time.sleep(0.05)
    return process, url


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    url = os.environ.get("TOKENLEAN_REDIS_URL") or DEFAULT_URL
    problem = answers(url)
    if problem is None:
        print(f"tests: Redis answers at {url}", flush=True)
        return subprocess.call(argv)
    host = urlsplit(url).hostname or ""
    binary = shutil.which("redis-server")
    if host not in ("127.0.0.1", "localhost", "::1") or binary is None:
        print(
            f"tests: no Redis server answers at {url} ({problem}); the Redis backends' tests "
            f"need one: {INSTALL}",
            file=sys.stderr,
        )
        return 1
    process, own = start_server(binary)
    print(f"tests: no Redis at {url}; started a throwaway redis-server at {own}", flush=True)
    try:
        return subprocess.call(argv, env={**os.environ, "TOKENLEAN_REDIS_URL": own})
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
