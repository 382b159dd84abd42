"""The micro-batching scheduler, batch-API files, and model routing."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import tokenlean as tl
from tokenlean.testing import HashingEmbedder


class Recorder:
    """An executor that records its batches, optionally failing some payloads."""

    def __init__(self, delay: float = 0.0, fail_on: Any = None, explode_on: Any = None) -> None:
        self.batches: list[tuple[tl.BatchKey, list[Any]]] = []
        self.delay, self.fail_on, self.explode_on = delay, fail_on, explode_on

    async def __call__(self, key: tl.BatchKey, payloads: Sequence[Any]) -> list[Any]:
        self.batches.append((key, list(payloads)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.explode_on is not None and self.explode_on in payloads:
            raise RuntimeError("the whole batch call failed")
        return [ValueError(f"bad {p}") if p == self.fail_on else f"done {p}" for p in payloads]


FAST = {"interactive": tl.LatencyClass(max_wait_s=0.01, max_items=4, max_tokens=100),
        "offline": tl.LatencyClass(max_wait_s=0.2, max_items=100, max_tokens=10_000)}  # fmt: skip


def test_partitions_never_mix_and_each_request_gets_its_own_result() -> None:
    """Different models, settings and classes go to different batches."""
    recorder = Recorder()

    async def main() -> list[Any]:
        batcher = tl.MicroBatcher(recorder, classes=FAST)
        jobs = [batcher.submit(f"a{i}", model="m1") for i in range(3)]
        jobs += [batcher.submit(f"b{i}", model="m2") for i in range(3)]
        jobs += [
            batcher.submit(f"c{i}", model="m1", settings={"temperature": 0.7}) for i in range(2)
        ]
        jobs += [batcher.submit("d0", model="m1", latency_class="offline")]
        results = await asyncio.gather(*jobs)
        await batcher.aclose()
        return results

    results = asyncio.run(main())
    assert results[0] == "done a0"
    assert results[-1] == "done d0"
    for key, payloads in recorder.batches:
        assert len({p[0] for p in payloads}) == 1, (key, payloads)


def test_each_flush_trigger() -> None:
    """max_items flushes at once; max_tokens is a ceiling: a request that would take a batch
    past it flushes the batch and starts the next; max_wait flushes otherwise."""
    recorder = Recorder()

    async def main() -> dict[str, int]:
        batcher = tl.MicroBatcher(recorder, classes=FAST)
        await asyncio.gather(*(batcher.submit(i, model="items") for i in range(4)))
        await asyncio.gather(*(batcher.submit(i, model="tokens", tokens=40) for i in range(3)))
        await batcher.submit(0, model="wait")
        await batcher.aclose()
        return dict(batcher.metrics.flush_reasons)

    # tokens: 40 + 40 go at max_tokens (a third 40 would pass 100); the third waits alone
    assert asyncio.run(main()) == {"max_items": 1, "max_tokens": 1, "max_wait": 2}
    sizes = [len(payloads) for key, payloads in recorder.batches if key.model == "tokens"]
    assert sizes == [2, 1]


def test_one_bad_request_never_fails_its_batch_mates() -> None:
    """A per-item error fails only that request; a whole-batch failure is retried one by one."""

    async def main() -> tuple[list[Any], list[Any]]:
        batcher = tl.MicroBatcher(Recorder(fail_on="x"), classes=FAST)
        first = await asyncio.gather(*(batcher.submit(p, model="m") for p in ("a", "x", "b")),
                                     return_exceptions=True)  # fmt: skip
        exploding = tl.MicroBatcher(Recorder(explode_on="boom"), classes=FAST)
        second = await asyncio.gather(*(exploding.submit(p, model="m") for p in ("a", "boom", "b")),
                                      return_exceptions=True)  # fmt: skip
        return first, second

    first, second = asyncio.run(main())
    assert first[0] == "done a"
    assert first[2] == "done b"
    assert isinstance(first[1], ValueError)
    assert second[0] == "done a"
    assert second[2] == "done b"
    assert isinstance(second[1], RuntimeError)


def test_an_executor_that_breaks_its_contract_is_named_to_every_caller() -> None:
    """Too few results, or no list at all, is a BatchError saying what the executor must
    return, for each request (not a bare IndexError or TypeError)."""

    async def short(key: Any, payloads: Sequence[str]) -> list[str]:
        return [p.upper() for p in payloads][:-1]

    async def nothing(key: Any, payloads: Sequence[str]) -> None:
        return None

    async def main(executor: Any) -> list[Any]:
        batcher = tl.MicroBatcher(executor, classes=FAST)
        out = await asyncio.gather(*(batcher.submit(p, model="m") for p in "abcd"),
                                   return_exceptions=True)  # fmt: skip
        await batcher.aclose()
        return out

    for executor, message in ((short, "returned 0 results for 1 request "),
                              (nothing, "returned NoneType, not a list")):  # fmt: skip
        results = asyncio.run(main(executor))
        assert len(results) == 4
        for result in results:
            assert isinstance(result, tl.BatchError)
            assert message in str(result)


def test_closing_without_draining_returns_while_an_executor_hangs() -> None:
    """aclose(drain=False) cancels the batches in the executor: it returns at once and their
    requests fail with BatchClosedError."""
    started = asyncio.Event()

    async def hangs(key: Any, payloads: Sequence[str]) -> list[str]:
        started.set()
        await asyncio.Event().wait()
        return list(payloads)

    async def main() -> tuple[Any, float]:
        batcher = tl.MicroBatcher(hangs, classes=FAST)
        request = asyncio.ensure_future(batcher.submit("a", model="m"))
        await asyncio.wait_for(started.wait(), 5)
        loop = asyncio.get_running_loop()
        begin = loop.time()
        await asyncio.wait_for(batcher.aclose(drain=False), 5)
        elapsed = loop.time() - begin
        outcome = (await asyncio.gather(request, return_exceptions=True))[0]
        return outcome, elapsed

    outcome, elapsed = asyncio.run(main())
    assert isinstance(outcome, tl.BatchClosedError)
    assert elapsed < 1.0


def test_backpressure_rejects_or_waits() -> None:
    """With a full queue, 'reject' raises at once and 'wait' waits for room."""
    slow = Recorder(delay=0.05)

    async def main() -> tuple[int, list[Any]]:
        rejecting = tl.MicroBatcher(slow, classes=FAST, max_queue=2, overflow="reject")
        jobs = [asyncio.ensure_future(rejecting.submit(i, model="m")) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(tl.BatchQueueFullError):
            await rejecting.submit(99, model="m")
        await asyncio.gather(*jobs)
        waiting = tl.MicroBatcher(slow, classes=FAST, max_queue=2, overflow="wait")
        results = await asyncio.gather(*(waiting.submit(i, model="m") for i in range(6)))
        return len(jobs), results

    count, results = asyncio.run(main())
    assert count == 2
    assert results == [f"done {i}" for i in range(6)]


def test_a_cancelled_request_leaves_its_batch() -> None:
    """Cancelling a waiting request removes it; its batch-mates still run."""
    recorder = Recorder()

    async def main() -> str:
        batcher = tl.MicroBatcher(recorder, classes=FAST)
        doomed = asyncio.ensure_future(batcher.submit("doomed", model="m", latency_class="offline"))
        kept = asyncio.ensure_future(batcher.submit("kept", model="m", latency_class="offline"))
        await asyncio.sleep(0.01)
        doomed.cancel()
        result = await kept
        await batcher.aclose()
        return result

    assert asyncio.run(main()) == "done kept"
    assert recorder.batches == [(recorder.batches[0][0], ["kept"])]


def test_shutdown_drains_or_fails_pending_work_explicitly() -> None:
    """aclose(drain=True) runs queued requests; drain=False fails them; new work is refused."""

    async def main() -> tuple[Any, Any]:
        draining = tl.MicroBatcher(Recorder(), classes=FAST)
        job = asyncio.ensure_future(draining.submit("a", model="m", latency_class="offline"))
        await asyncio.sleep(0)
        await draining.aclose(drain=True)
        failing = tl.MicroBatcher(Recorder(), classes=FAST)
        lost = asyncio.ensure_future(failing.submit("b", model="m", latency_class="offline"))
        await asyncio.sleep(0)
        await failing.aclose(drain=False)
        with pytest.raises(tl.BatchClosedError):
            await failing.submit("c", model="m")
        return await job, await asyncio.gather(lost, return_exceptions=True)

    drained, lost = asyncio.run(main())
    assert drained == "done a"
    assert isinstance(lost[0], tl.BatchClosedError)


def test_the_sync_front_is_thread_safe() -> None:
    """Many threads submitting through SyncMicroBatcher get their own results, batched."""
    recorder = Recorder()
    batcher = tl.SyncMicroBatcher(recorder, classes=FAST)
    results: dict[int, Any] = {}

    def work(i: int) -> None:
        results[i] = batcher.submit(i, model="m")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert results == {i: f"done {i}" for i in range(16)}
    assert batcher.metrics.batches < 16


def test_embedding_batches_make_one_encode_call() -> None:
    """The embedding executor embeds a batch in one call; metrics report the fill rate."""
    calls: list[int] = []

    class Counting(HashingEmbedder):
        def embed(self, texts: Any) -> Any:
            calls.append(len(texts))
            return super().embed(texts)

    async def main() -> Any:
        batcher = tl.MicroBatcher(tl.EmbeddingExecutor(Counting(16)), classes=FAST)
        vectors = await asyncio.gather(*(batcher.submit(f"text {i}", model="e") for i in range(8)))
        await batcher.aclose()
        return vectors, batcher.metrics.snapshot()

    vectors, metrics = asyncio.run(main())
    assert len(vectors) == 8
    assert vectors[0].shape == (16,)
    assert calls == [4, 4]
    assert metrics["item_fill_rate"] == 1.0
    assert metrics["mean_batch_size"] == 4.0


def test_batch_api_files_round_trip(tmp_path: Path) -> None:
    """Requests are written in each provider's format; results (and failures) are read back."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    openai_in = tl.write_openai_batch({"r1": body, "r2": body}, tmp_path / "in.jsonl")
    lines = [json.loads(line) for line in openai_in.read_text().splitlines()]
    assert lines[0] == {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
    }
    out = tmp_path / "out.jsonl"
    ok = {"custom_id": "r1", "response": {"status_code": 200, "body": {"id": "x"}}}
    failed = {"custom_id": "r2", "error": {"message": "bad"}}
    out.write_text(json.dumps(ok) + "\n" + json.dumps(failed) + "\n")
    results = tl.read_openai_batch_results(out)
    assert results["r1"] == {"id": "x"}
    assert isinstance(results["r2"], tl.InvalidInputError)
    anthropic_in = tl.write_anthropic_batch({"a": {"model": "claude-sonnet-4-5", "max_tokens": 10}},
                                            tmp_path / "a.json")  # fmt: skip
    assert json.loads(anthropic_in.read_text())["requests"][0]["custom_id"] == "a"
    res = tmp_path / "a.jsonl"
    done = {"custom_id": "a", "result": {"type": "succeeded", "message": {"id": "m"}}}
    expired = {"custom_id": "b", "result": {"type": "expired"}}
    res.write_text(json.dumps(done) + "\n" + json.dumps(expired) + "\n")
    parsed = tl.read_anthropic_batch_results(res)
    assert parsed["a"] == {"id": "m"}
    assert isinstance(parsed["b"], tl.InvalidInputError)
    with pytest.raises(tl.InvalidInputError):
        tl.write_openai_batch({"": body}, tmp_path / "x.jsonl")


