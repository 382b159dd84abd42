"""``tokenlean bench replicas``: several processes sharing one store, as an app's replicas do.

Each process (spawned, so nothing is inherited) opens the same cache store and transcript store
and, until the deadline, runs a mix of exact and semantic lookups and stores, probes (a semantic
entry it stores and the others look up as a paraphrase, to time visibility), transcript appends
to shared sessions and slot updates on shared keys (compare-and-set where the store has it).
The parent then checks what was acknowledged against what is there (including the entries
bound, ``max_entries``, counted on the store), and times a new replica joining a store of many
semantic entries: its lookups right after joining, on the interim index while HNSW is built
(with that index's recall@1 against exact search), and on HNSW. Embeddings come from
:class:`~tokenlean.testing.HashingEmbedder`, so no model loads.
"""

from __future__ import annotations

import multiprocessing
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

import tokenlean as tl
from tokenlean._stats import rank_percentile
from tokenlean.testing import HashingEmbedder

__all__ = ["replicas_bench"]

MAX_ENTRIES = 2_000  # the cache's bound, for every process (default of --max-entries)
_DIMENSION = 384
_QUESTIONS = 200  # shared exact and semantic questions
_SESSIONS = 2  # shared transcript sessions
_SLOTS = 4  # shared slot keys
_PROBE_EVERY_S = 0.02


def _close(store: object) -> None:
    close: Callable[[], None] | None = getattr(store, "close", None)
    if close is not None:
        close()


def _pct(values: Sequence[float], q: float) -> float:
    return rank_percentile(sorted(values), q)


