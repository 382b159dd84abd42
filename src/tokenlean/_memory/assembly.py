"""Memory assembly as a pure function: plain inputs in, the budgeted messages out.

:func:`assemble` does the whole budget algorithm of :meth:`ConversationMemory.context` with
no store, index or embedder: the caller reads the transcript, the slot state and the summary,
and supplies the older turns' relevance ranking (a list of turn ids, or a function giving it,
called only when some turns fall outside the recent window). The steps:

1. **Pinned.** The system prompt, the slot state and the user turn always go in; if they alone
   exceed the budget, :class:`~tokenlean.ConfigurationError`.
2. **Shares.** What is left (less :data:`SECTION_OVERHEAD`) is split by :class:`MemoryBudget`:
   recent turns (newest first, in groups that never split a tool call from its results), then
   retrieved older turns with their neighbours, then summary items (those about the turns
   ranked highest for the user turn and not already in the pack first: a summary item is a
   shorter view of a turn the retrieved section had no room for). A section's unused share
   carries over to the next.
3. **Extension.** Whatever is left at the end extends the recent window further back.
4. **Verification.** The rendered messages are counted exactly; while they exceed the budget the
   least important piece goes (the lowest-ranked summary item or retrieved turn, by the
   relevance ranking, then the oldest recent turn).
"""

from __future__ import annotations

import functools
import json
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from pydantic import Field

from tokenlean._config import FrozenModel
from tokenlean._errors import ConfigurationError
from tokenlean._memory.summary import RollingSummary, turn_label
from tokenlean._memory.transcript import Turn
from tokenlean._retrieval.documents import key_terms
from tokenlean._tokens.messages import TOKENS_PER_MESSAGE, count_message_tokens

__all__ = [
    "SECTION_OVERHEAD",
    "Assembly",
    "ContextPack",
    "MemoryBudget",
    "PackItem",
    "assemble",
    "check_budget",
    "render",
    "retrieved_text",
    "turn_text",
]

SECTION_OVERHEAD = 16
"""Tokens held back from the shares for what the sections add around their items: the system
message's framing, the summary and retrieved-turns headings and the blank lines between
sections (at most 15 with cl100k; the exact count in step 4 has the last word)."""

_TURN_FRAMING = TOKENS_PER_MESSAGE + 1  # a recent turn is a message: framing plus a 1-token role
_LINE = 1  # an item is one line of its section: its text plus a newline

SUMMARY_HEADING = "Summary of the earlier conversation:"
RETRIEVED_HEADING = "Relevant earlier turns:"


class MemoryBudget(FrozenModel):
    """How the budget left after the pinned sections is shared (each share of that rest)."""

    recent: float = Field(default=0.2, ge=0, le=1)
    summary: float = Field(default=0.1, ge=0, le=1)
    retrieved: float = Field(default=0.7, ge=0, le=1)
    min_recent_turns: int = Field(default=2, ge=0, description="Kept even past the share.")
    neighbours: int = Field(default=1, ge=0, description="Turns around a retrieved turn.")


@dataclass(frozen=True)
class PackItem:
    """One piece of the context: its section, text, tokens and the turn ids it came from."""

    section: str
    text: str
    tokens: int
    sources: tuple[str, ...]


