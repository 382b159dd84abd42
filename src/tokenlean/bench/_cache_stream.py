"""``tokenlean bench cache --stream FILE``: the semantic cache on a stream of prompts, online.

Protocol (issue 12). FILE is JSONL, one ``{"text", "answer"}`` per line; equal answers mean the
same reply is right. Prompts arrive in order; each is looked up. A served hit is wrong when its
answer differs from the line's. A miss or an exploration "calls the model" (receives the line's
answer) and stores it; the judge's verdict is whether the two answers are equal.

tokenlean runs the default semantic policy (error-bounded, ``max_error_rate`` as given, cold
start, no prior evidence) on the default in-memory store. In the same run, on the same
embeddings, static cosine top-1 thresholds replay the same protocol (a miss stores, a hit does
not): ``curve`` (0.70 to 0.98), ``oracle_static`` (the threshold that, in hindsight, serves the
most hits within the budget) and ``gptcache_default`` (cosine 0.8).

Every text is embedded once, ahead, in batches (what a caller that sees its traffic ahead can
do); lookup latency is measured without embedding, and the embedding cost is reported apart.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._cache.completion import CompletionCache
from tokenlean._cache.judge import equal_answers
from tokenlean._cache.policy import CachePolicy
from tokenlean._canonical import canonicalize_text
from tokenlean._embeddings import Embedder, default_embedder
from tokenlean._errors import InvalidInputError
from tokenlean._input import describe_value, read_json_lines
from tokenlean._stats import p95
from tokenlean.bench._cache_pairs import bench_request
from tokenlean.bench._pairs_data import TableEmbedder, embed_all

__all__ = ["load_stream", "static_replay", "stream_bench"]

CURVE = tuple(round(0.70 + 0.01 * i, 2) for i in range(29))


STREAM_SHAPE = "a stream line is an object with a 'text' string and an 'answer' (string or number)"


def _stream_problem(row: Any) -> str | None:
    """What is wrong with one parsed stream line (None: nothing)."""
    if not isinstance(row, dict):
        return f"this line is {describe_value(row)}"
    missing = [key for key in ("text", "answer") if key not in row]
    if missing:
        return f"this line has no {' or '.join(map(repr, missing))} ({describe_value(row)})"
    if not isinstance(row["text"], str):
        return f"its 'text' is {describe_value(row['text'])}"
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, str | int | float):
        return f"its 'answer' is {describe_value(answer)}"
    return None


def load_stream(path: Path, limit: int | None = None) -> list[tuple[str, str]]:
    """``(text, answer)`` per line of a JSONL stream.

    Raises:
        ConfigurationError: missing file, or a folder.
        InvalidInputError: a file that is not UTF-8, a line that is not JSON or not an object
            with a string ``text`` and an ``answer`` (the message names the line and quotes at
            most a short excerpt), or no prompts at all.
    """
    rows: list[tuple[str, str]] = []
    for number, row in read_json_lines(path):
        problem = _stream_problem(row)
        if problem:
            raise InvalidInputError(f"{path}:{number}: {problem}; {STREAM_SHAPE}")
        rows.append((row["text"], str(row["answer"])))
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise InvalidInputError(f"{path} holds no prompts ({STREAM_SHAPE})")
    return rows


def _earlier_neighbours(
    vectors: npt.NDArray[np.float32], k: int = 32, block: int = 1024
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """For every prompt, its ``k`` most similar earlier prompts, best first (-1: none)."""
    n = len(vectors)
    ids = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        scores = vectors[lo:hi] @ vectors[:hi].T
        scores[np.arange(hi - lo)[:, None] <= np.arange(hi)[None, :] - lo] = -np.inf
        take = min(k, hi)
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1)
        ids[lo:hi, :take] = np.take_along_axis(top, order, axis=1)
        sims[lo:hi, :take] = np.take_along_axis(top_scores, order, axis=1)
    ids[~np.isfinite(sims)] = -1
    return ids, sims


def static_replay(
    vectors: npt.NDArray[np.float32],
    answers: list[str],
    threshold: float,
    neighbours: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None = None,
) -> dict[str, Any]:
    """Replay the protocol with a static cosine top-1 threshold (misses store, hits do not).

    The nearest stored prompt is the first stored one among the precomputed nearest earlier
    prompts; only when none of those is stored and they all pass the threshold is the whole
    store searched.
    """
    n = len(answers)
    ids, sims = neighbours if neighbours is not None else _earlier_neighbours(vectors)
    stored = np.zeros(n, dtype=bool)
    served = wrong = late = 0
    for i in range(n):
        best = -1
        for j, score in zip(ids[i], sims[i], strict=True):
            if j < 0 or score < threshold:
                break
            if stored[j]:
                best = int(j)
                break
        else:
            if ids[i, -1] >= 0:  # every listed neighbour passed but none is stored: search all
                earlier = np.flatnonzero(stored[:i])
                if len(earlier):
                    scores = vectors[earlier] @ vectors[i]
                    top = int(np.argmax(scores))
                    best = int(earlier[top]) if scores[top] >= threshold else -1
        if best >= 0:
            served += 1
            wrong += answers[best] != answers[i]
            late += i >= n - n // 3
        else:
            stored[i] = True
    return {
        "threshold": threshold,
        "hit_rate": round(served / n, 4),
        "error_rate": round(wrong / served, 4) if served else 0.0,
        "wrong_per_lookup": round(wrong / n, 4),
        "hit_rate_last_third": round(late / max(1, n // 3), 4),
    }


def _tokenlean(
    rows: list[tuple[str, str]],
    table: dict[str, npt.NDArray[np.float32]],
    dim: int,
    max_error_rate: float,
    seed: int,
    fallback: Embedder | None = None,
) -> dict[str, Any]:
    policy = CachePolicy.semantic(max_error_rate=max_error_rate)
    cache = CompletionCache(
        policy=policy,
        embedder=TableEmbedder(table, dim, fallback=fallback),
        judge=equal_answers,
        background_judging=False,  # deterministic: each verdict is in before the next lookup
        seed=seed,
    )
    served = wrong = explored = calls = late = 0
    semantic_served = semantic_wrong = 0
    latencies: list[float] = []
    n = len(rows)
    for i, (text, answer) in enumerate(rows):
        request = bench_request(text)
        start = time.perf_counter()
        result = cache.lookup(request, tenant="bench")
        latencies.append((time.perf_counter() - start) * 1000)
        if result.hit:
            served += 1
            late += i >= n - n // 3
            is_wrong = result.value != {"answer": answer}
            wrong += is_wrong
            if result.layer == "semantic":
                semantic_served += 1
                semantic_wrong += is_wrong
            continue
        calls += 1
        explored += result.explored
        cache.store(request, {"answer": answer}, tenant="bench")
    stats = cache.stats()
    elapsed_s = sum(latencies) / 1000
    return {
        "hit_rate": round(served / n, 4),
        "error_rate": round(wrong / served, 4) if served else 0.0,
        "wrong_per_lookup": round(wrong / n, 4),
        "hit_rate_last_third": round(late / max(1, n // 3), 4),
        "exploration_rate": round(explored / n, 4),
        "model_calls": calls,
        "lookups": n,
        "served": served,
        "wrong": wrong,
        "semantic_served": semantic_served,
        "semantic_error_rate": round(semantic_wrong / semantic_served, 4)
        if semantic_served
        else 0.0,
        "lookup_ms_p50": round(statistics.median(latencies), 4),
        "lookup_ms_p95": round(p95(latencies), 4),
        "lookups_per_s": round(n / elapsed_s, 1) if elapsed_s else None,
        "acceptance": cache.acceptance(),
        "evidence_judged": stats.judged,
    }


def stream_bench(
    path: Path,
    *,
    max_error_rate: float = 0.05,
    limit: int | None = None,
    seed: int = 0,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Run the stream benchmark and return its figures (see the module documentation)."""
    rows = load_stream(path, limit)
    embedder = embedder or default_embedder()
    texts = list(dict.fromkeys(canonicalize_text(t) for t, _ in rows))
    start = time.perf_counter()
    vectors = embed_all(embedder, texts)
    embed_ahead_s = time.perf_counter() - start
    table = dict(zip(texts, vectors, strict=True))
    dim = int(vectors.shape[1])
    single = []
    for text in texts[:50]:
        t0 = time.perf_counter()
        embedder.embed([text])
        single.append((time.perf_counter() - t0) * 1000)
    batch = texts[:256]
    t0 = time.perf_counter()
    embedder.embed(batch)
    batched_ms = (time.perf_counter() - t0) * 1000 / len(batch)

    ours = _tokenlean(rows, table, dim, max_error_rate, seed, embedder)
    ordered = np.stack([table[canonicalize_text(t)] for t, _ in rows]).astype(np.float32)
    answers = [a for _, a in rows]
    neighbours = _earlier_neighbours(ordered)
    curve = [static_replay(ordered, answers, t, neighbours) for t in CURVE]
    within = [c for c in curve if c["error_rate"] <= max_error_rate]
    oracle = max(within, key=lambda c: (c["hit_rate"], -c["threshold"])) if within else None
    return {
        "data": {"file": str(path), "lookups": len(rows), "distinct_answers": len(set(answers))},
        "max_error_rate": max_error_rate,
        "tokenlean": ours,
        "oracle_static": oracle,
        "gptcache_default": static_replay(ordered, answers, 0.8, neighbours),
        "curve": curve,
        "embedding": {
            "embed_ms_p50_single": round(statistics.median(single), 3),
            "embed_ms_per_text_batched": round(batched_ms, 3),
            "embed_ahead_s": round(embed_ahead_s, 1),
        },
        "targets": {
            "error_within_budget": ours["error_rate"] <= max_error_rate,
            "hit_rate_vs_oracle": round(ours["hit_rate"] / oracle["hit_rate"], 3)
            if oracle and oracle["hit_rate"]
            else None,
            "last_third_vs_oracle": round(
                ours["hit_rate_last_third"] / oracle["hit_rate_last_third"], 3
            )
            if oracle and oracle["hit_rate_last_third"]
            else None,
        },
    }


