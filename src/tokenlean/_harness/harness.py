"""The end-to-end benchmark: the same workload through four ways of building the prompt.

1. ``baseline``: everything, every time: the policy (with a timestamp), the tool schemas, all
   documents, the full session history and the question; one model call per question.
2. ``cached``: the same content as a canonical prompt plan (the timestamp moved after the static
   prefix, so the provider's prefix cache hits) and an exact completion cache.
3. ``summarized_retrieved``: the policy and tools, the documents retrieved within a budget (the
   query is the question plus the session's slot state, so "the product I bought" finds its
   documentation), and the session through :class:`ConversationMemory` (slots, summary,
   retrieved and recent turns) within a budget.
4. ``all_levers``: 3, ordered static to volatile for the provider's prefix cache, with a
   retrieval cache, a semantic completion cache on the product-fact route (the personal routes
   are never cached, and the verifier compares product names; entries are tagged with the
   documents they used and invalidated when one is updated), routing (the small model first,
   escalating to the main model when it is unsure, and a gate that learns from those escalations
   which questions to send to the main model directly) and micro-batching (the requests of one
   wave that miss the cache go out through a :class:`MicroBatcher`, one batch per model).

The model is :class:`SimulatedModel`: it answers from the context it is given, so missing
context fails the task, and it has a documented latency and price model with a provider
prefix-cache discount. The figures are the simulator's, not a real model's.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel

from tokenlean._batching.routing import LearnedGate, RouteDecision, Router
from tokenlean._batching.scheduler import BatchKey, LatencyClass, MicroBatcher
from tokenlean._cache.compare import last_user_turn
from tokenlean._cache.completion import CompletionCache
from tokenlean._cache.policy import CachePolicy, VerifierConfig
from tokenlean._cache.request import CacheRequest
from tokenlean._cache.retrieval import RetrievalCache
from tokenlean._canonical import canonical_json, fingerprint
from tokenlean._errors import ConfigurationError
from tokenlean._harness.workload import Question, Session, Workload
from tokenlean._memory.memory import ConversationMemory
from tokenlean._memory.slots import RegexExtractor
from tokenlean._messages import count_message_tokens
from tokenlean._metrics.collector import _bucket
from tokenlean._metrics.prices import PriceTable
from tokenlean._plan import PromptPlan
from tokenlean._retrieval.index import HybridIndex
from tokenlean._retrieval.retriever import BudgetedRetriever
from tokenlean._stats import rank_percentile
from tokenlean._tokens import get_token_counter

__all__ = ["MAIN_MODEL", "SMALL_MODEL", "VARIANTS", "SimulatedModel", "run_harness"]

VARIANTS = ("baseline", "cached", "summarized_retrieved", "all_levers")
MAIN_MODEL, SMALL_MODEL = "gpt-4o-mini", "gpt-4.1-nano"
OUTPUT_TOKENS = 10
UNSURE = "I don't know"

_NUMBER = re.compile(r"(\d+)")
_CITY = re.compile(r"(?:deliver my orders to|delivery_city:) ([A-Z][a-z]+)")
_PURCHASE = re.compile(r"(?:I bought the|purchased_product:) ([A-Z][a-z]+ [a-z]+)")
_PERSONAL = re.compile(r"\b(my|I bought)\b")
_KEYWORDS = {
    "warranty": "warranty",
    "battery": "battery",
    "return": "Returns",
    "charging": "charges fully",
}


@dataclass
class SimulatedModel:
    """Answers from the context; documented latency and price.

    **Answers.** The value of the asked fact in the *last* place of the context that states it,
    or "I don't know". A delivery-city question takes the last "deliver my orders to X" (or the
    slot line ``delivery_city: X``); a product question the number in the last sentence naming
    the product and the attribute; a question about "the product I bought" first finds the last
    purchase ("I bought the X", or ``purchased_product: X``), then that product's fact. With
    ``multi_hop=False`` (the small model) the model answers "I don't know" to those two-hop
    questions, which is what makes the router escalate.

    **Latency.** One call takes ``overhead_ms + prefill_ms_per_token x uncached input tokens +
    cached_prefill_ms_per_token x cached input tokens + decode_ms_per_token x output tokens``.
    A batch (:meth:`call_batch`) runs its items in parallel: it pays the overhead once and takes
    its longest item's time, and every item in it waits for the whole batch.

    **Prefix cache.** The provider caches prefixes at message boundaries: the longest run of
    leading messages (after the tool schemas) seen before, if at least ``min_cached_tokens``
    long, is read from cache, billed at the price table's cached-read price.
    """

    model: str = MAIN_MODEL
    multi_hop: bool = True
    overhead_ms: float = 250.0
    prefill_ms_per_token: float = 0.04
    cached_prefill_ms_per_token: float = 0.004
    decode_ms_per_token: float = 12.0
    min_cached_tokens: int = 1024
    _seen: set[str] = field(default_factory=set)

    def answer(self, messages: list[dict[str, Any]], question: Question) -> str:
        text = "\n".join(str(m.get("content") or "") for m in messages[:-1])
        if question.fact == "delivery city":
            cities = _CITY.findall(text)
            return cities[-1] if cities else UNSURE
        subject, attribute = question.fact.rsplit(" ", 1)
        if subject == "purchase":
            purchases = _PURCHASE.findall(text)
            if not self.multi_hop or not purchases:
                return UNSURE
            subject = purchases[-1]
        sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
        hits = [
            s
            for s in sentences
            if subject in s
            and _KEYWORDS[attribute] in s
            and _NUMBER.search(s)
            and not s.rstrip().endswith("?")
        ]
        numbers = _NUMBER.findall(hits[-1]) if hits else []
        return numbers[0] if numbers else UNSURE

    def _tokens(
        self, messages: list[dict[str, Any]], count: Callable[[str], int], tools: Sequence[Any]
    ) -> tuple[int, int]:
        counted = count_message_tokens(messages, tools=tools or None, counter=count)
        tokens, cached, running = counted.total, 0, counted.tools
        key = fingerprint(self.model, canonical_json(list(tools)))
        for message in messages[:-1]:
            key = fingerprint(key, str(message.get("role")), str(message.get("content") or ""))
            running += count(str(message.get("content") or "")) + 4
            if key in self._seen and running >= self.min_cached_tokens:
                cached = running
            self._seen.add(key)
        return tokens, cached

    def _time(self, tokens: int, cached: int) -> float:
        return (
            self.prefill_ms_per_token * (tokens - cached)
            + self.cached_prefill_ms_per_token * cached
            + self.decode_ms_per_token * OUTPUT_TOKENS
        )

    def call(
        self,
        messages: list[dict[str, Any]],
        count: Callable[[str], int],
        tools: Sequence[Any] = (),
    ) -> tuple[int, int, float]:
        """(input tokens, cached input tokens, latency ms) of one call."""
        tokens, cached = self._tokens(messages, count, tools)
        return tokens, cached, self.overhead_ms + self._time(tokens, cached)

    def call_batch(
        self,
        batch: Sequence[list[dict[str, Any]]],
        count: Callable[[str], int],
        tools: Sequence[Any] = (),
    ) -> list[tuple[int, int, float]]:
        """:meth:`call` for a batch: the overhead once, the longest item's time for all."""
        figures = [self._tokens(messages, count, tools) for messages in batch]
        latency = self.overhead_ms + max((self._time(*f) for f in figures), default=0.0)
        return [(tokens, cached, latency) for tokens, cached in figures]


