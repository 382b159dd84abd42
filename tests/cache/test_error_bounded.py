"""The error-bounded semantic cache: evidence, the bound, exploration, feedback, calibration,
persistence, and what is compared."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tokenlean as tl
from tokenlean._cache.acceptance import clopper_pearson_upper
from tokenlean.testing import HashingEmbedder


def features(cosine: float) -> np.ndarray:
    """Pair features of a candidate that only differs in cosine."""
    return np.array([cosine, 0, 0, 0, 1, 1, 1], dtype=np.float32)


def state(**options: float) -> tl.AcceptanceState:
    return tl.AcceptanceState(max_error_rate=0.05, seed=0, **options)  # type: ignore[arg-type]


def ask(text: str) -> tl.CacheRequest:
    return tl.CacheRequest(model="m", messages=({"role": "user", "content": text},))


def bounded_cache(**options: object) -> tl.CompletionCache:
    return tl.CompletionCache(
        policy=tl.CachePolicy.semantic(compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
        judge=tl.equal_answers,
        background_judging=False,
        seed=0,
        **options,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ the bound


def test_clopper_pearson_needs_59_clean_rows_for_five_percent() -> None:
    """With no error, 59 rows bound the rate below 5% at 95% confidence and 58 do not."""
    bounds = clopper_pearson_upper(np.zeros(2), np.array([58.0, 59.0]), 0.95)
    assert bounds[0] > 0.05 > bounds[1]
    assert clopper_pearson_upper(np.array([3.0]), np.array([3.0]), 0.95)[0] == 1.0


def test_cold_start_serves_nothing() -> None:
    """Without evidence, even a near-identical candidate is a miss."""
    assert state().decide(features(0.999))[0] == "miss"
    assert state().snapshot().serving is False


def test_a_region_opens_once_evidence_bounds_its_error() -> None:
    """Enough right answers at high similarity open a region that excludes the wrong ones."""
    learner = state()
    for i in range(120):
        learner.add(features(0.95 + 0.0004 * i), True)
        learner.add(features(0.60 + 0.001 * i), False)
    learner.refit()
    snapshot = learner.snapshot()
    assert snapshot.serving
    assert snapshot.error_upper_bound is not None
    assert snapshot.error_upper_bound <= 0.05
    assert learner.decide(features(0.97))[0] in ("serve", "explore")
    assert learner.decide(features(0.65))[0] == "miss"


def test_wrong_answers_among_the_most_similar_keep_the_route_closed() -> None:
    """When a tenth of the most similar candidates were wrong, no region passes a 5% bound."""
    learner = state()
    rng = random.Random(1)
    for _ in range(400):
        learner.add(features(0.9 + 0.1 * rng.random()), rng.random() > 0.1)
    learner.refit()
    assert learner.snapshot().serving is False


def test_exploration_falls_with_the_square_of_the_evidence() -> None:
    """All would-be hits are checked until the bound has its rows, then (m/n)^2, floored."""
    learner = state(monitor_rate=0.02)
    assert learner.explore_probability == 1.0
    for i in range(600):
        learner.add(features(0.9 + 0.0001 * i), True)
    learner.refit()
    n = learner.snapshot().region_evidence
    assert n == 600
    assert learner.explore_probability == pytest.approx(
        max(0.02, (learner.needed / n) ** 2), rel=1e-3
    )
    assert learner.needed == pytest.approx(59.9, abs=0.1)


def test_an_entry_judged_wrong_is_not_served_at_that_similarity_again() -> None:
    """A per-entry floor refuses the entry at or below the similarity it was wrong at."""
    learner = state(monitor_rate=0.0)
    for i in range(300):
        learner.add(features(0.9 + 0.0003 * i), True)
    learner.refit()
    learner.add(features(0.97), False, entry="e1")
    assert learner.decide(features(0.96), "e1")[0] == "miss"
    assert learner.decide(features(0.96), "e2")[0] in ("serve", "explore")


def test_evidence_round_trips_and_bad_bytes_change_nothing() -> None:
    """The evidence and floors persist; unreadable data is refused and the state kept."""
    learner = state()
    for i in range(100):
        learner.add(features(0.95 + 0.0004 * i), True, entry=None)
    learner.add(features(0.9), False, entry="e1")
    learner.refit()
    copy = state()
    assert copy.load_bytes(learner.to_bytes()) is True
    assert copy.snapshot() == learner.snapshot()
    assert copy.load_bytes(b"not numpy") is False
    assert copy.snapshot() == learner.snapshot()


# ------------------------------------------------------------------ the cache, end to end


def test_a_miss_near_an_entry_becomes_evidence_when_the_answer_arrives() -> None:
    """The judge compares the fresh answer with the nearest entry's; the verdict is counted."""
    verdicts: list[tuple[object, object]] = []

    def judge(cached: object, fresh: object) -> bool:
        verdicts.append((cached, fresh))
        return cached == fresh

    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
        judge=judge,
    )
    cache.store(ask("how do I reset my password"), "link")
    result = cache.lookup(ask("how can I reset my password"))
    assert not result.hit
    assert result.reason == "miss: outside the acceptance region"  # cold start: no region yet
    assert result.similarity is not None  # the nearest candidate's
    assert 0.5 < result.similarity < 1.0
    cache.store(ask("how can I reset my password"), "link")
    assert cache.stats().judged == 1  # stats wait for the judgement queued by store()
    assert verdicts == [("link", "link")]
    assert cache.acceptance()["evidence"] == 1


