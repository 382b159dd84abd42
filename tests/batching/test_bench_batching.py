"""The batching and routing benchmarks run and report their documented keys."""

from __future__ import annotations

from tokenlean.bench._batching import batching_bench, routing_bench
from tokenlean.testing import HashingEmbedder


def test_batching_benchmark_keys_and_a_real_gain() -> None:
    """The JSON has the documented keys; batching a fake embedder still wins on calls."""
    result = batching_bench(callers=8, per_caller=2, rates=(50,), seconds=0.3,
                            embedder=HashingEmbedder(32))  # fmt: skip
    embedding = result["embedding"]
    assert {"throughput_ratio", "callers", "batched", "unbatched"} <= set(embedding)
    for side in ("batched", "unbatched"):
        assert {"items_per_s", "latency_ms_p50", "latency_ms_p95"} <= set(embedding[side])
    rate = result["simulated_api"]["rates"][0]
    assert rate["batched"]["api_calls"] <= rate["unbatched"]["api_calls"]
    assert {"throughput_ratio", "batched", "unbatched", "batch_fill_rate"} <= set(rate)


def test_routing_benchmark_compares_three_strategies() -> None:
    """Routed, always-small and always-large are reported with accuracy and costs."""
    result = routing_bench(n=120, embedder=HashingEmbedder(64))
    for name in ("always_small", "always_large", "routed"):
        assert {"accuracy", "cost_per_request", "cost_per_success"} <= set(result[name])
    assert result["always_small"]["cost_per_request"] == 1.0
    assert result["always_large"]["cost_per_request"] == 15.0
    assert 1.0 <= result["routed"]["cost_per_request"] <= 16.0
