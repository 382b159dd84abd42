"""The retrieval benchmark on a small BEIR-layout folder: schema and sane figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tokenlean as tl
from tokenlean.bench._retrieval import load_beir, retrieval_bench
from tokenlean.testing import HashingEmbedder

TOPICS = ["refund", "shipping", "warranty", "password", "invoice", "battery"]


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    corpus = [
        {"_id": f"d{i}", "title": f"About {topic}",
         "text": f"This note explains {topic} rules. " * 30 + f"Contact the {topic} team."}
        for i, topic in enumerate(TOPICS)
    ]  # fmt: skip
    queries = [
        {"_id": f"q{i}", "text": f"what are the {topic} rules"} for i, topic in enumerate(TOPICS)
    ]
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("\n".join(map(json.dumps, corpus)), encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text("\n".join(map(json.dumps, queries)), encoding="utf-8")
    rows = ["query-id\tcorpus-id\tscore", *(f"q{i}\td{i}\t1" for i in range(len(TOPICS)))]
    (tmp_path / "qrels" / "train.tsv").write_text("\n".join(rows), encoding="utf-8")
    return tmp_path


def test_the_benchmark_reports_every_variant(beir: Path) -> None:
    """Four variants with the documented keys; the easy queries are answered perfectly."""
    result = retrieval_bench(beir, "train", budget=120, embedder=HashingEmbedder(64))
    keys = {"ndcg_at_10", "recall_at_10", "recall_in_budget", "mean_tokens", "latency_ms_p50",
            "latency_ms_p95", "queries"}  # fmt: skip
    for variant in ("tokenlean", "bm25", "dense", "dense_whole_docs"):
        assert keys <= set(result[variant])
        assert result[variant]["queries"] == len(TOPICS)
        assert result[variant]["mean_tokens"] <= 120
    assert result["tokenlean"]["ndcg_at_10"] == 1.0
    assert result["tokenlean"]["recall_in_budget"] == 1.0
    assert result["dense_whole_docs"]["recall_in_budget"] < 1.0  # whole documents do not fit


def test_missing_files_are_clear_errors(tmp_path: Path) -> None:
    """A folder without the BEIR files raises ConfigurationError naming the file."""
    with pytest.raises(tl.ConfigurationError, match=r"corpus\.jsonl"):
        load_beir(tmp_path, "train")