def synthetic_stream(topics: int = 200, seed: int = 3) -> list[tuple[str, str]]:
    """Topics of random words; paraphrases add a filler word and share the answer; each topic
    has a trap that differs only in a number and needs another answer."""
    rng = random.Random(seed)
    rows = []
    for t in range(topics):
        words = " ".join(f"w{rng.randrange(100_000)}" for _ in range(8))
        rows.append((f"{words} unit 7", f"a{t}"))
        rows.append((f"please {words} unit 7", f"a{t}"))
        rows.append((f"{words} unit 7 now", f"a{t}"))
        rows.append((f"{words} unit 9", f"trap{t}"))
    rng.shuffle(rows)
    return rows


def test_the_stream_stays_within_the_error_budget_and_hits_once_it_has_learned() -> None:
    """Cold start serves no semantic hit; once evidence accrues, hits come within budget."""
    cache = bounded_cache()
    served = wrong = first_hit = 0
    for i, (text, answer) in enumerate(synthetic_stream() * 2):
        result = cache.lookup(ask(text))
        if result.hit:
            first_hit = first_hit or i
            served += result.layer == "semantic"
            wrong += result.value != answer
            continue
        cache.store(ask(text), answer)
    assert first_hit > 59  # nothing semantic before the bound has its evidence
    assert served > 0
    assert wrong / max(1, served) <= 0.05
    assert cache.stats().acceptance[""].serving


def test_feedback_removes_a_wrong_entry_and_counts_as_evidence(tmp_path: Path) -> None:
    """A thumbs-down deletes the served entry; the verdict is evidence; bad ids are refused."""
    cache = bounded_cache()
    cache.calibrate(
        [(f"where is parcel {i} now", f"where is parcel {i} now please", True) for i in range(90)]
    )
    assert cache.acceptance()["serving"]
    cache.store(ask("where is my parcel now"), "in transit")
    hit = next(
        r for r in (cache.lookup(ask("where is my parcel now please")) for _ in range(50)) if r.hit
    )
    assert hit.layer == "semantic"
    assert hit.lookup_id
    before = cache.acceptance()["evidence"]
    assert cache.feedback(hit, correct=False) is True
    assert cache.acceptance()["evidence"] == before + 1
    assert cache.acceptance()["evidence_wrong"] == 1
    assert not cache.lookup(ask("where is my parcel now please")).hit
    with pytest.raises(tl.InvalidInputError):
        cache.feedback("not-an-id", correct=False)


