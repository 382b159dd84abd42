"""No lookup waits for an index rebuild: switches to HNSW and compactions build aside.

The tests make the build step deterministically slow (it sleeps) and measure lookups of another
partition, and of the rebuilding one, while it runs. :func:`measure_rebuild_stall` measures the
same with a real build at the default threshold (20,000 entries), for docs/benchmarks.md::

    HF_HUB_OFFLINE=1 .venv/bin/python -c "from tests.reliability.test_rebuild_stall import \\
        measure_rebuild_stall as m; print(m())"
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tokenlean as tl
from tokenlean._cache.vector_index import VectorIndex
from tokenlean.testing import HashingEmbedder

BUILD_S = 0.8  # how long the patched build step takes
P99_LIMIT_MS = 50.0


def req(text: str) -> tl.CacheRequest:
    return tl.CacheRequest.from_openai(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    )


def text(tenant: str, i: int) -> str:
    return f"{tenant} question {i} about parcel {i * 7919 % 1000} and order {i}"


def paraphrase(stored: str) -> str:
    """Another request (so the exact layer misses) with the same embedding: a semantic hit."""
    return stored.upper()


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else 0.0


@pytest.fixture
def slow_build(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every index build sleeps BUILD_S first; the event is set when one starts."""
    started = threading.Event()
    original = VectorIndex._build

    def build(self: VectorIndex, vectors: Any, hnsw: bool) -> Any:
        started.set()
        time.sleep(BUILD_S)
        return original(self, vectors, hnsw)

    monkeypatch.setattr(VectorIndex, "_build", build)
    return started


def make_cache(hnsw_threshold: int) -> tl.CompletionCache:
    policy = tl.CachePolicy.semantic(threshold=0.95, compare=tl.last_user_turn)
    return tl.CompletionCache(
        policy=policy, embedder=HashingEmbedder(64), hnsw_threshold=hnsw_threshold
    )


