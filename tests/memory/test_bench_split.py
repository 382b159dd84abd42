"""The memory benchmark's held-out split (deterministic, stratified, reported for every variant)
and its check that the items naming an evidence turn still say the answer."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenlean._memory.assembly import PackItem
from tokenlean._memory.transcript import Turn
from tokenlean.bench._memory import _answer_kept, memory_bench, split_questions
from tokenlean.testing import HashingEmbedder


def questions(n: int) -> list[dict[str, object]]:
    return [{"question": f"Question number {i}?", "category": 1 + i % 4} for i in range(n)]


def test_each_category_is_split_in_two_equal_halves() -> None:
    """Within a category, the halves differ by at most one question."""
    asked = questions(41)
    halves = split_questions(asked)
    assert set(halves) == {"tune", "held_out"}
    for category in (1, 2, 3, 4):
        mine = [h for q, h in zip(asked, halves, strict=True) if q["category"] == category]
        assert abs(mine.count("tune") - mine.count("held_out")) <= 1


def test_a_question_keeps_its_half_whatever_the_order_of_the_file() -> None:
    """The split depends on the questions' text, not on their position."""
    asked = questions(30)
    shuffled = asked[:]
    random.Random(7).shuffle(shuffled)
    first = dict(zip((q["question"] for q in asked), split_questions(asked), strict=True))
    again = dict(zip((q["question"] for q in shuffled), split_questions(shuffled), strict=True))
    assert first == again


def test_the_benchmark_reports_both_halves_for_every_variant(tmp_path: Path) -> None:
    """``split`` holds the tuning and held-out figures; their questions add up to all of them,
    and the top-level figures are still those of all the questions."""
    turns = [
        {"speaker": "Ann" if i % 2 == 0 else "Bob", "dia_id": f"D1:{i + 1}",
         "text": f"Filler line number {i} about the weather and nothing else."}
        for i in range(40)
    ]  # fmt: skip
    qa = []
    for i, word in enumerate(["cat", "dog", "bird", "fish", "horse", "goat"]):
        turns[3 + 5 * i]["text"] = f"I adopted a {word} named Pixel{i}."
        qa.append({"question": f"What is the name of the {word}?", "answer": f"Pixel{i}",
                   "evidence": [f"D1:{4 + 5 * i}"], "category": 1 + i % 2})  # fmt: skip
    path = tmp_path / "conv.json"
    path.write_text(json.dumps({"speaker_a": "Ann", "speaker_b": "Bob", "session_1": turns,
                                "session_1_date_time": "8 May, 2023", "qa": qa}))  # fmt: skip
    result = memory_bench([path], budget=300, embedder=HashingEmbedder(64))
    for variant in ("tokenlean", "full_transcript", "recent_window", "dense_top_turns"):
        figures = result[variant]
        halves = figures["split"]
        assert set(halves) == {"tune", "held_out"}
        assert halves["tune"]["questions"] + halves["held_out"]["questions"] == 6
        for half in halves.values():
            assert {"evidence_recall_all", "evidence_recall_any", "by_category"} <= set(half)
            assert set(half["by_category"]) == {"1", "2"}
        assert figures["questions"] == 6
        assert ("answer_terms_kept" in figures) == (variant == "tokenlean")
    assert result["tokenlean"]["answer_terms_kept"] == 1.0  # whole one-sentence turns


def test_an_item_naming_an_evidence_turn_without_its_answer_is_counted_as_losing_it() -> None:
    """A summary sentence that names the turn but leaves the answer out does not keep it; the
    turn's own line does; turns whose text lacks the answer's terms are not counted."""
    text = "We went to the council meeting. So many people wanted to adopt."
    turn = Turn(id="D1:4", index=3, role="user", content=text, timestamp=0.0)
    other = Turn(id="D1:5", index=4, role="assistant", content="Nice!", timestamp=0.0)
    question = {"question": "What did you see at the meeting?", "answer": "people wanting to adopt"}
    evidence = {"D1:4", "D1:5"}
    turns = {t.id: t for t in (turn, other)}
    cut = PackItem("summary", "user: We went to the council meeting.", 8, ("D1:4",))
    whole = PackItem("retrieved", f"[#3] user: {turn.content}", 16, ("D1:4",))
    assert _answer_kept(question, evidence, [cut], turns) == [False]
    assert _answer_kept(question, evidence, [cut, whole], turns) == [True]
    assert _answer_kept({**question, "answer": ""}, evidence, [whole], turns) == []
