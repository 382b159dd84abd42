"""Metrics: the collector's figures, prices, redaction, OpenTelemetry and Prometheus export."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

import tokenlean as tl


def test_headline_metrics_add_up() -> None:
    """Cache hit rate per layer, tokens per task, latency by prompt size, cost per acceptance."""
    collector = tl.MetricsCollector()
    with collector.task("t1") as task:
        collector.record_request("gpt-4o-mini", input_tokens=1000, output_tokens=100,
                                 latency_s=0.2, task=task)  # fmt: skip
        collector.record_request("gpt-4o-mini", input_tokens=5000, output_tokens=200,
                                 latency_s=0.9, task=task)  # fmt: skip
        collector.accept(task)
    with collector.task("t2") as task:
        collector.record_request("gpt-4o-mini", input_tokens=500, output_tokens=50,
                                 latency_s=0.1, task=task, cache_hit="exact")  # fmt: skip
    collector.record_cache("exact", True)
    collector.record_cache("exact", False)
    collector.record_cache("semantic", False)
    snap = collector.snapshot()
    headline = snap["headline"]
    assert headline["cache_hit_rate"]["exact"] == {"hits": 1, "lookups": 2, "hit_rate": 0.5}
    assert headline["effective_tokens_per_task"] == (1100 + 5200) / 2
    expected_cost = (6000 * 0.15 + 300 * 0.60) / 1e6
    assert headline["cost_per_accepted_outcome_usd"] == pytest.approx(expected_cost)
    assert set(headline["latency_by_prompt_size"]) == {"<1k", "1k-4k", "4k-16k"}
    assert snap["totals"]["input_tokens"] == 6000  # the cache hit spent nothing


def test_costs_come_from_the_dated_table_or_a_file(tmp_path: Path) -> None:
    """Cached tokens cost the cached price; a file overrides; unknown models are unpriced."""
    table = tl.PriceTable.default()
    cost = table.cost("gpt-4o", input_tokens=1_000_000, output_tokens=0, cached_tokens=500_000)
    assert cost.usd == pytest.approx(0.5 * 2.50 + 0.5 * 1.25)
    assert table.cost("llama-3", input_tokens=10, output_tokens=10).priced is False
    path = tmp_path / "prices.json"
    path.write_text('{"gpt-4o": {"input": 1.0, "output": 2.0}}', encoding="utf-8")
    custom = tl.PriceTable.from_file(path)
    assert custom.cost("gpt-4o", input_tokens=1_000_000, output_tokens=0).usd == 1.0
    assert custom.cost("claude-sonnet-4-5", input_tokens=1_000_000, output_tokens=0).usd == 3.0
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": {"output": 1}}', encoding="utf-8")
    with pytest.raises(tl.ConfigurationError):
        tl.PriceTable.from_file(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to ada.lovelace@example.com", "write to [email]"),
        ("card 4111-1111-1111-1111 please", "card [card] please"),
        ("not a card 1234 5678 9012 3456", "not a card [phone]"),
        ("key sk-proj-abcdefghijklmnopqrstuvwx", "key [api_key]"),
        ("Authorization: Bearer abcdefghijklmnop.qrstuvwxyz", "Authorization: [bearer]"),
        ("call +44 20 7946 0958 now", "call [phone] now"),
    ],
)
def test_redaction(text: str, expected: str) -> None:
    """Secrets and personal data are replaced with typed placeholders."""
    assert tl.Redactor().redact(text) == expected


def test_tenant_labels_are_hashed() -> None:
    """A tenant never appears in clear in a record."""
    record = tl.MetricsCollector().record_request("gpt-4o", input_tokens=1, output_tokens=1,
                                                  latency_s=0.1, tenant="acme-corp")  # fmt: skip
    assert record.tenant == tl.hash_label("acme-corp")
    assert "acme" not in str(record)


def test_recording_is_safe_under_threads_and_asyncio() -> None:
    """Concurrent recording from threads and tasks loses nothing."""
    collector = tl.MetricsCollector()

    def work() -> None:
        for _ in range(500):
            collector.record_request(
                "gpt-4o-mini", input_tokens=10, output_tokens=1, latency_s=0.01
            )

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()

    async def tasks() -> None:
        async def one() -> None:
            collector.record_request(
                "gpt-4o-mini", input_tokens=10, output_tokens=1, latency_s=0.01
            )

        await asyncio.gather(*(one() for _ in range(200)))

    asyncio.run(tasks())
    for thread in threads:
        thread.join()
    assert collector.snapshot()["totals"]["requests"] == 2200


def test_opentelemetry_export_follows_the_gen_ai_conventions() -> None:
    """With the SDK's in-memory reader, gen_ai.client.token.usage and duration are exported."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    collector = tl.MetricsCollector(sinks=[tl.OpenTelemetryExporter(provider.get_meter("test"))])
    collector.record_request("gpt-4o-mini", input_tokens=120, output_tokens=30, latency_s=0.5,
                             cached_tokens=100, tenant="acme")  # fmt: skip
    collector.record_cache("semantic", True)
    data = reader.get_metrics_data()
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    expected = {
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "tokenlean.cache.lookups",
        "tokenlean.cost",
        "tokenlean.tokens.cached_input",
    }
    assert expected <= set(metrics)
    usage = {
        p.attributes["gen_ai.token.type"]: p.sum
        for p in metrics["gen_ai.client.token.usage"].data.data_points
    }
    assert usage == {"input": 120, "output": 30}
    point = metrics["gen_ai.client.token.usage"].data.data_points[0]
    assert point.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert point.attributes["gen_ai.provider.name"] == "openai"
    assert point.attributes["tokenlean.tenant"] == tl.hash_label("acme")