def _request(text: str) -> tl.CacheRequest:
    return tl.CacheRequest.from_openai(
        {"model": "bench", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    )


class _TimedEmbedder:
    """HashingEmbedder that adds up its own time, so lookups can be timed without it."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder(_DIMENSION)
        self.spent = 0.0
        self.model_name = self.inner.model_name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        start = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.spent += time.perf_counter() - start


HNSW_THRESHOLD = 20_000  # CompletionCache's default: a partition past it switches to HNSW


def _cache(uri: str, embedder: _TimedEmbedder) -> tl.CompletionCache:
    return tl.CompletionCache(
        store=uri,
        policy=tl.CachePolicy.semantic(threshold=0.9, verifier=None, compare=tl.last_user_turn),
        routes={"exact": tl.CachePolicy.exact()},
        embedder=embedder,
        background_judging=False,
        hnsw_threshold=HNSW_THRESHOLD,
    )


def _uris(uri: str, tag: str, max_entries: int = MAX_ENTRIES) -> tuple[str, str, str]:
    """(scheme, cache URI bounded at ``max_entries``, transcript URI) for one run, apart from
    any other run's data."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        options = dict(parse_qsl(parts.query))
        options["prefix"] = f"{options.get('prefix', 'tokenlean:')}bench-{tag}:"
        memory = urlunsplit(parts._replace(query=urlencode(options)))
        options["max_entries"] = str(max_entries)
        return "redis", urlunsplit(parts._replace(query=urlencode(options))), memory
    if scheme == "sqlite" and parts.path[1:]:
        path = Path(parts.path[1:])
        base = path.with_name(f"{path.stem}-{tag}")
        return (
            "sqlite",
            f"sqlite:///{base}.db?max_entries={max_entries}",
            f"sqlite:///{base}-memory.db",
        )
    raise tl.ConfigurationError(
        f"bench replicas needs a store several processes can share (redis://… or "
        f"sqlite:///…), not {uri!r}"
    )


def _worker(
    me: int,
    cache_uri: str,
    memory_uri: str,
    seconds: float,
    barrier: Any,
    probe_seq: Any,
    probe_time: Any,
    results: Any,
) -> None:
    embedder = _TimedEmbedder()
    cache = _cache(cache_uri, embedder)
    memory = tl.open_transcript_store(memory_uri)
    update_state: Callable[..., Any] | None = getattr(memory, "update_state", None)
    rng = np.random.default_rng(me)
    out: dict[str, Any] = {
        "lookups": 0, "exact_ms": [], "semantic_ms": [], "visibility_ms": [], "probes": 0,
        "turns": [], "slots": [0] * _SLOTS, "conflicts": 0, "errors": 0, "max_entries_seen": 0,
        "stored": set(),
    }  # fmt: skip
    seen = [0] * len(probe_seq)
    barrier.wait()
    deadline = time.monotonic() + seconds
    next_probe = next_usage = time.monotonic()
    n = 0
    while time.monotonic() < deadline:
        n += 1
        now = time.monotonic()
        if now >= next_probe:  # a probe of our own
            next_probe = now + _PROBE_EVERY_S
            out["probes"] += 1
            cache.store(_request(f"probe w{me} n{out['probes']} zeta kappa"), out["probes"])
            out["stored"].add(f"probe {me} {out['probes']}")
            with probe_seq.get_lock():
                probe_time[me], probe_seq[me] = time.time(), out["probes"]
        for other in range(len(probe_seq)):  # the others' latest probes
            if other == me:
                continue
            with probe_seq.get_lock():
                seq, stored = probe_seq[other], probe_time[other]
            if seq > seen[other]:
                lookup = cache.lookup(_request(f"kappa zeta n{seq} w{other} probe"))
                if lookup.hit:
                    out["visibility_ms"].append((time.time() - stored) * 1000)
                    seen[other] = seq
        question = int(rng.integers(_QUESTIONS))
        exact = _request(f"exact question number {question}")
        start = time.perf_counter()
        if not cache.lookup(exact, route="exact").hit:
            cache.store(exact, question, route="exact")
            out["stored"].add(f"exact {question}")
        else:
            out["exact_ms"].append((time.perf_counter() - start) * 1000)
        words = ["semantic", "question", "number", str(question), "about", "parcels"]
        rng.shuffle(words)
        spent, start = embedder.spent, time.perf_counter()
        lookup = cache.lookup(_request(" ".join(words)))
        out["semantic_ms"].append(((time.perf_counter() - start) - (embedder.spent - spent)) * 1000)
        if not lookup.hit:
            cache.store(_request(" ".join(sorted(words))), question)
            out["stored"].add(f"semantic {question}")
        out["lookups"] += 3
        if n % 4 == 0:
            session = f"shared-{n % _SESSIONS}"
            try:
                index = memory.count("bench", session)
                turn_id = f"w{me}-{n}"
                memory.append(
                    "bench", session, [tl.Turn(turn_id, index, "user", f"turn {n}", time.time())]
                )
                out["turns"].append((session, turn_id))
            except tl.InvalidInputError:
                out["conflicts"] += 1  # another process appended first: not acknowledged
            except Exception:
                out["errors"] += 1
        if n % 4 == 2:
            slot = int(rng.integers(_SLOTS))
            try:
                if update_state is not None:
                    update_state("bench", "slots", f"slot{slot}", lambda v: (v or 0) + 1)
                else:
                    value = memory.get_state("bench", "slots", f"slot{slot}")
                    memory.put_state("bench", "slots", f"slot{slot}", (value or 0) + 1)
                out["slots"][slot] += 1
            except Exception:
                out["errors"] += 1
        if now >= next_usage:
            next_usage = now + 0.1
            count, _ = cache.store_backend.usage()
            out["max_entries_seen"] = max(out["max_entries_seen"], count)
    out["errors"] += cache.stats().store_errors
    out["probes_seen"] = sum(seen)
    cache.close()
    _close(memory)
    results.put(out)


def _run_processes(cache_uri: str, memory_uri: str, processes: int, seconds: float) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    probe_seq, probe_time = ctx.Array("i", processes), ctx.Array("d", processes)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_worker,
            args=(me, cache_uri, memory_uri, seconds, barrier, probe_seq, probe_time, results),
        )
        for me in range(processes)
    ]
    for worker in workers:
        worker.start()
    outs: list[Any] = []
    deadline = time.monotonic() + seconds + 120
    try:
        while len(outs) < len(workers):
            try:
                outs.append(results.get(timeout=1.0))
            except queue.Empty:  # noqa: PERF203 - polling, to notice a failed process
                failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    raise tl.StoreError(
                        f"a benchmark process failed (exit codes {failed})"
                        if failed
                        else "the benchmark processes did not finish in time"
                    ) from None
    finally:
        for worker in workers:
            worker.join(timeout=30 if len(outs) == len(workers) else 1)
            if worker.is_alive():
                worker.terminate()
    return outs


