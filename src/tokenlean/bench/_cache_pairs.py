"""``tokenlean bench cache``: semantic-cache precision and hit rate on labelled pairs.

Protocol (issue 3): every pair's first text is a cache entry whose answer is the pair's id; every
pair's second text is looked up. A hit is correct only when it returns the pair's own entry and
the pair is a duplicate. Reported for tokenlean (on a SQLite store) and, in the same run on the
same embeddings, for a plain cosine-threshold baseline (what GPTCache does): once at the same
threshold, and once at the threshold where the baseline reaches tokenlean's duplicate hit rate,
which is the fair comparison of precision.

With the default, error-bounded policy (issue 12) the pairs are split in two by position: the
even-numbered half calibrates the route (``CompletionCache.calibrate``, as ``tokenlean cache
calibrate`` does), and the odd-numbered half, held out, is the benchmark. With ``--threshold``
the static rule runs on every pair, as before.

Embeddings are computed once, with the real bundled model, and served to both variants from a
table, so lookup latency is measured without embedding time; the time to embed one query is
measured separately and added for the "with embedding" figures.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._cache.compare import last_user_turn
from tokenlean._cache.completion import CompletionCache
from tokenlean._cache.judge import DefaultAnswerJudge, equal_answers
from tokenlean._cache.policy import CachePolicy, VerifierConfig
from tokenlean._cache.request import CacheRequest
from tokenlean._cache.sqlite_store import SQLiteStore
from tokenlean._cache.vector_index import VectorIndex
from tokenlean._canonical import canonicalize_text
from tokenlean._embeddings import Embedder, default_embedder
from tokenlean._errors import ConfigurationError, InvalidInputError
from tokenlean._stats import p95
from tokenlean.bench._pairs_data import (
    FORMATS,
    Pair,
    TableEmbedder,
    embed_all,
    load_pairs,
    nearest_examples,
)

__all__ = ["FORMATS", "Pair", "bench_request", "cache_bench", "load_pairs", "nearest_examples"]


def bench_request(text: str) -> CacheRequest:
    return CacheRequest(model="bench-model", messages=({"role": "user", "content": text},))


def _figures(
    outcomes: list[tuple[bool, bool, bool]], latencies_ms: list[float], embed_ms: float
) -> dict[str, Any]:
    """outcomes: (hit, correct, duplicate) per lookup."""
    duplicates = sum(1 for _, _, dup in outcomes if dup)
    hits = sum(1 for hit, _, _ in outcomes if hit)
    correct = sum(1 for _, ok, _ in outcomes if ok)
    p50 = statistics.median(latencies_ms)
    latency_p95 = p95(latencies_ms)
    return {
        "pairs": len(outcomes),
        "duplicate_pairs": duplicates,
        "hits": hits,
        "correct_hits": correct,
        "precision": round(correct / hits, 4) if hits else 1.0,
        "duplicate_hit_rate": round(correct / duplicates, 4) if duplicates else 0.0,
        "false_hit_rate": round((hits - correct) / len(outcomes), 4),
        "lookup_ms_p50": round(p50 + embed_ms, 3),
        "lookup_ms_p95": round(latency_p95 + embed_ms, 3),
        "lookup_ms_p50_no_embed": round(p50, 4),
    }


def _baseline(
    vectors_a: npt.NDArray[np.float32],
    vectors_b: npt.NDArray[np.float32],
    pairs: list[Pair],
    threshold: float,
) -> tuple[list[tuple[bool, bool, bool]], list[float]]:
    index = VectorIndex(vectors_a.shape[1], hnsw_threshold=10**9)
    for i, vector in enumerate(vectors_a):
        index.add(str(i), vector)
    outcomes, latencies = [], []
    for i, pair in enumerate(pairs):
        start = time.perf_counter()
        found = index.search(vectors_b[i], 1)
        latencies.append((time.perf_counter() - start) * 1000)
        hit = bool(found) and found[0][1] >= threshold
        correct = hit and found[0][0] == str(i) and pair.duplicate
        outcomes.append((hit, correct, pair.duplicate))
    return outcomes, latencies


def _baseline_curve(
    vectors_a: npt.NDArray[np.float32], vectors_b: npt.NDArray[np.float32], pairs: list[Pair]
) -> list[tuple[float, float, float, int]]:
    """(threshold, precision, duplicate hit rate, hits) of top-1 cosine at every threshold."""
    scores = vectors_b @ vectors_a.T
    best = scores.argmax(axis=1)
    top = scores[np.arange(len(pairs)), best]
    own = np.array([best[i] == i and p.duplicate for i, p in enumerate(pairs)])
    duplicates = max(1, sum(p.duplicate for p in pairs))
    curve = []
    for threshold in np.round(np.arange(0.50, 1.0001, 0.0025), 4):
        hit = top >= threshold
        hits, correct = int(hit.sum()), int((hit & own).sum())
        curve.append(
            (float(threshold), correct / hits if hits else 1.0, correct / duplicates, hits)
        )
    return curve


def _tokenlean(
    pairs: list[Pair],
    table: dict[str, npt.NDArray[np.float32]],
    dim: int,
    policy: CachePolicy,
    calibration: list[Pair] | None = None,
    fallback: Embedder | None = None,
) -> tuple[list[tuple[bool, bool, bool]], list[float], dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="tokenlean-bench-"))
    store = SQLiteStore(folder / "cache.db")
    embedder = TableEmbedder(table, dim, fallback=fallback)  # fallback: templated texts' parts
    # A lookup not served calls the model, whose answer is judged against the nearest candidate's
    # (the pair id for a duplicate, another answer otherwise), as in deployed use: that is how
    # a calibrated route checks its calibration against the traffic it serves.
    cache = CompletionCache(store, policy=policy, embedder=embedder, seed=0,
                            judge=equal_answers, background_judging=False)  # fmt: skip
    acceptance: dict[str, Any] = {}
    if calibration:
        vectors_a = np.stack([table[canonicalize_text(p.text_a)] for p in calibration])
        vectors_b = np.stack([table[canonicalize_text(p.text_b)] for p in calibration])
        cache.calibrate(nearest_examples(calibration, vectors_a, vectors_b))
        acceptance = cache.acceptance()
    payload_bytes = 0
    for i, pair in enumerate(pairs):
        value = {"pair": i}
        payload_bytes += len(json.dumps(value, separators=(",", ":")))
        cache.store(bench_request(pair.text_a), value, tenant="bench")
    outcomes, latencies, explored = [], [], 0
    for i, pair in enumerate(pairs):
        start = time.perf_counter()
        result = cache.lookup(bench_request(pair.text_b), tenant="bench")
        latencies.append((time.perf_counter() - start) * 1000)
        correct = result.hit and result.value == {"pair": i} and pair.duplicate
        outcomes.append((result.hit, correct, pair.duplicate))
        if not result.hit:
            # The model answers and its answer is judged against the nearest candidate's, as
            # when deployed; the protocol's entries stay the first texts, so it is then removed.
            answer = {"pair": i} if pair.duplicate else {"pair": i, "query": True}
            cache.store(bench_request(pair.text_b), answer, tenant="bench", tags=["query"])
            cache.invalidate(tag="query")
            explored += result.explored
    entries, _ = store.usage()
    store.close()
    file_bytes = sum(f.stat().st_size for f in folder.iterdir())
    storage: dict[str, Any] = {
        "bytes_per_entry": round((file_bytes - payload_bytes) / max(1, entries), 1),
        "entries": entries,
    }
    if acceptance:
        storage["acceptance"] = acceptance
        storage["explored"] = explored
    return outcomes, latencies, storage


def _judge_figures(pairs: list[Pair], embedder: Embedder) -> dict[str, Any]:
    """How :class:`DefaultAnswerJudge` would judge each pair's two texts taken as two answers:
    agreement with the label, and its two kinds of error (``same_when_different`` is the one
    that makes evidence optimistic)."""
    judge = DefaultAnswerJudge(embedder)
    verdicts = [(judge(p.text_a, p.text_b), p.duplicate) for p in pairs]
    decided = [(v, label) for v, label in verdicts if v is not None]
    different = sum(1 for _, label in decided if not label)
    same = len(decided) - different
    return {
        "pairs": len(pairs),
        "undecided": len(verdicts) - len(decided),
        "agreement": round(sum(v == label for v, label in decided) / max(1, len(decided)), 4),
        "same_when_different": round(
            sum(1 for v, label in decided if v and not label) / max(1, different), 4
        ),
        "different_when_same": round(
            sum(1 for v, label in decided if not v and label) / max(1, same), 4
        ),
    }


def _scale_latency(
    table: dict[str, npt.NDArray[np.float32]],
    queries: list[str],
    dim: int,
    policy: CachePolicy,
    size: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Lookup latency (no embedding) with ``size`` entries in one partition.

    The filler entries are the real embeddings of the benchmark texts plus Gaussian noise,
    re-normalized: synthetic, but distributed like real sentence embeddings.
    """
    rng = np.random.default_rng(seed)
    base = np.stack(list(table.values()))
    filler: dict[str, npt.NDArray[np.float32]] = {}
    for i in range(size):
        vector = base[i % len(base)] + rng.normal(0, 0.08, dim).astype(np.float32)
        filler[f"filler sentence number {i}"] = (vector / np.linalg.norm(vector)).astype(np.float32)
    embedder = TableEmbedder({**table, **filler}, dim)
    folder = Path(tempfile.mkdtemp(prefix="tokenlean-bench-scale-"))
    cache = CompletionCache(SQLiteStore(folder / "cache.db"), policy=policy, embedder=embedder)
    start = time.perf_counter()
    for text in filler:
        cache.store(bench_request(text), {"filler": 1}, tenant="bench")
    build_s = time.perf_counter() - start
    latencies = []
    for text in queries[:500]:
        t0 = time.perf_counter()
        cache.lookup(bench_request(text), tenant="bench")
        latencies.append((time.perf_counter() - t0) * 1000)
    kinds = cache.stats().indexes
    cache.close()
    return {
        "entries": size,
        "index": ",".join(kinds),
        "lookups": len(latencies),
        "lookup_ms_p50_no_embed": round(statistics.median(latencies), 4),
        "lookup_ms_p95_no_embed": round(p95(latencies), 4),
        "insert_s": round(build_s, 1),
    }


