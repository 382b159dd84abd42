"""Batch executors: embeddings, any async callable, and a simulated chat API for benchmarks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tokenlean._batching.scheduler import BatchKey
from tokenlean._embeddings import Embedder, as_embedder

__all__ = ["CallableExecutor", "EmbeddingExecutor", "SimulatedChatAPI"]


class EmbeddingExecutor:
    """Embeds a whole batch of texts in one call of the embedder (off the event loop).

    Example:
        >>> from tokenlean import BatchKey
        >>> from tokenlean.testing import HashingEmbedder
        >>> executor = EmbeddingExecutor(HashingEmbedder(dimension=8))
        >>> key = BatchKey(model="embedder", settings="", latency_class="offline")
        >>> vectors = asyncio.run(executor(key, ["refund my order", "track my parcel"]))
        >>> len(vectors), vectors[0].shape
        (2, (8,))
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = as_embedder(embedder)

    async def __call__(self, key: BatchKey, payloads: Sequence[Any]) -> list[Any]:
        vectors = await asyncio.to_thread(self.embedder.embed, [str(p) for p in payloads])
        return list(vectors)


class CallableExecutor:
    """Wraps ``async fn(payloads) -> results`` (e.g. a LangChain model's ``abatch`` with
    ``return_exceptions=True``, or a LlamaIndex LLM) as a batch executor.

    Example:
        >>> from tokenlean import MicroBatcher
        >>> batches = []
        >>> async def shout(prompts):  # stands in for a model's batch call
        ...     batches.append(len(prompts))
        ...     return [p.upper() for p in prompts]
        >>> async def main():
        ...     batcher = MicroBatcher(CallableExecutor(shout))
        ...     answers = await asyncio.gather(*(batcher.submit(p, model="m")
        ...                                      for p in ["hi", "hello", "hey"]))
        ...     await batcher.aclose()
        ...     return answers
        >>> asyncio.run(main()), batches  # three requests, one call
        (['HI', 'HELLO', 'HEY'], [3])
    """

    def __init__(self, fn: Callable[[list[Any]], Awaitable[Sequence[Any]]]) -> None:
        self.fn = fn

    async def __call__(self, key: BatchKey, payloads: Sequence[Any]) -> list[Any]:
        return list(await self.fn(list(payloads)))


@dataclass
class SimulatedChatAPI:
    """A chat API that only sleeps, with a documented latency model (for benchmarks and tests).

    One call, for one prompt or a batch, takes ``overhead_ms + ms_per_token x (largest prompt
    tokens + output_tokens)``: the provider runs a batch's items in parallel, so a call costs its
    fixed overhead once and its longest item's time. At most ``max_concurrency`` calls run at
    once (a rate limit); further calls wait. The answer to a prompt is ``"answer: <prompt>"``.

    Example:
        >>> api = SimulatedChatAPI(overhead_ms=1.0, output_tokens=0)
        >>> asyncio.run(api.complete(["What is 2 + 2?", "Name a colour."]))
        ['answer: What is 2 + 2?', 'answer: Name a colour.']
        >>> api.calls  # the batch cost one call
        1
    """

    overhead_ms: float = 60.0
    ms_per_token: float = 0.2
    output_tokens: int = 50
    max_concurrency: int = 4
    calls: int = 0

    def __post_init__(self) -> None:
        self._slots: asyncio.Semaphore | None = None

    async def complete(self, prompts: Sequence[str]) -> list[str]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        longest = max((len(p) // 4 for p in prompts), default=0)
        async with self._slots:
            self.calls += 1
            await asyncio.sleep(
                (self.overhead_ms + self.ms_per_token * (longest + self.output_tokens)) / 1000
            )
        return [f"answer: {p}" for p in prompts]

    async def __call__(self, key: BatchKey, payloads: Sequence[Any]) -> list[Any]:
        return list(await self.complete([str(p) for p in payloads]))