class _Customer(BaseModel):
    delivery_city: str | None = None
    purchased_product: str | None = None


_EXTRACTORS = [
    RegexExtractor("delivery_city", r"deliver my orders to ([A-Z][a-z]+)"),
    RegexExtractor("purchased_product", r"I bought the ([A-Z][a-z]+ [a-z]+)"),
]


class _EscalationGate:
    """A router gate that learns from escalations: every small-path answer is an example
    (escalated or not) for a :class:`LearnedGate`, retrained after each wave; until it has seen
    both outcomes it makes no decision (the router then tries the small model). A wave's
    decisions are made up front with one embedding call (:meth:`prepare`), so routing does not
    stagger the requests that the batcher should group."""

    def __init__(self, embedder: Any) -> None:
        self.gate = LearnedGate(embedder, k=3, threshold=0.34)
        self.examples: dict[str, bool] = {}
        self.trained = False
        self.decisions: dict[str, RouteDecision] = {}

    def learn(self, text: str, escalated: bool) -> None:
        self.examples[text] = escalated

    def retrain(self) -> None:
        if len(set(self.examples.values())) == 2:
            self.gate.train(list(self.examples), list(self.examples.values()))
            self.trained = True

    def prepare(self, texts: Sequence[str]) -> None:
        self.decisions = {}
        if not self.trained or not texts:
            return
        for text, p in zip(texts, self.gate.probabilities_large(texts), strict=True):
            path: Literal["small", "large"] = "large" if p >= self.gate.threshold else "small"
            self.decisions[text] = RouteDecision(path, f"learned gate p(large)={p:.2f}", p)

    def decide(self, text: str, **_: Any) -> RouteDecision | None:
        if not self.trained:
            return None
        return self.decisions.get(text) or self.gate.decide(text)


