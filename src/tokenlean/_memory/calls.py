"""Calls into the memory's collaborators (summarizers, slot extractors) with a deadline.

A summarizer is often a model call, and a model call can hang. :class:`DeadlineCalls` runs each
call in a daemon worker thread and waits at most ``timeout`` seconds for it. A call that misses
its deadline is abandoned: its thread finishes (or hangs) on its own and its result is dropped.
Until it returns, another call with the same key fails at once instead of stacking a second
thread behind the hung one; and once ``max_abandoned`` calls are abandoned and still running,
every call fails at once until one of them returns. Worker threads are reused, so a call that
answers in time costs a thread hand-off, not a new thread; it runs in a copy of the caller's
context variables, so tracing (OpenTelemetry, framework callbacks) sees it where it was made.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, TypeVar, cast

__all__ = ["DeadlineCalls"]

T = TypeVar("T")

_IDLE_WORKERS = 4  # kept for reuse; more are stopped once their call returns


class _Worker:
    """One daemon thread running the calls handed to it, one at a time."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        thread = threading.Thread(target=self._run, name="tokenlean-memory-call", daemon=True)
        thread.start()

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((call, future))
        return future

    def stop(self) -> None:
        """Exit once the current call (if any) returns."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, future = job
            if not future.set_running_or_notify_cancel():  # pragma: no cover - never cancelled
                continue
            try:
                result = call()
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)
            else:
                future.set_result(result)


class DeadlineCalls:
    """Runs calls with a deadline in reused daemon threads. Thread-safe.

    Args:
        timeout: seconds a caller waits for a call (None: calls run in the caller's thread,
            with no deadline).
        max_abandoned: abandoned calls still running past which every call fails at once.

    Example:
        >>> import time
        >>> calls = DeadlineCalls(timeout=0.05)
        >>> calls.run("summary", lambda: "done")
        'done'
        >>> try:
        ...     calls.run("summary", lambda: time.sleep(0.5))
        ... except TimeoutError as exc:
        ...     print(exc)
        no answer within 0.05 s
        >>> try:  # the hung call still runs: the same key fails at once
        ...     calls.run("summary", lambda: "again")
        ... except TimeoutError as exc:
        ...     print(exc)
        the previous call is still running, past its 0.05 s deadline
        >>> calls.run("slots", lambda: 42)  # other keys are not held up
        42
        >>> calls.close()
    """

    def __init__(self, timeout: float | None, *, max_abandoned: int = 8) -> None:
        self.timeout = timeout
        self.max_abandoned = max_abandoned
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._abandoned: dict[Hashable, Future[Any]] = {}

    def run(self, key: Hashable, call: Callable[[], T]) -> T:
        """``call()``, or TimeoutError if it does not return within the deadline (or if an
        earlier call with ``key``, or too many calls, are still running past theirs).
        Whatever ``call`` raises is raised here."""
        if self.timeout is None:
            return call()
        with self._lock:
            self._abandoned = {k: f for k, f in self._abandoned.items() if not f.done()}
            if key in self._abandoned:
                raise TimeoutError(
                    f"the previous call is still running, past its {self.timeout} s deadline"
                )
            if len(self._abandoned) >= self.max_abandoned:
                raise TimeoutError(
                    f"{len(self._abandoned)} earlier calls are still running past their deadline"
                )
            worker = self._idle.pop() if self._idle else _Worker()
        context = contextvars.copy_context()  # the caller's tracing context goes along
        future = worker.submit(lambda: context.run(call))
        try:
            result = future.result(timeout=self.timeout)
        except BaseException as exc:
            if future.done():  # the call itself raised
                self._reuse(worker)
                raise
            # The deadline passed (or the caller was interrupted): abandon the call.
            worker.stop()
            with self._lock:
                self._abandoned[key] = future
            if isinstance(exc, FutureTimeoutError):
                raise TimeoutError(f"no answer within {self.timeout} s") from None
            raise
        self._reuse(worker)
        return cast(T, result)

    def _reuse(self, worker: _Worker) -> None:
        with self._lock:
            if len(self._idle) < _IDLE_WORKERS:
                self._idle.append(worker)
                return
        worker.stop()

    def close(self) -> None:
        """Stop the idle workers (abandoned calls end on their own)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()