def test_evidence_survives_a_restart(tmp_path: Path) -> None:
    """Calibrated evidence is kept in the store and read back by a new process."""
    path = tmp_path / "cache.db"
    first = tl.CompletionCache(
        tl.SQLiteStore(path),
        policy=tl.CachePolicy.semantic(compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
    )
    added = first.calibrate(
        [(f"status of order {i}", f"status of my order {i}", True) for i in range(80)]
        + [(f"status of order {i}", f"cancel order {i}", False) for i in range(20)]
    )
    assert added == 100
    learned = first.acceptance()
    first.close()
    second = tl.CompletionCache(
        tl.SQLiteStore(path),
        policy=tl.CachePolicy.semantic(compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
    )
    assert second.acceptance() == learned
    assert second.acceptance()["serving"]
    second.close()


def test_calibrate_needs_an_error_bounded_route() -> None:
    """A static-threshold route has no evidence to calibrate."""
    cache = tl.CompletionCache(policy=tl.CachePolicy.semantic(threshold=0.9))
    with pytest.raises(tl.ConfigurationError):
        cache.calibrate([("a", "b", True)])
    with pytest.raises(tl.ConfigurationError):
        cache.acceptance()


# ------------------------------------------------------------------ what is compared


def rag(question: str, context: str) -> tl.CacheRequest:
    """LangChain's common RAG prompt: one human message with the question and the context."""
    prompt = (
        "You are an assistant for question-answering tasks. Use the following pieces of "
        "retrieved context to answer the question.\n"
        f"Question: {question}\nContext: {context}\nAnswer:"
    )
    return tl.CacheRequest(model="m", messages=({"role": "user", "content": prompt},))


CONTEXT = " ".join(f"Sentence {i} of the shared policy document about refunds." for i in range(40))


def test_the_template_splitter_compares_the_question_and_fixes_the_context() -> None:
    """After a few requests the scaffolding is learned: the question is compared, and the
    context is part of the fixed key."""
    splitter = tl.TemplateSplitter()
    warm_up = ("Opening hours of the Lyon shop.", "Gift cards never expire.",
               "Parcels ship from Leeds on weekdays.", "Support answers within a day.")  # fmt: skip
    questions = ("When do you open?", "Do gift cards expire?", "Where do parcels ship from?",
                 "How fast is support?")  # fmt: skip
    for question, context in zip(questions, warm_up, strict=True):
        assert splitter(rag(question, context)) is None
    fixed, compared = splitter(rag("Can I get a refund?", CONTEXT))  # type: ignore[misc]
    assert compared.rstrip("?") == "Can I get a refund"  # a "?" all questions end with: scaffolding
    other_fixed, other = splitter(rag("Where is my parcel?", CONTEXT))  # type: ignore[misc]
    assert other.rstrip("?") == "Where is my parcel"
    assert other_fixed == fixed
    third_fixed, _ = splitter(rag("Can I get a refund?", "A different context entirely."))  # type: ignore[misc]
    assert third_fixed != fixed
    assert any("Question:" in block for block in splitter.template or [])


def test_one_odd_request_does_not_reset_a_learned_template() -> None:
    """A request that does not fit is matched exactly; the template changes only once misfits
    are the majority of recent requests."""
    splitter = tl.TemplateSplitter()
    for question, context in [("When do you open?", "Opening hours."), ("Do cards expire?", "No."),
                              ("Who ships?", "Leeds."), ("How fast?", "A day.")]:  # fmt: skip
        splitter(rag(question, context))
    learned = splitter.template
    odd = tl.CacheRequest(model="m", messages=({"role": "user", "content": "Just hello"},))
    assert splitter(odd) is None
    assert splitter.template == learned
    assert splitter(rag("Can I get a refund?", CONTEXT)) is not None
    for i in range(6):
        splitter(tl.CacheRequest(model="m", messages=({"role": "user", "content": f"Hi {i}"},)))
    assert splitter.template != learned


def test_plain_chat_learns_an_empty_template_and_compares_the_whole_turn() -> None:
    """Questions that share no scaffolding are compared whole."""
    splitter = tl.TemplateSplitter()
    for text in ("Where is my order?", "How do I reset a password?", "Opening hours?",
                 "Can I pay by card?"):  # fmt: skip
        splitter(ask(text))
    assert splitter(ask("Where is my order today?")) == (
        splitter(ask("Where is my order today?"))[0],  # type: ignore[index]
        "Where is my order today?",
    )
    assert splitter.template == []


def test_different_questions_over_one_context_never_hit_each_other() -> None:
    """With the default splitter, a shared context cannot make different questions match,
    even under a permissive static threshold; the same question still hits."""
    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(threshold=0.5, verifier=None), embedder=HashingEmbedder()
    )
    warm_up = [("When do you open?", "Opening hours of the Lyon shop."),
               ("Do gift cards expire?", "Gift cards never expire."),
               ("Where do parcels ship from?", "Parcels ship from Leeds on weekdays."),
               ("How fast is support?", "Support answers within a day.")]  # fmt: skip
    for question, context in warm_up:  # the route's first requests teach the template
        cache.store(rag(question, context), question)
    cache.store(rag("How long do refunds take?", CONTEXT), "14 days")
    assert not cache.lookup(rag("Who pays for return shipping?", CONTEXT)).hit
    assert not cache.lookup(rag("Can I return a gift card?", CONTEXT)).hit
    same = cache.lookup(rag("How long do refunds take please?", CONTEXT))
    assert same.hit
    assert same.layer == "semantic"
    assert same.value == "14 days"


def test_a_custom_hook_chooses_the_compared_text() -> None:
    """A route's own callable decides what is compared and what must match exactly."""

    def compare(request: tl.CacheRequest) -> tuple[str, str]:
        data = json.loads(str(request.messages[-1]["content"]))
        return data["product"], data["question"]

    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(threshold=0.6, verifier=None, compare=compare),
        embedder=HashingEmbedder(),
    )

    def q(product: str, question: str) -> tl.CacheRequest:
        return ask(json.dumps({"product": product, "question": question}))

    cache.store(q("nimbus", "how do I pair it"), "hold the button")
    assert cache.lookup(q("nimbus", "how do I pair it please")).hit
    assert not cache.lookup(q("stratus", "how do I pair it please")).hit
    with pytest.raises(ValueError, match="callable"):
        tl.CachePolicy.semantic(compare="not callable")