def test_prometheus_scrape() -> None:
    """The exposition text carries the tokens, requests, costs and cache lookups."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    collector = tl.MetricsCollector(sinks=[tl.PrometheusExporter(registry)])
    collector.record_request("gpt-4o", input_tokens=1000, output_tokens=10, latency_s=0.3)
    collector.record_cache("exact", False)
    text = generate_latest(registry).decode()
    assert 'tokenlean_tokens_total{model="gpt-4o",type="input"} 1000.0' in text
    assert 'tokenlean_requests_total{cache="none",model="gpt-4o"} 1.0' in text
    assert 'tokenlean_cache_lookups_total{hit="false",layer="exact"} 1.0' in text
    assert "tokenlean_operation_duration_seconds_bucket" in text


def test_components_feed_the_collector() -> None:
    """Caches, retrieval, memory, batching and routing report into one collector."""
    from tokenlean.testing import HashingEmbedder

    collector = tl.MetricsCollector()
    cache = tl.CompletionCache(collector=collector)
    request = tl.CacheRequest.from_openai(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    cache.lookup(request)
    cache.store(request, "A")
    cache.lookup(request)
    index = tl.HybridIndex(embedder=HashingEmbedder(32))
    index.add([{"id": "d", "text": "Refunds take five days. Shipping takes two."}])
    retriever = tl.BudgetedRetriever(index, cache=tl.RetrievalCache(collector=collector),
                                     collector=collector)  # fmt: skip
    retriever.retrieve("refunds", budget=50)
    memory = tl.ConversationMemory(embedder=HashingEmbedder(32), summarize_after=20,
                                   keep_recent=2, collector=collector)  # fmt: skip
    memory.add("s", [{"role": "user", "content": f"Message {i} about the Lyon warehouse order {i}. "
                      "It was late. We called twice. Nobody answered the phone at all."}
                     for i in range(12)])  # fmt: skip
    router = tl.Router(small=lambda q: "?", large=lambda q: "!", verifier=lambda q, a: 0.0,
                       collector=collector)  # fmt: skip
    router.run("hello")

    async def batch() -> None:
        async def run(key: tl.BatchKey, payloads: Any) -> list[Any]:
            return list(payloads)

        batcher = tl.MicroBatcher(run, collector=collector)
        await asyncio.gather(*(batcher.submit(i, model="x") for i in range(4)))
        await batcher.aclose()

    asyncio.run(batch())
    snap = collector.snapshot()
    assert snap["headline"]["cache_hit_rate"]["exact"] == {"hits": 1, "lookups": 2, "hit_rate": 0.5}
    assert snap["headline"]["cache_hit_rate"]["retrieval"]["lookups"] == 1
    secondary = snap["secondary"]
    assert secondary["retrieval_payload_tokens_mean"] > 0
    assert secondary["summary_compression_ratio"] > 1
    assert secondary["batch_fill_rate"] == 4 / 32
    assert secondary["escalation_rate"] == 1.0


def test_a_semantic_cache_counts_every_layer_a_lookup_reaches() -> None:
    """Under a semantic policy a lookup first misses the exact layer: the exact layer's rate is
    over every lookup (not 100% from counting hits only), the semantic one over those that got
    past it."""
    from tokenlean.testing import HashingEmbedder

    collector = tl.MetricsCollector()
    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(threshold=0.7, compare=tl.last_user_turn),
        embedder=HashingEmbedder(64),
        collector=collector,
    )

    def ask(text: str) -> tl.CacheRequest:
        return tl.CacheRequest(model="m", messages=({"role": "user", "content": text},))

    assert not cache.lookup(ask("How do I reset my password?")).hit
    cache.store(ask("How do I reset my password?"), "Use the link.")
    assert cache.lookup(ask("How do I reset my password?")).layer == "exact"
    assert not cache.lookup(ask("Where is the Lyon warehouse?")).hit
    rates = collector.snapshot()["headline"]["cache_hit_rate"]
    assert rates["exact"] == {"hits": 1, "lookups": 3, "hit_rate": 0.3333}
    assert rates["semantic"]["lookups"] == 2
    assert rates["semantic"]["hits"] == 0


def test_a_task_is_accepted_once_during_or_after_it() -> None:
    """Accepting a task twice counts it once; a finished task can still be accepted; an
    unknown one changes nothing."""
    collector = tl.MetricsCollector()
    for name in ("a", "b", "c"):
        with collector.task(name):
            collector.record_request("gpt-4o-mini", input_tokens=100, output_tokens=10,
                                     latency_s=0.1, task=name)  # fmt: skip
            if name == "a":
                collector.accept(name)
                collector.accept(name)
    collector.accept("b")  # after it finished
    collector.accept("b")
    collector.accept("unknown")
    totals = collector.snapshot()["totals"]
    assert (totals["tasks_done"], totals["tasks_accepted"]) == (3, 2)
