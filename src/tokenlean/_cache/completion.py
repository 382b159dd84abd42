"""The completion cache: exact and semantic layers over one store, governed by policies.

Keys are HMACs under the store's secret of the tenant, the policy version and the canonical
request, so no key, log line or metric carries a prompt, and the same prompt from two tenants
gives unrelated keys. Semantic entries live in hard partitions: a partition is a hash of the
tenant, the policy version, the model with every output-affecting setting, and the fixed part of
the request (everything but the compared text: system messages, earlier turns, template
scaffolding and retrieved context; see :mod:`tokenlean._cache.compare`). A lookup searches one
partition only, so it cannot return another tenant's, model's or conversation's entry.

Under the default, error-bounded semantic policy a candidate is served only inside the route's
acceptance region (:mod:`tokenlean._cache.acceptance`). Every miss whose nearest entry was a
candidate, and every exploration, leaves a *pending* judgement: when :meth:`CompletionCache.store`
receives the fresh answer, the judge compares it with the candidate's cached answer and the
verdict becomes evidence. Evidence is kept in the store and survives a restart.

The cache fails open (:mod:`tokenlean._cache.store_faults`): a store fault during a lookup is a
miss, during a write a dropped write, counted in ``stats().store_errors`` and logged; it never
fails the model call around it. Administrative operations (:meth:`CompletionCache.calibrate`,
:meth:`~CompletionCache.invalidate`, :meth:`~CompletionCache.purge_expired`,
:meth:`~CompletionCache.clear`) raise the :class:`StoreError` instead: their write is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import numbers
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tokenlean._cache.compare import TemplateSplitter, last_user_turn
from tokenlean._cache.judge import AnswerJudge, DefaultAnswerJudge
from tokenlean._cache.learning import Learning, Pending
from tokenlean._cache.lookup import CacheLookup, replay_stream
from tokenlean._cache.options import current_options
from tokenlean._cache.partitions import ChangeFeed, Partitions
from tokenlean._cache.policy import CachePolicy
from tokenlean._cache.request import CacheRequest, hash_key, hash_tenant
from tokenlean._cache.stats import CacheStats, StatsRecorder
from tokenlean._cache.store import CacheStore, Selector, StoredEntry
from tokenlean._cache.store_faults import FaultReporter, GuardedStore
from tokenlean._cache.uri import store_from
from tokenlean._cache.vector_index import VectorIndex
from tokenlean._cache.verifier import (
    extract_features,
    pair_features,
    stored_features,
    verify_candidate,
)
from tokenlean._canonical import canonical_json, canonicalize_text
from tokenlean._embeddings import (
    Embedder,
    as_embedder,
    checked_embed,
    default_embedder,
    model_label,
)
from tokenlean._errors import (
    ConfigurationError,
    CorruptedStoreError,
    EmbeddingError,
    InvalidInputError,
    NotSerializableError,
    StoreBackendError,
    StoreError,
)
from tokenlean._extras import require

__all__ = ["CacheLookup", "CompletionCache", "replay_stream"]  # lookup types re-exported

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsRecorder

logger = logging.getLogger("tokenlean.cache")
Clock = Callable[[], float]


@dataclass
class _Semantic:
    namespace: str
    key: str
    query: str


_TWIN = "tokenlean-twin:"


def _twin_tag(namespace: str, key: str) -> str:
    """The tag of the exact twin of the semantic entry at ``(namespace, key)`` (HMACs: no
    text)."""
    return f"{_TWIN}{namespace}.{key}"


class CompletionCache:
    """Exact and semantic completion caching with per-route policies. Thread-safe.

    Args:
        store: where entries live (default: an unbounded :class:`MemoryStore`); a
            :class:`SQLiteStore` persists them, a :class:`RedisStore` shares them between
            replicas (each keeps its semantic indexes in step through the store's change feed).
            A URI string (``"sqlite:///cache.db"``, ``"redis://host:6379/0?prefix=app:"``)
            opens the store :func:`open_store` names (raising its errors:
            :class:`ConfigurationError` for a bad URI, :class:`StoreError` when the store cannot
            be opened).
        policy: the default policy (default: exact only).
        routes: policies by route name, for :meth:`lookup` and :meth:`store`'s ``route``.
        embedder: embeds queries for the semantic layer (default: the bundled model, loaded
            on first semantic use).
        clock: time source for TTLs (seconds).
        hnsw_threshold: entries per partition past which the vector index becomes HNSW (the
            write that crosses it builds the HNSW index aside; lookups go on meanwhile).
        collector: a :class:`MetricsCollector` that records every lookup's layer and outcome,
            and every store fault the cache went on without.
        judge: compares a candidate's cached answer with the model's fresh one, to learn from
            (default: :class:`DefaultAnswerJudge` on the cache's embedder).
        background_judging: judge in a worker thread, so that :meth:`store` never waits for a
            judge (an LLM judge is a model call); :meth:`stats`, :meth:`acceptance`,
            :meth:`flush` and :meth:`close` wait for the judgements queued before them. False
            judges inside :meth:`store` (deterministic: benchmarks, tests).
        seed: seed of the exploration draws (None: random).

    Example:
        >>> cache = CompletionCache()
        >>> request = CacheRequest.from_openai(
        ...     {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
        >>> cache.lookup(request, tenant="acme").hit
        False
        >>> cache.store(request, {"content": "Hello!"}, tenant="acme")
        True
        >>> cache.lookup(request, tenant="acme").value
        {'content': 'Hello!'}
        >>> cache.lookup(request, tenant="globex").hit
        False
    """

    def __init__(
        self,
        store: CacheStore | str | None = None,
        *,
        policy: CachePolicy | None = None,
        routes: Mapping[str, CachePolicy] | None = None,
        embedder: Embedder | None = None,
        clock: Clock = time.time,
        hnsw_threshold: int = 20_000,
        collector: MetricsRecorder | None = None,
        judge: AnswerJudge | None = None,
        background_judging: bool = True,
        seed: int | None = None,
    ) -> None:
        self.collector = collector
        self._judge = judge
        self._require_extras(policy, routes, embedder)
        self.store_backend: CacheStore = store_from(store)
        self._store = GuardedStore(self.store_backend)  # every failure a typed StoreError
        self.policy = policy or CachePolicy.exact()
        self.routes = dict(routes or {})
        self._embedder = as_embedder(embedder) if embedder is not None else None
        self._identity: str | None = None  # the embedder's, for partition keys
        self.clock = clock
        feed = self.store_backend if isinstance(self.store_backend, ChangeFeed) else None
        self._partitions = Partitions(
            self._store, clock=clock, hnsw_threshold=hnsw_threshold, feed=feed
        )
        self._stats = StatsRecorder()
        self._faults = FaultReporter(self._store.name, self._stats, collector)
        self._embedding_warned: float | None = None  # when an embedder failure was last logged
        self._recent_lock = threading.Lock()  # the embeddings memo
        self._recent: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._learning = Learning(
            store=self._store,
            secret=lambda: self._secret,
            put=self._partitions.put,
            judge=lambda: self.judge,
            stats=self._stats,
            collector=collector,
            background=background_judging,
            clock=clock,
            seed=seed,
            faults=self._faults,
        )

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _require_extras(
        policy: CachePolicy | None,
        routes: Mapping[str, CachePolicy] | None,
        embedder: Embedder | None,
    ) -> None:
        """Name every missing extra a semantic configuration needs now, not after the model has
        answered (FAISS and the learned rule: ``semantic``; the default model: ``embeddings``)."""
        policies = [policy, *(routes or {}).values()]
        if any(p is not None and p.mode == "semantic" for p in policies):
            features = ("semantic",) if embedder is not None else ("semantic", "embeddings")
            require(*features, what="A semantic CompletionCache")

    def policy_for(self, route: str | None) -> CachePolicy:
        """The policy of ``route`` (the default policy when None).

        Raises:
            ConfigurationError: the route has no policy.
        """
        if route is None:
            return self.policy
        try:
            return self.routes[route]
        except KeyError:
            raise ConfigurationError(f"no cache policy for route {route!r}") from None

    def check_target(self, *, tenant: str, route: str | None) -> None:
        """Check a tenant and a route before they are used, so that an adapter refuses them when
        it is built, not at its first model call.

        Raises:
            ConfigurationError: an empty or non-string tenant, or a route with no policy.
        """
        if not isinstance(tenant, str) or not tenant:
            raise ConfigurationError(f"tenant must be a non-empty string, not {tenant!r}")
        self.policy_for(route)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    @property
    def _secret(self) -> bytes:
        """The store's key secret (a Redis store reads it on first use: until its server
        answers, this raises its typed StoreError, which lookups and stores fail open on)."""
        return self._store.secret

    def _tenant(self, tenant: str) -> str:
        return hash_tenant(self._secret, tenant)

    def _exact_address(
        self, request: CacheRequest, tenant: str, policy: CachePolicy
    ) -> tuple[str, str]:
        namespace = hash_key(self._secret, "exact-ns", tenant)
        return namespace, hash_key(
            self._secret, "exact", tenant, policy.version, request.canonical()
        )

    def _embedder_identity(self) -> str:
        """The embedder's model and dimension, part of every semantic partition key: a model
        installed in another folder by another replica is the same model (:func:`model_label`).
        Worked out once: it is on every lookup's path, and the embedder never changes."""
        if self._identity is None:
            embedder = self.embedder
            name = getattr(embedder, "model_name", None)
            label = model_label(name) if isinstance(name, str) and name else None
            self._identity = f"{label or type(embedder).__qualname__}:{embedder.dimension}"
        return self._identity

    def _semantic_address(
        self, request: CacheRequest, tenant: str, policy: CachePolicy
    ) -> _Semantic | None:
        splitter = policy.compare
        if request.split is not None:
            split: tuple[str, str] | None = (request.split[0], canonicalize_text(request.split[1]))
        elif splitter is None or splitter is last_user_turn:  # it honours context_messages
            split = request.split_last_user_turn(policy.context_messages)
        else:
            split = splitter(request)
        if split is None:
            return None
        context, query = split
        namespace = hash_key(
            self._secret, "semantic-ns", tenant, policy.version, self._embedder_identity(),
            request.settings(), context,
        )  # fmt: skip
        return _Semantic(namespace, hash_key(self._secret, "semantic", namespace, query), query)

    def _embed(self, query: str) -> npt.NDArray[np.float32]:
        """The query's embedding, computed once for a lookup and the store that follows it."""
        digest = self._query_digest(query)
        with self._recent_lock:
            seen = self._recent.get(digest)
            if seen is not None:
                self._recent.move_to_end(digest)
                return seen
        vector: npt.NDArray[np.float32] = checked_embed(self.embedder, [query])[0]
        self._remember_vectors({digest: vector})
        return vector

    def _embedding_fault(self, layer: str, outcome: str, error: EmbeddingError) -> None:
        """An embedder failure met by a lookup or a write: counted in ``embedding_errors``
        and logged (at most once a minute per embedder); the call goes on without it."""
        self._stats.count(embedding_errors=1)
        now = time.monotonic()
        with self._recent_lock:
            if self._embedding_warned is not None and now - self._embedding_warned < 60.0:
                return
            self._embedding_warned = now
        logger.warning(
            "tokenlean: the semantic cache's embedder failed (%s); %s (%s layer), and the call "
            "goes on to the model. The next warning for this cache comes a minute from now at "
            "the earliest; stats().embedding_errors counts them all.",
            str(error)[:400], outcome, layer,
        )  # fmt: skip

    def _query_digest(self, query: str) -> str:
        return hash_key(self._secret, "query", query)

    def _remember_vectors(self, vectors: Mapping[str, npt.NDArray[np.float32]]) -> None:
        with self._recent_lock:
            self._recent.update(vectors)
            for digest in vectors:
                self._recent.move_to_end(digest)
            while len(self._recent) > max(256, len(vectors)):
                self._recent.popitem(last=False)

    def lookup_many(
        self,
        requests: Sequence[CacheRequest],
        *,
        tenant: str = "default",
        route: str | None = None,
    ) -> list[CacheLookup]:
        """:meth:`lookup` for several requests, embedding all their compared texts in one
        batch first (several times faster per text than one at a time on a CPU).

        Raises:
            ConfigurationError: unknown route or empty tenant.
        """
        policy = self.policy_for(route)
        if policy.mode == "semantic":
            try:
                tenant_id = self._tenant(tenant)
            except StoreError:  # each lookup below is then a counted miss
                return [self.lookup(request, tenant=tenant, route=route) for request in requests]
            queries = {
                self._query_digest(semantic.query): semantic.query
                for request in requests
                if policy.bypass_reason(request.temperature) is None
                and (semantic := self._semantic_address(request, tenant_id, policy)) is not None
            }
            with self._recent_lock:
                missing = [(d, q) for d, q in queries.items() if d not in self._recent]
            if missing:
                try:
                    vectors = checked_embed(self.embedder, [q for _, q in missing])
                except EmbeddingError:
                    pass  # each lookup below embeds its own text, and counts its failure
                else:
                    digests = [d for d, _ in missing]
                    self._remember_vectors(dict(zip(digests, vectors, strict=True)))
        return [self.lookup(request, tenant=tenant, route=route) for request in requests]

    # ------------------------------------------------------------------ lookup

    def lookup(
        self, request: CacheRequest, *, tenant: str = "default", route: str | None = None
    ) -> CacheLookup:
        """Look ``request`` up under the route's policy. Reads only: it never writes to the
        store. A store fault makes it a miss (``reason`` ``"miss: the store failed (…)"``).

        Raises:
            ConfigurationError: unknown route or empty tenant.
            MalformedRequestError: a semantic lookup on a request with no user message.
        """
        policy = self.policy_for(route)
        options = current_options()
        reason = "asked for this call" if options and options.bypass else None
        reason = reason or policy.bypass_reason(request.temperature)
        if reason is not None:
            self._stats.count(bypassed=1)
            return CacheLookup(False, reason=f"bypass: {reason}")
        start = time.perf_counter()
        try:
            tenant_id = self._tenant(tenant)
            namespace, key = self._exact_address(request, tenant_id, policy)
            entry = self._partitions.live(namespace, key)
        except StoreError as exc:
            return self._store_fault("exact", exc, start)
        if entry is not None:
            self._touch_twin(entry)
            return self._hit("exact", entry, 1.0, "exact match", start)
        if policy.mode != "semantic":
            return self._miss("exact", "miss", start)
        semantic = self._semantic_address(request, tenant_id, policy)
        if semantic is None:
            return self._miss(
                "exact",
                "miss (nothing to compare semantically: no final text user turn, or the route's "
                "template is still being learned or does not fit)",
                start,
            )
        try:
            return self._semantic_lookup(policy, route, semantic, start)
        except StoreError as exc:
            return self._store_fault("semantic", exc, start)

    def _touch_twin(self, entry: StoredEntry) -> None:
        """Read the semantic entry an exact twin stands for, so that its recency follows the
        twin's hits: under ``max_entries`` a popular answer keeps its paraphrase coverage."""
        for tag in entry.tags:
            if tag.startswith(_TWIN):
                namespace, _, key = tag[len(_TWIN) :].partition(".")
                with contextlib.suppress(StoreError):  # the hit stands; recency is best effort
                    self._partitions.live(namespace, key)

    def _semantic_lookup(
        self, policy: CachePolicy, route: str | None, semantic: _Semantic, start: float
    ) -> CacheLookup:
        """The semantic layer's part of :meth:`lookup` (its store faults are the caller's)."""
        entry = self._partitions.live(semantic.namespace, semantic.key)
        if entry is not None:
            return self._hit("exact", entry, 1.0, "exact match", start)
        # Past the exact layer: a miss there, in the stats and the collector alike.
        self._stats.passed("exact")
        if self.collector is not None:
            self.collector.record_cache("exact", False)
        try:
            vector = self._embed(semantic.query)
        except EmbeddingError as exc:
            self._embedding_fault("semantic", "the lookup is a miss", exc)
            return self._miss("semantic", f"miss: the embedder failed ({exc})"[:200], start)
        index = self._partitions.index(semantic.namespace)
        if index is None:
            return self._miss("semantic", "miss", start)
        if policy.max_error_rate is not None:
            return self._bounded(policy, route, semantic, index, vector, start)
        features = (
            extract_features(semantic.query).keyed(self._secret)
            if policy.verifier is not None
            else None
        )
        reason, nearest = "miss", None
        for candidate_key, score in index.search(vector, policy.candidates):
            nearest = score if nearest is None else nearest
            if score < policy.threshold:
                break
            candidate = self._partitions.candidate(semantic.namespace, candidate_key, index)
            if candidate is None:
                continue
            if features is not None and policy.verifier and candidate.features is not None:
                rejection = verify_candidate(
                    features, stored_features(candidate.features, self._secret), policy.verifier
                )
                if rejection is not None:
                    self._stats.count(rejected=1)
                    reason = f"rejected: {rejection}"
                    continue
            return self._hit(
                "semantic", candidate, score, "similar and verified", start,
                lookup_id=f"{semantic.namespace}.{candidate_key}.static",
            )  # fmt: skip
        return self._miss("semantic", reason, start, nearest)

    def _bounded(
        self,
        policy: CachePolicy,
        route: str | None,
        semantic: _Semantic,
        index: VectorIndex,
        vector: npt.NDArray[np.float32],
        start: float,
    ) -> CacheLookup:
        """The error-bounded rule: serve, explore or miss the nearest candidate, and leave a
        pending judgement for whatever the model is asked."""
        features = extract_features(semantic.query).keyed(self._secret)
        state = self._learning.state(route, policy)
        nearest = None
        for candidate_key, score in index.search(vector, policy.candidates):
            nearest = score if nearest is None else nearest
            if score < policy.min_similarity:
                break
            candidate = self._partitions.candidate(semantic.namespace, candidate_key, index)
            if candidate is None or candidate.features is None:
                continue
            x = pair_features(score, features, stored_features(candidate.features, self._secret))
            decision, _, _ = state.decide(x, candidate_key)
            pending = Pending(route or "", semantic.namespace, candidate_key, x)
            if decision == "serve":
                token = secrets.token_hex(8)
                self._learning.served(token, pending)
                return self._hit(
                    "semantic", candidate, score, "within the error budget", start,
                    lookup_id=f"{semantic.namespace}.{candidate_key}.{token}",
                )  # fmt: skip
            self._learning.expect(semantic.key, pending)
            if decision == "explore":
                self._stats.count(explored=1)
                return self._miss(
                    "semantic", "exploring: verifying a would-be hit", start, score, explored=True
                )
            return self._miss("semantic", "miss: outside the acceptance region", start, score)
        return self._miss("semantic", "miss", start, nearest)

    # ------------------------------------------------------------------ learning

    @property
    def judge(self) -> AnswerJudge:
        """The judge of fresh answers against cached ones (the default on first use)."""
        if self._judge is None:
            self._judge = DefaultAnswerJudge(self.embedder)
        return self._judge

    @property
    def background_judging(self) -> bool:
        return self._learning.background

    def feedback(
        self,
        lookup: CacheLookup | str | Mapping[str, Any],
        *,
        correct: bool,
        route: str | None = None,
    ) -> bool:
        """Tell the cache whether a semantic hit was right (a user's thumbs up or down).

        A wrong hit's entry is removed at once; either way the verdict becomes evidence of the
        route's acceptance rule (when the hit was served by this process). Feedback is not a
        random sample of served hits: negative feedback makes the rule more conservative.

        ``lookup`` is the hit, its ``lookup_id``, or an adapter's hit marker holding one.

        Returns:
            True when the entry was found (and, for ``correct=False``, removed); False also
            when the store failed (counted in ``stats().store_errors`` and logged).

        Raises:
            InvalidInputError: ``lookup`` is not a semantic hit or its id.
            ConfigurationError: unknown route.
        """
        if isinstance(lookup, CacheLookup):
            lookup_id: Any = lookup.lookup_id
        elif isinstance(lookup, Mapping):  # an adapter's hit marker
            lookup_id = lookup.get("lookup_id")
        else:
            lookup_id = lookup
        parts = lookup_id.split(".") if isinstance(lookup_id, str) else []
        if len(parts) != 3 or not all(parts):
            raise InvalidInputError("feedback needs a semantic hit's lookup or its lookup_id")
        namespace, key, token = parts
        served = self._learning.take_served(token)
        if served is not None:  # the route that served the hit learns, whatever the caller says
            route = served.route or None
        policy = self.policy_for(route)
        try:
            if served is not None and policy.max_error_rate is not None:
                self._stats.count(feedback=1)
                self._learning.add(route, policy, served, correct, entry=key, force=True)
            if correct:
                return self._store.get(namespace, key) is not None
            removed = self._partitions.delete(Selector(namespace=namespace, key=key))
            if removed and isinstance(policy.compare, TemplateSplitter):  # and its exact twin
                with contextlib.suppress(StoreError):  # the entry itself is gone: that stands
                    twin = Selector(layer="exact", tag=_twin_tag(namespace, key))
                    self._partitions.delete(twin)
            return bool(removed)
        except StoreError as exc:
            self._faults.report("semantic", "the feedback was not applied", exc)
            return False

    async def afeedback(
        self,
        lookup: CacheLookup | str | Mapping[str, Any],
        *,
        correct: bool,
        route: str | None = None,
    ) -> bool:
        """:meth:`feedback` off the event loop."""
        return await asyncio.to_thread(self.feedback, lookup, correct=correct, route=route)

    def calibrate(
        self,
        examples: Sequence[tuple[str | CacheRequest, str | CacheRequest, bool]],
        *,
        route: str | None = None,
    ) -> int:
        """Add offline evidence: ``(cached, query, same_answer)`` triples, such as labelled
        paraphrase pairs or a replayed log. Returns the rows added.

        ``cached`` and ``query`` are either requests, from which the route's splitter takes
        the compared text (pairs whose fixed parts differ are skipped: the route would never
        compare them), or the compared texts themselves (the question, not a whole templated
        prompt: the evidence must be about what the route compares). Pairs of identical compared
        texts are skipped: the exact layer answers those. No text is kept.
        Evidence is persisted in the store.

        Raises:
            ConfigurationError: the route is not error-bounded semantic.
            InvalidInputError: an example that is not ``(text or request, text or request,
                label)`` with a label of True/False (or 1/0); nothing is added.
            StoreError: the store failed to read or save the route's evidence.
        """
        policy = self.policy_for(route)
        if policy.mode != "semantic" or policy.max_error_rate is None:
            raise ConfigurationError("calibrate needs an error-bounded semantic route")
        if isinstance(examples, str | bytes) or not isinstance(examples, Iterable):
            raise InvalidInputError(
                f"calibrate takes a list of (cached, query, same_answer), not "
                f"{type(examples).__name__}"
            )
        checked = [_example(number, example) for number, example in enumerate(examples)]
        state = self._learning.state(route, policy)
        triples: list[tuple[str, str, bool]] = []
        for cached, query, same in checked:
            parts: list[tuple[str, str] | None] = []
            for item in (cached, query):
                if isinstance(item, CacheRequest):
                    address = self._semantic_address(item, "calibration", policy)
                    parts.append((address.namespace, address.query) if address else None)
                else:
                    parts.append(("", canonicalize_text(item)))
            first, second = parts
            # Identical compared texts are the exact layer's to answer, never a semantic
            # decision: they teach the semantic rule nothing.
            if first is None or second is None or first[0] != second[0] or first[1] == second[1]:
                continue
            triples.append((first[1], second[1], bool(same)))
        unique = list(dict.fromkeys(t for triple in triples for t in triple[:2]))
        vectors = (
            dict(zip(unique, checked_embed(self.embedder, unique), strict=True)) if unique else {}
        )
        added = 0
        for cached_text, query_text, same in triples:
            cosine = float(np.dot(vectors[cached_text], vectors[query_text]))
            if cosine < policy.min_similarity:
                continue
            state.add(
                pair_features(cosine, extract_features(query_text), extract_features(cached_text)),
                same,
                prior=True,
            )
            added += 1
        state.refit()
        self._learning.persist(route, policy, force=True, strict=True)
        return added

    def acceptance(self, route: str | None = None) -> dict[str, Any]:
        """What an error-bounded route has learned: evidence, region, bound, exploration."""
        policy = self.policy_for(route)
        if policy.max_error_rate is None:
            raise ConfigurationError("this route has no error bound (a static threshold)")
        self._learning.wait()
        snapshot = self._learning.state(route, policy).snapshot().as_dict()
        return snapshot | {"max_error_rate": policy.max_error_rate}

    def _hit(
        self,
        layer: str,
        entry: StoredEntry,
        similarity: float,
        reason: str,
        start: float,
        lookup_id: str | None = None,
    ) -> CacheLookup:
        try:
            payload = json.loads(entry.payload)
        except ValueError as exc:
            error = CorruptedStoreError(f"{self._store.name}: a cached value is not JSON ({exc})")
            error.__cause__ = exc
            return self._store_fault(layer, error, start)
        self._stats.lookup(layer, True, (time.perf_counter() - start) * 1000)
        if self.collector is not None:
            self.collector.record_cache(layer, True)
        return CacheLookup(True, payload, layer, similarity, reason, lookup_id=lookup_id)

    def _store_fault(self, layer: str, error: StoreError, start: float) -> CacheLookup:
        """A lookup that met a store fault: counted, logged (rate limited), and a miss."""
        self._faults.report(layer, "the lookup is a miss", error)
        return self._miss(layer, f"miss: the store failed ({type(error).__name__})", start)

    def _miss(
        self,
        layer: str,
        reason: str,
        start: float,
        similarity: float | None = None,
        explored: bool = False,
    ) -> CacheLookup:
        self._stats.lookup(layer, False, (time.perf_counter() - start) * 1000)
        if self.collector is not None:
            self.collector.record_cache(layer, False)
        return CacheLookup(False, None, layer, similarity, reason, explored=explored)

    # ------------------------------------------------------------------ writes

    def store(
        self,
        request: CacheRequest,
        value: Any,
        *,
        tenant: str = "default",
        route: str | None = None,
        tags: Sequence[str] = (),
        plan_version: str | None = None,
    ) -> bool:
        """Cache ``value`` (anything JSON-serializable) as the answer to ``request``.

        Returns False when the policy bypasses this request, or when the store failed (the
        write is dropped, counted in ``stats().store_errors`` and logged): nothing is written.

        Raises:
            NotSerializableError: the value has no JSON form; nothing is written.
            ConfigurationError: unknown route or empty tenant.
        """
        policy = self.policy_for(route)
        options = current_options()
        if (options and options.bypass) or policy.bypass_reason(request.temperature) is not None:
            self._stats.count(bypassed=1)
            return False
        try:
            payload = canonical_json(value).encode("utf-8")
        except NotSerializableError as exc:
            raise NotSerializableError(f"cannot cache this value: {exc}") from exc
        if isinstance(tags, str):
            tags = (tags,)
        try:
            secret = self._secret  # what this write's keys are made with
            tenant_id = self._tenant(tenant)
        except StoreError as exc:  # the key secret could not be read
            self._faults.report("exact", "the write was dropped", exc)
            return False
        now = self.clock()
        ttl_s = options.ttl_s if options and options.ttl_s is not None else policy.ttl_s
        expires = now + ttl_s if ttl_s else None
        common = {
            "payload": payload,
            "created_at": now,
            "expires_at": expires,
            "tenant": tenant_id,
            "tags": tuple(tags),
            "plan_version": plan_version,
        }
        semantic = (
            self._semantic_address(request, tenant_id, policy)
            if policy.mode == "semantic"
            else None
        )
        if semantic is None:
            namespace, key = self._exact_address(request, tenant_id, policy)
            entry = StoredEntry(namespace, key, layer="exact", **common)  # type: ignore[arg-type]
            return self._put(entry, None, secret=secret)
        if policy.max_error_rate is not None:
            self._learning.judge_answer(semantic.key, value, route, policy)
        try:
            vector = self._embed(semantic.query)
        except EmbeddingError as exc:
            self._embedding_fault("semantic", "the write was dropped", exc)
            return False
        entry = StoredEntry(
            semantic.namespace,
            semantic.key,
            layer="semantic",
            vector=vector.astype(np.float16).tobytes(),
            features=extract_features(semantic.query).keyed(self._secret).to_json(),
            **common,  # type: ignore[arg-type]
        )
        if not self._put(entry, vector, secret=secret):
            return False
        if request.split is None and isinstance(policy.compare, TemplateSplitter):
            # A semantic key made with a learned template gets an exact twin: a replica or a
            # restarted process learns the template from its own requests, and until it has,
            # only the exact key finds an identical request. The twin is tagged with the
            # semantic key, so that feedback removes both. Its write failing leaves the
            # semantic entry stored (counted and logged as a store error).
            namespace, key = self._exact_address(request, tenant_id, policy)
            twin_tags = (*common["tags"], _twin_tag(semantic.namespace, semantic.key))  # type: ignore[misc]
            twin = {**common, "tags": twin_tags}
            twin_entry = StoredEntry(namespace, key, layer="exact", **twin)  # type: ignore[arg-type]
            self._put(twin_entry, None, count=False, secret=secret)
        return True

    def _put(
        self,
        entry: StoredEntry,
        vector: npt.NDArray[np.float32] | None,
        *,
        count: bool = True,
        secret: bytes | None = None,
    ) -> bool:
        """Write one entry; False (the fault counted and logged) when the store failed.

        With ``secret`` (what the entry's keys were made with): when the store's secret is
        another once written (a Redis server that lost its data and took another replica's new
        secret meanwhile), the entry is removed again: no lookup could find it, and no
        invalidation by tenant would remove it."""
        try:
            self._partitions.put(entry, vector)
            if secret is not None and self._secret != secret:
                self._partitions.delete(Selector(namespace=entry.namespace, key=entry.key))
                raise StoreBackendError(
                    f"{self._store.name}: the key secret changed while this write was keyed"
                )
        except StoreError as exc:
            self._faults.report(entry.layer, "the write was dropped", exc)
            return False
        if count:
            self._stats.count(writes=1)
        return True

    # ------------------------------------------------------------------ async

    async def alookup(
        self, request: CacheRequest, *, tenant: str = "default", route: str | None = None
    ) -> CacheLookup:
        """:meth:`lookup` off the event loop (store I/O and embedding run in a thread)."""
        return await asyncio.to_thread(self.lookup, request, tenant=tenant, route=route)

    async def astore(
        self,
        request: CacheRequest,
        value: Any,
        *,
        tenant: str = "default",
        route: str | None = None,
        tags: Sequence[str] = (),
        plan_version: str | None = None,
    ) -> bool:
        """:meth:`store` off the event loop."""
        return await asyncio.to_thread(
            self.store, request, value, tenant=tenant, route=route, tags=tags,
            plan_version=plan_version,
        )  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def invalidate(
        self,
        *,
        tenant: str | None = None,
        tag: str | None = None,
        plan_version: str | None = None,
    ) -> int:
        """Remove every entry matching all the given criteria; return how many.

        Raises:
            ConfigurationError: no criterion given (use :meth:`clear` to remove everything).
            StoreError: the store failed (nothing was removed).
        """
        if tenant is None and tag is None and plan_version is None:
            raise ConfigurationError("invalidate needs a tenant, a tag or a plan_version")
        selector = Selector(
            tenant=self._tenant(tenant) if tenant is not None else None,
            tag=tag,
            plan_version=plan_version,
        )
        return len(self._partitions.delete(selector))

    def purge_expired(self) -> int:
        """Remove every entry whose TTL has passed; return how many.

        Raises:
            StoreError: the store failed.
        """
        return len(self._partitions.delete(Selector(expired_at=self.clock())))

    def clear(self) -> int:
        """Remove every entry; return how many.

        Raises:
            StoreError: the store failed.
        """
        return self._partitions.clear()

    def stats(self) -> CacheStats:
        """Hits, misses and latency per layer, store faults, and the store's entries and bytes
        (0 and 0 when the store cannot say)."""
        self._learning.wait()
        try:
            entries, size = self._store.usage()
        except StoreError as exc:
            self._faults.report("exact", "stats show no entries", exc)
            entries, size = 0, 0
        return self._stats.snapshot(
            entries, size, self._learning.snapshots(), self._partitions.kinds()
        )

    def flush(self) -> None:
        """Wait for queued judgements and persist every route's evidence now (otherwise done as
        it accumulates and on close)."""
        self._learning.flush((route, self.policy_for(route)) for route in self._learning.routes())

    def close(self) -> None:
        """Persist the evidence and close the store."""
        self.flush()
        self._learning.close()
        self.store_backend.close()


def _example(number: int, example: Any) -> tuple[str | CacheRequest, str | CacheRequest, bool]:
    """A calibration example checked: two texts or requests and a label that is a bool (or
    the integer 1 or 0: never a string such as "0", which is true).

    Raises:
        InvalidInputError: anything else, naming the example.
    """
    if isinstance(example, str | bytes) or not isinstance(example, Sequence) or len(example) != 3:
        raise InvalidInputError(
            f"calibration example {number}: expected (cached, query, same_answer), "
            f"not {type(example).__name__}"
        )
    cached, query, same = example
    for text in (cached, query):
        if not isinstance(text, str | CacheRequest):
            raise InvalidInputError(
                f"calibration example {number}: a text or a CacheRequest, not {type(text).__name__}"
            )
    if isinstance(same, bool | np.bool_):
        return cached, query, bool(same)
    if isinstance(same, numbers.Integral) and same in (0, 1):
        return cached, query, bool(same)
    raise InvalidInputError(
        f"calibration example {number}: same_answer must be True or False (or 1 or 0), not {same!r}"
    )