class _KindWatch:
    """Seconds from ``start`` until each index kind was first seen serving ``index``."""

    def __init__(self, index: Any, start: float) -> None:
        self.index, self.start = index, start
        self.first: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.first.setdefault(self.index.kind, time.perf_counter() - self.start)
            if self.index.kind == "hnsw":
                return
            self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _wait(predicate: Callable[[], bool], limit_s: float = 300) -> float:
    start = time.perf_counter()
    while not predicate() and time.perf_counter() - start < limit_s:
        time.sleep(0.01)
    return time.perf_counter() - start


def _catch_up(cache_uri: str, entries: int) -> dict[str, Any]:
    """Fill a store with ``entries`` semantic entries, then time a new replica joining it."""

    def stored(i: int) -> str:
        return f"stored entry {i} about topic {i % 97} and {i % 89}"

    def paraphrase(i: int) -> str:
        return f"and {i % 89} topic {i % 97} about entry {i} stored"

    filler = _cache(cache_uri, _TimedEmbedder())
    start = time.perf_counter()
    for i in range(entries):
        filler.store(_request(stored(i)), i)
    fill_s = time.perf_counter() - start
    embedder = _TimedEmbedder()
    replica = _cache(cache_uri, embedder)
    start = time.perf_counter()
    replica.lookup(_request("topic 3 about stored entry 5 and 5"))  # loads its indexes
    joined = time.perf_counter()
    catch_up_s = joined - start
    index = max(replica._partitions.loaded().values(), key=len)
    watch = _KindWatch(index, joined)

    def semantic_ms(count: int, offset: int = 0, kind: str | None = None) -> list[float]:
        """Lookup times (excluding embedding); with ``kind``, only those that the index of
        that kind served from start to end."""
        times = []
        for i in range(offset, offset + count):
            request = _request(paraphrase(i))
            before = index.kind
            spent, begin = embedder.spent, time.perf_counter()
            replica.lookup(request)
            ms = (time.perf_counter() - begin - (embedder.spent - spent)) * 1000
            if kind is None or before == index.kind == kind:
                times.append(ms)
        return times

    at_catch_up = semantic_ms(200)
    # The partition loaded as an exact index; an interim index (large partitions only) and
    # then HNSW are built in the background while lookups go on. Time lookups on the
    # interim index, and its recall@1 against exact search on those lookups' vectors.
    large = entries >= HNSW_THRESHOLD  # only then is an HNSW index due
    _wait(lambda: not large or index.kind != "flat")
    joining: list[float] = []
    interim_top: list[tuple[int, float]] = []
    if index.kind == "ivf":
        joining = semantic_ms(200, offset=1000, kind="ivf")
        for i in range(2000, 2200):
            entry = i * 7919 % entries
            vector = embedder.inner.embed([paraphrase(entry)])[0]
            found = index.search(vector, 1)
            if found and index.kind == "ivf":  # still the interim index that answered
                interim_top.append((entry, found[0][1]))
    # Wait for the HNSW index (lookups went on meanwhile), then measure again.
    _wait(lambda: not large or index.kind == "hnsw")
    build_s = time.perf_counter() - joined
    watch.stop()
    after = semantic_ms(200, offset=3000)
    kinds = replica.stats().indexes
    for cache in (filler, replica):
        cache.close()
    recall = _recall_at_1(interim_top, [stored(i) for i in range(entries)], paraphrase)
    return {
        "catch_up_entries": entries,
        "catch_up_fill_s": round(fill_s, 2),
        "catch_up_s": round(catch_up_s, 3),
        "semantic_ms_p50_at_catch_up": round(_pct(at_catch_up, 0.5), 3),
        "interim_index_s": round(watch.first["ivf"], 2) if "ivf" in watch.first else None,
        "semantic_ms_p50_joining": round(_pct(joining, 0.5), 3) if joining else None,
        "semantic_ms_p95_joining": round(_pct(joining, 0.95), 3) if joining else None,
        "interim_lists": index.interim_lists,
        "interim_nprobe": index.nprobe if index.interim_recall is not None else None,
        "interim_recall_at_1_calibration": index.interim_recall,
        "interim_recall_at_1": recall,
        "index_build_s": round(build_s, 2),
        "semantic_ms_p50_after_index_build": round(_pct(after, 0.5), 3),
        "index_kinds_after_build": kinds,
    }