@dataclass
class _Job:
    """One question in flight: its prompt, and the model calls it took."""

    session: Session
    question: Question
    messages: list[dict[str, Any]]
    request: CacheRequest | None = None
    route: str = "facts"
    sources: tuple[str, ...] = ()
    answer: str | None = None
    from_cache: bool = False
    submitted: float = 0.0
    calls: list[tuple[str, int, int, float]] = field(default_factory=list)


@dataclass
class _Tally:
    successes: int = 0
    tasks: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0
    cost: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cache_hits: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    by_size: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def result(self) -> dict[str, Any]:
        def pct(ordered: list[float], q: float) -> float:
            return round(rank_percentile(ordered, q), 1)

        lat = sorted(self.latencies) or [0.0]
        return {
            "tasks": self.tasks,
            "success_rate": round(self.successes / self.tasks, 4),
            "input_tokens_per_task": round(self.input_tokens / self.tasks, 1),
            "output_tokens_per_task": round(self.output_tokens / self.tasks, 1),
            "cost_per_success": round(self.cost / self.successes, 7) if self.successes else None,
            "latency_ms_p50": pct(lat, 0.5),
            "latency_ms_p95": pct(lat, 0.95),
            "latency_ms_p99": pct(lat, 0.99),
            "cache_hit_rate": round(self.cache_hits / self.tasks, 4),
            "failures": dict(sorted(self.failures.items())),
            "prefix_cached_share": round(self.cached_input_tokens / self.input_tokens, 4)
            if self.input_tokens
            else 0.0,
            "model_calls_per_task": round(self.model_calls / self.tasks, 3),
            "latency_by_prompt_size": {
                bucket: {"p50_ms": pct(v, 0.5), "p95_ms": pct(v, 0.95), "calls": len(v)}
                for bucket, v in sorted((b, sorted(v)) for b, v in self.by_size.items())
            },
            "latency_ms_percentiles": [pct(lat, q / 100) for q in range(101)],
            **self.extra,
        }


