"""The memory benchmark on a small LoCoMo-format file: schema and sane figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tokenlean as tl
from tokenlean.bench._memory import load_locomo, memory_bench
from tokenlean.testing import HashingEmbedder


@pytest.fixture
def locomo(tmp_path: Path) -> Path:
    session_1 = [
        {"speaker": "Ann" if i % 2 == 0 else "Bob", "dia_id": f"D1:{i + 1}",
         "text": f"Filler line number {i} about the weather and nothing else."}
        for i in range(60)
    ]  # fmt: skip
    session_1[3]["text"] = "I adopted a cat named Pixel last week."
    session_1[40]["text"] = "My sister moved to Oslo in June."
    data = {
        "speaker_a": "Ann", "speaker_b": "Bob", "session_1": session_1,
        "session_1_date_time": "1:00 pm on 8 May, 2023",
        "qa": [
            {"question": "What is the name of the cat?", "evidence": ["D1:4"], "category": 4},
            {"question": "Where did the sister move?", "evidence": ["D1:41"], "category": 1},
            {"question": "Ignored adversarial", "evidence": ["D1:1"], "category": 5},
        ],
    }  # fmt: skip
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_the_benchmark_reports_every_variant(locomo: Path) -> None:
    """Four variants with the documented keys; tokenlean finds both evidence turns."""
    result = memory_bench([locomo], budget=300, embedder=HashingEmbedder(64), latency_turns=120)
    keys = {"evidence_recall_all", "evidence_recall_any", "mean_context_tokens", "compression",
            "assembly_ms_p50", "assembly_ms_p95", "questions", "by_category"}  # fmt: skip
    for variant in ("tokenlean", "full_transcript", "recent_window", "dense_top_turns"):
        assert keys <= set(result[variant])
        assert result[variant]["questions"] == 2
    assert result["tokenlean"]["evidence_recall_all"] == 1.0
    assert result["tokenlean"]["mean_context_tokens"] <= 300
    assert result["full_transcript"]["compression"] == 1.0
    assert result["recent_window"]["evidence_recall_all"] < 1.0
    assert result["latency"]["turns"] == 120
    assert result["tokenlean"]["add_ms_p95"] > 0
    assert result["tokenlean"]["static_prefix_share"] >= 0.95


def test_latency_is_reported_by_transcript_length(locomo: Path) -> None:
    """Several sizes give one latency row each (add p95, assembly p50 and p95), smallest
    first; ``latency`` repeats the largest."""
    result = memory_bench([locomo], budget=300, embedder=HashingEmbedder(64),
                          latency_turns=[300, 100])  # fmt: skip
    rows = result["latency_by_turns"]
    assert [row["turns"] for row in rows] == [100, 300]
    for row in rows:
        assert set(row) == {"turns", "add_ms_p95", "assembly_ms_p50", "assembly_ms_p95"}
        assert all(row[key] > 0 for key in ("add_ms_p95", "assembly_ms_p50", "assembly_ms_p95"))
    assert result["latency"]["turns"] == 300
    assert result["latency"]["add_ms_p95"] == rows[-1]["add_ms_p95"]


def test_a_file_that_is_not_locomo_is_a_clear_error(tmp_path: Path) -> None:
    """Missing keys raise InvalidInputError."""
    path = tmp_path / "x.json"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(tl.InvalidInputError):
        load_locomo(path)
