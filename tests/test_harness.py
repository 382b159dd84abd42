"""The end-to-end harness: a reproducible workload and four comparable variants."""

from __future__ import annotations

from tokenlean._harness.harness import SimulatedModel, run_harness
from tokenlean._harness.workload import generate_workload
from tokenlean.testing import HashingEmbedder


def test_the_workload_is_reproducible_and_has_gold_answers() -> None:
    """The same seed gives the same workload; every question has an answer and evidence."""
    a, b = generate_workload(users=3, seed=5), generate_workload(users=3, seed=5)
    assert [q.text for s in a.sessions for q in s.questions] == [
        q.text for s in b.sessions for q in s.questions
    ]
    assert all(q.answer and q.evidence for s in a.sessions for q in s.questions)


def test_the_simulated_model_needs_the_context() -> None:
    """Without the fact in the context the simulated model cannot answer."""
    workload = generate_workload(users=1)
    question = next(q for s in workload.sessions for q in s.questions if q.fact != "delivery city")
    model = SimulatedModel()
    assert model.answer([{"role": "user", "content": question.text}], question) == "I don't know"
    docs = "\n".join(d["text"] for d in workload.documents)
    messages = [{"role": "system", "content": docs}, {"role": "user", "content": question.text}]
    assert model.answer(messages, question) == question.answer


def test_four_variants_report_the_documented_figures() -> None:
    """Each variant has the documented keys; the full context answers everything; the levers
    spend fewer input tokens per task."""
    result = run_harness(generate_workload(users=3), embedder=HashingEmbedder(64))
    variants = result["variants"]
    keys = {"success_rate", "input_tokens_per_task", "output_tokens_per_task", "cost_per_success"}
    keys |= {"latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "cache_hit_rate", "failures"}
    assert set(variants) == {"baseline", "cached", "summarized_retrieved", "all_levers"}
    for figures in variants.values():
        assert keys <= set(figures)
    assert variants["baseline"]["success_rate"] == 1.0
    assert (
        variants["all_levers"]["input_tokens_per_task"]
        < variants["baseline"]["input_tokens_per_task"]
    )
    assert variants["cached"]["cost_per_success"] < variants["baseline"]["cost_per_success"]


def test_the_report_is_written(tmp_path: object) -> None:
    """write_report produces a self-contained page with a table and charts, and the JSON."""
    from pathlib import Path

    from tokenlean._harness.report import write_report

    result = run_harness(generate_workload(users=2), embedder=HashingEmbedder(64))
    page = write_report(result, Path(str(tmp_path)) / "reports")
    text = page.read_text(encoding="utf-8")
    assert "<svg" in text
    assert "all_levers" in text
    assert (page.parent / "result.json").is_file()
    assert "latency_by_prompt_size" in result["variants"]["baseline"]