class _Run:
    """One variant's run over the workload."""

    def __init__(
        self,
        variant: str,
        workload: Workload,
        *,
        embedder: Any,
        budget: int,
        factory: Callable[[str], Any],
        count: Callable[[str], int],
        prices: PriceTable,
    ) -> None:
        self.variant, self.workload, self.budget = variant, workload, budget
        self.count, self.prices = count, prices
        self.levers = variant in ("summarized_retrieved", "all_levers")
        self.tally = _Tally()
        self.model, self.small = factory(MAIN_MODEL), factory(SMALL_MODEL)
        self.documents = {d["id"]: d for d in workload.documents}
        self.index = HybridIndex(embedder=embedder)
        self.index.add(workload.documents)
        self.retrieval_cache = RetrievalCache() if variant == "all_levers" else None
        self.retriever = BudgetedRetriever(self.index, counter=count, cache=self.retrieval_cache)
        self.exact = CompletionCache(policy=CachePolicy.exact())
        self.semantic = CompletionCache(
            embedder=embedder,
            routes={
                # Product names decide the answer here: the verifier also compares entities.
                # The static rule: 120 questions are too few for the error-bounded default to
                # gather the evidence it needs before serving (it would serve exact hits only).
                "facts": CachePolicy.semantic(
                    threshold=0.70,
                    context_messages=0,
                    verifier=VerifierConfig(entities=True),
                    compare=last_user_turn,
                ),
                "personal": CachePolicy.off(),
            },
        )
        self.memory = ConversationMemory(
            embedder=embedder,
            counter=count,
            summarize_after=300,
            keep_recent=4,
            slots=_Customer,
            extractors=_EXTRACTORS,
        )
        self.histories: dict[str, list[dict[str, Any]]] = {}
        self.batcher: MicroBatcher | None = None
        self.router: Router | None = None
        self.gate = _EscalationGate(embedder)
        self.start = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)

    # ------------------------------------------------------------------ prompts

    def _prompt(self, job: _Job, now: str) -> None:
        session, question = job.session, job.question
        tools = self.workload.tools
        if not self.levers:
            documents = "\n".join(d["text"] for d in self.documents.values())
            plan = PromptPlan(
                counter=self.count, volatile="keep" if self.variant == "baseline" else "move"
            )
            plan = plan.with_policy(f"{self.workload.policy}\nCurrent time: {now}")
            plan = plan.with_tools(tools)
            plan = plan.with_policy(f"Documentation:\n{documents}", name="docs")
            plan = plan.with_history(self.histories[session.user]).with_user(question.text)
            rendered = plan.render()
            job.messages = rendered.messages
            if self.variant == "cached":
                # The key leaves out the message the plan moved the volatile values into (the
                # time), and keeps the policy, whose time is masked.
                moved = [value.value for value in rendered.moved]
                job.request = CacheRequest(
                    model=MAIN_MODEL,
                    messages=tuple(
                        m for m in job.messages if not any(v in m["content"] for v in moved)
                    ),
                    tools=tuple(tools),
                )
            return
        state = self.memory.slots(session.user).render()
        packed = self.retriever.retrieve(f"{question.text}\n{state}", budget=300)
        job.sources = tuple(packed.doc_ids)
        docs = f"Documentation:\n{packed.text}"
        if self.variant == "summarized_retrieved":
            room = self.budget
            system = f"{self.workload.policy}\nCurrent time: {now}\n\n{docs}"
            pack = self.memory.context(session.user, budget=room, user=question.text, system=system)
            job.messages = pack.messages
            return
        # Static to volatile: the policy alone first (a cacheable prefix), then the retrieved
        # documentation, the time, and the memory's context.
        head = [
            {"role": "system", "content": self.workload.policy},
            {"role": "system", "content": docs},
            {"role": "system", "content": f"Current time: {now}"},
        ]
        room = self.budget - count_message_tokens(head, counter=self.count).total
        pack = self.memory.context(session.user, budget=room, user=question.text, system="")
        job.messages = [*head, *pack.messages]
        # The customer's own data (first-person references) is never served from a shared cache.
        job.route = "personal" if _PERSONAL.search(question.text) else "facts"
        job.request = CacheRequest(model=MAIN_MODEL, messages=tuple(job.messages[-1:]))

    # ------------------------------------------------------------------ model calls

    def _models(self) -> dict[str, Any]:
        return {self.model.model: self.model, self.small.model: self.small}

    def _call_one(self, target: Any, job: _Job) -> str:
        answer = str(target.answer(job.messages, job.question))
        tokens, cached, latency = target.call(job.messages, self.count, self.workload.tools)
        job.calls.append((target.model, tokens, cached, latency))
        return answer

    async def _execute(self, key: BatchKey, jobs: Sequence[_Job]) -> list[str]:
        target = self._models()[key.model]
        began = time.perf_counter()
        if not hasattr(target, "call_batch"):  # a real model: one call after another
            return await asyncio.to_thread(lambda: [self._call_one(target, j) for j in jobs])
        answers = [str(target.answer(j.messages, j.question)) for j in jobs]
        figures = target.call_batch([j.messages for j in jobs], self.count, self.workload.tools)
        for job, (tokens, cached, latency) in zip(jobs, figures, strict=True):
            waited = (began - job.submitted) * 1000
            job.calls.append((target.model, tokens, cached, latency + waited))
        return answers

    async def _routed(self, jobs: list[_Job]) -> None:
        assert self.router is not None
        self.gate.prepare([job.question.text for job in jobs])
        answers = await asyncio.gather(*(self.router.arun(job) for job in jobs))
        for job, answer in zip(jobs, answers, strict=True):
            job.answer = str(answer)
            if job.calls and job.calls[0][0] == self.small.model:  # it went to the small path
                self.gate.learn(job.question.text, escalated=len(job.calls) > 1)
        self.gate.retrain()

    def _submit(self, model: str) -> Callable[[_Job], Any]:
        def submit(job: _Job) -> Any:
            assert self.batcher is not None
            job.submitted = time.perf_counter()
            tokens = count_message_tokens(job.messages, counter=self.count).total
            return self.batcher.submit(job, model=model, tokens=tokens)

        return submit

    # ------------------------------------------------------------------ the run

    async def run(self, progress: Callable[[int], None]) -> dict[str, Any]:
        if self.variant == "all_levers":
            self.batcher = MicroBatcher(
                self._execute,
                classes={
                    "interactive": LatencyClass(max_wait_s=0.025, max_items=32, max_tokens=65536)
                },
            )
            self.router = Router(
                small=self._submit(self.small.model),
                large=self._submit(self.model.model),
                gates=[self.gate],
                verifier=lambda job, answer: 0.0 if UNSURE.lower() in str(answer).lower() else 1.0,
                text=lambda job: job.question.text,
            )
        clock = 0
        for number, wave in enumerate(self.workload.waves()):
            for document in self.workload.updates.get(number, []):
                self._update(document)
            jobs = []
            for session, question in wave:
                clock += 1
                now = (self.start + timedelta(minutes=clock)).isoformat()
                if question is session.questions[0]:
                    self._open(session)
                job = _Job(session, question, [])
                self._prompt(job, now)
                self._lookup(job)
                jobs.append(job)
            misses = [j for j in jobs if j.answer is None]
            if self.variant == "all_levers":
                await self._routed(misses)
            else:
                for job in misses:
                    job.answer = self._call_one(self.model, job)
            for job in jobs:
                self._record(job)
            progress(len(jobs))
        if self.batcher is not None:
            await self.batcher.aclose()
            snapshot = self.batcher.metrics.snapshot()
            self.tally.extra["batching"] = {
                k: snapshot[k]
                for k in ("batches", "items", "mean_batch_size", "queue_delay_ms_p95")
            }
        if self.router is not None:
            routed = self.router.metrics.snapshot()
            self.tally.extra["routing"] = {
                "small_share": routed["share_small"],
                "escalation_rate": routed["escalation_rate"],
            }
        if self.retrieval_cache is not None:
            self.tally.extra["retrieval_cache_hit_rate"] = round(
                self.retrieval_cache.stats().hit_rate, 4
            )
        self.memory.close()
        return self.tally.result()

    def _was_updated(self, question: Question) -> bool:
        """Whether a document this question depends on had been updated when it was asked."""
        return any(
            wave <= question.wave and any(d["id"] in question.evidence for d in documents)
            for wave, documents in self.workload.updates.items()
        )

    def _update(self, document: dict[str, str]) -> None:
        """A document changes: the index takes it, and cached answers that used it go."""
        self.documents[document["id"]] = document
        self.index.add([document])
        self.semantic.invalidate(tag=document["id"])

    def _open(self, session: Session) -> None:
        history = self.histories[session.user] = []
        for statement in session.statements:
            history.append({"role": "user", "content": statement})
            history.append({"role": "assistant", "content": "Noted, thank you."})
        if self.levers:  # earlier sessions of the same user carry over in memory
            self.memory.add(session.user, history)

    def _lookup(self, job: _Job) -> None:
        if job.request is None:
            return
        if self.variant == "cached":
            hit = self.exact.lookup(job.request)
        else:
            hit = self.semantic.lookup(job.request, route=job.route)
        if hit.hit:
            job.answer, job.from_cache = str(hit.value), True

    def _record(self, job: _Job) -> None:
        tally, question = self.tally, job.question
        answer = str(job.answer)
        tally.tasks += 1
        if job.from_cache:
            tally.cache_hits += 1
            tally.latencies.append(5.0)
        else:
            for model, tokens, cached, _latency in job.calls:
                tally.model_calls += 1
                tally.input_tokens += tokens
                tally.cached_input_tokens += cached
                tally.output_tokens += OUTPUT_TOKENS
                tally.cost += self.prices.cost(
                    model, input_tokens=tokens, output_tokens=OUTPUT_TOKENS, cached_tokens=cached
                ).usd
            latency = sum(call[3] for call in job.calls)
            tally.latencies.append(latency)
            tally.by_size.setdefault(_bucket(job.calls[-1][1]), []).append(latency)
            if job.request is not None and self.variant == "cached":
                self.exact.store(job.request, answer)
            elif job.request is not None and answer != UNSURE:
                self.semantic.store(job.request, answer, route=job.route, tags=job.sources)
        judge = getattr(self.model, "is_correct", None)
        correct = judge(answer, question.answer) if judge else answer == question.answer
        if correct:
            tally.successes += 1
        elif job.from_cache:
            tally.fail("wrong_cache_hit")
        elif UNSURE.lower() in answer.lower():
            tally.fail("missing_context")
        elif question.fact == "delivery city" or self._was_updated(question):
            tally.fail("stale_fact")
        else:
            tally.fail("wrong_answer")
        history = self.histories[job.session.user]
        history.append({"role": "user", "content": question.text})
        history.append({"role": "assistant", "content": answer})
        if self.levers:
            self.memory.add(job.session.user, history[-2:])


