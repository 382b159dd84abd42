"""What the error-bounded semantic layer learns from, and where it keeps it.

:class:`Learning` holds, for one :class:`~tokenlean.CompletionCache`: each route's
:class:`~tokenlean.AcceptanceState` (loaded from the store on first use, saved back every 32
rows and on flush), the candidates awaiting the judge's verdict (a miss or an exploration whose
fresh answer :meth:`~tokenlean.CompletionCache.store` will bring), the served hits awaiting
feedback, and the judge's worker thread. No text is kept: a row is seven pair features and a
verdict.

Learning fails open like the caches: evidence that cannot be saved (a store fault) stays in
memory and is saved with a later write; a judgement whose candidate cannot be read adds no
evidence. Both are counted and logged by the cache's :class:`FaultReporter`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tokenlean._cache.acceptance import AcceptanceSnapshot, AcceptanceState
from tokenlean._cache.judge import AnswerJudge
from tokenlean._cache.policy import CachePolicy
from tokenlean._cache.request import hash_key
from tokenlean._cache.stats import StatsRecorder
from tokenlean._cache.store import CacheStore, StoredEntry
from tokenlean._cache.store_faults import FaultReporter
from tokenlean._errors import StoreError

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsRecorder

__all__ = ["Learning", "Pending", "acceptance_address"]

logger = logging.getLogger("tokenlean.cache")

PENDING_LIMIT = 4096
"""Candidates (and served hits) remembered at most; the oldest are forgotten first."""
SAVE_EVERY = 32
"""New evidence rows that trigger a save of the route's state to the store."""


@dataclass(frozen=True)
class Pending:
    """A candidate awaiting the judge's verdict (or a served hit awaiting feedback)."""

    route: str
    namespace: str
    key: str
    features: npt.NDArray[np.float32]


def acceptance_address(secret: bytes, route: str | None, version: str) -> tuple[str, str]:
    """Where a store with ``secret`` keeps the acceptance state of ``route`` (None: the default
    policy) at policy ``version``: its (namespace, key)."""
    return (
        hash_key(secret, "acceptance-ns"),
        hash_key(secret, "acceptance", route or "", version),
    )


