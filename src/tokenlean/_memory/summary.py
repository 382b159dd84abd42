"""The rolling summary: key statements of older turns, each traceable to the turn it came from.

The summary is updated incrementally: only turns not yet summarized are read, and the result is
merged with the previous summary's items (which are kept as they are, never re-summarized, so
the summary does not drift). The built-in :class:`ExtractiveSummarizer` needs no LLM: it keeps
each turn's most informative sentence (names, numbers, dates and content words score), and
when the summary outgrows its budget it drops the least informative items. An LLM-backed
summarizer plugs in through the same port (see the LangChain and LlamaIndex adapters).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

from tokenlean._memory.transcript import Turn
from tokenlean._retrieval.documents import split_sentences

__all__ = [
    "ExtractiveSummarizer",
    "PromptSummarizer",
    "RollingSummary",
    "Summarizer",
    "SummaryItem",
    "turn_label",
]

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]+|\d[\d.,:/]*")
_STOP = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "but",
        "if",
        "then",
        "so",
        "of",
        "at",
        "by",
        "for",
        "from",
        "in",
        "into",
        "on",
        "to",
        "with",
        "about",
        "is",
        "am",
        "are",
        "was",
        "were",
        "be",
        "been",
        "have",
        "has",
        "had",
        "do",
        "does",
        "did",
        "will",
        "would",
        "can",
        "could",
        "should",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "it",
        "they",
        "them",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "what",
        "when",
        "where",
        "who",
        "how",
        "just",
        "really",
        "very",
        "also",
        "too",
        "yeah",
        "yes",
        "oh",
        "wow",
        "hey",
        "hi",
        "thanks",
        "thank",
        "okay",
        "ok",
        "like",
        "got",
        "get",
        "go",
        "going",
        "know",
        "think",
        "that's",
        "it's",
        "i'm",
        "you're",
        "don't",
    ]
)


@dataclass(frozen=True)
class SummaryItem:
    """One statement of the summary, with the ids of the turns it came from and its weight."""

    text: str
    sources: tuple[str, ...]
    salience: float = 0.0


@dataclass(frozen=True)
class RollingSummary:
    """The summary so far: its items, and how many turns (from the start) it covers.

    Example:
        >>> summary = RollingSummary((SummaryItem("user (2024-05-01): Flight moved to 14 May.",
        ...                                       ("t0",), 12.0),), covered=3)
        >>> summary.to_json()
        {'covered': 3, 'items': [['user (2024-05-01): Flight moved to 14 May.', ['t0'], 12.0]]}
        >>> RollingSummary.from_json(summary.to_json()) == summary
        True
    """

    items: tuple[SummaryItem, ...] = ()
    covered: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "covered": self.covered,
            "items": [[i.text, list(i.sources), i.salience] for i in self.items],
        }

    @classmethod
    def from_json(cls, data: object) -> RollingSummary:
        if not isinstance(data, dict):
            return cls()
        items = tuple(SummaryItem(t, tuple(s), float(w)) for t, s, w in data.get("items", []))
        return cls(items, int(data.get("covered", 0)))


@runtime_checkable
class Summarizer(Protocol):
    """Merges new turns into a summary; returns the new item list."""

    def summarize(self, previous: RollingSummary, turns: Sequence[Turn]) -> list[SummaryItem]: ...


def turn_label(turn: Turn) -> str:
    """``speaker (date)``: who spoke and when, for rendering turns and summary items."""
    who = turn.speaker or turn.role
    date = turn.metadata.get("date") if turn.metadata else None
    if not date:
        date = datetime.fromtimestamp(turn.timestamp, tz=timezone.utc).strftime("%Y-%m-%d")
    return f"{who} ({date})"


def _salience(sentence: str) -> float:
    words = _WORD.findall(sentence)
    content = [w for w in words if w.lower() not in _STOP]
    names = sum(1 for w in words[1:] if w[0].isupper())
    numbers = sum(1 for w in words if w[0].isdigit())
    return len(content) + 2.0 * names + 2.0 * numbers


class ExtractiveSummarizer:
    """Keeps each turn's most informative sentence; no model needed.

    Args:
        max_tokens: the summary's size limit; past it, the least informative items go.
        counter: token counter for that limit.
        min_salience: sentences below this score (greetings, "yeah, totally") are skipped.

    Example:
        >>> from tokenlean import Turn
        >>> turns = [
        ...     Turn("t0", 0, "user", "Hi! Please move my Lisbon flight from 12 May to 14 May.",
        ...          1714600000.0),
        ...     Turn("t1", 1, "assistant", "Done. Flight TP 1351 now leaves on 14 May at 09:40.",
        ...          1714600060.0),
        ...     Turn("t2", 2, "user", "Thanks, great.", 1714600120.0),
        ... ]
        >>> for item in ExtractiveSummarizer().summarize(RollingSummary(), turns):
        ...     print(item.sources, item.text)
        ('t0',) user (2024-05-01): Please move my Lisbon flight from 12 May to 14 May.
        ('t1',) assistant (2024-05-01): Flight TP 1351 now leaves on 14 May at 09:40.
    """

    def __init__(
        self, *, max_tokens: int = 1500, counter: Callable[[str], int] | None = None,
        min_salience: float = 4.0,
    ) -> None:  # fmt: skip
        from tokenlean._tokens.counting import get_token_counter

        self.max_tokens = max_tokens
        self.counter = counter or get_token_counter()
        self.min_salience = min_salience

    def summarize(self, previous: RollingSummary, turns: Sequence[Turn]) -> list[SummaryItem]:
        items = list(previous.items)
        for turn in turns:
            if turn.role not in ("user", "assistant") or not turn.content.strip():
                continue
            spans = list(split_sentences(turn.content)) or [(0, len(turn.content))]
            best = max((turn.content[a:b] for a, b in spans), key=_salience)
            score = _salience(best)
            if score >= self.min_salience:
                items.append(SummaryItem(f"{turn_label(turn)}: {best}", (turn.id,), score))
        sizes = [self.counter(i.text) for i in items]
        total = sum(sizes)
        if total > self.max_tokens:
            ranked = sorted(range(len(items)), key=lambda i: (items[i].salience, i))
            removed: set[int] = set()
            for index in ranked:
                if total <= self.max_tokens:
                    break
                removed.add(index)
                total -= sizes[index]
            items = [item for i, item in enumerate(items) if i not in removed]
        return items


class PromptSummarizer:
    """Summarizes with any LLM through a ``complete(prompt) -> text`` function.

    Each update asks for a summary of the new turns only and appends it as one item sourced
    from those turns; earlier items are kept as they are, so the summary never drifts through
    summaries of summaries. The LangChain and LlamaIndex adapters build one from a chat model or
    an LLM.

    Example:
        >>> from tokenlean import Turn
        >>> prompts = []
        >>> def llm(prompt):  # any model call: a prompt in, a text out
        ...     prompts.append(prompt)
        ...     return "The user moved the Lisbon flight to 14 May."
        >>> earlier = RollingSummary((SummaryItem("user (2024-04-30): Booked Lisbon.", ("t0",)),),
        ...                          covered=1)
        >>> new_turns = [Turn("t1", 1, "user", "Move my flight to 14 May.", 1714600000.0),
        ...              Turn("t2", 2, "assistant", "Done: it leaves on 14 May.", 1714600060.0)]
        >>> for item in PromptSummarizer(llm).summarize(earlier, new_turns):
        ...     print(item.sources, item.text)
        ('t0',) user (2024-04-30): Booked Lisbon.
        ('t1', 't2') The user moved the Lisbon flight to 14 May.
        >>> for line in prompts[0].splitlines()[-2:]:  # only the new turns were sent
        ...     print(line)
        user (2024-05-01): Move my flight to 14 May.
        assistant (2024-05-01): Done: it leaves on 14 May.
    """

    PROMPT = (
        "Summarize the following conversation turns in a few factual sentences. Keep names, "
        "dates, numbers and decisions. Do not add anything that is not in the turns.\n\n{turns}"
    )

    def __init__(self, complete: Callable[[str], str], *, prompt: str | None = None) -> None:
        self.complete = complete
        self.prompt = prompt or self.PROMPT

    def summarize(self, previous: RollingSummary, turns: Sequence[Turn]) -> list[SummaryItem]:
        lines = "\n".join(f"{turn_label(t)}: {t.content}" for t in turns if t.content)
        text = self.complete(self.prompt.format(turns=lines)).strip()
        return [*previous.items, SummaryItem(text, tuple(t.id for t in turns), 10.0)]
