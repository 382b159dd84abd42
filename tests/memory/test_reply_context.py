"""A turn is searched lexically with the turn it replies to, and embedded as itself (issue 17):
a reply that holds the answer is found by the words of the question it answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tokenlean as tl
from tokenlean._memory.summary import turn_label
from tokenlean._memory.turn_vectors import TurnVectors
from tokenlean.testing import HashingEmbedder

QUESTION = "Have you ever tried kayaking on the Sognefjord?"
REPLY = "Yes, twice with my sister; it was unforgettable."


def _filler(start: int, pairs: int) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + pairs):
        out.append({"role": "user", "content": f"Where is parcel {i}? It was for Lyon."})
        out.append({"role": "assistant", "content": f"Parcel {i} leaves the depot on day {i}."})
    return out


def _conversation() -> list[dict[str, Any]]:
    return [
        *_filler(0, 30),
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": REPLY},
        *_filler(30, 30),
    ]


def _ids(memory: tl.ConversationMemory, content: str) -> str:
    return next(t.id for t in memory.turns("s") if t.content == content)


def test_a_reply_is_found_by_the_words_of_the_turn_it_answers() -> None:
    # No neighbours: the reply is in the pack only if retrieval itself ranks it.
    memory = tl.ConversationMemory(
        embedder=HashingEmbedder(64), budget=tl.MemoryBudget(neighbours=0)
    )
    memory.add("s", _conversation())
    pack = memory.context("s", budget=300, user="Which fjord did we go kayaking on?")
    assert _ids(memory, REPLY) in pack.sources()
    # It is rendered as itself: the turn it replies to is searched, not shown with it.
    line = next(i.text for i in pack.items if i.sources == (_ids(memory, REPLY),))
    assert "Sognefjord" not in line
    assert line.endswith(REPLY)


def test_the_reply_is_embedded_and_stored_as_its_own_text() -> None:
    store = tl.MemoryTranscriptStore()
    embedder = HashingEmbedder(64)
    memory = tl.ConversationMemory(store, embedder=embedder)
    memory.add("s", _conversation())
    memory.context("s", budget=300, user="kayaking?")
    reply = next(t for t in memory.turns("s") if t.content == REPLY)
    own = f"{turn_label(reply)}: {REPLY}"
    stored = TurnVectors(store, embedder).load("default", "s", [own])
    assert np.allclose(stored[own], embedder.embed([own])[0], atol=1e-2)


class FlakyEmbedder(HashingEmbedder):
    """Fails on the calls listed in ``fail`` (counted from 0)."""

    def __init__(self, fail: set[int]) -> None:
        super().__init__(64)
        self.fail, self.calls = fail, 0

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        if self.calls - 1 in self.fail:
            raise RuntimeError("model unavailable")
        return super().embed(texts)


def _indexed_texts(memory: tl.ConversationMemory) -> list[str]:
    index = memory._state("default", "s").index
    assert index is not None
    return sorted(chunk.text for chunk in index.built().chunks)


@pytest.mark.parametrize("fail", [set(), {1}], ids=["steady", "a failed embedding in between"])
def test_turn_by_turn_indexing_equals_indexing_at_once(fail: set[int]) -> None:
    store = tl.MemoryTranscriptStore()
    stepwise = tl.ConversationMemory(store, embedder=FlakyEmbedder(fail))
    messages = _conversation()[50:70]
    for message in messages:
        stepwise.add("s", [message])
        stepwise.context("s", budget=400, user="kayaking?")
    stepwise.context("s", budget=400, user="kayaking?")
    at_once = tl.ConversationMemory(store, embedder=HashingEmbedder(64))
    at_once.context("s", budget=400, user="kayaking?")
    assert _indexed_texts(stepwise) == _indexed_texts(at_once)
    assert any(REPLY in t and QUESTION in t for t in _indexed_texts(at_once))


def test_the_question_taken_from_the_transcript_is_not_searched_for() -> None:
    # The adapters store the user turn, then assemble with user=None: the question must not
    # match itself and take a place among the best hits.
    memory = tl.ConversationMemory(embedder=HashingEmbedder(64))
    memory.add("s", _conversation())
    memory.add("s", [{"role": "user", "content": "Which fjord did we go kayaking on?"}])
    memory.context("s", budget=400)
    question = memory.turns("s")[-1]
    assert not any(question.content in t for t in _indexed_texts(memory))
    memory.add("s", [{"role": "assistant", "content": "The Sognefjord."}])
    memory.context("s", budget=400, user="And when?")
    assert any(t.startswith(f"{turn_label(question)}: ") for t in _indexed_texts(memory))
