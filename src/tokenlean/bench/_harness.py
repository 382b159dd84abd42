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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from tokenlean._batching.scheduler import BatchKey, LatencyClass, MicroBatcher
from tokenlean._cache.compare import last_user_turn
from tokenlean._cache.completion import CompletionCache
from tokenlean._cache.policy import CachePolicy, VerifierConfig
from tokenlean._cache.request import CacheRequest
from tokenlean._cache.retrieval_cache import RetrievalCache
from tokenlean._errors import ConfigurationError
from tokenlean._memory.conversation import ConversationMemory
from tokenlean._metrics.collector import prompt_bucket
from tokenlean._metrics.prices import PriceTable
from tokenlean._prompt.plan import PromptPlan
from tokenlean._retrieval.hybrid_index import HybridIndex
from tokenlean._retrieval.retriever import BudgetedRetriever
from tokenlean._routing.router import Router
from tokenlean._tokens.counting import get_token_counter
from tokenlean._tokens.messages import count_message_tokens
from tokenlean.bench._levers import EXTRACTORS, Customer, EscalationGate
from tokenlean.bench._model import (
    MAIN_MODEL,
    SMALL_MODEL,
    UNSURE,
    BatchBenchModel,
    BenchModel,
    BenchReply,
    SimulatedModel,
    as_bench_model,
)
from tokenlean.bench._tally import Tally
from tokenlean.bench._variants import VARIANTS, Variant, variant_named
from tokenlean.bench._workload import Question, Session, Workload

__all__ = ["run_harness"]

_PERSONAL = re.compile(r"\b(my|I bought)\b")


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
    calls: list[tuple[str, BenchReply]] = field(default_factory=list)


