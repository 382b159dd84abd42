"""The micro-batching scheduler: spend a little latency on purpose to get throughput.

Requests are partitioned by compatibility (model, decoding settings, latency class, prompt shape,
and anything a user key function adds); a batch never mixes partitions. Each partition flushes on
whichever comes first: ``max_items``, ``max_tokens`` or ``max_wait``. Every request has its own
future; an error in one request never fails its batch-mates; a cancelled request leaves its
batch; the queue is bounded (wait or reject); shutdown drains or fails pending work explicitly.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import Field

from tokenlean._canonical import canonical_json
from tokenlean._config import FrozenModel
from tokenlean._errors import BatchClosedError, BatchError, BatchQueueFullError, ConfigurationError
from tokenlean._stats import rank_percentile

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsRecorder

__all__ = [
    "BatchExecutor",
    "BatchKey",
    "BatchMetrics",
    "LatencyClass",
    "MicroBatcher",
    "SyncMicroBatcher",
]


class LatencyClass(FrozenModel):
    """Flush limits of one latency class."""

    max_wait_s: float = Field(gt=0, description="Longest a request waits for batch-mates.")
    max_items: int = Field(default=32, ge=1)
    max_tokens: int = Field(default=8192, ge=1)


DEFAULT_CLASSES: dict[str, LatencyClass] = {
    "interactive": LatencyClass(max_wait_s=0.005, max_items=32, max_tokens=8192),
    "offline": LatencyClass(max_wait_s=2.0, max_items=256, max_tokens=131072),
}


@dataclass(frozen=True)
class BatchKey:
    """What makes requests compatible: the same key, the same batch."""

    model: str
    settings: str
    latency_class: str
    shape: Hashable = None
    extra: Hashable = None


class BatchExecutor(Protocol):
    """Runs one batch: one result per payload, in order. A result may be an exception
    instance, which fails only that request."""

    def __call__(self, key: BatchKey, payloads: Sequence[Any]) -> Awaitable[Sequence[Any]]: ...


@dataclass
class _Pending:
    payload: Any
    tokens: int
    future: asyncio.Future[Any]
    enqueued: float


@dataclass
class _Partition:
    items: list[_Pending] = field(default_factory=list)
    tokens: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass
class BatchMetrics:
    """Running figures of a scheduler."""

    batches: int = 0
    items: int = 0
    failed_items: int = 0
    # Fill rates of the most recent 10,000 batches (bounded: a long-running service must not grow).
    item_fill: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    token_fill: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    queue_delay_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    flush_reasons: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.perf_counter)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready figures: batch sizes and fill rates, queueing delay, flush reasons."""
        delays = sorted(self.queue_delay_ms)
        elapsed = max(time.perf_counter() - self.started, 1e-9)

        def pct(q: float) -> float:
            return round(rank_percentile(delays, q), 3) if delays else 0.0

        return {
            "batches": self.batches,
            "items": self.items,
            "failed_items": self.failed_items,
            "mean_batch_size": round(self.items / self.batches, 2) if self.batches else 0.0,
            "item_fill_rate": round(statistics.fmean(self.item_fill), 3) if self.item_fill else 0.0,
            "token_fill_rate": round(statistics.fmean(self.token_fill), 3)
            if self.token_fill
            else 0.0,
            "queue_delay_ms_p50": pct(0.5),
            "queue_delay_ms_p95": pct(0.95),
            "flush_reasons": dict(self.flush_reasons),
            "items_per_s": round(self.items / elapsed, 1),
        }


