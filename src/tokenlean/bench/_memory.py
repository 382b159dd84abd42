"""``tokenlean bench memory``: evidence recall of assembled contexts on LoCoMo conversations.

Every turn of a conversation is replayed into a :class:`ConversationMemory`; then, for each
question of categories 1 to 4, the context is assembled at the budget and scored: does it hold
the question's evidence turns (the turn's text, or an item derived from that turn and naming it
as its source)? Reported, in the same run, for tokenlean, the full transcript, a recent-turns
window at the same budget, and the dense top turns at the same budget.

An item derived from a turn may leave the answer out: ``answer_terms_kept`` (tokenlean only) is
the share of the evidence turns in the pack, among those whose text holds some of the answer's
key terms, that an item naming them says with all of those terms.

The questions are split in two halves, ``tune`` and ``held_out`` (:func:`split_questions`), and
every variant's figures are also given for each half (``split``): mechanisms are judged on the
tuning half, and the held-out half says whether a gain carries over to questions not looked at.
"""

from __future__ import annotations

import hashlib
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokenlean._embeddings import Embedder, default_embedder
from tokenlean._errors import InvalidInputError
from tokenlean._input import describe_value, read_json_file
from tokenlean._memory.assembly import PackItem, turn_text
from tokenlean._memory.conversation import ConversationMemory
from tokenlean._memory.summary import turn_label
from tokenlean._memory.transcript import Turn
from tokenlean._retrieval.documents import key_terms
from tokenlean._stats import p95
from tokenlean._tokens.counting import get_token_counter
from tokenlean._tokens.messages import count_message_tokens
from tokenlean.bench._memory_prefix import static_prefix_figures

__all__ = ["load_locomo", "memory_bench", "split_questions"]

_SESSION = re.compile(r"^session_(\d+)$")


LOCOMO_SHAPE = "see 'LoCoMo conversations' in docs/cli.md"


_MISSING = object()


def _bad(path: Path, what: str, value: Any) -> InvalidInputError:
    found = "missing" if value is _MISSING else f"{describe_value(value)}"
    return InvalidInputError(f"{path} is not LoCoMo data: {what} is {found} ({LOCOMO_SHAPE})")


def load_locomo(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, str]:
    """(messages, questions, speaker_a, speaker_b) of one LoCoMo conversation file.

    Raises:
        ConfigurationError: a missing file, or a folder.
        InvalidInputError: not UTF-8, not JSON, or not LoCoMo data; the message names the
            first field that is wrong and quotes at most a short excerpt of it.
    """
    data = read_json_file(path)
    if isinstance(data, list):
        raise InvalidInputError(
            f"{path} is not LoCoMo data: it holds {describe_value(data)}; give one file per "
            f"conversation ({LOCOMO_SHAPE})"
        )
    if not isinstance(data, dict):
        raise _bad(path, "the file", data)
    conversation = data.get("conversation", data)
    if not isinstance(conversation, dict):
        raise _bad(path, "'conversation'", conversation)
    speakers = []
    for key in ("speaker_a", "speaker_b"):
        if not isinstance(conversation.get(key), str):
            raise _bad(path, f"'conversation.{key}'", conversation.get(key, _MISSING))
        speakers.append(conversation[key])
    speaker_a, speaker_b = speakers
    sessions = sorted((int(m.group(1)), key) for key in conversation if (m := _SESSION.match(key)))
    messages = []
    for number, key in sessions:
        date = conversation.get(f"session_{number}_date_time")
        date = date if isinstance(date, str) else f"session {number}"
        turns = conversation[key]
        if not isinstance(turns, list):
            raise _bad(path, f"'{key}'", turns)
        for index, turn in enumerate(turns):
            where = f"turn {index} of '{key}'"
            if not isinstance(turn, dict):
                raise _bad(path, where, turn)
            for field in ("speaker", "dia_id", "text"):
                if not isinstance(turn.get(field), str):
                    raise _bad(path, f"{where}'s {field!r}", turn.get(field, _MISSING))
            metadata = {"date": date}
            if isinstance(turn.get("blip_caption"), str) and turn["blip_caption"]:
                metadata["caption"] = turn["blip_caption"]
            messages.append({
                "role": "user" if turn["speaker"] == speaker_a else "assistant",
                "content": turn["text"], "speaker": turn["speaker"],
                "id": turn["dia_id"], "metadata": metadata,
            })  # fmt: skip
    qa = data.get("qa", _MISSING)
    if not isinstance(qa, list):
        raise _bad(path, "'qa'", qa)
    questions = []
    for index, question in enumerate(qa):
        if not isinstance(question, dict):
            raise _bad(path, f"question {index}", question)
        if question.get("category") not in (1, 2, 3, 4):
            continue
        if not isinstance(question.get("question"), str):
            found = question.get("question", _MISSING)
            raise _bad(path, f"question {index}'s 'question'", found)
        if not isinstance(question.get("evidence", []), list):
            raise _bad(path, f"question {index}'s 'evidence'", question.get("evidence"))
        questions.append(question)
    return messages, questions, speaker_a, speaker_b