# ------------------------------------------------------------------ the judge


def test_the_default_judge_reads_texts_numbers_and_embeddings() -> None:
    """Equal normalized texts agree, differing numbers disagree, embeddings decide the rest."""
    judge = tl.DefaultAnswerJudge(HashingEmbedder(), min_similarity=0.9)
    assert judge({"content": "Refunds take 14 days."}, "refunds take 14 days") is True
    assert judge("Refunds take 14 days.", "Refunds take 30 days.") is False
    assert judge("The parcel is in Lyon", "Your parcel is waiting in Lyon") is False
    assert judge("the parcel is in lyon now", "now the parcel is in lyon") is True
    assert judge("", "anything") is None
    lc = [{"kind": "chat", "message": {"type": "ai", "data": {"content": "Paris."}}}]
    assert tl.answer_text(lc) == "Paris."


def test_the_learned_state_shows_in_stats_and_metrics() -> None:
    """Evidence, bound and region reach the cache's stats, the collector and Prometheus."""
    prometheus = pytest.importorskip("prometheus_client")
    registry = prometheus.CollectorRegistry()
    collector = tl.MetricsCollector(sinks=[tl.PrometheusExporter(registry)])
    cache = bounded_cache(collector=collector)
    cache.calibrate([(f"track box {i}", f"track box {i} please", True) for i in range(90)])
    learned = collector.snapshot()["semantic_cache"][""]
    assert learned["serving"] is True
    assert learned["error_upper_bound"] <= 0.05
    assert learned["max_error_rate"] == 0.05
    assert cache.stats().acceptance[""].evidence == 90
    gauge = registry.get_sample_value(
        "tokenlean_semantic_cache_acceptance", {"route": "", "figure": "evidence"}
    )
    assert gauge == 90