class Learning:
    """Per-route evidence, the judgements in flight, and their persistence. Thread-safe.

    Args:
        store: where the evidence is saved (the cache's own store, layer ``acceptance``).
        secret: gives the store's secret, for the evidence's keys (read when first needed:
            it may raise the store's error).
        put: writes an entry to the store (the cache's write path, which keeps its indexes in
            step with evictions).
        judge: gives the judge on first use.
        stats: counts judgements and feedback.
        collector: receives each route's acceptance snapshot.
        background: judge in a worker thread (True) or inline.
        clock: time source for saved entries.
        seed: seed of the exploration draws.
        faults: counts and logs the store faults learning goes on without.
    """

    def __init__(
        self,
        *,
        store: CacheStore,
        secret: Callable[[], bytes],
        put: Callable[[StoredEntry], None],
        judge: Callable[[], AnswerJudge],
        stats: StatsRecorder,
        collector: MetricsRecorder | None,
        background: bool,
        clock: Callable[[], float],
        seed: int | None,
        faults: FaultReporter,
    ) -> None:
        self._faults = faults
        self._store, self._secret, self._put = store, secret, put
        self._judge, self._stats, self._collector = judge, stats, collector
        self.background, self._clock, self._seed = background, clock, seed
        self._states: dict[str, AcceptanceState] = {}
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._served: OrderedDict[str, Pending] = OrderedDict()
        self._lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None
        self._queued: set[Future[None]] = set()

    # ------------------------------------------------------------------ states

    def state(self, route: str | None, policy: CachePolicy) -> AcceptanceState:
        """The route's acceptance state, loaded from the store on first use.

        Raises:
            StoreError: the saved state could not be read (nothing is remembered: the next
                call tries again, so a later save never overwrites evidence it did not load).
        """
        label = route or ""
        with self._lock:
            state = self._states.get(label)
            if state is not None:
                return state
            assert policy.max_error_rate is not None
            state = AcceptanceState(
                max_error_rate=policy.max_error_rate,
                confidence=policy.confidence,
                monitor_rate=policy.monitor_rate,
                window=policy.evidence_window,
                seed=self._seed,
            )
            saved = self._store.get(*self._address(route, policy))
            if saved is not None:
                state.load_bytes(saved.payload)
            self._states[label] = state
            return state

    def _address(self, route: str | None, policy: CachePolicy) -> tuple[str, str]:
        return acceptance_address(self._secret(), route, policy.version)

    def routes(self) -> list[str | None]:
        """The routes with a state in this process."""
        with self._lock:
            return [label or None for label in self._states]

    def snapshots(self) -> dict[str, AcceptanceSnapshot]:
        """Every route's snapshot, by route label (``""`` for the default policy)."""
        with self._lock:
            states = list(self._states.items())
        return {label: state.snapshot() for label, state in states}

    def add(
        self, route: str | None, policy: CachePolicy, row: Pending | npt.NDArray[np.float32],
        verdict: bool, *, entry: str | None = None, force: bool = False,
    ) -> None:  # fmt: skip
        """One row of evidence for ``route``, then :meth:`persist`."""
        features = row.features if isinstance(row, Pending) else row
        self.state(route, policy).add(features, verdict, entry=entry)
        self.persist(route, policy, force=force)

    def persist(
        self, route: str | None, policy: CachePolicy, force: bool = False, strict: bool = False
    ) -> None:
        """Report the route's state to the collector and keep its evidence in the store (every
        :data:`SAVE_EVERY` rows, or now with ``force``). A store fault leaves the evidence
        unsaved, to be saved by a later call; it is counted and logged, or raised with
        ``strict``.

        Raises:
            StoreError: with ``strict``, the store failed.
        """
        state = self.state(route, policy)
        if self._collector is not None:
            snapshot = state.snapshot().as_dict() | {"max_error_rate": policy.max_error_rate}
            self._collector.record_cache_acceptance(route or "", snapshot)
        if state.unsaved == 0 or (not force and state.unsaved < SAVE_EVERY):
            return
        namespace, key = self._address(route, policy)
        unsaved = state.unsaved
        try:
            self._put(
                StoredEntry(
                    namespace, key, state.to_bytes(), created_at=self._clock(), layer="acceptance"
                )
            )
        except StoreError as exc:
            state.unsaved += unsaved  # still to save
            if strict:
                raise
            self._faults.report("semantic", "the route's evidence stays unsaved for now", exc)

    # ------------------------------------------------------------------ in flight

    def expect(self, key: str, pending: Pending) -> None:
        """Remember a candidate: the answer stored under ``key`` will be judged against it."""
        self._remember(self._pending, key, pending)

    def served(self, token: str, pending: Pending) -> None:
        """Remember a served hit, for :meth:`take_served` when feedback comes."""
        self._remember(self._served, token, pending)

    def take_served(self, token: str) -> Pending | None:
        with self._lock:
            return self._served.pop(token, None)

    def _remember(self, table: OrderedDict[str, Pending], key: str, item: Pending) -> None:
        with self._lock:
            table[key] = item
            table.move_to_end(key)
            while len(table) > PENDING_LIMIT:
                table.popitem(last=False)

    # ------------------------------------------------------------------ judging

    def judge_answer(self, key: str, value: Any, route: str | None, policy: CachePolicy) -> None:
        """Judge the fresh ``value`` against the candidate expected under ``key``, if any (in the
        worker thread when background)."""
        with self._lock:
            pending = self._pending.pop(key, None)
        if pending is None:
            return
        if not self.background:
            self._judge_now(pending, value, route, policy)
            return
        with self._lock:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="tokenlean-judge")
            future = self._worker.submit(self._judge_now, pending, value, route, policy)
            self._queued.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._queued.discard(future)

    def _judge_now(
        self, pending: Pending, value: Any, route: str | None, policy: CachePolicy
    ) -> None:
        try:
            candidate = self._store.get(pending.namespace, pending.key)
            if candidate is None:
                return
            verdict = self._judge()(json.loads(candidate.payload), value)
            if verdict is None:
                return
            self._stats.count(judged=1)
            self.add(route, policy, pending, verdict, entry=pending.key)
        except StoreError as exc:
            self._faults.report("semantic", "this judgement adds no evidence", exc)
        except Exception:  # learning must never fail a model call
            logger.exception("tokenlean: a semantic-cache judgement failed; no evidence added")

    def wait(self) -> None:
        """Wait for the judgements queued so far."""
        with self._lock:
            queued = list(self._queued)
        if queued:
            wait_for(queued)

    def flush(self, policies: Iterable[tuple[str | None, CachePolicy]]) -> None:
        """Wait for queued judgements, then save every given route's evidence now."""
        self.wait()
        for route, policy in policies:
            self.persist(route, policy, force=True)

    def close(self) -> None:
        """Stop the worker (after its queued judgements)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