def print_stream_report(result: dict[str, Any]) -> None:
    """Human-readable summary of :func:`stream_bench`'s result."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(110, Console().width))
    budget = result["max_error_rate"]
    table = Table(
        title=f"Semantic cache stream {result['data']['file']} ({result['data']['lookups']} "
        f"prompts, error budget {budget:.0%})"
    )
    columns = ("variant", "threshold", "hit rate", "last third", "error rate", "wrong/lookup",
               "explored")  # fmt: skip
    for column in columns:
        table.add_column(column)
    ours = result["tokenlean"]
    table.add_row(
        "tokenlean (error-bounded)",
        "learned",
        f"{ours['hit_rate']:.3f}",
        f"{ours['hit_rate_last_third']:.3f}",
        f"{ours['error_rate']:.3f}",
        f"{ours['wrong_per_lookup']:.4f}",
        f"{ours['exploration_rate']:.3f}",
    )
    for name, label in (
        ("oracle_static", "static cosine, hindsight"),
        ("gptcache_default", "GPTCache default"),
    ):
        row = result[name]
        if row is None:
            table.add_row(label, "none within budget", "", "", "", "", "")
            continue
        table.add_row(
            label,
            f"{row['threshold']:.2f}",
            f"{row['hit_rate']:.3f}",
            f"{row['hit_rate_last_third']:.3f}",
            f"{row['error_rate']:.3f}",
            f"{row['wrong_per_lookup']:.4f}",
            "0",
        )
    console.print(table)
    console.print(
        f"lookup p50 {ours['lookup_ms_p50']:.3f} ms, p95 {ours['lookup_ms_p95']:.3f} ms without "
        f"embedding ({ours['lookups_per_s']:,} lookups/s); embedding one text "
        f"{result['embedding']['embed_ms_p50_single']:.1f} ms, batched "
        f"{result['embedding']['embed_ms_per_text_batched']:.2f} ms per text."
    )
