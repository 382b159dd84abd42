"""Turn embeddings kept in the transcript store, so a turn is embedded once per deployment.

A session's retrieval index lives in process memory (:mod:`tokenlean._memory.sessions`). Without
stored vectors, a restart, a replica that serves the session for the first time, or a session
evicted from the in-process LRU embeds every turn again: seconds of model time for a long
session. When the store has ``get_vectors``/``put_vectors`` (all three backends do), the
vectors a process computes are written back, and the next process reads them instead.

A vector's key is a hash of the embedder's identity (its ``model_name``, without the folder it
was loaded from, and its dimension) and the text embedded, so another model never reads them and
a changed turn rendering simply misses. An embedder without a ``model_name`` cannot be told from
another model of the same dimension: its vectors are neither stored nor read. Vectors are stored
as float16, as the index keeps them. Reading or writing them never fails a call: on a store
fault the turns are embedded, and a failed write is logged and forgotten (the vectors are a
cache of the model, not data).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._embeddings import Embedder, checked_embed, model_label
from tokenlean._errors import TokenleanError
from tokenlean._retrieval.hybrid_index import HybridIndex

__all__ = ["TurnVectors"]

_log = logging.getLogger("tokenlean.memory")
_unnamed: set[type] = set()  # embedder types already logged as having no model_name


def embedder_identity(embedder: Embedder) -> str | None:
    """What names an embedder's vector space: its ``model_name`` (a local folder by its last
    part, so replicas that install the model in different places agree) and its dimension.
    None for an embedder without a ``model_name``: its vectors cannot be told from another
    model's, so they are neither stored nor read."""
    name = getattr(embedder, "model_name", None)
    if not isinstance(name, str) or not name:
        return None
    return f"{model_label(name)}|{embedder.dimension}"


class TurnVectors:
    """Reads and writes the embeddings of one session's turns in a transcript store.

    Args:
        store: the transcript store (without ``get_vectors``/``put_vectors``, nothing is read or
            written and every turn is embedded).
        embedder: the embedder the vectors come from.

    Example:
        >>> from tokenlean import MemoryTranscriptStore
        >>> from tokenlean.testing import HashingEmbedder
        >>> store = MemoryTranscriptStore()
        >>> vectors = TurnVectors(store, HashingEmbedder(8))
        >>> vectors.save("acme", "s1", {"user (2026-01-02): hi": [1.0] * 8})
        1
        >>> vectors.load("acme", "s1", ["user (2026-01-02): hi", "never stored"]).keys()
        dict_keys(['user (2026-01-02): hi'])
    """

    def __init__(self, store: Any, embedder: Embedder) -> None:
        self._space = embedder_identity(embedder)
        known = self._space is not None
        self._get = getattr(store, "get_vectors", None) if known else None
        self._put = getattr(store, "put_vectors", None) if known else None
        self._embedder = embedder
        if not known and hasattr(store, "get_vectors") and type(embedder) not in _unnamed:
            _unnamed.add(type(embedder))
            _log.info(
                "%s has no model_name: turn vectors are not stored or read for it (give it a "
                "model_name naming its model to reuse them across processes)",
                type(embedder).__qualname__,
            )

    def _key(self, text: str) -> str:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(str(self._space).encode())
        digest.update(b"\0")
        digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def load(
        self, tenant: str, session: str, texts: Sequence[str]
    ) -> dict[str, npt.NDArray[np.float16]]:
        """The stored vectors of these texts, by text (missing, damaged or unreadable ones
        are left out: the caller embeds them)."""
        if self._get is None or not texts:
            return {}
        keys = {self._key(text): text for text in texts}
        try:
            found = self._get(tenant, session, list(keys))
        except TokenleanError as exc:
            _log.warning("turn vectors of session %r not read, embedding instead: %s", session, exc)
            return {}
        size = self._embedder.dimension * 2  # float16
        loaded = {
            keys[key]: np.frombuffer(raw, dtype=np.float16)
            for key, raw in found.items()
            if key in keys and isinstance(raw, bytes) and len(raw) == size
        }
        return {text: v for text, v in loaded.items() if np.isfinite(v).all()}  # else re-embed

    def index(
        self,
        index: HybridIndex,
        tenant: str,
        session: str,
        documents: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add the session's turn ``documents`` to ``index``: the vectors another process (or
        this one, before a restart) stored are read, not embedded again, and the ones embedded
        here are stored for the others.

        A document's ``embed`` (default: its ``text``) is the text embedded and the key its
        vector is stored under; its ``text`` is what the index searches lexically, which may
        say more (the turn it replies to)."""
        embed_of = {str(d["text"]): str(d.get("embed", d["text"])) for d in documents}
        vectors: dict[str, npt.NDArray[Any]] = {}
        fresh: dict[str, npt.NDArray[Any]] = {}

        def known(texts: Sequence[str]) -> dict[str, npt.NDArray[Any]]:
            wanted = list(dict.fromkeys(embed_of.get(t, t) for t in texts))
            vectors.update(self.load(tenant, session, wanted))
            missing = [w for w in wanted if w not in vectors]
            if missing:
                fresh.update(zip(missing, checked_embed(self._embedder, missing), strict=True))
                vectors.update(fresh)
            return {t: vectors[embed_of.get(t, t)] for t in texts}

        index.add([{k: v for k, v in d.items() if k != "embed"} for d in documents],
                  vectors=known)  # fmt: skip
        self.save(tenant, session, fresh)

    def save(self, tenant: str, session: str, vectors: Mapping[str, npt.ArrayLike]) -> int:
        """Store vectors by text; return how many were written (0 after a logged failure)."""
        if self._put is None or not vectors:
            return 0
        encoded = {
            self._key(text): np.asarray(vector, dtype=np.float16).tobytes()
            for text, vector in vectors.items()
        }
        try:
            self._put(tenant, session, encoded)
        except TokenleanError as exc:
            _log.warning("turn vectors of session %r not stored: %s", session, exc)
            return 0
        return len(encoded)