def test_lookup_many_embeds_every_compared_text_in_one_batch() -> None:
    """A batch of lookups makes one embedding call, and the stores that follow reuse it."""
    calls: list[int] = []

    class Counting(HashingEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            calls.append(len(texts))
            return super().embed(texts)

    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(compare=tl.last_user_turn), embedder=Counting()
    )
    questions = [f"question number {i} about parcels" for i in range(10)]
    results = cache.lookup_many([ask(q) for q in questions])
    assert [r.hit for r in results] == [False] * 10
    assert calls == [10]
    for question in questions:
        cache.store(ask(question), question)
    assert calls == [10]


def test_calibration_skips_identical_texts_and_other_partitions() -> None:
    """Identical compared texts (the exact layer's) and requests whose fixed parts differ teach
    the semantic rule nothing."""
    cache = bounded_cache()
    system = tl.CacheRequest(
        model="m",
        messages=({"role": "system", "content": "other"}, {"role": "user", "content": "hi there"}),
    )
    added = cache.calibrate(
        [
            ("where is my parcel", "where is my parcel", False),
            (ask("hi there"), system, True),
            (ask("where is my parcel"), ask("where is my parcel please"), True),
        ]
    )
    assert added == 1


def test_a_prompt_judge_that_fails_gives_no_verdict() -> None:
    """An LLM judge's error or unclear reply is no evidence; equal texts need no call."""

    def broken(prompt: str) -> str:
        raise TimeoutError("the judge model timed out")

    assert tl.PromptAnswerJudge(broken)("Refunds take 14 days.", "Two weeks.") is None
    assert tl.PromptAnswerJudge(broken)("Same.", "same") is True
    assert tl.PromptAnswerJudge(lambda p: "NO.")("14 days", "30 days") is False


def test_judging_runs_off_the_store_path_and_stats_wait_for_it() -> None:
    """A slow judge does not hold up store(); stats and acceptance wait for its verdicts."""
    release = threading.Event()

    def slow_judge(cached: object, fresh: object) -> bool:
        release.wait(5)
        return cached == fresh

    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
        judge=slow_judge,
    )
    cache.store(ask("how do I reset my password"), "link")
    cache.lookup(ask("how can I reset my password"))
    started = time.perf_counter()
    cache.store(ask("how can I reset my password"), "link")
    assert time.perf_counter() - started < 1.0
    threading.Timer(0.2, release.set).start()
    assert cache.stats().judged == 1
    assert cache.acceptance()["evidence"] == 1
    cache.close()


def test_a_judge_that_raises_adds_no_evidence_and_fails_nothing() -> None:
    """A judge's exception is logged; the store and later lookups work as before."""

    def broken(cached: object, fresh: object) -> bool:
        raise RuntimeError("judge down")

    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
        judge=broken,
    )
    cache.store(ask("how do I reset my password"), "link")
    cache.lookup(ask("how can I reset my password"))
    assert cache.store(ask("how can I reset my password"), "link") is True
    assert cache.acceptance()["evidence"] == 0
    assert cache.lookup(ask("how can I reset my password")).layer == "exact"


def test_a_process_that_has_not_learned_the_template_finds_identical_requests(
    tmp_path: Path,
) -> None:
    """Under the default (template-learning) policy, answers stored after the writer learned
    its template are found, byte-identical, by a restarted process that has learned nothing."""
    path = tmp_path / "cache.db"
    questions = [f"question number {i} about my order?" for i in range(8)]

    def chat(text: str) -> tl.CacheRequest:
        return tl.CacheRequest(model="m", messages=(
            {"role": "system", "content": "You are the support agent."},
            {"role": "user", "content": text},
        ))  # fmt: skip

    def cache() -> tl.CompletionCache:
        return tl.CompletionCache(
            f"sqlite:///{path}", policy=tl.CachePolicy.semantic(), embedder=HashingEmbedder()
        )

    writer = cache()
    for q in questions:
        writer.store(chat(q), f"answer {q}")
    assert writer.policy_for(None).compare.template is not None  # type: ignore[union-attr]
    writer.close()
    reader = cache()
    found = [reader.lookup(chat(q)) for q in reversed(questions)]
    assert [(r.hit, r.layer, r.value) for r in found] == [
        (True, "exact", f"answer {q}") for q in reversed(questions)
    ]
    reader.close()