def _evidence(question: dict[str, Any]) -> set[str]:
    ids: set[str] = set()
    for item in question.get("evidence", []):
        ids.update(re.findall(r"D\d+:\d+", str(item)))
    return ids


SPLITS = ("tune", "held_out")


def split_questions(questions: Sequence[dict[str, Any]]) -> list[str]:
    """The half of each question, ``"tune"`` or ``"held_out"``, stratified by category.

    Within each category the questions are ordered by the SHA-256 of their text (ties, the same
    text twice, by position) and alternate between the halves, the first going to ``tune``: a
    deterministic split that depends on nothing but the questions, keeps every category's
    share equal in both halves, and puts a question in the same half whatever else the file
    holds of other categories.
    """
    halves = [""] * len(questions)
    by_category: dict[Any, list[tuple[str, int]]] = {}
    for position, question in enumerate(questions):
        digest = hashlib.sha256(str(question.get("question", "")).encode()).hexdigest()
        by_category.setdefault(question.get("category"), []).append((digest, position))
    for members in by_category.values():
        for rank, (_, position) in enumerate(sorted(members)):
            halves[position] = SPLITS[rank % 2]
    return halves


def _line(turn: Turn) -> str:
    return f"[{turn.id}] {turn_label(turn)}: {turn.content}"


