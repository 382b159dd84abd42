"""A replica (or a restarted process) serving a long session for the first time.

Its first ``context()`` builds the session's retrieval index. With the turn vectors kept in the
store, it reads them; without (a store that keeps none, as before issue 13), it embeds every
turn. Both are timed on the same store and session, the model loaded beforehand, and the texts
each one embedded are counted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._embeddings import Embedder
from tokenlean._memory.conversation import ConversationMemory
from tokenlean._memory.uri import open_transcript_store

__all__ = ["session_join_bench"]

_PLACES = ("Lyon", "Porto", "Oslo", "Quito", "Hanoi", "Accra", "Perth", "Tbilisi")
_THINGS = ("order", "invoice", "refund", "parcel", "ticket", "booking", "voucher", "account")


class _Counting:
    """The embedder, counting the texts it embeds."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.texts = 0

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def model_name(self) -> str:
        return str(getattr(self.inner, "model_name", None) or type(self.inner).__qualname__)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.texts += len(texts)
        return np.asarray(self.inner.embed(texts), dtype=np.float32)


class _WithoutVectors:
    """The same store, hiding its turn vectors: what a replica did before they were kept."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in ("get_vectors", "put_vectors"):
            raise AttributeError(name)
        return getattr(self._store, name)


def _messages(turns: int) -> list[dict[str, str]]:
    out = []
    for i in range(turns // 2):
        place, thing = _PLACES[i % len(_PLACES)], _THINGS[(i // 3) % len(_THINGS)]
        number = 1000 + i
        out.append({"role": "user", "content": f"About {thing} {number}: can it go to {place}?"})
        out.append({"role": "assistant", "content": f"Yes, {thing} {number} goes on day {i}."})
    return out


def session_join_bench(
    uri: str, *, turns: int, embedder: Embedder, repeats: int = 3
) -> dict[str, Any]:
    """Fill a session of ``turns`` turns on the store at ``uri`` (its vectors stored by a first
    replica), then time a new replica's first ``context()`` with the stored vectors and without
    them, ``repeats`` times each (medians).

    Returns: ``turns``, ``join_context_ms`` and ``join_embedded_texts`` (stored vectors),
    ``join_context_ms_embedding`` and ``join_embedded_texts_embedding`` (without them), and
    ``fill_s`` (the first replica's add and index, embedding included).
    """
    embedder.embed(["warm the model up"])
    store = open_transcript_store(uri)
    session = f"join-{time.time_ns()}"
    try:
        start = time.perf_counter()
        first = ConversationMemory(store, embedder=embedder)
        messages = _messages(turns)
        for at in range(0, len(messages), 500):
            first.add(session, messages[at : at + 500])
        first.context(session, budget=2_000, user="Where does order 1003 go?")
        fill_s = time.perf_counter() - start
        figures: dict[str, list[float]] = {"stored": [], "embedding": []}
        texts: dict[str, int] = {}
        for _ in range(repeats):
            for kind, view in (("stored", store), ("embedding", _WithoutVectors(store))):
                counting = _Counting(embedder)
                joining = ConversationMemory(view, embedder=counting)
                start = time.perf_counter()
                joining.context(session, budget=2_000, user="Where does order 1003 go?")
                figures[kind].append((time.perf_counter() - start) * 1000)
                texts[kind] = counting.texts
        return {
            "turns": turns,
            "fill_s": round(fill_s, 2),
            "join_context_ms": round(statistics.median(figures["stored"]), 1),
            "join_embedded_texts": texts["stored"],
            "join_context_ms_embedding": round(statistics.median(figures["embedding"]), 1),
            "join_embedded_texts_embedding": texts["embedding"],
        }
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