class _Run:
    """One variant's run over the workload."""

    def __init__(
        self,
        variant: Variant,
        workload: Workload,
        *,
        embedder: Any,
        budget: int,
        factory: Callable[[str], BenchModel],
        count: Callable[[str], int],
        prices: PriceTable,
    ) -> None:
        self.variant, self.workload, self.budget = variant, workload, budget
        self.count, self.prices = count, prices
        self.levers = variant.memory
        self.tally = Tally()
        self.model, self.small = factory(MAIN_MODEL), factory(SMALL_MODEL)
        self.documents = {d["id"]: d for d in workload.documents}
        self.index = HybridIndex(embedder=embedder)
        self.index.add(workload.documents)
        self.retrieval_cache = RetrievalCache() if variant.retrieval_cache else None
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
            slots=Customer,
            extractors=EXTRACTORS,
        )
        self.histories: dict[str, list[dict[str, Any]]] = {}
        self.batcher: MicroBatcher | None = None
        self.router: Router | None = None
        self.gate = EscalationGate(embedder)
        self.start = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)

    # ------------------------------------------------------------------ prompts

    def _prompt(self, job: _Job, now: str) -> None:
        session, question = job.session, job.question
        tools = self.workload.tools
        if not self.levers:
            documents = "\n".join(d["text"] for d in self.documents.values())
            plan = PromptPlan(counter=self.count, volatile=self.variant.volatile)
            plan = plan.with_policy(f"{self.workload.policy}\nCurrent time: {now}")
            plan = plan.with_tools(tools)
            plan = plan.with_policy(f"Documentation:\n{documents}", name="docs")
            plan = plan.with_history(self.histories[session.user]).with_user(question.text)
            rendered = plan.render()
            job.messages = rendered.messages
            if self.variant.cache == "exact":
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
        if not self.variant.static_first:
            # The memory pack's own layout: the policy is its static system prompt (the first
            # part of its system message, byte-identical from call to call, so the provider
            # caches it); the time and the retrieved documents follow in a message of their own.
            volatile = {"role": "system", "content": f"Current time: {now}\n\n{docs}"}
            room = self.budget - count_message_tokens([volatile], counter=self.count).total
            pack = self.memory.context(
                session.user, budget=room, user=question.text, system=self.workload.policy
            )
            job.messages = [pack.messages[0], volatile, *pack.messages[1:]]
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
        if self.variant.cache == "semantic":
            # The customer's own data (first-person references) is never served from a shared
            # cache.
            job.route = "personal" if _PERSONAL.search(question.text) else "facts"
            job.request = CacheRequest(model=MAIN_MODEL, messages=tuple(job.messages[-1:]))

    # ------------------------------------------------------------------ model calls

    def _models(self) -> dict[str, BenchModel]:
        return {self.model.model: self.model, self.small.model: self.small}

    def _call_one(self, target: BenchModel, job: _Job) -> str:
        reply = target.call(
            job.messages, job.question, counter=self.count, tools=self.workload.tools
        )
        job.calls.append((target.model, reply))
        return reply.text

    async def _execute(self, key: BatchKey, jobs: Sequence[_Job]) -> list[str]:
        target = self._models()[key.model]
        began = time.perf_counter()
        if not isinstance(target, BatchBenchModel):  # one call after another
            return await asyncio.to_thread(lambda: [self._call_one(target, j) for j in jobs])
        replies = target.call_batch(
            [(j.messages, j.question) for j in jobs], counter=self.count, tools=self.workload.tools
        )
        for job, reply in zip(jobs, replies, strict=True):
            waited = (began - job.submitted) * 1000
            job.calls.append((target.model, replace(reply, latency_ms=reply.latency_ms + waited)))
        return [reply.text for reply in replies]

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
        if self.variant.route_and_batch:
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
            if self.variant.route_and_batch:
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
        if self.variant.cache == "exact":
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
            for model, reply in job.calls:
                tally.model_calls += 1
                tally.input_tokens += reply.input_tokens
                tally.cached_input_tokens += reply.cached_tokens
                tally.output_tokens += reply.output_tokens
                tally.cost += self.prices.cost(
                    model,
                    input_tokens=reply.input_tokens,
                    output_tokens=reply.output_tokens,
                    cached_tokens=reply.cached_tokens,
                ).usd
            latency = sum(reply.latency_ms for _, reply in job.calls)
            tally.latencies.append(latency)
            last = job.calls[-1][1].input_tokens
            tally.by_size.setdefault(prompt_bucket(last), []).append(latency)
            if job.request is not None and self.variant.cache == "exact":
                self.exact.store(job.request, answer)
            elif job.request is not None and answer != UNSURE:
                self.semantic.store(job.request, answer, route=job.route, tags=job.sources)
        if self.model.is_correct(answer, question.answer):
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
    model_factory: Callable[[str], BenchModel] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    variants: Sequence[str | Variant] = VARIANTS,
) -> dict[str, Any]:
    """Run the variants over ``workload`` and return their figures, by variant name.

    ``model_factory(name)`` replaces the simulated model: ``name`` is :data:`MAIN_MODEL` for the
    main path and :data:`SMALL_MODEL` for the routed small path, and it returns a
    :class:`BenchModel` (a :class:`BatchBenchModel` gets whole batches);
    ``langchain_tokenlean.bench_model`` wraps any LangChain chat model this way.
    ``progress(variant, done, total)`` is called after each wave. ``variants`` are standard
    variant names (run in the order of :data:`VARIANTS`) or :class:`Variant` objects (run in
    the order given).

    Raises:
        ConfigurationError: an unknown variant name, two variants with one name, or a factory
            that returns something other than a :class:`BenchModel`.
    """
    chosen: list[Variant] = []
    names = [v for v in variants if isinstance(v, str)]
    unknown = [n for n in names if variant_named(n) is None]
    if unknown:
        known = [v.name for v in VARIANTS]
        raise ConfigurationError(f"unknown variants {sorted(unknown)}; known: {known}")
    chosen = [v for v in VARIANTS if v.name in names]
    chosen += [v for v in variants if isinstance(v, Variant)]
    if len({v.name for v in chosen}) < len(chosen):
        raise ConfigurationError(f"two variants share a name: {[v.name for v in chosen]}")

    def factory(name: str) -> BenchModel:
        if model_factory is None:
            return SimulatedModel(model=name, multi_hop=name != SMALL_MODEL)
        return as_bench_model(model_factory(name))

    count = get_token_counter()
    prices = PriceTable.default()
    total = workload.questions
    results: dict[str, Any] = {}
    for variant in chosen:
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

        def advance(n: int, name: str = variant.name) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(name, done, total)

        results[variant.name] = _run_async(run.run(advance))
    return {"questions": total, "variants": results}


def _run_async(coroutine: Any) -> Any:
    """``asyncio.run``, also from inside a running event loop (a notebook): in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
