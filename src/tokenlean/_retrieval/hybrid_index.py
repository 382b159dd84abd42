"""The hybrid index: chunks with BM25 and dense search, incremental, persistent.

Documents are split into sentence-respecting chunks; each chunk is embedded once and its vector
stored (float16) with its text and provenance. Adding a document with an existing id replaces it;
deleting removes its chunks. The lexical and vector indexes are brought up to date lazily on the
next search after a change: new documents are merged in at about the cost of their chunks, a
replacement or deletion rebuilds them (well under a second for tens of thousands of chunks).
With a ``path`` the index lives in a SQLite file and reopens without re-embedding anything.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._embeddings import Embedder, as_embedder, default_embedder
from tokenlean._errors import ConfigurationError, InvalidInputError, StoreError
from tokenlean._extras import require
from tokenlean._retrieval.documents import Chunk, Document, SentenceSplitter
from tokenlean._retrieval.lexical import IncrementalBM25
from tokenlean._sqlite_file import open_database

__all__ = ["HybridIndex"]

FORMAT = "tokenlean-retrieval-index"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE documents (id TEXT PRIMARY KEY, text TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE TABLE chunks (
    doc_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (doc_id, position)
);
"""


@dataclass
class _Built:
    """The searchable arrays: chunks in (document id, position) order, updated after changes."""

    chunks: list[Chunk]
    vectors: npt.NDArray[np.float32]
    bm25: IncrementalBM25


def _as_document(item: Document | Mapping[str, Any]) -> Document:
    if isinstance(item, Document):
        return item
    if isinstance(item, Mapping):
        try:
            return Document(str(item["id"]), item["text"], dict(item.get("metadata") or {}))
        except KeyError as exc:
            raise InvalidInputError(f"a document needs 'id' and 'text', missing {exc}") from None
    raise InvalidInputError(f"not a document: {type(item).__name__}")


