"""``tokenlean bench batching`` and ``tokenlean bench routing``.

Batching: (a) ``callers`` concurrent callers embed texts with the real default embedder,
micro-batched (one encode call per batch) versus one call each; (b) a :class:`SimulatedChatAPI`
(documented latency model: a fixed overhead per call plus per-token time, at most 4 calls at
once) under Poisson arrivals at several rates, micro-batched versus one call per request.

Routing: a generated, labelled set of easy and hard support requests; a simulated small model
(right on 95% of easy and 35% of hard requests) and large model (right on 97% of both), a
verifier that flags 80% of the small model's wrong answers (and 5% of its right ones), and a
cost model of 1 unit per small call and 15 per large call. Compared: always small, always
large, and the router (rules, a learned gate trained on a separate generated set, escalation).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tokenlean._batching.executors import EmbeddingExecutor, SimulatedChatAPI
from tokenlean._batching.scheduler import LatencyClass, MicroBatcher
from tokenlean._embeddings import Embedder, default_embedder
from tokenlean._routing.router import LearnedGate, Router, RuleGate
from tokenlean._stats import rank_percentile

__all__ = ["batching_bench", "routing_bench"]


def _latency(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "latency_ms_p50": round(statistics.median(ordered), 2),
        "latency_ms_p95": round(rank_percentile(ordered, 0.95), 2),
    }


async def _callers(
    call: Callable[[str], Awaitable[Any]], callers: int, per_caller: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def caller(index: int) -> None:
        for j in range(per_caller):
            start = time.perf_counter()
            await call(f"caller {index} asks question {j} about refunds, shipping and warranty")
            latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    return time.perf_counter() - start, latencies


async def _embedding(embedder: Embedder, callers: int, per_caller: int) -> dict[str, Any]:
    embedder.embed(["warm up"])
    items = callers * per_caller

    async def one_call(text: str) -> Any:
        return await asyncio.to_thread(embedder.embed, [text])

    unbatched_s, unbatched_lat = await _callers(one_call, callers, per_caller)
    interactive = LatencyClass(max_wait_s=0.005, max_items=32, max_tokens=100_000)
    batcher = MicroBatcher(EmbeddingExecutor(embedder), classes={"interactive": interactive})

    async def batched_call(text: str) -> Any:
        return await batcher.submit(text, model="embedder")

    batched_s, batched_lat = await _callers(batched_call, callers, per_caller)
    await batcher.aclose()
    metrics = batcher.metrics.snapshot()
    batched_rate, unbatched_rate = items / batched_s, items / unbatched_s
    mean_batch_ms = batched_s * 1000 / max(1, metrics["batches"])
    return {
        "callers": callers,
        "items": items,
        "throughput_ratio": round(batched_rate / unbatched_rate, 2),
        "batched": {"items_per_s": round(batched_rate, 1), **_latency(batched_lat)},
        "unbatched": {"items_per_s": round(unbatched_rate, 1), **_latency(unbatched_lat)},
        "batch_fill_rate": metrics["item_fill_rate"],
        "mean_batch_size": metrics["mean_batch_size"],
        "queue_delay_ms_p95": metrics["queue_delay_ms_p95"],
        "max_wait_ms": interactive.max_wait_s * 1000,
        "mean_batch_ms": round(mean_batch_ms, 2),
    }


async def _simulated(rate: float, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    arrivals, clock = [], 0.0
    while clock < seconds:
        clock += rng.expovariate(rate)
        arrivals.append(clock)
    prompts = [
        f"support question {i} " + "detail " * rng.randrange(20, 200) for i in range(len(arrivals))
    ]

    async def run(call: Callable[[str], Awaitable[Any]]) -> tuple[float, list[float]]:
        latencies: list[float] = []
        start = time.perf_counter()

        async def one(at: float, prompt: str) -> None:
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
            t0 = time.perf_counter()
            await call(prompt)
            latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(one(at, p) for at, p in zip(arrivals, prompts, strict=True)))
        return time.perf_counter() - start, latencies

    single = SimulatedChatAPI()

    async def unbatched(prompt: str) -> Any:
        return (await single.complete([prompt]))[0]

    unbatched_s, unbatched_lat = await run(unbatched)
    api = SimulatedChatAPI()
    limits = LatencyClass(max_wait_s=0.02, max_items=16, max_tokens=1_000_000)
    batcher = MicroBatcher(api, classes={"interactive": limits})

    async def batched(prompt: str) -> Any:
        return await batcher.submit(prompt, model="simulated")

    batched_s, batched_lat = await run(batched)
    await batcher.aclose()
    metrics = batcher.metrics.snapshot()
    n = len(arrivals)
    return {
        "arrival_rate_per_s": rate,
        "requests": n,
        "throughput_ratio": round((n / batched_s) / (n / unbatched_s), 2),
        "batched": {
            "items_per_s": round(n / batched_s, 1),
            **_latency(batched_lat),
            "api_calls": api.calls,
        },
        "unbatched": {
            "items_per_s": round(n / unbatched_s, 1),
            **_latency(unbatched_lat),
            "api_calls": single.calls,
        },
        "batch_fill_rate": metrics["item_fill_rate"],
        "mean_batch_size": metrics["mean_batch_size"],
        "queue_delay_ms_p50": metrics["queue_delay_ms_p50"],
        "queue_delay_ms_p95": metrics["queue_delay_ms_p95"],
        "flush_reasons": metrics["flush_reasons"],
    }


def batching_bench(
    *,
    callers: int = 32,
    per_caller: int = 8,
    rates: tuple[float, ...] = (10, 40, 120),
    seconds: float = 2.0,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Run both batching benchmarks and return their figures."""
    embedder = embedder or default_embedder()

    async def main() -> dict[str, Any]:
        embedding = await _embedding(embedder, callers, per_caller)
        simulated = [await _simulated(rate, seconds, seed=i) for i, rate in enumerate(rates)]
        return {
            "embedding": embedding,
            "simulated_api": {
                "model": "one call = 60 ms + 0.2 ms x (longest prompt tokens + 50 output "
                "tokens); at most 4 calls at once",
                "rates": simulated,
            },
        }

    return asyncio.run(main())


