"""Latency-path threading: a small batch is embedded on one torch thread, and the dense search's
matrix-vector product runs on the calling thread, with the same results as before."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from tokenlean import _embeddings
from tokenlean._retrieval.search import _similarities

torch = pytest.importorskip("torch")


class _ThreadCountingModel:
    """A stand-in for a SentenceTransformer that records torch's thread count at each encode."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def encode(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        self.threads.append(torch.get_num_threads())
        rows = np.ones((len(texts), 4), dtype=np.float32)
        return rows / 2.0

    def get_embedding_dimension(self) -> int:
        return 4


@pytest.fixture
def two_threads() -> Any:
    configured = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(configured)


def _embedder_with(model: _ThreadCountingModel) -> _embeddings.SentenceTransformerEmbedder:
    embedder = _embeddings.SentenceTransformerEmbedder("stand-in")
    embedder._loaded = (model, threading.Lock())
    return embedder


def test_a_single_text_is_embedded_on_one_thread(two_threads: None) -> None:
    """One text runs with one intra-op thread, and the configured count is restored after."""
    model = _ThreadCountingModel()
    _embedder_with(model).embed(["when did Caroline go to the support group?"])
    assert model.threads == [1]
    assert torch.get_num_threads() == 2


def test_a_small_batch_is_embedded_on_one_thread(two_threads: None) -> None:
    """The turns a chat adds between two calls (a pair, a tool result) are latency work too."""
    model = _ThreadCountingModel()
    _embedder_with(model).embed(["first turn", "second turn", "third turn"])
    assert model.threads == [1]
    assert torch.get_num_threads() == 2


def test_a_batch_is_embedded_with_the_configured_threads(two_threads: None) -> None:
    """More texts than a chat adds between two calls keep torch's configured thread count
    (throughput work: indexing a session, a document set)."""
    model = _ThreadCountingModel()
    _embedder_with(model).embed([f"turn {i}" for i in range(_embeddings.LATENCY_BATCH + 1)])
    assert model.threads == [2]


def test_the_thread_count_is_restored_when_encoding_fails(two_threads: None) -> None:
    """A failing encode still gives torch back its configured thread count."""

    class Failing(_ThreadCountingModel):
        def encode(self, texts: Sequence[str], **_: Any) -> np.ndarray:
            raise RuntimeError("out of memory")

    with pytest.raises(_embeddings.EmbeddingError):
        _embedder_with(Failing()).embed(["one text"])
    assert torch.get_num_threads() == 2


def test_a_single_thread_configuration_is_left_alone() -> None:
    """When torch already runs on one thread, the block changes nothing."""
    configured = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _embeddings._intra_op_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(configured)


def test_dense_similarities_equal_the_matrix_product() -> None:
    """The single-threaded product gives ``vectors @ query`` (float32, float rounding aside)."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((10_000, 384)).astype(np.float32)
    query = rng.standard_normal(384).astype(np.float32)
    scores = _similarities(vectors, query)
    assert scores.dtype == np.float32
    assert scores.shape == (10_000,)
    np.testing.assert_allclose(scores, vectors @ query, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_bundled_model_gives_a_query_the_same_vector_alone_as_in_a_batch() -> None:
    """One-thread embedding of a query equals its row in a batch embedded with more threads."""
    pytest.importorskip("sentence_transformers")
    embedder = _embeddings.default_embedder()
    texts = ["What did Melanie paint last year?", "Caroline went to a support group."]
    alone = embedder.embed(texts[:1])[0]
    batch = embedder.embed(texts)[0]
    np.testing.assert_allclose(alone, batch, atol=1e-5)
