"""A large partition's switch to HNSW goes through an interim inverted file index: it answers
within seconds, with exact scores and measured recall, while HNSW builds aside, and each swap is
atomic.

:func:`measure_interim_index` measures the interim index at the bench's scale (100,000 vectors
of 384 dimensions) for the report::

    HF_HUB_OFFLINE=1 .venv/bin/python -c "from tests.cache.test_interim_index import \\
        measure_interim_index as m; print(m())"
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tokenlean as tl
from tests.redis_server import URL, Prefixes, prefixes
from tokenlean._cache.vector_index import INTERIM_RECALL, VectorIndex
from tokenlean.testing import HashingEmbedder

__all__ = ["prefixes"]  # the fixture, imported for pytest

Vectors = npt.NDArray[np.float32]


def clustered(n: int, dimension: int, seed: int = 0) -> Vectors:
    """Unit vectors around ``n // 20`` random centres: neighbours exist, as among cached
    prompts."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 20), dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)]
    vectors = vectors + 0.8 * rng.standard_normal((n, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def near(vectors: Vectors, cosine: float, count: int, seed: int = 1) -> Vectors:
    """``count`` queries, each a stored vector moved to ``cosine`` in a random direction."""
    rng = np.random.default_rng(seed)
    base = vectors[rng.integers(0, len(vectors), count)]
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise -= np.sum(noise * base, axis=1, keepdims=True) * base
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (cosine * base + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


def filled(vectors: Vectors, **options: Any) -> VectorIndex:
    index = VectorIndex(vectors.shape[1], maintain_inline=False, **options)
    index.add_many([f"k{i}" for i in range(len(vectors))], vectors)
    return index


def to_interim(index: VectorIndex) -> None:
    """Run the interim stage of the switch to HNSW only (maintenance is not inline: nothing
    else runs), leaving the interim index in use."""
    plan = index._snapshot()
    assert plan is not None
    target, keys, snapshot = plan
    assert target == "ivf"
    index._swap(index._build(snapshot, target), keys)
    assert index.kind == "ivf"


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, threading.Event]]:
    """Builds of each kind wait for their ``release`` event; ``started`` events say a build of
    that kind began."""
    events = {
        f"{what} {kind}": threading.Event()
        for kind in ("ivf", "hnsw")
        for what in ("started", "release")
    }
    original = VectorIndex._build

    def build(self: VectorIndex, vectors: Vectors, kind: str) -> Any:
        if f"started {kind}" in events:
            events[f"started {kind}"].set()
            assert events[f"release {kind}"].wait(30), f"{kind} build never released"
        return original(self, vectors, kind)

    monkeypatch.setattr(VectorIndex, "_build", build)
    yield events
    for event in events.values():  # never leave a builder thread waiting
        event.set()


def in_thread(work: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def until(check: Callable[[], bool], limit_s: float = 30) -> None:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < limit_s, "not within the limit"
        time.sleep(0.005)


def test_a_large_index_answers_from_the_interim_index_while_hnsw_builds(
    gated: dict[str, threading.Event],
) -> None:
    """Past the threshold, a large index switches to the interim index first; it answers,
    with the exact inner products of the stored vectors, until HNSW is swapped in."""
    vectors = clustered(3_000, 32)
    index = filled(vectors, hnsw_threshold=2_000, interim_min=2_000)
    assert (index.kind, index.maintenance_due) == ("flat", True)
    gated["release ivf"].set()
    builder = in_thread(index.maintain)
    assert gated["started hnsw"].wait(30)
    assert index.kind == "ivf"
    assert 1 < (index.interim_lists or 0) < 3_000
    assert index.nprobe in {2**i for i in range(13)}
    assert index.nprobe <= (index.interim_lists or 0)
    assert (index.interim_recall or 0.0) >= INTERIM_RECALL
    for query in near(vectors, 0.9, 50):
        found = index.search(query, 3)
        assert len(found) == 3
        for key, score in found:  # exact scores: the caller's threshold applies unchanged
            assert score == pytest.approx(float(vectors[int(key[1:])] @ query), abs=1e-5)
    gated["release hnsw"].set()
    builder.join(30)
    assert (index.kind, index.maintenance_due) == ("hnsw", False)


def test_the_interim_index_finds_the_exact_nearest_neighbour_of_near_queries() -> None:
    """Recall@1 against exact search, on paraphrase-like queries (cosine 0.9 to a stored
    vector) the calibration never saw, is at least 0.95."""
    vectors = clustered(12_000, 64)
    index = filled(vectors, hnsw_threshold=10_000, interim_min=10_000, ef_search=64)
    to_interim(index)
    queries = near(vectors, 0.9, 400)
    exact = np.max(queries @ vectors.T, axis=1)
    found = np.array([index.search(query, 1)[0][1] for query in queries])
    assert float(np.mean(found >= exact - 1e-4)) >= 0.95


def test_changes_made_during_either_build_are_in_the_final_index(
    gated: dict[str, threading.Event],
) -> None:
    """Adds, removals and replacements made while the interim index, then HNSW, are built
    are all searchable (or gone) afterwards."""
    rng = np.random.default_rng(3)
    vectors = dict(enumerate(clustered(2_500, 16)))
    index = filled(np.stack(list(vectors.values())), hnsw_threshold=2_000, interim_min=2_000)
    builder = in_thread(index.maintain)

    def change(start: int) -> None:
        for i in range(start, start + 40):  # adds, past the replay-under-lock limit
            vectors[i] = clustered(1, 16, seed=i)[0]
            index.add(f"k{i}", vectors[i])
        for i in rng.choice(list(vectors), 25, replace=False):  # removals
            index.remove(f"k{i}")
            del vectors[int(i)]
        replaced = next(iter(vectors))
        vectors[replaced] = clustered(1, 16, seed=10_000 + start)[0]
        index.add(f"k{replaced}", vectors[replaced])

    for kind, start in (("ivf", 5_000), ("hnsw", 6_000)):
        assert gated[f"started {kind}"].wait(30)
        change(start)
        gated[f"release {kind}"].set()
    builder.join(30)
    assert index.kind == "hnsw"
    assert len(index) == len(vectors)
    for i, vector in vectors.items():
        key, score = index.search(vector, 1)[0]
        assert key == f"k{i}" or score == pytest.approx(1.0, abs=1e-5)


def test_every_search_during_the_swaps_sees_one_whole_index() -> None:
    """Searches running while the index goes from exact to interim to HNSW never fail, never
    come back empty, and always pair a key with its own vector's score: each swap is
    atomic."""
    vectors = clustered(4_000, 32)
    index = filled(vectors, hnsw_threshold=3_000, interim_min=3_000)
    stop, seen, errors = threading.Event(), set(), []

    def search() -> None:
        queries = near(vectors, 0.95, 200, seed=threading.get_ident() % 1000)
        i = 0
        while not stop.is_set():
            query = queries[i % len(queries)]
            i += 1
            kind, found = index.kind, index.search(query, 4)
            seen.add(kind)
            try:
                assert len(found) == 4
                for key, score in found:
                    assert abs(score - float(vectors[int(key[1:])] @ query)) < 1e-4
            except AssertionError as exc:
                errors.append(exc)

    readers = [in_thread(search) for _ in range(2)]
    assert index.maintain()
    until(lambda: "hnsw" in seen)
    stop.set()
    for reader in readers:
        reader.join(30)
    assert errors == []
    assert index.kind == "hnsw"
    assert seen == {"flat", "ivf", "hnsw"}


def test_an_index_below_the_interim_minimum_switches_straight_to_hnsw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small (or interim-less) indexes skip the interim stage: one build, HNSW."""
    built: list[str] = []
    original = VectorIndex._build

    def build(self: VectorIndex, vectors: Vectors, kind: str) -> Any:
        built.append(kind)
        return original(self, vectors, kind)

    monkeypatch.setattr(VectorIndex, "_build", build)
    for options in ({"interim_min": 10_000}, {"interim_min": None}):
        index = filled(clustered(600, 16), hnsw_threshold=500, **options)
        assert index.maintain()
        assert index.kind == "hnsw"
    assert built == ["hnsw", "hnsw"]


# ------------------------------------------------------------------ a replica joining Redis


def _request(text: str) -> tl.CacheRequest:
    return tl.CacheRequest.from_openai(
        {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    )


def _cache(store: tl.CacheStore | str, hnsw_threshold: int = 400) -> tl.CompletionCache:
    cache = tl.CompletionCache(
        store=store,
        policy=tl.CachePolicy.semantic(threshold=0.9, verifier=None, compare=tl.last_user_turn),
        embedder=HashingEmbedder(384),
        background_judging=False,
        hnsw_threshold=hnsw_threshold,
    )
    cache._partitions.interim_min = 400  # the default (10,000) would take a while to fill
    return cache


def _text(i: int) -> str:
    return f"question {i} about parcel {i * 7919 % 1000} and order {i % 37}"


def _paraphrase(i: int) -> str:
    return " ".join(reversed(_text(i).split()))


def test_a_replica_joining_a_shared_store_answers_from_the_interim_index_then_hnsw(
    prefixes: Prefixes, gated: dict[str, threading.Event]
) -> None:
    """A replica joining a Redis store past the threshold serves lookups (hits, misses and
    another replica's new entries) from its interim index while HNSW builds, then from
    HNSW."""
    uri = f"{URL}?prefix={prefixes.new()}"
    filler, replica = _cache(uri, hnsw_threshold=10**9), _cache(uri)
    try:
        for i in range(500):
            filler.store(_request(_text(i)), f"answer {i}")
        gated["release ivf"].set()
        first = replica.lookup(_request(_paraphrase(7)))  # joins: loads, builds aside
        assert (first.hit, first.value) == (True, "answer 7")
        assert gated["started hnsw"].wait(30)
        until(lambda: replica.stats().indexes == {"ivf": 1})
        for i in range(0, 500, 25):
            result = replica.lookup(_request(_paraphrase(i)))
            assert (result.hit, result.layer) == (True, "semantic")
            # its own answer, or one whose question hashes to the same vector (a tie)
            assert result.value == f"answer {i}" or result.similarity == pytest.approx(1.0)
        assert not replica.lookup(_request("an unrelated question entirely")).hit
        filler.store(_request(_text(1_000)), "stored while the replica builds")
        until(lambda: replica.lookup(_request(_paraphrase(1_000))).hit, 5)
        gated["release hnsw"].set()
        until(lambda: replica.stats().indexes == {"hnsw": 1})
        assert replica.lookup(_request(_paraphrase(1_000))).value == (
            "stored while the replica builds"
        )
    finally:
        filler.close()
        replica.close()


def test_the_entry_bound_holds_across_processes_on_redis(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three processes storing more distinct entries than ``--max-entries`` into one Redis
    store leave at most that many: the bound is deployment-wide."""
    from tokenlean.cli import main

    code = 0
    try:
        main(
            ["bench", "replicas", "--store", URL, "--processes", "3", "--seconds", "2",
             "--catch-up-entries", "50", "--max-entries", "40", "--json"]
        )  # fmt: skip
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 0
    redis = json.loads(capsys.readouterr().out)["redis"]
    assert redis["max_entries"] == 40
    assert redis["entries_stored_distinct"] > 40
    assert redis["entries_over_bound"] == 0
    assert redis["entries_at_end"] <= 40


# ------------------------------------------------------------------ the figure


def measure_interim_index(
    entries: int = 100_000, dimension: int = 384, queries: int = 500
) -> dict[str, Any]:
    """Build time, lookup latency (search only) and recall@1 against exact search of the interim
    index over ``entries`` vectors, on two kinds of data: the bench's (``HashingEmbedder`` over
    the ``bench replicas`` catch-up texts, queried with their paraphrases and with vectors moved
    to cosine 0.9 and 0.8), and clustered Gaussian vectors (moved likewise). The exact index's
    latency on the same data is given for comparison."""
    texts = [f"stored entry {i} about topic {i % 97} and {i % 89}" for i in range(entries)]
    embedder = HashingEmbedder(dimension)
    bench = embedder.embed(texts).astype(np.float16).astype(np.float32)
    step = max(1, entries // queries)
    paraphrases = embedder.embed(
        [f"and {i % 89} topic {i % 97} about entry {i} stored" for i in range(0, entries, step)]
    )
    out: dict[str, Any] = {"entries": entries}
    for name, vectors, sets in (
        ("bench", bench, {"paraphrases": paraphrases}),
        ("clustered", clustered(entries, dimension), {}),
    ):
        sets |= {f"cosine {c}": near(vectors, c, queries) for c in (0.9, 0.8)}
        index = filled(vectors, hnsw_threshold=entries - 1)
        flat_ms = _latency(index, next(iter(sets.values())))
        start = time.perf_counter()
        to_interim(index)
        row: dict[str, Any] = {
            "build_s": round(time.perf_counter() - start, 2),
            "lists": index.interim_lists,
            "nprobe": index.nprobe,
            "calibration_recall_at_1": index.interim_recall,
            "flat_search_ms_p50": flat_ms,
        }
        for label, chosen in sets.items():
            exact = np.max(chosen @ vectors.T, axis=1)
            found = np.array([index.search(q, 1)[0][1] for q in chosen])
            row[f"recall_at_1 {label}"] = round(float(np.mean(found >= exact - 1e-4)), 4)
            row[f"search_ms_p50 {label}"] = _latency(index, chosen)
        out[name] = row
    return out


def _latency(index: VectorIndex, queries: Vectors) -> float:
    times = []
    for query in queries[:200]:
        start = time.perf_counter()
        index.search(query, 4)
        times.append((time.perf_counter() - start) * 1000)
    return round(float(np.median(times)), 3)


def test_a_replica_rebuilding_from_a_scan_builds_its_large_index_in_the_background(
    prefixes: Prefixes,
) -> None:
    """A replica that fell behind a trimmed feed rebuilds from a scan as exact indexes, then
    gets the interim index and HNSW in the background, with no write of its own."""
    from tokenlean._cache.redis_store import RedisStore

    prefix = prefixes.new()
    writer = _cache(RedisStore(URL, prefix=prefix, feed_length=10), hnsw_threshold=10**9)
    reader = _cache(RedisStore(URL, prefix=prefix, feed_length=10))
    try:
        writer.store(_request(_text(0)), "answer 0")
        assert reader.lookup(_request(_paraphrase(0))).hit  # loaded: 1 entry, exact
        for i in range(1, 500):  # past the threshold, and past the trimmed feed
            writer.store(_request(_text(i)), f"answer {i}")
        until(lambda: reader.lookup(_request(_paraphrase(499))).hit, 5)
        assert reader._partitions.rebuilds == 1
        until(lambda: reader.stats().indexes == {"hnsw": 1})
        assert reader.lookup(_request(_paraphrase(250))).hit
    finally:
        writer.close()
        reader.close()


def test_a_replica_growing_through_the_feed_builds_its_large_index_in_the_background(
    prefixes: Prefixes,
) -> None:
    """A read-only replica whose partition grows past the threshold through another replica's
    writes gets the interim index and HNSW in the background, with no write of its own."""
    uri = f"{URL}?prefix={prefixes.new()}"
    writer, reader = _cache(uri, hnsw_threshold=10**9), _cache(uri)
    try:
        writer.store(_request(_text(0)), "answer 0")
        assert reader.lookup(_request(_paraphrase(0))).hit  # loaded: 1 entry, exact
        for i in range(1, 500):
            writer.store(_request(_text(i)), f"answer {i}")
        until(lambda: reader.lookup(_request(_paraphrase(499))).hit, 5)
        until(lambda: reader.stats().indexes == {"hnsw": 1})
        assert reader._partitions.rebuilds == 0
        assert reader.lookup(_request(_paraphrase(250))).hit
    finally:
        writer.close()
        reader.close()
