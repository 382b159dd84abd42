"""The end-to-end harness: a reproducible workload and four comparable variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokenlean._cache.completion import CompletionCache
from tokenlean._embeddings import default_embedder
from tokenlean._errors import ConfigurationError
from tokenlean.bench import SimulatedModel, run_harness
from tokenlean.bench._report import write_report
from tokenlean.bench._workload import generate_workload
from tokenlean.testing import HashingEmbedder


def test_the_workload_is_reproducible_and_has_gold_answers() -> None:
    """The same seed gives the same workload; every question has an answer and evidence."""
    a, b = generate_workload(users=3, seed=5), generate_workload(users=3, seed=5)
    assert [q.text for s in a.sessions for q in s.questions] == [
        q.text for s in b.sessions for q in s.questions
    ]
    assert a.updates == b.updates
    assert all(q.answer and q.evidence for s in a.sessions for q in s.questions)
    assert any(q.hops == 2 for s in a.sessions for q in s.questions)


def test_waves_hold_one_question_per_user_in_time_order() -> None:
    """Users are concurrent: a wave has at most one question per user, and each user's
    questions come in their own order."""
    workload = generate_workload(users=5)
    waves = workload.waves()
    assert sum(len(w) for w in waves) == workload.questions
    for wave in waves:
        users = [session.user for session, _ in wave]
        assert len(users) == len(set(users))
    order = [q.id for wave in waves for s, q in wave if s.user == "user1"]
    assert order == [q.id for s in workload.sessions if s.user == "user1" for q in s.questions]
    assert max(len(w) for w in waves) == 5


def test_updated_facts_change_the_gold_answer() -> None:
    """After the update wave, questions about an updated fact expect the new value, which only
    the updated document states."""
    workload = generate_workload(users=12)
    (wave, documents), *_ = workload.updates.items()
    updated = {d["id"]: d["text"] for d in documents}
    original = {d["id"]: d["text"] for d in workload.documents}
    model = SimulatedModel()
    asked = 0
    for session in workload.sessions:
        for question in session.questions:
            doc = next((e for e in question.evidence if e in updated), None)
            if doc is None or question.hops != 1:
                continue
            text = updated[doc] if question.wave >= wave else original[doc]
            messages = [{"role": "system", "content": text}, {"role": "user", "content": "?"}]
            assert model.answer(messages, question) == question.answer
            asked += 1
    assert asked > 0


def test_the_simulated_model_needs_the_context() -> None:
    """Without the fact in the context the simulated model cannot answer; the two-hop question
    needs both the purchase and the document, and the small model does not do two hops."""
    workload = generate_workload(users=1)
    question = next(q for s in workload.sessions for q in s.questions if q.hops == 1)
    model = SimulatedModel()
    assert model.answer([{"role": "user", "content": question.text}], question) == "I don't know"
    docs = "\n".join(d["text"] for d in workload.documents)
    messages = [{"role": "system", "content": docs}, {"role": "user", "content": question.text}]
    assert model.answer(messages, question) == question.answer

    session = workload.sessions[0]
    two_hop = next(q for q in session.questions if q.hops == 2)
    with_purchase = [
        {"role": "system", "content": docs},
        {"role": "user", "content": session.statements[1]},
        {"role": "user", "content": two_hop.text},
    ]
    assert model.answer(messages, two_hop) == "I don't know"
    assert model.answer(with_purchase, two_hop) == two_hop.answer
    assert SimulatedModel(multi_hop=False).answer(with_purchase, two_hop) == "I don't know"


def test_a_batch_pays_the_overhead_once() -> None:
    """call_batch: every item waits for the longest; the per-call overhead is paid once."""
    short = [{"role": "user", "content": "hi"}]
    long = [{"role": "system", "content": "word " * 2000}, {"role": "user", "content": "hi"}]
    question = generate_workload(users=1).sessions[0].questions[0]
    alone = [SimulatedModel().call(m, question, counter=len).latency_ms for m in (short, long)]
    batched = [
        r.latency_ms
        for r in SimulatedModel().call_batch([(short, question), (long, question)], counter=len)
    ]
    assert batched[0] == batched[1] == max(alone)
    assert batched[0] <= sum(alone) - SimulatedModel().overhead_ms  # one overhead, not two


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    """The harness as ``tokenlean bench`` runs it (the bundled embedding model), on 6 users."""
    return run_harness(generate_workload(users=6), embedder=default_embedder())


def test_four_variants_report_the_documented_figures(result: dict[str, Any]) -> None:
    """Each variant has the documented keys; the full context answers everything; the levers
    spend fewer input tokens per task."""
    variants = result["variants"]
    keys = {"success_rate", "input_tokens_per_task", "output_tokens_per_task", "cost_per_success"}
    keys |= {"latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "cache_hit_rate", "failures"}
    assert set(variants) == {"baseline", "cached", "summarized_retrieved", "all_levers"}
    for figures in variants.values():
        assert keys <= set(figures)
        assert len(figures["latency_ms_percentiles"]) == 101
    # The simulated model answers from the context it is given: every variant keeps what the
    # answers need (the memory variant's system message comes in text parts: read them all).
    assert {name: figures["success_rate"] for name, figures in variants.items()} == dict.fromkeys(
        variants, 1.0
    )
    assert (
        variants["all_levers"]["input_tokens_per_task"]
        < variants["summarized_retrieved"]["input_tokens_per_task"]
        < variants["baseline"]["input_tokens_per_task"]
    )
    assert variants["cached"]["cost_per_success"] < variants["baseline"]["cost_per_success"]
    assert variants["cached"]["prefix_cached_share"] > 0.5
    assert variants["baseline"]["prefix_cached_share"] == 0.0


def test_all_levers_batches_routes_and_caches(result: dict[str, Any]) -> None:
    """The all_levers variant batches the misses of a wave, routes between the small and the
    main model (escalating what the small one cannot answer), and serves repeats from the
    cache."""
    levers = result["variants"]["all_levers"]
    assert levers["batching"]["mean_batch_size"] > 1
    assert levers["batching"]["items"] > levers["batching"]["batches"]
    assert 0 < levers["routing"]["small_share"] < 1
    assert 0 < levers["routing"]["escalation_rate"] < 0.5
    assert levers["cache_hit_rate"] > 0
    assert levers["model_calls_per_task"] < 1 + levers["routing"]["escalation_rate"]
    assert levers["success_rate"] == result["variants"]["baseline"]["success_rate"]


def test_document_updates_invalidate_cached_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without invalidation on update, the semantic cache serves stale answers: the harness
    counts them as wrong cache hits. With it (the default), none."""
    workload, embedder = generate_workload(users=12), default_embedder()
    calm = run_harness(workload, embedder=embedder, variants=["all_levers"])
    assert "wrong_cache_hit" not in calm["variants"]["all_levers"]["failures"]
    monkeypatch.setattr(CompletionCache, "invalidate", lambda self, **criteria: 0)
    stale = run_harness(workload, embedder=embedder, variants=["all_levers"])
    assert stale["variants"]["all_levers"]["failures"].get("wrong_cache_hit", 0) > 0