def _recall_at_1(
    found: Sequence[tuple[int, float]], texts: Sequence[str], paraphrase: Callable[[int], str]
) -> float | None:
    """Recall@1 of the interim index against exact search: the share of ``found`` (entry, best
    score the interim index gave its paraphrase) whose score equals the best over every stored
    text (as stored: float16 vectors). Ties between equal vectors count as found."""
    if not found:
        return None
    embedder = HashingEmbedder(_DIMENSION)
    queries = embedder.embed([paraphrase(entry) for entry, _ in found])
    best = np.full(len(found), -np.inf, dtype=np.float32)
    for start in range(0, len(texts), 10_000):
        block = embedder.embed(texts[start : start + 10_000]).astype(np.float16)
        best = np.maximum(best, np.max(queries @ block.astype(np.float32).T, axis=1))
    scores = np.array([score for _, score in found], dtype=np.float32)
    return round(float(np.mean(scores >= best - 1e-4)), 4)


def _one_store(
    uri: str, *, processes: int, seconds: float, catch_up_entries: int, max_entries: int
) -> tuple[str, dict[str, Any]]:
    tag = secrets.token_hex(4)
    scheme, cache_uri, memory_uri = _uris(uri, tag, max_entries)
    # The stores are opened and read here first: a store the processes could not use fails
    # in one line, before any process starts.
    cache_store = tl.open_store(cache_uri)
    try:
        cache_store.usage()
    finally:
        _close(cache_store)
    transcripts = tl.open_transcript_store(memory_uri)
    try:
        transcripts.count("bench", "probe")
    finally:
        _close(transcripts)
    outs = _run_processes(cache_uri, memory_uri, processes, seconds)
    memory = tl.open_transcript_store(memory_uri)
    try:
        stored = {
            session: {turn.id for turn in memory.turns("bench", session)}
            for session in {session for out in outs for session, _ in out["turns"]}
        }
        lost_turns = sum(
            turn_id not in stored[session] for out in outs for session, turn_id in out["turns"]
        )
        final_slots = [memory.get_state("bench", "slots", f"slot{s}") or 0 for s in range(_SLOTS)]
    finally:
        _close(memory)
    acked_slots = sum(sum(out["slots"]) for out in outs)
    check = tl.open_store(cache_uri)
    try:
        entries, _ = check.usage()
    finally:
        check.close()
    visibility = [v for out in outs for v in out["visibility_ms"]]
    exact, semantic = (
        [v for out in outs for v in out[name]] for name in ("exact_ms", "semantic_ms")
    )
    result: dict[str, Any] = {
        "uri": cache_uri,
        "processes": processes,
        "seconds": seconds,
        "lookups_per_s": round(sum(out["lookups"] for out in outs) / seconds, 1),
        "exact_ms_p50": round(_pct(exact, 0.5), 3) if exact else None,
        "semantic_ms_p50": round(_pct(semantic, 0.5), 3) if semantic else None,
        "visibility_ms_p50": round(_pct(visibility, 0.5), 1) if visibility else None,
        "visibility_ms_p95": round(_pct(visibility, 0.95), 1) if visibility else None,
        "probes_stored": sum(out["probes"] for out in outs),
        "probe_hits_in_other_processes": len(visibility),
        "lost_updates": lost_turns + max(0, acked_slots - sum(final_slots)),
        "lost_turns": lost_turns,
        "lost_slot_updates": max(0, acked_slots - sum(final_slots)),
        "turns_acknowledged": sum(len(out["turns"]) for out in outs),
        "slot_updates_acknowledged": acked_slots,
        "append_conflicts": sum(out["conflicts"] for out in outs),
        "errors": sum(out["errors"] for out in outs),
        "max_entries": max_entries,
        # entries above the bound: on the store at the end, or in any process's count of it
        # during the run (SQLite's is its own, in memory)
        "entries_over_bound": max(
            0, max([entries, *(out["max_entries_seen"] for out in outs)]) - max_entries
        ),
        "entries_at_end": entries,
        "entries_stored_distinct": len(set().union(*(out["stored"] for out in outs))),
    }
    _, catch_uri, _ = _uris(uri, tag + "-catch-up", max_entries=100_000_000)
    result |= _catch_up(catch_uri, catch_up_entries)
    _cleanup(scheme, [cache_uri, catch_uri])
    return scheme, result