def memory_bench(
    paths: list[Path],
    *,
    budget: int = 2000,
    embedder: Embedder | None = None,
    limit: int | None = None,
    latency_turns: int | Sequence[int] = 0,
) -> dict[str, Any]:
    """Run the benchmark over LoCoMo files and return its figures.

    ``tokenlean.add_ms_p95`` is the p95 of ``add()`` while the conversations are replayed one
    turn at a time. With ``latency_turns`` (one size or several), also time ``add()`` and
    assembly on the first file's turns repeated (with fresh ids) to each size: one row of
    ``latency_by_turns`` per size (``latency`` repeats the largest, as before).
    """
    embedder = embedder or default_embedder()
    count = get_token_counter()
    variants = ("tokenlean", "full_transcript", "recent_window", "dense_top_turns")
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    add_times: list[float] = []
    for number, path in enumerate(paths):
        messages, questions, speaker_a, speaker_b = load_locomo(path)
        questions = questions[: limit or None]
        system = (
            f"You answer questions about a long conversation between {speaker_a} and {speaker_b}."
        )
        memory = ConversationMemory(embedder=embedder, counter=count)
        session = f"conversation-{number}"
        for message in messages:
            start = time.perf_counter()
            memory.add(session, [message])
            add_times.append((time.perf_counter() - start) * 1000)
        turns = memory.turns(session)
        by_id = {t.id: t for t in turns}
        lines = [_line(t) for t in turns]
        line_tokens = [count(line) + 1 for line in lines]
        transcript = system + "\n" + "\n".join(lines)
        full_tokens = count_message_tokens(
            [{"role": "system", "content": transcript}, {"role": "user", "content": "x"}]
        ).total
        vectors = embedder.embed([f"{turn_label(t)}: {t.content}" for t in turns])
        for question, half in zip(questions, split_questions(questions), strict=True):
            evidence = _evidence(question)
            if not evidence:
                continue
            text = question["question"]
            q_tokens = count(text) + count(system) + 20
            # tokenlean
            start = time.perf_counter()
            pack = memory.context(session, budget=budget, system=system, user=text)
            elapsed = (time.perf_counter() - start) * 1000
            rows["tokenlean"].append(
                _row(question, evidence, pack.sources(), pack.tokens, elapsed, full_tokens, half)
                | {"kept": _answer_kept(question, evidence, pack.items, by_id)}
            )
            # full transcript
            rows["full_transcript"].append(
                _row(
                    question,
                    evidence,
                    {t.id for t in turns},
                    full_tokens + count(text),
                    0.0,
                    full_tokens,
                    half,
                )
            )
            # recent window
            start = time.perf_counter()
            room, chosen = budget - q_tokens, set()
            for turn, cost in zip(reversed(turns), reversed(line_tokens), strict=True):
                if cost > room:
                    break
                chosen.add(turn.id)
                room -= cost
            elapsed = (time.perf_counter() - start) * 1000
            rows["recent_window"].append(
                _row(question, evidence, chosen, budget - room, elapsed, full_tokens, half)
            )
            # dense top turns
            start = time.perf_counter()
            scores = vectors @ embedder.embed([text])[0]
            room, chosen = budget - q_tokens, set()
            for index in np.argsort(-scores):
                cost = line_tokens[int(index)]
                if cost <= room:
                    chosen.add(turns[int(index)].id)
                    room -= cost
                if room < 10:
                    break
            elapsed = (time.perf_counter() - start) * 1000
            rows["dense_top_turns"].append(
                _row(question, evidence, chosen, budget - room, elapsed, full_tokens, half)
            )
    if not rows["tokenlean"]:
        raise InvalidInputError("no questions with evidence in the given files")
    result: dict[str, Any] = {"budget": budget, **{name: _summary(r) for name, r in rows.items()}}
    result["tokenlean"]["add_ms_p95"] = round(p95(add_times), 3)
    # The static prefix across a replayed conversation (the first file's), issue 17.
    replay, _, speaker_a, speaker_b = load_locomo(paths[0])
    system = f"You answer questions about a long conversation between {speaker_a} and {speaker_b}."
    result["tokenlean"].update(
        static_prefix_figures(
            replay, system=system, budget=budget, embedder=embedder, counter=count
        )
    )
    sizes = [latency_turns] if isinstance(latency_turns, int) else list(latency_turns)
    sizes = sorted(n for n in sizes if n > 0)
    if sizes:
        messages, questions, _, _ = load_locomo(paths[0])
        questions = questions[: limit or None]
        result["latency_by_turns"] = [
            _latency(messages, questions, n, budget=budget, embedder=embedder, counter=count)
            for n in sizes
        ]
        largest = result["latency_by_turns"][-1]
        result["latency"] = {**largest, "calls": len(questions), "includes_query_embedding": True}
    return result


_TIMED_ADDS = 50


def _latency(
    messages: list[dict[str, Any]], questions: list[dict[str, Any]], turns: int, *, budget: int,
    embedder: Embedder, counter: Callable[[str], int],
) -> dict[str, Any]:  # fmt: skip
    """add() and assembly times on a conversation of ``turns`` turns: the messages repeated
    with fresh ids, added at once; then ``_TIMED_ADDS`` adds of one message each, timed; then
    one assembly per question (the first untimed: it embeds every turn)."""
    padded: list[dict[str, Any]] = []
    while len(padded) < turns + _TIMED_ADDS:
        copy = len(padded) // max(1, len(messages))
        padded.extend({**m, "id": f"{m['id']}~{copy}"} for m in messages)
    memory = ConversationMemory(embedder=embedder, counter=counter)
    memory.add("latency", padded[:turns])
    adds = []
    for message in padded[turns : turns + _TIMED_ADDS]:
        start = time.perf_counter()
        memory.add("latency", [message])
        adds.append((time.perf_counter() - start) * 1000)
    memory.context("latency", budget=budget, user="warm up")
    times = []
    for question in questions:
        start = time.perf_counter()
        memory.context("latency", budget=budget, user=question["question"])
        times.append((time.perf_counter() - start) * 1000)
    return {
        "turns": turns,
        "add_ms_p95": round(p95(adds), 3),
        "assembly_ms_p50": round(statistics.median(times), 3),
        "assembly_ms_p95": round(p95(times), 3),
    }