def test_the_report_is_written(result: dict[str, Any], tmp_path: Path) -> None:
    """write_report produces a self-contained page with a table, bars and the latency curves,
    and the JSON."""
    page = write_report(result, tmp_path / "reports")
    text = page.read_text(encoding="utf-8")
    assert text.count("<svg") >= 4
    assert "<polyline" in text
    assert "all_levers" in text
    assert json.loads((page.parent / "result.json").read_text())["questions"] == 60
    assert "latency_by_prompt_size" in result["variants"]["baseline"]


def test_progress_is_reported_per_variant() -> None:
    """The progress callback sees every variant reach the total."""
    seen: dict[str, tuple[int, int]] = {}
    workload = generate_workload(users=2, sessions_per_user=1)
    run_harness(
        workload,
        embedder=HashingEmbedder(64),
        progress=lambda variant, done, total: seen.__setitem__(variant, (done, total)),
    )
    assert seen == dict.fromkeys(seen, (workload.questions, workload.questions))
    assert len(seen) == 4


def test_a_subset_of_variants_runs_and_unknown_names_are_refused() -> None:
    """``variants`` picks the variants; a typo is a ConfigurationError, not a silent skip."""
    workload = generate_workload(users=1, sessions_per_user=1)
    result = run_harness(workload, embedder=HashingEmbedder(64), variants=["cached"])
    assert list(result["variants"]) == ["cached"]
    with pytest.raises(ConfigurationError, match="all_lever"):
        run_harness(workload, embedder=HashingEmbedder(64), variants=["all_lever"])


def test_a_variant_object_runs_another_combination_of_levers() -> None:
    """A Variant of one's own: the memory prompt with an exact cache and no routing. It spends
    the tokens of the memory variant, and a name clash is refused."""
    from tokenlean.bench import Variant

    workload = generate_workload(users=2, sessions_per_user=1)
    mine = Variant("memory_exact", memory=True, cache="exact")
    result = run_harness(
        workload, embedder=HashingEmbedder(64), variants=["summarized_retrieved", mine]
    )["variants"]
    assert list(result) == ["summarized_retrieved", "memory_exact"]
    assert (
        result["memory_exact"]["input_tokens_per_task"]
        == result["summarized_retrieved"]["input_tokens_per_task"]
    )
    assert "routing" not in result["memory_exact"]
    with pytest.raises(ConfigurationError, match="share a name"):
        run_harness(workload, embedder=HashingEmbedder(64), variants=[mine, mine])