# --------------------------------------------------------------------------- routing

_EASY = [
    "What are your opening hours on {d}?",
    "How do I reset my password?",
    "Where can I download my invoice for {m}?",
    "Do you ship to {c}?",
    "How long does delivery to {c} take?",
    "Can I change my email address?",
    "What payment methods do you accept in {c}?",
    "Is there a student discount in {m}?",
]
_HARD = [
    "Our contract with you renews in {m}; compare the liability terms with the {c} law.",
    "Explain step by step why my three refunds from {m} were calculated differently.",
    "Draft a formal complaint about the data breach affecting customers in {c}.",
    "Analyse whether the warranty exclusions apply to water damage reported in {m}.",
    "Reconcile the invoices from {m} with the credit notes issued in {c}.",
    "What are the tax implications of moving our account from {c} to another region?",
]
_FILL = {
    "d": ["Monday", "Sunday", "holidays", "Friday"],
    "m": ["January", "March", "June", "October"],
    "c": ["France", "Norway", "Japan", "Brazil", "Canada"],
}


def _labelled(rng: random.Random, n: int) -> list[tuple[str, bool]]:
    out = []
    for _ in range(n):
        hard = rng.random() < 0.3
        template = rng.choice(_HARD if hard else _EASY)
        out.append((template.format(**{k: rng.choice(v) for k, v in _FILL.items()}), hard))
    return out


def routing_bench(
    *, n: int = 400, seed: int = 7, embedder: Embedder | None = None
) -> dict[str, Any]:
    """Cost and accuracy of routed versus always-large and always-small (module docs)."""
    rng = random.Random(seed)
    train = _labelled(random.Random(seed + 1), 200)
    test = _labelled(rng, n)
    outcome = random.Random(seed + 2)
    # Outcomes are drawn per request (the same text asked twice can be answered differently).
    correct_small = [outcome.random() < (0.35 if hard else 0.95) for _, hard in test]
    correct_large = [outcome.random() < 0.97 for _ in test]
    flags = random.Random(seed + 3)
    unsure = [
        (flags.random() < 0.8) if not correct_small[i] else (flags.random() < 0.05)
        for i in range(len(test))
    ]
    costs = {"small": 1.0, "large": 15.0}

    def summary(answers: list[bool], cost: float, extra: dict[str, Any]) -> dict[str, Any]:
        right = sum(answers)
        return {
            "accuracy": round(right / len(answers), 4),
            "cost_per_request": round(cost / len(answers), 3),
            "cost_per_success": round(cost / right, 3) if right else None,
            **extra,
        }

    gate = LearnedGate(embedder or default_embedder(), k=7).train(
        [t for t, _ in train], [h for _, h in train]
    )
    router = Router(
        small=lambda request: "small",
        large=lambda request: "large",
        gates=[RuleGate(large_keywords=["contract", "data breach", "tax"]), gate],
        verifier=lambda request, answer: 0.0 if unsure[request[0]] else 1.0,
        cost=costs,
        text=lambda request: request[1],
    )
    routed = []
    for i, (text, _) in enumerate(test):
        path = router.run((i, text))
        ok = correct_small[i] if path == "small" else correct_large[i]
        routed.append(ok)
        router.record_outcome(ok)
    metrics = router.metrics.snapshot()
    gate_accuracy = statistics.fmean(
        1.0 if (gate.decide(t).path == "large") == hard else 0.0 for t, hard in test
    )
    return {
        "requests": n,
        "share_hard": round(sum(h for _, h in test) / n, 3),
        "cost_model": costs,
        "always_small": summary(correct_small, costs["small"] * n, {}),
        "always_large": summary(correct_large, costs["large"] * n, {}),
        "routed": summary(
            routed,
            metrics["cost_per_request"] * n,
            {
                "share_small": metrics["share_small"],
                "escalation_rate": metrics["escalation_rate"],
                "gate_accuracy": round(gate_accuracy, 4),
            },
        ),
    }
