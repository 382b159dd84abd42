"""The end-to-end benchmark: the same workload through four ways of building the prompt.

1. ``baseline``: everything, every time: the policy (with a timestamp), all documents, the full
   session history and the question.
2. ``cached``: the same content, as a canonical prompt plan (the timestamp moved after the static
   prefix, so the provider's prefix cache hits) and an exact completion cache.
3. ``summarized_retrieved``: the policy, the documents retrieved for the question within a
   budget, and the session through :class:`ConversationMemory` (summary, retrieved and recent
   turns) within a budget.
4. ``all_levers``: 3, with prefix caching, a semantic cache on the product-fact route (a
   personal-data route is never cached), and routing to a small model with escalation.

The model is :class:`SimulatedModel`: it answers from the context it is given (the last
statement of the asked fact found in the context), so missing context fails the task, and it has
a documented latency and price model with a provider prefix-cache discount. The figures are the
simulator's, not a real model's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from tokenlean._cache.completion import CompletionCache
from tokenlean._cache.policy import CachePolicy
from tokenlean._cache.request import CacheRequest
from tokenlean._canonical import fingerprint
from tokenlean._harness.workload import Question, Workload
from tokenlean._memory.memory import ConversationMemory
from tokenlean._messages import count_message_tokens
from tokenlean._metrics.collector import _bucket
from tokenlean._metrics.prices import PriceTable
from tokenlean._plan import PromptPlan
from tokenlean._retrieval.index import HybridIndex
from tokenlean._retrieval.retriever import BudgetedRetriever
from tokenlean._tokens import get_token_counter

__all__ = ["SimulatedModel", "run_harness"]

_NUMBER = re.compile(r"(\d+)")


@dataclass
class SimulatedModel:
    """Answers from the context; documented latency and price.

    One call takes ``overhead_ms + prefill_ms_per_token x uncached input tokens +
    cached_prefill_ms_per_token x cached input tokens + decode_ms_per_token x output tokens``.
    The provider caches prefixes at message boundaries: the longest run of leading messages seen
    before, if at least ``min_cached_tokens`` long, is read from cache at the price table's
    cached-read price. The answer is the value of the asked fact in the *last* sentence
    of the context that states it, or "I don't know".
    """

    model: str = "gpt-4o-mini"
    overhead_ms: float = 250.0
    prefill_ms_per_token: float = 0.04
    cached_prefill_ms_per_token: float = 0.004
    decode_ms_per_token: float = 12.0
    min_cached_tokens: int = 1024
    _seen: set[str] = field(default_factory=set)

    def answer(self, messages: list[dict[str, Any]], question: Question) -> str:
        text = "\n".join(str(m.get("content") or "") for m in messages[:-1])
        if question.fact == "delivery city":
            found = re.findall(r"deliver my orders to ([A-Z][a-z]+)", text)
            return found[-1] if found else "I don't know"
        product, attribute = question.fact.rsplit(" ", 1)
        keyword = {"warranty": "warranty", "battery": "battery", "return": "Returns"}[attribute]
        sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
        hits = [
            s
            for s in sentences
            if product in s and keyword in s and _NUMBER.search(s) and not s.rstrip().endswith("?")
        ]
        numbers = _NUMBER.findall(hits[-1]) if hits else []
        return numbers[0] if numbers else "I don't know"

    def call(self, messages: list[dict[str, Any]], count: Any) -> tuple[int, int, float]:
        """(input tokens, cached input tokens, latency ms) of one call.

        The provider's prefix cache works at message boundaries: the longest run of leading
        messages identical to a run seen before, if it reaches ``min_cached_tokens``, is read
        from cache.
        """
        tokens = count_message_tokens(messages, counter=count).total
        cached = 0
        running = 0
        key = self.model
        for message in messages[:-1]:
            key = fingerprint(key, str(message.get("role")), str(message.get("content") or ""))
            running += count(str(message.get("content") or "")) + 4
            if key in self._seen and running >= self.min_cached_tokens:
                cached = running
            self._seen.add(key)
        latency = (
            self.overhead_ms
            + self.prefill_ms_per_token * (tokens - cached)
            + self.cached_prefill_ms_per_token * cached
            + self.decode_ms_per_token * 10
        )
        return tokens, cached, latency


@dataclass
class _Tally:
    successes: int = 0
    tasks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cache_hits: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    by_size: dict[str, list[float]] = field(default_factory=dict)

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def result(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else 0.0

        return {
            "tasks": self.tasks,
            "success_rate": round(self.successes / self.tasks, 4),
            "input_tokens_per_task": round(self.input_tokens / self.tasks, 1),
            "output_tokens_per_task": round(self.output_tokens / self.tasks, 1),
            "cost_per_success": round(self.cost / self.successes, 7) if self.successes else None,
            "latency_ms_p50": pct(0.5),
            "latency_ms_p95": pct(0.95),
            "latency_ms_p99": pct(0.99),
            "cache_hit_rate": round(self.cache_hits / self.tasks, 4),
            "latency_by_prompt_size": {
                bucket: {
                    "p50_ms": round(sorted(v)[len(v) // 2], 1),
                    "p95_ms": round(sorted(v)[min(len(v) - 1, int(0.95 * len(v)))], 1),
                    "calls": len(v),
                }
                for bucket, v in sorted(self.by_size.items())
            },
            "failures": dict(sorted(self.failures.items())),
        }


def run_harness(
    workload: Workload,
    *,
    embedder: Any,
    budget: int = 2600,
    model_factory: Any = None,
) -> dict[str, Any]:
    """Run the four variants over ``workload`` and return their figures.

    ``model_factory(name) -> model`` replaces the simulated model (``name`` is
    ``"gpt-4o-mini"`` for the main path and ``"gpt-4.1-nano"`` for the routed small path). A
    model has ``model`` (its price-table name), ``answer(messages, question) -> str``,
    ``call(messages, counter) -> (input tokens, cached tokens, latency ms)`` for the call just
    answered, and optionally ``is_correct(answer, gold) -> bool``;
    ``langchain_tokenlean.bench_model`` wraps any LangChain chat model this way.
    """
    factory = model_factory or (lambda name: SimulatedModel(model=name))
    count = get_token_counter()
    prices = PriceTable.default()
    documents = "\n".join(d["text"] for d in workload.documents)
    index = HybridIndex(embedder=embedder)
    index.add(workload.documents)
    retriever = BudgetedRetriever(index, counter=count)
    start = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
    tallies: dict[str, _Tally] = {}
    for variant in ("baseline", "cached", "summarized_retrieved", "all_levers"):
        tally = tallies[variant] = _Tally()
        model, small = factory("gpt-4o-mini"), factory("gpt-4.1-nano")
        exact = CompletionCache(policy=CachePolicy.exact())
        semantic = CompletionCache(
            embedder=embedder,
            routes={
                "facts": CachePolicy.semantic(context_messages=0),
                "personal": CachePolicy.off(),
            },
        )
        memory = ConversationMemory(
            embedder=embedder, counter=count, summarize_after=300, keep_recent=4
        )
        clock = 0
        for session in workload.sessions:
            history: list[dict[str, Any]] = []
            for statement in session.statements:
                history.append({"role": "user", "content": statement})
                history.append({"role": "assistant", "content": "Noted, thank you."})
            if variant in ("summarized_retrieved", "all_levers"):
                # earlier sessions of the same user carry over in memory
                memory.add(session.user, history)
            for question in session.questions:
                clock += 1
                now = (start + timedelta(minutes=clock)).isoformat()
                system = f"{workload.policy}\nCurrent time: {now}"
                if variant in ("baseline", "cached"):
                    plan = PromptPlan(
                        counter=count, volatile="keep" if variant == "baseline" else "move"
                    )
                    plan = plan.with_policy(system).with_policy(
                        f"Documentation:\n{documents}", name="docs"
                    )
                    plan = plan.with_history(history).with_user(question.text)
                    messages = plan.render().messages
                else:
                    packed = retriever.retrieve(question.text, budget=300)
                    docs = f"Documentation:\n{packed.text}"
                    if variant == "summarized_retrieved":
                        pack = memory.context(
                            session.user,
                            budget=budget,
                            user=question.text,
                            system=f"{workload.policy}\nCurrent time: {now}\n\n{docs}",
                        )
                        messages = pack.messages
                    else:
                        # Static to volatile: the policy alone first (a cacheable prefix), then
                        # the retrieved documentation, the time, and the memory's context.
                        head = [
                            {"role": "system", "content": workload.policy},
                            {"role": "system", "content": docs},
                            {"role": "system", "content": f"Current time: {now}"},
                        ]
                        room = budget - count_message_tokens(head, counter=count).total
                        pack = memory.context(
                            session.user, budget=room, user=question.text, system=""
                        )
                        messages = [*head, *pack.messages]
                request = CacheRequest(
                    model="sim",
                    messages=tuple(messages[-1:])
                    if variant == "all_levers"
                    else tuple(
                        m for m in messages if not str(m["content"]).startswith("Current time")
                    ),
                )
                route = "personal" if question.fact == "delivery city" else "facts"
                answer = None
                from_cache = False
                if variant == "cached":
                    hit = exact.lookup(request)
                    answer = hit.value if hit.hit else None
                elif variant == "all_levers":
                    hit = semantic.lookup(request, route=route)
                    answer = hit.value if hit.hit else None
                tally.tasks += 1
                if answer is not None:
                    from_cache = True
                    tally.cache_hits += 1
                    tally.latencies.append(5.0)
                else:
                    target = small if variant == "all_levers" and question.easy else model
                    answer = target.answer(messages, question)
                    tokens, cached, latency = target.call(messages, count)
                    if target is small and answer == "I don't know":  # escalate
                        cost_small = prices.cost(
                            small.model, input_tokens=tokens, output_tokens=10, cached_tokens=cached
                        ).usd
                        tally.cost += cost_small
                        tally.input_tokens += tokens
                        target = model
                        answer = model.answer(messages, question)
                        tokens, cached, more = model.call(messages, count)
                        latency += more
                    tally.input_tokens += tokens
                    tally.output_tokens += 10
                    tally.cost += prices.cost(
                        target.model, input_tokens=tokens, output_tokens=10, cached_tokens=cached
                    ).usd
                    tally.latencies.append(latency)
                    bucket = _bucket(tokens)
                    tally.by_size.setdefault(bucket, []).append(latency)
                    if variant == "cached":
                        exact.store(request, answer)
                    elif variant == "all_levers" and answer != "I don't know":
                        semantic.store(request, answer, route=route)
                judge = getattr(model, "is_correct", None)
                correct = judge(answer, question.answer) if judge else answer == question.answer
                if correct:
                    tally.successes += 1
                elif from_cache:
                    tally.fail("wrong_cache_hit")
                elif answer == "I don't know":
                    tally.fail("missing_context")
                elif question.fact == "delivery city":
                    tally.fail("stale_fact")
                else:
                    tally.fail("wrong_answer")
                history.append({"role": "user", "content": question.text})
                history.append({"role": "assistant", "content": str(answer)})
                if variant in ("summarized_retrieved", "all_levers"):
                    memory.add(session.user, history[-2:])
    return {
        "questions": workload.questions,
        "variants": {k: t.result() for k, t in tallies.items()},
    }