def test_a_factory_must_return_a_bench_model() -> None:
    """Something without the BenchModel methods is refused up front, naming what it needs."""

    class Answers:
        model = "gpt-4o-mini"

        def answer(self, messages: Any, question: Any) -> str:
            return "42"

    with pytest.raises(ConfigurationError, match="not a BenchModel"):
        run_harness(
            generate_workload(users=1, sessions_per_user=1),
            embedder=HashingEmbedder(64),
            model_factory=lambda name: Answers(),  # type: ignore[arg-type,return-value]
            variants=["baseline"],
        )


def test_an_old_style_model_still_runs_with_a_deprecation_warning() -> None:
    """A model written before BenchModel (answer, then call returning a tuple) is wrapped and
    gives the same figures as the simulated model it mimics."""

    class OldStyle:
        def __init__(self, name: str) -> None:
            self.sim = SimulatedModel(model=name)
            self.model = name

        def answer(self, messages: Any, question: Any) -> str:
            self.question = question
            return self.sim.answer(messages, question)

        def call(self, messages: Any, counter: Any, tools: Any = ()) -> tuple[int, int, float]:
            reply = self.sim.call(messages, self.question, counter=counter, tools=tools)
            return reply.input_tokens, reply.cached_tokens, reply.latency_ms

    workload = generate_workload(users=1, sessions_per_user=1)
    with pytest.warns(DeprecationWarning, match="BenchModel"):
        old = run_harness(
            workload, embedder=HashingEmbedder(64), model_factory=OldStyle, variants=["cached"]
        )
    new = run_harness(
        workload,
        embedder=HashingEmbedder(64),
        model_factory=lambda name: SimulatedModel(model=name),
        variants=["cached"],
    )
    for key in ("success_rate", "input_tokens_per_task", "cost_per_success"):
        assert old["variants"]["cached"][key] == new["variants"]["cached"][key]


def test_answers_from_outdated_documents_count_as_stale_facts() -> None:
    """A model that reads the documents as they were before the update gets exactly the
    questions about updated facts wrong, and the harness names them stale facts."""
    workload = generate_workload(users=6)
    originals = "\n".join(d["text"] for d in workload.documents)
    (wave, documents), *_ = workload.updates.items()
    updated = {d["id"] for d in documents}

    class Outdated(SimulatedModel):
        def answer(self, messages: list[dict[str, Any]], question: Any) -> str:
            old = {"role": "system", "content": originals}
            return super().answer([*messages[:-1], old, messages[-1]], question)

    result = run_harness(
        workload,
        embedder=HashingEmbedder(64),
        model_factory=lambda name: Outdated(model=name),
        variants=["baseline"],
    )
    expected = sum(
        1
        for s in workload.sessions
        for q in s.questions
        if q.wave >= wave and updated & set(q.evidence)
    )
    assert expected > 0
    assert result["variants"]["baseline"]["failures"] == {"stale_fact": expected}


def test_the_cached_variant_keys_requests_without_the_time() -> None:
    """The exact-cache key of the cached variant keeps the policy and documentation and leaves
    out the moved timestamp: the same question at another minute has the same key."""
    from tokenlean._metrics.prices import PriceTable
    from tokenlean._tokens.counting import get_token_counter
    from tokenlean.bench import VARIANTS
    from tokenlean.bench._harness import _Job, _Run

    workload = generate_workload(users=1, sessions_per_user=1)
    run = _Run(VARIANTS[1], workload, embedder=HashingEmbedder(64), budget=2600,
               factory=lambda name: SimulatedModel(model=name), count=get_token_counter(),
               prices=PriceTable.default())  # fmt: skip
    session, question = workload.sessions[0], workload.sessions[0].questions[0]
    run._open(session)
    early, late = _Job(session, question, []), _Job(session, question, [])
    run._prompt(early, "2026-11-27T09:01:00+00:00")
    run._prompt(late, "2026-11-27T09:02:00+00:00")
    assert early.request is not None
    assert late.request is not None
    assert early.messages != late.messages
    assert early.request.canonical() == late.request.canonical()
    key_text = " ".join(str(m["content"]) for m in early.request.messages)
    assert workload.policy.splitlines()[0] in key_text
    assert "09:01" not in key_text


def test_the_simulated_model_reads_text_parts_and_caches_a_static_first_part() -> None:
    """A system message in text parts (a memory pack's static prompt, then what changes) is read
    whole, and its first part is a cacheable prefix once seen, though the second part changed."""
    workload = generate_workload(users=1)
    question = next(q for s in workload.sessions for q in s.questions if q.hops == 1)
    docs = "\n".join(d["text"] for d in workload.documents)
    static = "You are the support agent. " * 300

    def messages(changing: str) -> list[dict[str, Any]]:
        parts = [{"type": "text", "text": static}, {"type": "text", "text": changing}]
        return [{"role": "system", "content": parts}, {"role": "user", "content": question.text}]

    model = SimulatedModel()
    first = model.call(messages(f"\n\n{docs}"), question, counter=len)
    second = model.call(messages(f"\n\nCurrent time: now.\n{docs}"), question, counter=len)
    assert first.text == second.text == question.answer
    assert first.cached_tokens == 0
    assert second.cached_tokens == len(static)