@dataclass(frozen=True)
class ContextPack:
    """The context for one model call, and why each part of it is there.

    Attributes:
        messages: OpenAI-style messages to send.
        items: every piece, by section (``system``, ``state``, ``summary``, ``retrieved``,
            ``recent``, ``user``), with its tokens and provenance.
        budget: the limit.
        tokens: prompt tokens of ``messages`` (``count_message_tokens``); never above budget.
        summary_error: the session's last summary failure, if any (raw turns stayed in play).
        slot_error: the session's last slot failure, if any (an extractor failing or late, a
            value the slot model rejected, the state unreadable).
        index_error: the last retrieval failure, if any (the embedder or the turn index).
        degraded: the sections left out of this pack because they failed (``retrieved``,
            ``state``, ``summary``); the errors above say why. Empty when nothing failed.
    """

    messages: list[dict[str, Any]]
    items: tuple[PackItem, ...]
    budget: int
    tokens: int
    summary_error: str | None = None
    slot_error: str | None = None
    index_error: str | None = None
    degraded: tuple[str, ...] = ()

    @property
    def static_prefix(self) -> str:
        """The system prompt as sent: the first text part of the first message, byte-identical
        from call to call (where a provider cache breakpoint goes; "" without one)."""
        return static_prefix(self.items)

    def sources(self) -> set[str]:
        """Ids of every turn that is in the context, raw or through an item derived from it."""
        return {source for item in self.items for source in item.sources}

    def section_tokens(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            out[item.section] = out.get(item.section, 0) + item.tokens
        return out


@dataclass(frozen=True)
class Assembly:
    """What :func:`assemble` chose: the messages, every item (pinned, summary, retrieved,
    recent, user, in that order) and the messages' exact token count."""

    messages: list[dict[str, Any]]
    items: tuple[PackItem, ...]
    tokens: int


def check_budget(budget: object) -> int:
    """``budget`` if it is a positive whole number of tokens.

    Raises:
        ConfigurationError: anything else (a string, a float, a bool, zero or less).
    """
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 1:
        raise ConfigurationError(
            f"budget must be a positive whole number of tokens, not {budget!r}"
        )
    return int(budget)


Ranking = Sequence[str] | Callable[[], Sequence[str]]
Locate = Callable[[Sequence[str]], Mapping[str, int]]


def assemble(
    *,
    budget: int,
    count: Callable[[str], int],
    history: Sequence[Turn],
    pinned: Sequence[PackItem] = (),
    user: PackItem | None = None,
    summary: RollingSummary | None = None,
    ranking: Ranking = (),
    shares: MemoryBudget | None = None,
    locate: Locate | None = None,
) -> Assembly:
    """Choose and render the context within ``budget`` tokens.

    Args:
        budget: the hard limit, in prompt tokens of the rendered messages.
        count: the token counter.
        history: the conversation's turns before the user turn, oldest first (no system turns).
            Only the turns the pack may hold are read (``len`` and item access, from the end
            and around retrieved turns), so a lazy sequence over a store keeps the cost flat.
        pinned: the system and state items, always included.
        user: the user turn, always included, last.
        summary: the rolling summary of older turns.
        ranking: ids of history turns, most relevant to the user turn first (ids not in the
            history are ignored), or a function returning them (called only when some turns
            fall outside the recent window).
        shares: how the budget left after the pinned sections is shared.
        locate: the positions in ``history`` of ranked ids (default: a scan of ``history``).

    Raises:
        ConfigurationError: the budget cannot hold the pinned sections, or, without ``user``,
            the current turn (the newest turn, and after tool results the calls and the user
            turn before them).

    Example:
        >>> from tokenlean._memory.transcript import Turn
        >>> history = [Turn(id=f"t{i}", index=i, role=("user", "assistant")[i % 2],
        ...                 content=f"message number {i}", timestamp=0.0) for i in range(40)]
        >>> count = lambda text: len(text.split())
        >>> out = assemble(budget=120, count=count, history=history, ranking=["t3"],
        ...                user=PackItem("user", "what was message 3?", 4, ()))
        >>> out.tokens <= 120, [i.sources for i in out.items if i.section == "retrieved"][:1]
        (True, [('t2',)])
    """
    check_budget(budget)
    shares = shares or MemoryBudget()
    count = functools.cache(count)  # a turn is costed on every pass over the ranking
    head = [*pinned, *([user] if user is not None else [])]
    pinned_tokens = count_message_tokens(render(head, []), counter=count).total
    if pinned_tokens > budget:
        raise ConfigurationError(
            f"budget {budget} cannot hold the pinned sections ({pinned_tokens} tokens: "
            "system prompt, state and user turn)"
        )
    rest = budget - pinned_tokens - SECTION_OVERHEAD

    def group_cost(group: Sequence[Turn]) -> int:
        return sum(count(t.content) + _TURN_FRAMING for t in group)

    # 1. Recent turns, in tool-call-safe groups, newest first.
    groups = _groups_backward(history)
    recent_groups: list[list[Turn]] = []  # newest first
    pending: list[list[Turn]] = []  # the group that stopped the window, read but not taken
    allowance = int(rest * shares.recent)
    used = kept = 0
    # Without a user turn, the call continues the current turn (an agent's next call after a
    # tool result): the newest group and the tool exchanges back to the user turn that started
    # them are the question, kept whole or refused, never silently dropped.
    # The check is against the budget less the pinned sections only: the section headings
    # are not there when nothing else is, and the exact count (step 5) has the last word.
    current = user is None  # still inside the current turn
    required: set[str] = set()  # its turns' ids
    for group in groups:
        cost = group_cost(group)
        if current and recent_groups and not any(t.role in ("tool", "user") for t in group):
            current = False
        if current and pinned_tokens + used + cost > budget:
            raise _current_turn_error(budget, pinned_tokens + used + cost, estimated=True)
        if not current and (
            (used + cost > allowance and kept >= shares.min_recent_turns) or used + cost > rest
        ):
            pending.append(group)
            break
        recent_groups.append(group)
        used += cost
        kept += len(group)
        if current:
            required.update(t.id for t in group)
            # Past the newest group only through tool exchanges, back to their user turn.
            current = any(t.role == "tool" for t in group) and not any(
                t.role == "user" for t in group
            )
    carry = allowance - used
    recent_ids = {t.id for g in recent_groups for t in g}

    # 2. Retrieved older turns, with their neighbours.
    # When the recent window took more than its share (``min_recent_turns``), retrieval gives
    # up the excess: the summary keeps its share.
    older = len(history) - sum(len(g) for g in recent_groups)
    allowance = min(
        int(rest * shares.retrieved) + max(carry, 0), rest - used - int(rest * shares.summary)
    )
    retrieved: list[PackItem] = []
    turns_of: dict[str, Turn] = {}  # the retrieved turns, by id
    ranked: Sequence[str] = ()
    if older > 0 and user is not None and user.text and allowance > 0:
        ranked = ranking() if callable(ranking) else ranking
        turns_of = _retrieved(
            history, older, ranked, locate, recent_ids, allowance, shares.neighbours, count
        )
        retrieved = _compact(turns_of, count)
    spent = sum(i.tokens + _LINE for i in retrieved)

    # 3. Summary items about the best-ranked turns not already in the pack, then those that
    # share terms with the user turn, then the most recent.
    allowance = min(int(rest * shares.summary) + max(allowance - spent, 0), rest - used - spent)
    summary_items = _summary_items(
        summary, recent_ids | set(turns_of), allowance, user, count, ranked
    )

    # 4. Whatever is left extends the recent window further back.
    left = (
        rest
        - used
        - sum(i.tokens + _LINE for i in summary_items)
        - sum(i.tokens + _LINE for i in retrieved)
    )
    taken = {i.sources[0] for i in retrieved}
    for group in chain(pending, groups):
        cost = group_cost(group)
        if cost > left or any(t.id in taken for t in group):
            break
        recent_groups.append(group)
        left -= cost
    recent = [t for g in reversed(recent_groups) for t in g]
    in_pack = {t.id for t in recent} | set(turns_of)
    # Summary items whose turns are now all in the pack (the extended window) would say them twice.
    summary_items = [i for i in summary_items if not set(i.sources) <= in_pack]

    # 5. Verify against the exact count: drop the least important pieces until it fits.
    tail = [user] if user is not None else []
    messages = render([*pinned, *summary_items, *retrieved, *tail], recent)
    total = count_message_tokens(messages, counter=count).total
    position = {turn_id: p for p, turn_id in enumerate(ranked)}
    while total > budget:
        # The lowest-ranked summary item or retrieved turn goes first (a summary item ranks as
        # its best-ranked turn not in the pack; a neighbour or an item about no ranked turn
        # ranks last; on a tie the retrieved turn goes, the item says more turns), then the
        # oldest recent turn.
        pieces = [(_rank(i.sources, position, in_pack), 0, n) for n, i in enumerate(summary_items)]
        pieces += [(_rank((t,), position, set()), 1, n) for n, t in enumerate(turns_of)]
        if pieces:
            _, kind, n = max(pieces)
            if kind == 0:
                del summary_items[n]
            else:
                del turns_of[list(turns_of)[n]]
                retrieved = _compact(turns_of, count)  # the next line may give its date again
        elif recent and recent[0].id not in required:
            recent = recent[1:]
            while recent and recent[0].role == "tool":
                recent = recent[1:]
        elif recent:
            raise _current_turn_error(budget, total, estimated=False)
        else:  # pragma: no cover - the pinned check above makes this unreachable
            break
        messages = render([*pinned, *summary_items, *retrieved, *tail], recent)
        total = count_message_tokens(messages, counter=count).total
    recent_items = [PackItem("recent", t.content, count(t.content), (t.id,)) for t in recent]
    items = (*pinned, *summary_items, *retrieved, *recent_items, *tail)
    return Assembly(messages=messages, items=items, tokens=total)


def _current_turn_error(budget: int, tokens: int, *, estimated: bool) -> ConfigurationError:
    return ConfigurationError(
        f"budget {budget} cannot hold the current turn ({'about ' if estimated else ''}{tokens}"
        " tokens with the pinned sections: the last turn, and after tool results the calls and"
        " the user turn before them); raise the budget or shorten the tool results"
    )


def _rank(sources: Sequence[str], position: Mapping[str, int], in_pack: set[str]) -> int:
    """The best ranking position among ``sources`` not already in the pack (past the end of
    the ranking when none is ranked): an item about a retrieved turn and an unranked one is
    worth what it adds, the unranked one."""
    return min((position.get(s, len(position)) for s in sources if s not in in_pack),
               default=len(position))  # fmt: skip


def _summary_items(
    summary: RollingSummary | None,
    in_pack: set[str],
    allowance: int,
    user: PackItem | None,
    count: Callable[[str], int],
    ranked: Sequence[str] = (),
) -> list[PackItem]:
    """Summary items within ``allowance``, in summary order. Chosen first: those about the
    turns ranked highest in ``ranked`` (the older turns' relevance ranking for the user turn),
    then those sharing the most terms with the user turn, then the newest. Items about turns
    already in the pack (``in_pack``: the recent and retrieved turns) only are left out."""
    if summary is None:
        return []
    terms = _terms(user.text if user is not None else "")
    position = {turn_id: p for p, turn_id in enumerate(ranked)}
    order = sorted(
        range(len(summary.items)),
        key=lambda i: (
            _rank(summary.items[i].sources, position, in_pack),
            -len(terms & _terms(summary.items[i].text)),
            -i,
        ),
    )
    chosen: dict[int, PackItem] = {}
    spent = 0
    for i in order:
        item = summary.items[i]
        if set(item.sources) <= in_pack:
            continue
        tokens = count(item.text)
        if spent + tokens + _LINE > allowance:
            continue
        chosen[i] = PackItem("summary", item.text, tokens, item.sources)
        spent += tokens + _LINE
    return [chosen[i] for i in sorted(chosen)]


def _retrieved(
    history: Sequence[Turn],
    older: int,
    ranked: Sequence[str],
    locate: Locate | None,
    recent_ids: set[str],
    allowance: int,
    neighbours: int,
    count: Callable[[str], int],
) -> dict[str, Turn]:
    """The best-ranked turns among the first ``older`` of ``history`` within ``allowance``, then
    the neighbours of the top five, by id (:func:`_compact` renders them in transcript order).

    A turn is costed with its full label while it is chosen; the compact rendering then frees
    tokens, and further passes over the ranking fill them (at most three passes)."""
    if locate is None:
        wanted = set(ranked)
        at = {t.id: i for i, t in enumerate(history[:older]) if t.id in wanted}
    else:
        at = dict(locate(ranked))
    chosen: dict[str, Turn] = {}
    order: list[str] = []
    spent = 0

    def take(turn: Turn) -> None:
        nonlocal spent
        if turn.id in chosen or turn.id in recent_ids:
            return
        tokens = count(retrieved_text(turn))
        if spent + tokens + _LINE > allowance:
            return
        chosen[turn.id] = turn
        order.append(turn.id)
        spent += tokens + _LINE

    top = [(p, history[p]) for turn_id in ranked if 0 <= (p := at.get(turn_id, -1)) < older]

    def one_pass() -> None:
        for _, turn in top:
            take(turn)
        for p, _ in top[:5]:
            for step in range(1, neighbours + 1):
                for near in (p - step, p + step):
                    if 0 <= near < older:
                        take(history[near])

    one_pass()
    items = _compact(chosen, count)
    for _ in range(3):
        total = sum(i.tokens + _LINE for i in items)
        if total >= allowance:
            break
        before = len(chosen)
        spent = total
        one_pass()
        if len(chosen) == before:
            break
        items = _compact(chosen, count)
    while items and sum(i.tokens + _LINE for i in items) > allowance:
        del chosen[order.pop()]  # a later addition moved a date label: the last chosen goes
        items = _compact(chosen, count)
    return chosen


def _compact(chosen: Mapping[str, Turn], count: Callable[[str], int]) -> list[PackItem]:
    """The chosen turns in transcript order, each dated only when its date differs from the
    line before it (turns retrieved from one session share a date: it is said once)."""
    items: list[PackItem] = []
    previous: str | None = None
    for turn in sorted(chosen.values(), key=lambda t: t.index):
        date = _date(turn)
        text = retrieved_text(turn, dated=date != previous)
        previous = date
        items.append(PackItem("retrieved", text, count(text), (turn.id,)))
    return items


def _groups_backward(history: Sequence[Turn]) -> Iterator[list[Turn]]:
    """:func:`tool_safe_groups` of ``history``, newest first, reading it from the end only as
    far as the groups are asked for."""
    at = len(history) - 1
    while at >= 0:
        turn = history[at]
        if turn.role != "tool":
            at -= 1
            yield [turn]
            continue
        tools: list[Turn] = []
        while at >= 0 and (turn := history[at]).role == "tool":
            tools.append(turn)
            at -= 1
        tools.reverse()
        if at >= 0 and (turn := history[at]).tool_calls:
            at -= 1
            yield [turn, *tools]
        else:
            yield tools


def tool_safe_groups(turns: Sequence[Turn]) -> list[list[Turn]]:
    """Turns grouped so that a tool call and its results are never split."""
    groups: list[list[Turn]] = []
    for turn in turns:
        if (
            turn.role == "tool"
            and groups
            and (groups[-1][0].tool_calls or groups[-1][0].role == "tool")
        ):
            groups[-1].append(turn)
        else:
            groups.append([turn])
    return groups


_COMMON = frozenset(  # all shorter than six letters: a key-term prefix equals the word
    ["the", "and", "was", "what", "did", "for", "with", "that", "this", "you", "have", "from",
     "when", "how", "who"]
)  # fmt: skip


def _terms(text: str) -> frozenset[str]:
    return key_terms(text) - _COMMON


def turn_text(turn: Turn) -> str:
    """A turn's content, with the caption of an image it shared."""
    caption = turn.metadata.get("caption") if turn.metadata else None
    return f"{turn.content} [shared an image: {caption}]" if caption else turn.content


def retrieved_text(turn: Turn, *, dated: bool = True) -> str:
    """A retrieved turn as one line: ``[#index] speaker (date): content`` (``dated=False``:
    ``[#index] speaker: content``, when the line before gives the same date).

    The label is the turn's position, not its id: ids can be UUIDs (LangChain message ids cost
    ~30 tokens each). The full id stays in the pack item's sources."""
    label = turn_label(turn) if dated else (turn.speaker or turn.role)
    return f"[#{turn.index}] {label}: {said_text(turn)}"


def said_text(turn: Turn) -> str:
    """What a turn says, as one line of text: its content (with an image's caption) and the
    tool calls it makes (:func:`calls_text`)."""
    return " ".join(part for part in (turn_text(turn), calls_text(turn)) if part)


def calls_text(turn: Turn) -> str:
    """An assistant turn's tool calls as ``[called name(arguments)]`` ("" without any): a
    tool-call turn has no content of its own, and its arguments are often what a later
    question asks about."""
    calls = []
    for call in turn.tool_calls:
        function = call.get("function")
        function = function if isinstance(function, Mapping) else call
        name = function.get("name", "?")
        arguments = next(  # OpenAI's "arguments", LangChain's "args", Anthropic's "input"
            (function[k] for k in ("arguments", "args", "input") if k in function), ""
        )
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        calls.append(f"{name}({arguments})")
    return f"[called {'; '.join(calls)}]" if calls else ""


def _date(turn: Turn) -> str:
    """The ``(date)`` part of a turn's label."""
    return turn_label(turn)[len(turn.speaker or turn.role) :]


def render(items: Sequence[PackItem], recent: Sequence[Turn]) -> list[dict[str, Any]]:
    """The messages: one system message, the recent turns as they were, then the user turn.

    The system message puts what is static first, in a block of its own: with a system
    section, its content is a list of text parts, the first being the system prompt alone
    (:func:`static_prefix`), byte-identical from call to call, where a provider's prefix cache
    can end (Anthropic's ``cache_control`` goes on that block); the second, when there is one,
    holds what changes from call to call (state, summary and retrieved sections), opening with
    a blank line so that a framework flattening the parts into one text keeps the sections apart
    without adding tokens. Without a system section, the changing sections are the message's
    text.

    Example:
        >>> render([PackItem("system", "Be brief.", 3, ()), PackItem("state", "city: Lyon", 3, ()),
        ...         PackItem("user", "Hi", 1, ())], [])[0]["content"]
        [{'type': 'text', 'text': 'Be brief.'}, {'type': 'text', 'text': '\\n\\ncity: Lyon'}]
    """
    sections: dict[str, list[str]] = {}
    for item in items:
        sections.setdefault(item.section, []).append(item.text)
    parts = [*sections.get("state", [])]
    if "summary" in sections:
        parts.append(f"{SUMMARY_HEADING}\n" + "\n".join(f"- {t}" for t in sections["summary"]))
    if "retrieved" in sections:
        parts.append(f"{RETRIEVED_HEADING}\n" + "\n".join(sections["retrieved"]))
    changing = "\n\n".join(parts)
    static = static_prefix(items)
    messages: list[dict[str, Any]] = []
    if static:
        blocks = [_text_part(static), *([_text_part(f"\n\n{changing}")] if changing else [])]
        messages.append({"role": "system", "content": blocks})
    elif changing:
        messages.append({"role": "system", "content": changing})
    messages.extend(turn.to_message() for turn in recent)
    if "user" in sections:
        messages.append({"role": "user", "content": sections["user"][-1]})
    return messages


def static_prefix(items: Sequence[PackItem]) -> str:
    """The static part of a pack's prompt: the system section's text, exactly as rendered in the
    first text part of the first message ("" without a system section)."""
    return "\n\n".join(item.text for item in items if item.section == "system")


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}
