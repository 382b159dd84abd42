"""``tokenlean bench replicas`` runs processes on a shared Redis store and reports, per scheme,
throughput, visibility, lost updates, errors, bounds and catch-up."""

from __future__ import annotations

import json
import time

import pytest

import tokenlean as tl
from tests.redis_server import URL, require_server
from tokenlean.cli import main


def test_bench_replicas_reports_the_figures_per_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    """Two processes for a second on Redis: every field is reported, nothing acknowledged is
    lost, nothing fails, the bound holds and probes become hits in the other process."""
    require_server()
    code = 0
    try:
        main(
            ["bench", "replicas", "--store", URL, "--processes", "2", "--seconds", "1",
             "--catch-up-entries", "200", "--json"]
        )  # fmt: skip
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 0
    redis = json.loads(capsys.readouterr().out)["redis"]
    for field in ("lookups_per_s", "visibility_ms_p50", "visibility_ms_p95", "catch_up_s"):
        assert redis[field] is not None
    assert redis["lost_updates"] == redis["errors"] == redis["entries_over_bound"] == 0
    assert redis["probe_hits_in_other_processes"] > 0
    assert redis["catch_up_entries"] == 200


def test_bench_replicas_times_a_replica_joining_a_long_session() -> None:
    """With join_turns, each store also reports a replica joining a session: it embeds only the
    question with the stored turn vectors, every turn without them."""
    from tokenlean.bench._replicas import replicas_bench
    from tokenlean.testing import HashingEmbedder

    require_server()
    result = replicas_bench(
        [URL], processes=2, seconds=0.5, catch_up_entries=50, join_turns=40,
        embedder=HashingEmbedder(32),
    )  # fmt: skip
    join = result["redis"]["session_join"]
    assert join["turns"] == 40
    assert join["join_embedded_texts"] == 1
    assert join["join_embedded_texts_embedding"] == 40 + 1


def test_a_store_the_processes_cannot_use_fails_before_they_start() -> None:
    """A Redis server that refuses connections is a StoreError at once, not a wait for
    processes that cannot report."""
    from tokenlean.bench._replicas import replicas_bench

    start = time.perf_counter()
    with pytest.raises(tl.StoreError, match="usage failed"):
        replicas_bench(["redis://127.0.0.1:1/0"], processes=2, seconds=1)
    assert time.perf_counter() - start < 30