def run_harness(
    workload: Workload,
    *,
    embedder: Any,
    budget: int = 2600,
    model_factory: Callable[[str], Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    variants: Sequence[str] = VARIANTS,
) -> dict[str, Any]:
    """Run the four variants over ``workload`` and return their figures.

    ``model_factory(name) -> model`` replaces the simulated model (``name`` is
    :data:`MAIN_MODEL` for the main path and :data:`SMALL_MODEL` for the routed small path). A
    model has ``model`` (its price-table name), ``answer(messages, question) -> str``,
    ``call(messages, counter, tools) -> (input tokens, cached tokens, latency ms)`` for the call
    just answered, optionally ``call_batch`` (see :class:`SimulatedModel`) and
    ``is_correct(answer, gold) -> bool``; ``langchain_tokenlean.bench_model`` wraps any
    LangChain chat model this way. ``progress(variant, done, total)`` is called after each wave.
    ``variants`` runs a subset (in the order of :data:`VARIANTS`).

    Raises:
        ConfigurationError: an unknown variant name.
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ConfigurationError(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")
    factory = model_factory or (
        lambda name: SimulatedModel(model=name, multi_hop=name != SMALL_MODEL)
    )
    count = get_token_counter()
    prices = PriceTable.default()
    total = workload.questions
    results: dict[str, Any] = {}
    for variant in (v for v in VARIANTS if v in variants):
        run = _Run(
            variant,
            workload,
            embedder=embedder,
            budget=budget,
            factory=factory,
            count=count,
            prices=prices,
        )
        done = 0

        def advance(n: int, variant: str = variant) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(variant, done, total)

        results[variant] = _run_async(run.run(advance))
    return {"questions": total, "variants": results}


def _run_async(coroutine: Any) -> Any:
    """``asyncio.run``, also from inside a running event loop (a notebook): in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