class MicroBatcher:
    """Groups compatible requests into batches for one executor (asyncio).

    Args:
        executor: runs a batch (see :class:`BatchExecutor`).
        classes: latency classes by name (default: ``interactive`` 5 ms / 32 items,
            ``offline`` 2 s / 256 items).
        counter: counts a payload's tokens for the ``max_tokens`` limit (default: ``str`` length
            / 4 for strings, else 1; pass a real token counter for text payloads).
        max_queue: most requests waiting across partitions.
        overflow: ``"wait"`` (backpressure: ``submit`` waits for room) or ``"reject"``
            (raise :class:`BatchQueueFullError`).
        key_fn: refines the partition key from the payload (e.g. a prompt-shape bucket).

    Example:
        >>> async def double(key, payloads):
        ...     return [2 * p for p in payloads]
        >>> async def main():
        ...     batcher = MicroBatcher(double)
        ...     results = await asyncio.gather(*(batcher.submit(i, model="m") for i in range(5)))
        ...     await batcher.aclose()
        ...     return results, batcher.metrics.batches
        >>> asyncio.run(main())
        ([0, 2, 4, 6, 8], 1)
    """

    def __init__(
        self,
        executor: Callable[[BatchKey, Sequence[Any]], Awaitable[Sequence[Any]]],
        *,
        classes: Mapping[str, LatencyClass] | None = None,
        counter: Callable[[Any], int] | None = None,
        max_queue: int = 10_000,
        overflow: Literal["wait", "reject"] = "wait",
        key_fn: Callable[[Any], Hashable] | None = None,
        collector: MetricsRecorder | None = None,
    ) -> None:
        self.collector = collector
        if overflow not in ("wait", "reject"):
            raise ConfigurationError(f"overflow must be 'wait' or 'reject', not {overflow!r}")
        if max_queue < 1:
            raise ConfigurationError("max_queue must be >= 1")
        self.executor = executor
        self.classes = dict(classes or DEFAULT_CLASSES)
        self.counter = counter or (lambda p: max(1, len(p) // 4) if isinstance(p, str) else 1)
        self.max_queue = max_queue
        self.overflow = overflow
        self.key_fn = key_fn
        self.metrics = BatchMetrics()
        self._partitions: dict[BatchKey, _Partition] = {}
        self._queued = 0
        self._room: asyncio.Condition | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    def _condition(self) -> asyncio.Condition:
        if self._room is None:
            self._room = asyncio.Condition()
        return self._room

    async def submit(
        self,
        payload: Any,
        *,
        model: str,
        settings: Mapping[str, Any] | None = None,
        latency_class: str = "interactive",
        shape: Hashable = None,
        tokens: int | None = None,
    ) -> Any:
        """Queue one request and wait for its result (or its own exception).

        Raises:
            ConfigurationError: unknown latency class.
            BatchQueueFullError: the queue is full and overflow is ``"reject"``.
            BatchClosedError: the scheduler is shut down.
        """
        if self._closed:
            raise BatchClosedError("the batcher is closed")
        limits = self.classes.get(latency_class)
        if limits is None:
            raise ConfigurationError(f"unknown latency class {latency_class!r}")
        key = BatchKey(model, canonical_json(dict(settings)) if settings else "{}", latency_class,
                       shape,
                       self.key_fn(payload) if self.key_fn else None)  # fmt: skip
        tokens = tokens if tokens is not None else self.counter(payload)  # before taking a slot
        room = self._condition()
        async with room:
            if self._queued >= self.max_queue:
                if self.overflow == "reject":
                    raise BatchQueueFullError(f"{self._queued} requests already queued")
                await room.wait_for(lambda: self._queued < self.max_queue or self._closed)
                if self._closed:
                    raise BatchClosedError("the batcher closed while waiting for room")
            self._queued += 1
        loop = asyncio.get_running_loop()
        pending = _Pending(payload, tokens, loop.create_future(), time.perf_counter())  # fmt: skip
        waiting = self._partitions.get(key)
        if waiting is not None and waiting.items and waiting.tokens + tokens > limits.max_tokens:
            self._flush(key, "max_tokens")  # max_tokens is a ceiling: this one starts the next
        partition = self._partitions.setdefault(key, _Partition())
        partition.items.append(pending)
        partition.tokens += pending.tokens
        if len(partition.items) >= limits.max_items:
            self._flush(key, "max_items")
        elif partition.tokens >= limits.max_tokens:
            self._flush(key, "max_tokens")
        elif partition.timer is None:
            partition.timer = loop.call_later(limits.max_wait_s, self._flush, key, "max_wait")
        try:
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            if not pending.future.done():  # still queued: leave the batch
                pending.future.cancel()
                current = self._partitions.get(key)
                if current is not None and pending in current.items:
                    current.items.remove(pending)
                    current.tokens -= pending.tokens
                    await self._release(1)
            raise

    async def _release(self, count: int) -> None:
        room = self._condition()
        async with room:
            self._queued -= count
            room.notify_all()

    def _flush(self, key: BatchKey, reason: str) -> None:
        partition = self._partitions.pop(key, None)
        if partition is None:
            return
        if partition.timer is not None:
            partition.timer.cancel()
        items = [p for p in partition.items if not p.future.done()]
        if not items:
            return
        limits = self.classes[key.latency_class]
        self.metrics.flush_reasons[reason] += 1
        fill = len(items) / limits.max_items
        self.metrics.item_fill.append(fill)
        if self.collector is not None:
            self.collector.record_batch(fill)
        self.metrics.token_fill.append(min(1.0, partition.tokens / limits.max_tokens))
        task = asyncio.ensure_future(self._run(key, items))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, key: BatchKey, items: list[_Pending]) -> None:
        start = time.perf_counter()
        for item in items:
            self.metrics.queue_delay_ms.append((start - item.enqueued) * 1000)
        try:
            try:
                results = _results(await self.executor(key, [i.payload for i in items]), items)
            except Exception:
                # The whole batch failed: run each request alone, so one bad request cannot
                # fail its batch-mates.
                results = []
                for item in items:
                    results.append(await self._alone(key, item.payload))
            self.metrics.batches += 1
            self.metrics.items += len(items)
            for item, result in zip(items, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    self.metrics.failed_items += 1
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
        finally:
            # Whatever happened (even a cancellation), no request of this batch is left waiting.
            for item in items:
                if not item.future.done():
                    item.future.set_exception(BatchClosedError("the batch was aborted"))
            await self._release(len(items))

    async def _alone(self, key: BatchKey, payload: Any) -> Any:
        try:
            return _results(await self.executor(key, [payload]), [payload])[0]
        except Exception as exc:
            return exc

    async def flush(self) -> None:
        """Send every partition now, and wait for the running batches."""
        for key in list(self._partitions):
            self._flush(key, "flush")
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def aclose(self, *, drain: bool = True) -> None:
        """Shut down: run (``drain=True``) or fail with :class:`BatchClosedError` every queued
        request; new submissions are refused. Without draining, the batches already in the
        executor are cancelled too (their requests fail the same way), so it returns at once
        even while an executor hangs."""
        self._closed = True
        if drain:
            await self.flush()
        else:
            for key, partition in list(self._partitions.items()):
                self._partitions.pop(key)
                if partition.timer is not None:
                    partition.timer.cancel()
                for item in partition.items:
                    if not item.future.done():
                        item.future.set_exception(BatchClosedError("shut down before it ran"))
                await self._release(len(partition.items))
            for task in list(self._running):
                task.cancel()
            while self._running:
                await asyncio.gather(*list(self._running), return_exceptions=True)
        room = self._condition()
        async with room:
            room.notify_all()


class SyncMicroBatcher:
    """A thread-safe, blocking front for :class:`MicroBatcher`: its event loop runs in a
    background thread, and any number of threads may call :meth:`submit`.

    Example:
        >>> async def upper(key, payloads):
        ...     return [p.upper() for p in payloads]
        >>> batcher = SyncMicroBatcher(upper)
        >>> batcher.submit("hi", model="m")
        'HI'
        >>> batcher.close()
    """

    def __init__(self, executor: Callable[[BatchKey, Sequence[Any]], Awaitable[Sequence[Any]]],
                 **options: Any) -> None:  # fmt: skip
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tokenlean-batcher",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        self.batcher: MicroBatcher = self._call(self._make(executor, options))
        self._closed = False

    @staticmethod
    async def _make(executor: Any, options: dict[str, Any]) -> MicroBatcher:
        return MicroBatcher(executor, **options)

    def _call(self, coroutine: Awaitable[Any]) -> Any:
        future: ThreadFuture[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        return future.result()

    def submit(self, payload: Any, **options: Any) -> Any:
        """Queue a request from any thread and block until its result.

        Raises:
            BatchClosedError: the batcher is closed.
        """
        if self._closed:
            raise BatchClosedError("the batcher is closed")
        return self._call(self.batcher.submit(payload, **options))

    @property
    def metrics(self) -> BatchMetrics:
        metrics: BatchMetrics = self.batcher.metrics
        return metrics

    def close(self, *, drain: bool = True) -> None:
        """Shut the scheduler down and stop its thread (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        self._call(self.batcher.aclose(drain=drain))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def _results(returned: Any, sent: Sequence[Any]) -> list[Any]:
    """An executor's results, checked against its contract: one result per payload, in order.

    Raises:
        BatchError: anything else (the caller of each request receives it).
    """
    try:
        results = list(returned)
    except TypeError:
        raise BatchError(
            f"the executor returned {type(returned).__name__}, not a list of one result per "
            f"request ({len(sent)} sent)"
        ) from None
    if len(results) != len(sent):
        raise BatchError(
            f"the executor returned {len(results)} results for {len(sent)} "
            f"request{'s' if len(sent) != 1 else ''} (it must return one result per request, "
            "in order)"
        )
    return results