class HybridIndex:
    """Documents split into chunks, searchable by BM25 and by embedding similarity. Thread-safe.

    Args:
        path: SQLite file to persist to (None: in memory only).
        embedder: embeds chunks and queries (default: the bundled all-MiniLM-L6-v2).
        splitter: chunking (default: :class:`SentenceSplitter` with 160-token chunks).

    Raises:
        CorruptedStoreError / ForeignStoreError: the file is damaged or not a tokenlean index.
        ConfigurationError: the file was built with another embedder or splitter.

    Example:
        >>> from tokenlean.testing import HashingEmbedder
        >>> index = HybridIndex(embedder=HashingEmbedder())
        >>> index.add([{"id": "a", "text": "Refunds take five days."}])
        1
        >>> len(index), index.chunk_count
        (1, 1)
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        embedder: Embedder | None = None,
        splitter: SentenceSplitter | None = None,
    ) -> None:
        require(
            *(("retrieval",) if embedder is not None else ("retrieval", "embeddings")),
            what="HybridIndex (BM25 and dense search)",
        )
        self._embedder = as_embedder(embedder) if embedder is not None else None
        self.splitter = splitter or SentenceSplitter()
        self._lock = threading.RLock()
        self._docs: dict[str, Document] = {}
        self._chunks: dict[str, list[tuple[Chunk, npt.NDArray[np.float16]]]] = {}
        self._built: _Built | None = None
        self._added: list[str] = []  # new documents not yet in self._built
        self._instance = uuid.uuid4().hex[:12]
        self._revision = 0
        self.path = Path(path) if path is not None else None
        self._conn: sqlite3.Connection | None = None
        if self.path is not None:
            self._open(self.path)

    # ------------------------------------------------------------------ persistence

    def _identity(self) -> dict[str, str]:
        embedder = self.embedder
        name = str(getattr(embedder, "model_name", None) or type(embedder).__qualname__)
        return {"embedder": name, "dimension": str(embedder.dimension),
                "splitter": self.splitter.config()}  # fmt: skip

    def _open(self, path: Path) -> None:
        identity = self._identity()
        conn, meta = open_database(
            path,
            fmt=FORMAT,
            schema_version=SCHEMA_VERSION,
            schema=_SCHEMA,
            initial_meta={**identity, "instance": self._instance, "revision": "0"},
        )
        for key, value in identity.items():
            if meta.get(key) != value:
                conn.close()
                raise ConfigurationError(
                    f"{path} was built with {key} {meta.get(key)!r}, not {value!r}; "
                    "open it with the same settings or build a new index"
                )
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn = conn
        self._instance = meta.get("instance", self._instance)
        self._revision = int(meta.get("revision", "0"))
        for doc_id, text, metadata in conn.execute("SELECT id, text, metadata FROM documents"):
            self._docs[doc_id] = Document(doc_id, text, json.loads(metadata))
        rows = conn.execute(
            'SELECT doc_id, position, text, start, "end", vector FROM chunks '
            "ORDER BY doc_id, position"
        )
        for doc_id, position, text, start, end, vector in rows:
            document = self._docs[doc_id]
            chunk = Chunk(f"{doc_id}#{position}", doc_id, position, text, start, end,
                          document.metadata)  # fmt: skip
            self._chunks.setdefault(doc_id, []).append(
                (chunk, np.frombuffer(vector, dtype=np.float16))
            )

    def _persist(self, added: Sequence[Document], deleted: Sequence[str]) -> None:
        if self._conn is None:
            return
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for doc_id in deleted:
                conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
            for document in added:
                conn.execute("DELETE FROM documents WHERE id = ?", (document.id,))
                conn.execute(
                    "INSERT INTO documents (id, text, metadata) VALUES (?, ?, ?)",
                    (document.id, document.text, json.dumps(dict(document.metadata))),
                )
                conn.executemany(
                    'INSERT INTO chunks (doc_id, position, text, start, "end", vector) '
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (c.doc_id, c.position, c.text, c.start, c.end, v.tobytes())
                        for c, v in self._chunks.get(document.id, [])
                    ],
                )
            conn.execute(
                "UPDATE tokenlean_meta SET value = ? WHERE name = 'revision'",
                (str(self._revision),),
            )
            conn.execute("COMMIT")
        except Exception as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"could not save the index to {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the index file (a memory-only index just stays usable)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------------ changes

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    @property
    def version(self) -> str:
        """Changes with every add or delete; keys the retrieval cache."""
        return f"{self._instance}:{self._revision}"

    def add(
        self,
        documents: Iterable[Document | Mapping[str, Any]],
        *,
        vectors: Mapping[str, npt.ArrayLike]
        | Callable[[Sequence[str]], Mapping[str, npt.ArrayLike]]
        | None = None,
    ) -> int:
        """Index documents (replacing any with the same id); return the number of chunks added.

        Nothing is changed if any document is invalid or embedding fails.

        Args:
            documents: :class:`Document` objects or mappings with ``id``, ``text`` and optional
                ``metadata``.
            vectors: embeddings already known, by chunk text (from :meth:`vectors_of` or a
                store), or a function given the chunk texts that returns those it knows: a
                chunk whose text is there is not embedded again. A vector of another length
                than the embedder's is ignored and the chunk embedded.

        Raises:
            InvalidInputError: a document without an id or text.
        """
        docs = [_as_document(item) for item in documents]
        if len({d.id for d in docs}) != len(docs):
            raise InvalidInputError("the same document id appears twice in one add()")
        chunked = [(doc, self.splitter.split(doc)) for doc in docs]
        texts = [chunk.text for _, chunks in chunked for chunk in chunks]
        known = vectors(texts) if callable(vectors) else vectors
        embedded = self._embed_unknown(texts, known or {})
        with self._lock:
            if any(doc.id in self._docs for doc in docs):
                self._built = None  # a replacement: rebuilt on the next search
                self._added = []
            elif self._built is not None:
                self._added.extend(doc.id for doc in docs)
            row = 0
            for doc, chunks in chunked:
                self._docs[doc.id] = doc
                self._chunks[doc.id] = []
                for chunk in chunks:
                    self._chunks[doc.id].append((chunk, embedded[row].astype(np.float16)))
                    row += 1
            self._revision += 1
            self._persist(docs, [])
        return len(texts)

    def _embed_unknown(
        self, texts: list[str], known: Mapping[str, npt.ArrayLike]
    ) -> npt.NDArray[np.float32]:
        """One row per text: the known vector where there is one of the embedder's length, the
        embedder's own for the others (one call for all of them)."""
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        dimension = self.embedder.dimension
        out = np.zeros((len(texts), dimension), dtype=np.float32)
        missing = []
        for row, text in enumerate(texts):
            vector = known.get(text)
            flat = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(-1)
            if flat is not None and flat.shape == (dimension,):
                out[row] = flat
            else:
                missing.append(row)
        if missing:
            out[missing] = self.embedder.embed([texts[row] for row in missing])
        return out

    def vectors_of(self, doc_ids: Iterable[str]) -> dict[str, npt.NDArray[np.float16]]:
        """The stored vectors of these documents' chunks, by chunk text (unknown ids are
        skipped): what :meth:`add` takes back as ``vectors`` without embedding again."""
        with self._lock:
            return {
                chunk.text: vector
                for doc_id in doc_ids
                for chunk, vector in self._chunks.get(doc_id, [])
            }

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Remove documents by id; return how many existed."""
        with self._lock:
            removed = [d for d in doc_ids if d in self._docs]
            for doc_id in removed:
                del self._docs[doc_id]
                self._chunks.pop(doc_id, None)
            if removed:
                self._revision += 1
                self._built = None
                self._added = []
                self._persist([], removed)
            return len(removed)

    def get(self, doc_id: str) -> Document | None:
        """The indexed document with this id, if any."""
        with self._lock:
            return self._docs.get(doc_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._docs)

    @property
    def chunk_count(self) -> int:
        with self._lock:
            return sum(len(chunks) for chunks in self._chunks.values())

    # ------------------------------------------------------------------ search support

    def built(self) -> _Built:
        """The searchable arrays, brought up to date if the index changed since the last
        search: new documents merged in, a rebuild after a replacement or deletion."""
        with self._lock:
            if self._built is not None and self._added:
                self._built = self._merged(self._built, sorted(self._added))
            self._added = []
            if self._built is None:
                pairs = [pair for doc_id in sorted(self._chunks) for pair in self._chunks[doc_id]]
                chunks = [chunk for chunk, _ in pairs]
                vectors = (
                    np.stack([vector for _, vector in pairs]).astype(np.float32)
                    if pairs
                    else np.zeros((0, self.embedder.dimension), dtype=np.float32)
                )
                self._built = _Built(chunks, vectors, IncrementalBM25([c.text for c in chunks]))
            return self._built

    def _merged(self, built: _Built, doc_ids: list[str]) -> _Built:
        """``built`` with the chunks of the new documents ``doc_ids`` (sorted) inserted in order,
        at about the cost of those chunks (the arrays are copied, nothing is re-scored)."""
        pairs = [pair for doc_id in doc_ids for pair in self._chunks.get(doc_id, [])]
        if not pairs:
            return built
        new = [chunk for chunk, _ in pairs]
        positions = [
            bisect_left(built.chunks, (c.doc_id, c.position), key=lambda c: (c.doc_id, c.position))
            for c in new
        ]
        rows = np.stack([vector for _, vector in pairs]).astype(np.float32)
        chunks: list[Chunk] = []
        vectors = np.empty((len(built.chunks) + len(new), rows.shape[1]), dtype=np.float32)
        start = 0
        for row, (position, chunk) in enumerate(zip(positions, new, strict=True)):
            chunks.extend(built.chunks[start:position])
            chunks.append(chunk)
            vectors[start + row : position + row] = built.vectors[start:position]
            vectors[position + row] = rows[row]
            start = position
        chunks.extend(built.chunks[start:])
        vectors[start + len(new) :] = built.vectors[start:]
        return _Built(chunks, vectors, built.bm25.inserted(positions, [c.text for c in new]))