def while_running(
    work: Callable[[], None], started: threading.Event, probe: Callable[[], None]
) -> None:
    """Run ``work`` in a thread; once a build has started, call ``probe`` until work ends."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(10), "no rebuild started"
    while thread.is_alive():
        probe()
    thread.join()
    assert errors == []


def timed(cache: tl.CompletionCache, query: str, tenant: str) -> tuple[float, tl.CacheLookup]:
    start = time.perf_counter()
    result = cache.lookup(req(query), tenant=tenant)
    return (time.perf_counter() - start) * 1000, result


def test_a_switch_to_hnsw_stalls_no_lookup(slow_build: threading.Event) -> None:
    """While one partition converts to HNSW, lookups of another partition stay fast, those of
    the same partition are served by its old index, and changes made meanwhile survive."""
    cache = make_cache(hnsw_threshold=40)
    for i in range(40):
        cache.store(req(text("big", i)), f"big {i}", tenant="big", tags=(f"t{i}",))
    for i in range(20):
        cache.store(req(text("small", i)), f"small {i}", tenant="small")
    other_ms: list[float] = []
    same_hits: list[bool] = []
    changed = threading.Event()

    def probe() -> None:
        i = len(other_ms)
        ms, result = timed(cache, paraphrase(text("small", i % 20)), "small")
        other_ms.append(ms)
        assert (result.hit, result.layer) == (True, "semantic")
        _, same = timed(cache, paraphrase(text("big", 4 + i % 36)), "big")  # not t3's
        same_hits.append(same.hit and same.layer == "semantic")
        if not changed.is_set():  # an add and a removal in the partition being rebuilt
            cache.store(req(text("big", 1000)), "added during the build", tenant="big")
            assert cache.invalidate(tag="t3") == 1
            changed.set()
        time.sleep(0.005)

    while_running(
        lambda: cache.store(req(text("big", 40)), "big 40", tenant="big"), slow_build, probe
    )
    assert len(other_ms) >= 20
    assert p99(other_ms) <= P99_LIMIT_MS, f"p99 {p99(other_ms):.1f} ms during the rebuild"
    assert all(same_hits)
    assert cache.stats().indexes == {"flat": 1, "hnsw": 1}
    added = cache.lookup(req(paraphrase(text("big", 1000))), tenant="big")
    assert (added.hit, added.value) == (True, "added during the build")
    assert not cache.lookup(req(paraphrase(text("big", 3))), tenant="big").hit
    for i in (0, 39, 40):
        assert cache.lookup(req(paraphrase(text("big", i))), tenant="big").value == f"big {i}"


def test_a_compaction_after_removals_stalls_no_lookup(slow_build: threading.Event) -> None:
    """Removing many entries compacts their partition aside; other lookups stay fast."""
    cache = make_cache(hnsw_threshold=10_000)
    for i in range(200):
        tags = ("old",) if i % 2 else ()
        cache.store(req(text("big", i)), f"big {i}", tenant="big", tags=tags)
    for i in range(20):
        cache.store(req(text("small", i)), f"small {i}", tenant="small")
    other_ms: list[float] = []

    def probe() -> None:
        ms, result = timed(cache, paraphrase(text("small", len(other_ms) % 20)), "small")
        other_ms.append(ms)
        assert result.hit
        time.sleep(0.005)

    while_running(lambda: cache.invalidate(tag="old"), slow_build, probe)
    assert len(other_ms) >= 20
    assert p99(other_ms) <= P99_LIMIT_MS, f"p99 {p99(other_ms):.1f} ms during the rebuild"
    for i in range(0, 200, 37):
        result = cache.lookup(req(paraphrase(text("big", i))), tenant="big")
        assert result.hit is (i % 2 == 0), i


def test_changes_during_a_rebuild_are_replayed_into_the_new_index(
    slow_build: threading.Event,
) -> None:
    """Adds, removals and replacements made while the index rebuilds are all in the result."""
    rng = np.random.default_rng(7)

    def unit() -> np.ndarray:
        vector = rng.normal(size=16).astype(np.float32)
        return vector / np.linalg.norm(vector)

    index = VectorIndex(16, hnsw_threshold=100, maintain_inline=False)
    vectors = {f"k{i}": unit() for i in range(101)}
    for key, vector in vectors.items():
        index.add(key, vector)
    assert index.maintenance_due
    assert index.kind == "flat"
    done: list[bool] = []
    builder = threading.Thread(target=lambda: done.append(index.maintain()))
    builder.start()
    assert slow_build.wait(10)
    for i in range(101, 160):  # adds, past the replay-under-lock limit
        vectors[f"k{i}"] = unit()
        index.add(f"k{i}", vectors[f"k{i}"])
    for i in range(0, 40, 3):  # removals
        index.remove(f"k{i}")
        del vectors[f"k{i}"]
    vectors["k50"] = unit()  # a replacement
    index.add("k50", vectors["k50"])
    assert index.kind == "flat"  # searches still use the old index
    builder.join()
    assert done == [True]
    assert index.kind == "hnsw"
    assert len(index) == len(vectors)
    keys = list(vectors)
    matrix = np.stack([vectors[k] for k in keys])
    for key in keys:
        assert index.search(vectors[key], 1)[0][0] == key
    for _ in range(30):
        query = unit()
        assert index.search(query, 1)[0][0] == keys[int(np.argmax(matrix @ query))]


# ------------------------------------------------------------------ the figure


def measure_rebuild_stall(
    entries: int = 20_000, others: int = 1_000, runs: int = 3, dimension: int = 384
) -> dict[str, Any]:
    """Lookup latency, in another partition and in the same one, while a partition of
    ``entries`` entries switches to HNSW at the default threshold (a real build, no sleep).

    Returns the median over ``runs`` of each run's p99 (and max) in milliseconds, the build's
    duration and the lookups measured during it.
    """
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(5_000)]

    def sentence() -> str:
        return " ".join(rng.choice(words, 10))

    figures: list[dict[str, float]] = []
    for _ in range(runs):
        policy = tl.CachePolicy.semantic(threshold=0.95, compare=tl.last_user_turn)
        cache = tl.CompletionCache(
            policy=policy, embedder=HashingEmbedder(dimension), hnsw_threshold=entries
        )
        big = [sentence() for _ in range(entries + 1)]
        small = [sentence() for _ in range(others)]
        for question in big[:-1]:
            cache.store(req(question), "a", tenant="big")
        for question in small:
            cache.store(req(question), "b", tenant="small")
        samples: dict[str, list[tuple[float, float]]] = {"other": [], "same": []}
        stop = threading.Event()

        def lookups(
            cache: tl.CompletionCache,
            tenant: str,
            texts: list[str],
            out: list[tuple[float, float]],
            stop: threading.Event,
        ) -> None:
            i = 0
            while not stop.is_set():
                start = time.perf_counter()
                cache.lookup(req(texts[i % len(texts)].upper()), tenant=tenant)
                out.append((start, time.perf_counter()))
                i += 1
                time.sleep(0.002)

        threads = [
            threading.Thread(target=lookups, args=(cache, tenant, texts, samples[name], stop))
            for name, tenant, texts in (("other", "small", small), ("same", "big", big[:1000]))
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        t0 = time.perf_counter()
        cache.store(req(big[-1]), "a", tenant="big")  # crosses the threshold
        t1 = time.perf_counter()
        time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join()
        run: dict[str, float] = {"build_s": t1 - t0}
        for name, spans in samples.items():
            during = [(end - start) * 1000 for start, end in spans if start < t1 and end > t0]
            run[f"{name}_p99_ms"] = p99(during)
            run[f"{name}_max_ms"] = max(during, default=0.0)
            run[f"{name}_lookups"] = len(during)
        assert cache.stats().indexes.get("hnsw") == 1
        figures.append(run)
    return {
        "entries": entries,
        "runs": runs,
        **{key: round(statistics.median(r[key] for r in figures), 2) for key in figures[0]},
    }