def _cleanup(scheme: str, uris: Sequence[str]) -> None:
    """Delete a Redis run's keys (SQLite files stay, beside the URI's file)."""
    if scheme != "redis":
        return
    import redis

    for uri in uris:
        parts = urlsplit(uri)
        options = dict(parse_qsl(parts.query))
        client = redis.Redis.from_url(urlunsplit(parts._replace(query="")))
        try:
            keys = list(client.scan_iter(match=f"{options['prefix']}*", count=1000))
            for at in range(0, len(keys), 1000):
                client.delete(*keys[at : at + 1000])
        finally:
            client.close()


def replicas_bench(
    stores: Sequence[str],
    *,
    processes: int = 4,
    seconds: float = 10.0,
    catch_up_entries: int = 100_000,
    max_entries: int = MAX_ENTRIES,
    join_turns: int = 0,
    embedder: Any = None,
) -> dict[str, Any]:
    """Run the replicas benchmark on each store URI; one result per scheme (``redis``,
    ``sqlite``). Every process's cache is bounded at ``max_entries`` entries. With
    ``join_turns``, also a replica joining a session of that many turns (``session_join``: its
    first context with the stored turn vectors and without them; ``embedder``, default the
    bundled model, is loaded for it).

    Raises:
        ConfigurationError: a URI several processes cannot share, or a bad count.
    """
    if processes < 2:
        raise tl.ConfigurationError(f"--processes must be at least 2, not {processes}")
    if seconds <= 0 or catch_up_entries < 1 or max_entries < 1 or join_turns < 0:
        raise tl.ConfigurationError(
            "--seconds, --catch-up-entries and --max-entries must be positive, --join-turns "
            "not negative"
        )
    out: dict[str, Any] = {}
    for uri in stores:
        scheme, result = _one_store(
            uri, processes=processes, seconds=seconds, catch_up_entries=catch_up_entries,
            max_entries=max_entries,
        )  # fmt: skip
        if join_turns:
            result["session_join"] = _session_join(uri, join_turns, embedder)
        out[scheme] = result
    return out


def _session_join(uri: str, turns: int, embedder: Any) -> dict[str, Any]:
    """:func:`session_join_bench` on a transcript store of its own beside ``uri``."""
    from tokenlean._embeddings import default_embedder
    from tokenlean.bench._session_join import session_join_bench

    scheme, _, memory_uri = _uris(uri, f"join-{secrets.token_hex(4)}")
    try:
        return session_join_bench(memory_uri, turns=turns, embedder=embedder or default_embedder())
    finally:
        _cleanup(scheme, [memory_uri])