def _row(question: dict[str, Any], evidence: set[str], present: set[str], tokens: int,
         ms: float, full: int, half: str) -> dict[str, Any]:  # fmt: skip
    share = len(evidence & present) / len(evidence)
    return {"category": question["category"], "all": share == 1.0, "any": share,
            "tokens": tokens, "ms": ms, "full": full, "split": half}  # fmt: skip


def _answer_kept(
    question: dict[str, Any], evidence: set[str], items: Sequence[PackItem],
    turns: dict[str, Turn],
) -> list[bool]:  # fmt: skip
    """For each evidence turn in the pack whose text holds some of the answer's key terms,
    whether an item naming it as a source still holds all of those terms: an item derived
    from a turn (a summary sentence, any shortened rendering) names it, yet may have left the
    answer out."""
    answer = key_terms(str(question.get("answer", "")))
    kept: dict[str, bool] = {}
    for item in items:
        terms = key_terms(item.text)
        for source in item.sources:
            turn = turns.get(source)
            if source not in evidence or turn is None or not answer:
                continue
            needed = key_terms(turn_text(turn)) & answer
            if needed:
                kept[source] = kept.get(source, False) or needed <= terms
    return list(kept.values())


def _figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [r["ms"] for r in rows]
    tokens = statistics.fmean(r["tokens"] for r in rows)
    kept = [k for r in rows for k in r.get("kept", ())]
    answers = (
        {"answer_terms_kept": round(statistics.fmean(kept), 4) if kept else None}
        if any("kept" in r for r in rows)
        else {}
    )
    return {
        "questions": len(rows),
        "evidence_recall_all": round(statistics.fmean(1.0 if r["all"] else 0.0 for r in rows), 4),
        "evidence_recall_any": round(statistics.fmean(r["any"] for r in rows), 4),
        "mean_context_tokens": round(tokens, 1),
        "compression": round(statistics.fmean(r["full"] for r in rows) / tokens, 2)
        if tokens
        else 0.0,
        "assembly_ms_p50": round(statistics.median(ms), 3),
        "assembly_ms_p95": round(p95(ms), 3),
        **answers,
    }


def _by_category(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_category = {
        str(c): _figures([r for r in rows if r["category"] == c])
        for c in sorted({r["category"] for r in rows})
    }
    return {**_figures(rows), "by_category": by_category}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of all the questions, and of each half (``split``; a half without
    questions is left out)."""
    halves = {
        h: _by_category(part) for h in SPLITS if (part := [r for r in rows if r["split"] == h])
    }
    return {**_by_category(rows), "split": halves}


def print_report(result: dict[str, Any], emit: Callable[[str], None] = print) -> None:
    """A terminal summary of :func:`memory_bench`'s result."""
    emit(f"budget {result['budget']} tokens")
    for lat in result.get("latency_by_turns", []):
        emit(f"{lat['turns']} turns: add p95 {lat['add_ms_p95']:.2f} ms; assembly p50 "
             f"{lat['assembly_ms_p50']:.1f} ms, p95 {lat['assembly_ms_p95']:.1f} ms "
             "(query embedding included)")  # fmt: skip
    emit(f"add() p95 while replaying: {result['tokenlean']['add_ms_p95']:.2f} ms")
    emit(
        f"static prefix share: {result['tokenlean']['static_prefix_share']:.3f} "
        f"(one-block layout: {result['tokenlean']['static_prefix_share_one_block']:.3f})"
    )
    for name in ("tokenlean", "full_transcript", "recent_window", "dense_top_turns"):
        r = result[name]
        cats = " ".join(f"c{c}={v['evidence_recall_all']:.2f}" for c, v in r["by_category"].items())
        halves = " ".join(
            f"{h}={v['evidence_recall_all']:.3f}" for h, v in r.get("split", {}).items()
        )
        kept = r.get("answer_terms_kept")
        halves += f"  answer terms kept={kept:.3f}" if kept is not None else ""
        emit(
            f"{name:16} all={r['evidence_recall_all']:.3f} any={r['evidence_recall_any']:.3f} "
            f"tokens={r['mean_context_tokens']:.0f} x{r['compression']} "
            f"p50={r['assembly_ms_p50']:.1f}ms p95={r['assembly_ms_p95']:.1f}ms  {cats}  {halves}"
        )
