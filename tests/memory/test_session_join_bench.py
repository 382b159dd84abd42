"""The session-join benchmark measures what it says: with stored vectors a joining replica
embeds only the question; without them, every turn."""

from __future__ import annotations

from pathlib import Path

from tokenlean.bench._session_join import session_join_bench
from tokenlean.testing import HashingEmbedder


def test_a_joining_replica_embeds_only_the_question(tmp_path: Path) -> None:
    figures = session_join_bench(
        f"sqlite:///{tmp_path / 'm.db'}", turns=60, embedder=HashingEmbedder(32), repeats=1
    )
    assert figures["turns"] == 60
    assert figures["join_embedded_texts"] == 1
    assert figures["join_embedded_texts_embedding"] == 60 + 1
    assert figures["join_context_ms"] > 0
    assert figures["join_context_ms_embedding"] > 0