def cache_bench(
    pairs_path: Path,
    fmt: str,
    *,
    limit: int | None = None,
    threshold: float | None = None,
    sweep: bool = False,
    scale: int = 0,
    verifier: str = "default",
    max_error_rate: float = 0.05,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its figures (see the module documentation)."""
    pairs = load_pairs(pairs_path, fmt, limit)
    if not pairs:
        raise InvalidInputError(f"{pairs_path} holds no pairs")
    calibration: list[Pair] | None = None
    if threshold is None:
        if len(pairs) < 2:
            raise InvalidInputError(
                f"{pairs_path} holds {len(pairs)} pair: the error-bounded benchmark calibrates on "
                "half of the pairs and measures the other half (or give --threshold)"
            )
        calibration, pairs = pairs[0::2], pairs[1::2]
    embedder = embedder or default_embedder()
    everything = pairs + (calibration or [])
    texts = list(
        dict.fromkeys(canonicalize_text(t) for p in everything for t in (p.text_a, p.text_b))
    )
    vectors = embed_all(embedder, texts)
    table = dict(zip(texts, vectors, strict=True))
    dim = vectors.shape[1]
    sample = [p.text_b for p in pairs[:100]]
    single = []
    for text in sample:
        t0 = time.perf_counter()
        embedder.embed([text])
        single.append((time.perf_counter() - t0) * 1000)
    embed_ms = statistics.median(single)

    verifiers = {"default": VerifierConfig(), "light": VerifierConfig.light(), "off": None}
    if verifier not in verifiers:
        raise ConfigurationError(f"--verifier must be default, light or off, not {verifier!r}")
    if threshold is not None:
        policy = CachePolicy.semantic(threshold=threshold, verifier=verifiers[verifier])
    else:
        policy = CachePolicy.semantic(max_error_rate=max_error_rate)
    outcomes, latencies, storage = _tokenlean(pairs, table, dim, policy, calibration, embedder)
    ours = _figures(outcomes, latencies, embed_ms) | storage
    ours |= {
        "threshold": policy.threshold if threshold is not None else None,
        "verifier": verifier if threshold is not None else None,
        "max_error_rate": None if threshold is not None else max_error_rate,
        "calibration_pairs": len(calibration or ()),
    }

    vectors_a = np.stack([table[canonicalize_text(p.text_a)] for p in pairs])
    vectors_b = np.stack([table[canonicalize_text(p.text_b)] for p in pairs])
    same_threshold = policy.threshold if threshold is not None else 0.8  # GPTCache's default
    base_outcomes, base_latencies = _baseline(vectors_a, vectors_b, pairs, same_threshold)
    same = _figures(base_outcomes, base_latencies, embed_ms) | {"threshold": same_threshold}
    curve = _baseline_curve(vectors_a, vectors_b, pairs)
    reachable = [c for c in curve if c[2] >= ours["duplicate_hit_rate"]]
    matched_threshold = max(c[0] for c in reachable) if reachable else curve[0][0]
    base_outcomes, base_latencies = _baseline(vectors_a, vectors_b, pairs, matched_threshold)
    matched = _figures(base_outcomes, base_latencies, embed_ms) | {"threshold": matched_threshold}
    for figures in (same, matched):
        figures["bytes_per_entry"] = 4 * dim  # the baseline holds one float32 vector per entry

    result: dict[str, Any] = {
        "data": {
            "file": str(pairs_path),
            "format": fmt,
            "pairs": len(pairs),
            "calibration_pairs": len(calibration or ()),
        },
        "embed_ms_p50": round(embed_ms, 3),
        "tokenlean": ours,
        "baseline": matched,
        "baseline_same_threshold": same,
    }
    result["default_judge"] = _judge_figures(pairs, TableEmbedder(table, dim))
    if sweep:
        rows = []
        for value in np.round(np.arange(0.70, 0.97, 0.02), 2):
            swept = CachePolicy.semantic(threshold=float(value), verifier=verifiers[verifier])
            outs, lats, _ = _tokenlean(pairs, table, dim, swept, fallback=embedder)
            figures = _figures(outs, lats, embed_ms)
            rows.append(
                {
                    "threshold": float(value),
                    "precision": figures["precision"],
                    "duplicate_hit_rate": figures["duplicate_hit_rate"],
                }
            )
        result["sweep"] = {
            "tokenlean": rows,
            "baseline": [
                {"threshold": t, "precision": round(p, 4), "duplicate_hit_rate": round(r, 4)}
                for t, p, r, _ in curve
                if 0.70 <= t <= 0.96
            ],
        }
    if scale:
        # The filler texts share a template the queries do not: compare whole turns here, so
        # the figure is the lookup through one large partition.
        scaled = policy.model_copy(update={"compare": last_user_turn})
        result["scale"] = _scale_latency(table, [p.text_b for p in pairs], dim, scaled, scale)
    return result


def print_report(result: dict[str, Any]) -> None:
    """Human-readable tables of :func:`cache_bench`'s result."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    table = Table(
        title=f"Semantic cache on {result['data']['file']} ({result['data']['pairs']} pairs)"
    )
    for column in (
        "variant",
        "threshold",
        "precision",
        "dup. hit rate",
        "false hits",
        "p50 ms",
        "p50 ms no embed",
        "bytes/entry",
    ):
        table.add_column(column)
    ours_label = (
        "tokenlean (error-bounded)"
        if result["tokenlean"]["threshold"] is None
        else ("tokenlean (static rule)")
    )
    for name, label in (
        ("tokenlean", ours_label),
        ("baseline", "cosine, same hit rate"),
        ("baseline_same_threshold", "cosine, same threshold"),
    ):
        row = result[name]
        table.add_row(
            label,
            "learned" if row["threshold"] is None else f"{row['threshold']:.2f}",
            f"{row['precision']:.3f}",
            f"{row['duplicate_hit_rate']:.3f}",
            f"{row['false_hit_rate']:.3f}",
            f"{row['lookup_ms_p50']:.2f}",
            f"{row['lookup_ms_p50_no_embed']:.3f}",
            f"{row['bytes_per_entry']:.0f}",
        )
    console.print(table)
    if "sweep" in result:
        sweep = Table(title="Sweep: precision / duplicate hit rate by threshold")
        for column in (
            "threshold",
            "tokenlean precision",
            "tokenlean hit rate",
            "cosine precision",
            "cosine hit rate",
        ):
            sweep.add_column(column)
        baseline = {row["threshold"]: row for row in result["sweep"]["baseline"]}
        for row in result["sweep"]["tokenlean"]:
            other = baseline.get(row["threshold"], {})
            sweep.add_row(
                f"{row['threshold']:.2f}",
                f"{row['precision']:.3f}",
                f"{row['duplicate_hit_rate']:.3f}",
                f"{other.get('precision', float('nan')):.3f}",
                f"{other.get('duplicate_hit_rate', float('nan')):.3f}",
            )
        console.print(sweep)
    if "scale" in result:
        scale = result["scale"]
        console.print(
            f"At {scale['entries']:,} entries ({scale['index']} index): lookup p50 "
            f"{scale['lookup_ms_p50_no_embed']:.3f} ms, "
            f"p95 {scale['lookup_ms_p95_no_embed']:.3f} ms without embedding; "
            f"inserting took {scale['insert_s']} s."
        )
