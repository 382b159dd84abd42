"""add() costs the same at turn 100 and at turn 10,000, on both transcript stores."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest

import tokenlean as tl
from tokenlean._stats import rank_percentile
from tokenlean.testing import FakeClock, HashingEmbedder

ROUNDS = 5
ADDS_PER_ROUND = 100


def pair(i: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"Question {i}: where is order {1000 + i}, shipped to Lyon?"},
        {"role": "assistant", "content": f"Answer {i}: order {1000 + i} leaves on Monday."},
    ]


def fill(memory: tl.ConversationMemory, session: str, turns: int) -> None:
    """Bring a session to ``turns`` turns through add(), summaries included."""
    batch = 250  # pairs per add
    for start in range(0, turns // 2, batch):
        memory.add(session, [m for i in range(start, min(start + batch, turns // 2))
                             for m in pair(i)])  # fmt: skip


def add_p95(memory: tl.ConversationMemory, session: str, first: int) -> float:
    """p95 of the wall time of ADDS_PER_ROUND adds of one user/assistant pair, in ms."""
    times = []
    for i in range(first, first + ADDS_PER_ROUND):
        start = time.perf_counter()
        memory.add(session, pair(i))
        times.append((time.perf_counter() - start) * 1000)
    return rank_percentile(sorted(times), 0.95)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_add_costs_the_same_at_100_and_at_10000_turns(backend: str, tmp_path: Path) -> None:
    """The median over rounds of p95(add at 10,000 turns) / p95(add at 100 turns) stays below 3
    (the store reads a bounded range, never the transcript); the two sessions share one store
    and are measured in alternation, so machine noise hits both."""
    store = tl.SQLiteTranscriptStore(tmp_path / "memory.db") if backend == "sqlite" else None
    memory = tl.ConversationMemory(store, embedder=HashingEmbedder(64), clock=FakeClock())
    fill(memory, "long", 10_000)
    add_p95(memory, "long", 10_000)  # warm up
    ratios = []
    for round_ in range(ROUNDS):
        first = 20_000 + round_ * ADDS_PER_ROUND
        fill(memory, f"short-{round_}", 100)  # a fresh session: 100 to 300 turns
        short = add_p95(memory, f"short-{round_}", first)
        long = add_p95(memory, "long", first)
        ratios.append(long / short)
    assert memory.count("long") == 10_000 + 2 * ADDS_PER_ROUND * (ROUNDS + 1)
    assert statistics.median(ratios) < 3.0, ratios
    if store is not None:
        store.close()