def test_the_model_serves_nothing_outside_the_range_of_its_evidence() -> None:
    """A feature constant in the evidence (here: named entities always matched) carries no
    weight in the fitted model, which would extrapolate past it; a pair outside the range
    of the rows the bound was computed on is a miss."""
    rng = np.random.default_rng(0)
    route = state()
    rows = []
    for _ in range(600):  # paraphrases: high or middling cosine, words reworded
        overlap = rng.uniform(0.3, 0.7)
        rows.append(([rng.uniform(0.75, 1.0), 0, 0, 0, 1, overlap, overlap], True))
    for _ in range(300):  # hard negatives: one word changed, so cosine and overlap are high
        overlap = rng.uniform(0.8, 0.95)
        rows.append(([rng.uniform(0.8, 0.95), 0, 0, 0, 1, overlap, overlap], False))
    rng.shuffle(rows)  # type: ignore[arg-type]
    for x, right in rows:
        route.add(np.array(x, dtype=np.float32), right)
    route.refit()
    assert route.snapshot().fitted
    inside = np.array([0.9, 0, 0, 0, 1, 0.5, 0.5], dtype=np.float32)
    assert route.decide(inside)[0] != "miss"
    other_entity = inside.copy()
    other_entity[3] = 1.0
    assert route.decide(other_entity)[0] == "miss"
    assert route.decide(np.array([0.7, 0, 0, 0, 1, 0.5, 0.5], dtype=np.float32))[0] == "miss"


def test_feedback_removes_the_exact_twin_of_a_templated_entry() -> None:
    """A wrong semantic hit's entry and its exact twin both go: the flagged answer is served
    neither to the paraphrase nor to the identical request."""
    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(
            threshold=0.5, compare=tl.TemplateSplitter(learn_requests=2)
        ),
        embedder=HashingEmbedder(),
    )
    for text in ("what are the opening hours", "how do I reset my password", "can I pay by card"):
        cache.store(ask(text), "teaches the template")
    before = cache.stats().entries
    cache.store(ask("where is my parcel right now"), "In Lyon.")
    assert cache.stats().entries == before + 2  # the semantic entry and its exact twin
    hit = cache.lookup(ask("right now where is my parcel"))
    assert (hit.hit, hit.layer) == (True, "semantic")
    assert cache.feedback(hit, correct=False)
    assert not cache.lookup(ask("where is my parcel right now")).hit
    assert cache.stats().entries == before


def test_a_caller_split_needs_no_twin() -> None:
    """A request whose caller chose the compared text has a key every process computes alike:
    one entry, under the default policy too."""
    cache = tl.CompletionCache(policy=tl.CachePolicy.semantic(), embedder=HashingEmbedder())
    for i in range(6):
        request = tl.CacheRequest(model="m", messages=({"role": "user", "content": f"q{i}"},),
                                  split=("context", f"question number {i}"))  # fmt: skip
        cache.store(request, f"a{i}")
    assert cache.stats().entries == 6


def test_hits_on_an_exact_twin_keep_its_semantic_entry_from_eviction() -> None:
    """Under max_entries, an answer asked for again and again keeps its paraphrase coverage:
    a hit on the exact twin refreshes the semantic entry's recency too."""
    cache = tl.CompletionCache(
        tl.MemoryStore(max_entries=8),
        policy=tl.CachePolicy.semantic(
            threshold=0.5, compare=tl.TemplateSplitter(learn_requests=2)
        ),
        embedder=HashingEmbedder(),
    )
    for text in ("what are the opening hours", "how do I reset my password", "can I pay by card"):
        cache.store(ask(text), "teaches the template")
    cache.store(ask("where is my parcel right now"), "In Lyon.")
    for i in range(12):  # other answers, each a semantic entry and a twin
        assert cache.lookup(ask("where is my parcel right now")).layer == "exact"
        cache.store(ask(f"question {i} about invoice number w{i}x"), f"answer {i}")
    hit = cache.lookup(ask("right now where is my parcel"))
    assert (hit.hit, hit.layer, hit.value) == (True, "semantic", "In Lyon.")
