"""The cache benchmark: pair formats, the protocol's figures and its JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tokenlean as tl
from tokenlean.bench._cache_pairs import cache_bench, load_pairs
from tokenlean.testing import HashingEmbedder

WARM_UP = [  # the first requests of a route teach its template splitter; they are never semantic
    ("gift cards never expire", "the colour of the sky at noon", 0),
    ("parcels leave the Leeds depot daily", "a recipe for lemon cake", 0),
    ("support replies within one working day", "the rules of cricket", 0),
    ("our shops close on public holidays", "how tall is a giraffe", 0),
]
TEXTS = [
    ("how do I reset my password", "how can I reset my password", 1),
    ("where is my parcel right now", "where is my parcel now", 1),
    ("refund within 30 days of delivery", "refund within 14 days of delivery", 0),
    ("opening hours of the Paris store", "the weather in Paris tomorrow", 0),
]
PAIRS = [{"text_a": a, "text_b": b, "label": label} for a, b, label in WARM_UP + TEXTS]


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PAIRS), encoding="utf-8")
    return path


def test_the_three_formats_load(tmp_path: Path, pairs_file: Path) -> None:
    """gptcache JSON, MRPC TSV and pairs JSONL all load as labelled pairs."""
    gpt = tmp_path / "g.json"
    gpt.write_text(json.dumps([{"origin": "a b", "similar": "a c"}]), encoding="utf-8")
    tsv = tmp_path / "m.tsv"
    tsv.write_text("1\t11\t12\tfirst text\tsecond text\n0\t13\t14\tx\ty\n", encoding="utf-8")
    assert [p.duplicate for p in load_pairs(gpt, "gptcache")] == [True]
    assert [(p.text_a, p.duplicate) for p in load_pairs(tsv, "mrpc-tsv")] == [
        ("first text", True),
        ("x", False),
    ]
    assert len(load_pairs(pairs_file, "pairs-jsonl", limit=3)) == 3


def test_bad_pair_files_are_clear_errors(tmp_path: Path) -> None:
    """Wrong format names, missing files and malformed rows raise typed errors."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text_a": "x"}\n', encoding="utf-8")
    with pytest.raises(tl.InvalidInputError, match="not valid pairs-jsonl"):
        load_pairs(bad, "pairs-jsonl")
    with pytest.raises(tl.ConfigurationError, match="--format"):
        load_pairs(bad, "csv")
    with pytest.raises(tl.ConfigurationError, match="no such file"):
        load_pairs(tmp_path / "missing.jsonl", "pairs-jsonl")


def test_benchmark_figures_follow_the_protocol(pairs_file: Path) -> None:
    """Duplicates answered from their own entry count as correct; the negatives are rejected."""
    result = cache_bench(
        pairs_file, "pairs-jsonl", embedder=HashingEmbedder(), sweep=True, threshold=0.7
    )
    keys = {"precision", "duplicate_hit_rate", "false_hit_rate", "lookup_ms_p50"}
    keys |= {"lookup_ms_p95", "lookup_ms_p50_no_embed", "bytes_per_entry", "pairs"}
    assert keys <= set(result["tokenlean"])
    assert keys <= set(result["baseline"])
    ours = result["tokenlean"]
    assert ours["pairs"] == 8
    assert ours["duplicate_hit_rate"] == 1.0
    assert ours["precision"] == 1.0
    assert ours["false_hit_rate"] == 0.0
    assert result["sweep"]["tokenlean"]
    assert result["baseline_same_threshold"]["false_hit_rate"] > 0  # the 30/14-day near miss


def test_the_error_bounded_pair_benchmark_needs_two_pairs(tmp_path: Path) -> None:
    """One pair cannot be split into a calibration half and a measured half."""
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(PAIRS[0]), encoding="utf-8")
    with pytest.raises(tl.InvalidInputError, match="calibrates on half"):
        cache_bench(path, "pairs-jsonl", embedder=HashingEmbedder())
