"""``tokenlean bench memory``: evidence recall of assembled contexts on LoCoMo conversations.

Every turn of a conversation is replayed into a :class:`ConversationMemory`; then, for each
question of categories 1 to 4, the context is assembled at the budget and scored: does it hold
the question's evidence turns (the turn's text, or an item derived from that turn and naming it
as its source)? Reported, in the same run, for tokenlean, the full transcript, a recent-turns
window at the same budget, and the dense top turns at the same budget.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tokenlean._embeddings import Embedder, default_embedder
from tokenlean._errors import ConfigurationError, InvalidInputError
from tokenlean._memory.conversation import ConversationMemory
from tokenlean._memory.summary import turn_label
from tokenlean._memory.transcript import Turn
from tokenlean._stats import p95
from tokenlean._tokens.counting import get_token_counter
from tokenlean._tokens.messages import count_message_tokens

__all__ = ["load_locomo", "memory_bench"]

_SESSION = re.compile(r"^session_(\d+)$")


def load_locomo(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, str]:
    """(messages, questions, speaker_a, speaker_b) of one LoCoMo conversation file.

    Raises:
        ConfigurationError: a missing file. InvalidInputError: not LoCoMo data.
    """
    if not path.is_file():
        raise ConfigurationError(f"no such file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        conversation = data.get("conversation", data)
        speaker_a, speaker_b = conversation["speaker_a"], conversation["speaker_b"]
        sessions = sorted(
            (int(m.group(1)), key) for key in conversation if (m := _SESSION.match(key))
        )
        messages = []
        for number, key in sessions:
            date = conversation.get(f"session_{number}_date_time", f"session {number}")
            for turn in conversation[key]:
                metadata = {"date": date}
                if turn.get("blip_caption"):
                    metadata["caption"] = turn["blip_caption"]
                messages.append({
                    "role": "user" if turn["speaker"] == speaker_a else "assistant",
                    "content": turn["text"], "speaker": turn["speaker"],
                    "id": turn["dia_id"], "metadata": metadata,
                })  # fmt: skip
        questions = [q for q in data["qa"] if q.get("category") in (1, 2, 3, 4)]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not LoCoMo data: {exc!r}") from exc
    return messages, questions, speaker_a, speaker_b


def _evidence(question: dict[str, Any]) -> set[str]:
    ids: set[str] = set()
    for item in question.get("evidence", []):
        ids.update(re.findall(r"D\d+:\d+", str(item)))
    return ids


def _line(turn: Turn) -> str:
    return f"[{turn.id}] {turn_label(turn)}: {turn.content}"


def memory_bench(
    paths: list[Path],
    *,
    budget: int = 2000,
    embedder: Embedder | None = None,
    limit: int | None = None,
    latency_turns: int = 0,
) -> dict[str, Any]:
    """Run the benchmark over LoCoMo files and return its figures.

    With ``latency_turns``, also time assembly on the first file's turns repeated (with fresh
    ids) to that many turns, over its questions.
    """
    embedder = embedder or default_embedder()
    count = get_token_counter()
    variants = ("tokenlean", "full_transcript", "recent_window", "dense_top_turns")
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for number, path in enumerate(paths):
        messages, questions, speaker_a, speaker_b = load_locomo(path)
        questions = questions[: limit or None]
        system = (
            f"You answer questions about a long conversation between {speaker_a} and {speaker_b}."
        )
        memory = ConversationMemory(embedder=embedder, counter=count)
        session = f"conversation-{number}"
        for message in messages:
            turn_id = message["id"]
            memory.add(session, [{**message, "id": turn_id}])
        turns = memory.turns(session)
        lines = [_line(t) for t in turns]
        line_tokens = [count(line) + 1 for line in lines]
        transcript = system + "\n" + "\n".join(lines)
        full_tokens = count_message_tokens(
            [{"role": "system", "content": transcript}, {"role": "user", "content": "x"}]
        ).total
        vectors = embedder.embed([f"{turn_label(t)}: {t.content}" for t in turns])
        for question in questions:
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
                _row(question, evidence, pack.sources(), pack.tokens, elapsed, full_tokens)
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
                _row(question, evidence, chosen, budget - room, elapsed, full_tokens)
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
                _row(question, evidence, chosen, budget - room, elapsed, full_tokens)
            )
    if not rows["tokenlean"]:
        raise InvalidInputError("no questions with evidence in the given files")
    result: dict[str, Any] = {"budget": budget, **{name: _summary(r) for name, r in rows.items()}}
    if latency_turns:
        messages, questions, _, _ = load_locomo(paths[0])
        padded: list[dict[str, Any]] = []
        while len(padded) < latency_turns:
            copy = len(padded) // max(1, len(messages))
            padded.extend({**m, "id": f"{m['id']}~{copy}"} for m in messages)
        memory = ConversationMemory(embedder=embedder, counter=count)
        memory.add("latency", padded[:latency_turns])
        memory.context("latency", budget=budget, user="warm up")
        times = []
        for question in questions[: limit or None]:
            start = time.perf_counter()
            memory.context("latency", budget=budget, user=question["question"])
            times.append((time.perf_counter() - start) * 1000)
        result["latency"] = {
            "turns": latency_turns,
            "calls": len(times),
            "assembly_ms_p50": round(statistics.median(times), 3),
            "assembly_ms_p95": round(p95(times), 3),
            "includes_query_embedding": True,
        }
    return result


def _row(question: dict[str, Any], evidence: set[str], present: set[str], tokens: int,
         ms: float, full: int) -> dict[str, Any]:  # fmt: skip
    share = len(evidence & present) / len(evidence)
    return {"category": question["category"], "all": share == 1.0, "any": share,
            "tokens": tokens, "ms": ms, "full": full}  # fmt: skip


def _figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [r["ms"] for r in rows]
    tokens = statistics.fmean(r["tokens"] for r in rows)
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
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_category = {
        str(c): _figures([r for r in rows if r["category"] == c])
        for c in sorted({r["category"] for r in rows})
    }
    return {**_figures(rows), "by_category": by_category}


def print_report(result: dict[str, Any], emit: Callable[[str], None] = print) -> None:
    """A terminal summary of :func:`memory_bench`'s result."""
    emit(f"budget {result['budget']} tokens")
    if "latency" in result:
        lat = result["latency"]
        emit(f"assembly over {lat['turns']} turns: p50 {lat['assembly_ms_p50']:.1f} ms, "
             f"p95 {lat['assembly_ms_p95']:.1f} ms (query embedding included)")  # fmt: skip
    for name in ("tokenlean", "full_transcript", "recent_window", "dense_top_turns"):
        r = result[name]
        cats = " ".join(f"c{c}={v['evidence_recall_all']:.2f}" for c, v in r["by_category"].items())
        emit(
            f"{name:16} all={r['evidence_recall_all']:.3f} any={r['evidence_recall_any']:.3f} "
            f"tokens={r['mean_context_tokens']:.0f} x{r['compression']} "
            f"p50={r['assembly_ms_p50']:.1f}ms p95={r['assembly_ms_p95']:.1f}ms  {cats}"
        )
