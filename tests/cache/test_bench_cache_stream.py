"""The stream benchmark and the cache commands: protocol, static baselines, JSON, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

import tokenlean as tl
from tokenlean.bench import _cache_stream as _bench_cache_stream
from tokenlean.bench._cache_stream import (
    _earlier_neighbours,
    load_stream,
    static_replay,
    stream_bench,
)
from tokenlean.cli import _cache_commands as _cache_cmd
from tokenlean.cli import main
from tokenlean.testing import HashingEmbedder

from .test_error_bounded import synthetic_stream


@pytest.fixture
def stream_file(tmp_path: Path) -> Path:
    path = tmp_path / "stream.jsonl"
    rows = synthetic_stream(topics=150)
    path.write_text("\n".join(json.dumps({"text": t, "answer": a}) for t, a in rows) + "\n")
    return path


@pytest.fixture
def fake_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands embed with the hashing fake instead of the real model."""
    for module in (_bench_cache_stream, _cache_cmd):
        monkeypatch.setattr(module, "default_embedder", lambda: HashingEmbedder())


def naive_replay(vectors: np.ndarray, answers: list[str], threshold: float) -> tuple[int, int]:
    stored: list[int] = []
    served = wrong = 0
    for i, answer in enumerate(answers):
        if stored:
            scores = vectors[stored] @ vectors[i]
            best = int(np.argmax(scores))
            if scores[best] >= threshold:
                served += 1
                wrong += answers[stored[best]] != answer
                continue
        stored.append(i)
    return served, wrong


def test_the_static_replay_matches_a_search_of_every_stored_prompt() -> None:
    """The neighbour-list shortcut gives the same hits and errors as searching everything."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 16))
    vectors = np.concatenate(
        [base, base[rng.integers(0, 200, 500)] + rng.normal(0, 0.3, (500, 16))]
    )
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    rng.shuffle(vectors)
    answers = [str(a) for a in rng.integers(0, 150, len(vectors))]
    neighbours = _earlier_neighbours(vectors, k=4, block=64)
    for threshold in (0.5, 0.8, 0.95):
        result = static_replay(vectors, answers, threshold, neighbours)
        served, wrong = naive_replay(vectors, answers, threshold)
        assert round(served / len(answers), 4) == result["hit_rate"]
        assert result["wrong_per_lookup"] == round(wrong / len(answers), 4)


def test_the_stream_benchmark_reports_every_figure(stream_file: Path) -> None:
    """tokenlean, the static curve, the hindsight oracle and GPTCache's default, in one run."""
    result = stream_bench(stream_file, embedder=HashingEmbedder())
    ours = result["tokenlean"]
    for key in ("hit_rate", "error_rate", "wrong_per_lookup", "exploration_rate", "model_calls",
                "lookups", "lookup_ms_p50", "lookup_ms_p95", "lookups_per_s"):  # fmt: skip
        assert key in ours
    assert ours["lookups"] == 600
    assert ours["model_calls"] == ours["lookups"] - ours["served"]
    assert ours["error_rate"] <= 0.05
    assert [row["threshold"] for row in result["curve"]][:2] == [0.7, 0.71]
    assert result["curve"][-1]["threshold"] == 0.98
    oracle = result["oracle_static"]
    assert oracle["error_rate"] <= 0.05
    assert all(
        row["hit_rate"] <= oracle["hit_rate"]
        for row in result["curve"]
        if row["error_rate"] <= 0.05
    )
    assert result["gptcache_default"]["threshold"] == 0.8


def test_bad_streams_are_clear_errors(tmp_path: Path) -> None:
    """Missing files, non-JSON lines, wrong shapes and binary data raise typed errors."""
    with pytest.raises(tl.ConfigurationError):
        load_stream(tmp_path / "missing.jsonl")
    for content, match in (
        (b"not json\n", "not JSON"),
        (b'{"text": 1, "answer": "a"}\n', "'text' string"),
        (b"[1, 2]\n", "'text' string"),
        (b"\xff\xfe\x00binary", "UTF-8"),
        (b"\n\n", "no prompts"),
    ):
        path = tmp_path / "bad.jsonl"
        path.write_bytes(content)
        with pytest.raises(tl.InvalidInputError, match=match):
            load_stream(path)


def test_bench_cache_stream_command_prints_json(
    stream_file: Path, fake_embedder: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tokenlean bench cache --stream FILE --max-error-rate D --json` prints the figures."""
    main(["bench", "cache", "--stream", str(stream_file), "--max-error-rate", "0.1", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["max_error_rate"] == 0.1
    assert result["tokenlean"]["error_rate"] <= 0.1


def test_bench_cache_needs_exactly_one_input(capsys: pytest.CaptureFixture[str]) -> None:
    """Neither or both of --pairs and --stream is a one-line error with status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "cache"])
    assert exit_info.value.code == 2
    assert "exactly one of --pairs" in capsys.readouterr().err


def test_calibrate_writes_evidence_a_cache_then_finds(
    tmp_path: Path, stream_file: Path, fake_embedder: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tokenlean cache calibrate` stores evidence that the same store's cache starts from."""
    store = tmp_path / "cache.db"
    main(["cache", "calibrate", str(stream_file), "--store", str(store), "--route", "faq",
          "--json"])  # fmt: skip
    written = json.loads(capsys.readouterr().out)
    assert written["added"] > 0
    assert written["serving"] is True
    main(["cache", "acceptance", str(store), "--route", "faq", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["evidence"] == written["evidence"]
    policy = tl.CachePolicy.semantic()
    cache = tl.CompletionCache(
        tl.SQLiteStore(store), routes={"faq": policy}, embedder=HashingEmbedder()
    )
    assert cache.acceptance("faq")["evidence"] == written["evidence"]
    cache.close()


def test_calibrate_from_labelled_pairs(
    tmp_path: Path, fake_embedder: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pairs calibrate on each query's nearest cached text, as the cache would meet it."""
    rng = random.Random(0)
    pairs = []
    for _ in range(120):
        words = " ".join(f"w{rng.randrange(10**6)}" for _ in range(8))
        pairs.append({"text_a": words, "text_b": f"{words} please", "label": 1})
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in pairs), encoding="utf-8")
    main(["cache", "calibrate", str(path), "--format", "pairs-jsonl", "--store",
          str(tmp_path / "c.db"), "--json"])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["added"] == 120
    assert result["evidence_wrong"] == 0