def test_rules_route_depth_tools_risk_and_length_to_the_large_path() -> None:
    """Each rule sends its requests to the large path, with the reason."""
    gate = tl.RuleGate(max_small_tokens=20, large_keywords=["contract"])
    assert gate.decide("hi there") is None
    assert gate.decide("please explain step by step").path == "large"  # type: ignore[union-attr]
    assert gate.decide("review the contract").reason == "keyword 'contract'"  # type: ignore[union-attr]
    assert gate.decide("hi", tools=True).reason == "requires tools"  # type: ignore[union-attr]
    assert gate.decide("hi", risk=True).reason == "risk flag"  # type: ignore[union-attr]
    assert gate.decide("word " * 50).path == "large"  # type: ignore[union-attr]


def test_the_learned_gate_trains_saves_and_loads(tmp_path: Path) -> None:
    """A kNN gate over embeddings learns which requests need the large model."""
    easy = [f"what are your opening hours on day {i}" for i in range(10)]
    hard = [
        f"analyse the legal liability clause number {i} in our supplier agreement"
        for i in range(10)
    ]
    gate = tl.LearnedGate(HashingEmbedder(64), k=5).train(easy + hard, [False] * 10 + [True] * 10)
    assert gate.decide("opening hours on sunday").path == "small"
    assert gate.decide("legal liability clause in the agreement").path == "large"
    gate.save(tmp_path / "gate.npz")
    loaded = tl.LearnedGate.load(tmp_path / "gate.npz", HashingEmbedder(64))
    assert loaded.decide("legal liability of the supplier").path == "large"
    texts = ["opening hours on sunday", "legal liability clause in the agreement"]
    batched = loaded.probabilities_large(texts)  # one embedding call, the same figures
    assert batched == pytest.approx([loaded.probability_large(t) for t in texts])
    assert loaded.probabilities_large([]) == []
    with pytest.raises(tl.ConfigurationError):
        tl.LearnedGate.load(tmp_path / "missing.npz")


def test_the_router_escalates_unsure_small_answers_and_counts_costs() -> None:
    """A low-confidence small answer is replaced by the large path's; metrics add up."""
    router = tl.Router(
        small=lambda q: "unsure" if "hard" in q else "small answer",
        large=lambda q: "large answer",
        gates=[tl.RuleGate(large_keywords=["contract"])],
        verifier=lambda q, a: 0.1 if a == "unsure" else 0.9,
        cost={"small": 1.0, "large": 10.0},
    )
    assert router.run("easy question") == "small answer"
    assert router.run("hard question") == "large answer"
    assert router.run("the contract") == "large answer"
    assert router.run("anything", risk=True) == "large answer"
    for _ in range(4):
        router.record_outcome(True)
    metrics = router.metrics.snapshot()
    assert metrics["escalation_rate"] == 0.25
    assert metrics["share_small"] == 0.25
    assert metrics["cost_per_request"] == (1 + 11 + 10 + 10) / 4
    assert metrics["cost_per_success"] == 8.0
    assert asyncio.run(router.arun("easy question")) == "small answer"


def test_review_regressions_in_the_scheduler_and_router() -> None:
    """A failing counter frees its slot; an aborted batch fails its requests; close is final;
    a risk flag wins over every gate."""

    def bad_counter(payload: Any) -> int:
        raise ValueError("cannot count")

    async def cancelling(key: tl.BatchKey, payloads: Sequence[Any]) -> list[Any]:
        raise asyncio.CancelledError

    async def main() -> tuple[Any, Any]:
        batcher = tl.MicroBatcher(Recorder(), classes=FAST, counter=bad_counter, max_queue=1,
                                  overflow="reject")  # fmt: skip
        for _ in range(3):
            with pytest.raises(ValueError, match="cannot count"):
                await batcher.submit("x", model="m")
        ok = await batcher.submit("x", model="m", tokens=1)
        aborted = tl.MicroBatcher(cancelling, classes=FAST)
        result = await asyncio.gather(aborted.submit("y", model="m"), return_exceptions=True)
        return ok, result

    ok, result = asyncio.run(main())
    assert ok == "done x"
    assert isinstance(result[0], tl.BatchClosedError | asyncio.CancelledError)
    sync = tl.SyncMicroBatcher(Recorder(), classes=FAST)
    sync.close()
    sync.close()
    with pytest.raises(tl.BatchClosedError):
        sync.submit("late", model="m")
    gate = tl.LearnedGate(HashingEmbedder(16)).train(["easy"], [False])
    router = tl.Router(small=lambda q: "small", large=lambda q: "large", gates=[gate])
    assert router.run("easy", risk=True) == "large"


def test_a_failing_small_path_or_verifier_escalates() -> None:
    """The small path raising, or the verifier raising, sends the request to the large path
    (counted in small_errors); the large path's own error reaches the caller."""

    def broken(request: Any) -> Any:
        raise TimeoutError("small model timed out")

    def doubtful(request: Any, answer: Any) -> float:
        raise ValueError("verifier down")

    router = tl.Router(small=broken, large=lambda r: f"large: {r}")
    assert router.run("q") == "large: q"
    assert asyncio.run(router.arun("q")) == "large: q"
    verified = tl.Router(small=lambda r: "small", large=lambda r: "large", verifier=doubtful)
    assert verified.run("q") == "large"
    figures = router.metrics.snapshot()
    assert (figures["small_errors"], figures["escalation_rate"]) == (2, 1.0)
    assert verified.metrics.snapshot()["small_errors"] == 1
    with pytest.raises(TimeoutError):
        tl.Router(small=broken, large=broken).run("q")
