"""The memory's budget algorithm on its own: plain turns in, messages out; no store, no index,
no embedder."""

from __future__ import annotations

import pytest

from tokenlean import ConfigurationError, count_message_tokens, get_token_counter
from tokenlean._memory.assembly import (
    MemoryBudget,
    PackItem,
    _summary_items,
    assemble,
    retrieved_text,
    tool_safe_groups,
)
from tokenlean._memory.summary import RollingSummary, SummaryItem
from tokenlean._memory.transcript import Turn

COUNT = get_token_counter()


def turns(n: int, words: int = 12) -> list[Turn]:
    return [
        Turn(
            id=f"t{i}",
            index=i,
            role=("user", "assistant")[i % 2],
            content=f"turn {i} " + " ".join(f"word{j}" for j in range(words)),
            timestamp=0.0,
        )
        for i in range(n)
    ]


def user(text: str = "what did we say in turn 7?") -> PackItem:
    return PackItem("user", text, COUNT(text), ())


@pytest.mark.parametrize("budget", [60, 120, 250, 600, 1500])
def test_the_rendered_messages_never_exceed_the_budget(budget: int) -> None:
    history = turns(80)
    ranked = [f"t{i}" for i in range(0, 80, 3)]
    summary = RollingSummary(
        tuple(SummaryItem(f"fact {i} about the order", (f"t{i}",)) for i in range(20)), 20
    )
    out = assemble(
        budget=budget, count=COUNT, history=history, user=user(), summary=summary, ranking=ranked
    )
    assert out.tokens == count_message_tokens(out.messages, counter=COUNT).total
    assert out.tokens <= budget
    assert out.messages[-1] == {"role": "user", "content": "what did we say in turn 7?"}


def test_pinned_sections_that_do_not_fit_are_a_configuration_error() -> None:
    system = PackItem("system", "policy " * 200, COUNT("policy " * 200), ())
    with pytest.raises(ConfigurationError, match="cannot hold the pinned sections"):
        assemble(budget=50, count=COUNT, history=turns(3), pinned=[system], user=user())


def test_the_ranking_is_asked_for_only_when_older_turns_exist() -> None:
    calls = []

    def ranking() -> list[str]:
        calls.append(1)
        return ["t0"]

    out = assemble(budget=2000, count=COUNT, history=turns(4), user=user(), ranking=ranking)
    assert calls == []
    assert [i.section for i in out.items] == ["recent"] * 4 + ["user"]
    assemble(budget=200, count=COUNT, history=turns(60), user=user(), ranking=ranking)
    assert calls == [1]


def test_a_retrieved_turn_comes_with_its_neighbours_in_transcript_order() -> None:
    out = assemble(budget=300, count=COUNT, history=turns(60), user=user(), ranking=["t7"])
    retrieved = [i.sources[0] for i in out.items if i.section == "retrieved"]
    assert retrieved == ["t6", "t7", "t8"]
    text = out.messages[0]["content"]
    # The date is given once for consecutive lines of the same day.
    assert "[#6] user (1970-01-01): turn 6" in text
    assert "[#7] assistant: turn 7" in text
    assert "[#8] user: turn 8" in text


def test_retrieved_lines_give_the_date_only_where_it_changes() -> None:
    history = [
        Turn(id=f"t{i}", index=i, role=("user", "assistant")[i % 2], content=f"turn {i} text",
             timestamp=0.0, metadata={"date": "1:56 pm on 8 May, 2023" if i < 30 else "9 June"})
        for i in range(60)
    ]  # fmt: skip
    ranked = [f"t{i}" for i in range(0, 50, 2)]
    for budget in (150, 250, 400, 800):
        out = assemble(budget=budget, count=COUNT, history=history, user=user(), ranking=ranked)
        assert out.tokens <= budget
        retrieved = [i for i in out.items if i.section == "retrieved"]
        at = [int(i.sources[0][1:]) for i in retrieved]
        changes = [p for k, p in enumerate(at) if k == 0 or (p < 30) != (at[k - 1] < 30)]
        assert [int(i.sources[0][1:]) for i in retrieved if "(" in i.text] == changes
        assert retrieved[0].text.startswith(f"[#{at[0]}] user (1:56 pm on 8 May, 2023): turn")


def test_summary_items_about_recent_turns_only_are_left_out() -> None:
    history = turns(6)
    summary = RollingSummary(
        (SummaryItem("about turn 5", ("t5",)), SummaryItem("about turn 0", ("t-old",))), 0
    )
    out = assemble(budget=2000, count=COUNT, history=history, user=user(), summary=summary)
    assert [i.text for i in out.items if i.section == "summary"] == ["about turn 0"]


def test_summary_items_follow_the_ranking_past_what_the_retrieved_section_holds() -> None:
    """The summary gives its share to the turns ranked just below what the retrieved section
    holds (a summary item is a one-line view of a turn), not to those the retrieved section
    already holds nor to an item sharing more words with the user turn."""
    history = turns(60, words=30)
    ranking = [f"t{i}" for i in (3, 9, 14, 20, 25, 31, 36, 41, 44, 47)]
    gists = [SummaryItem(f"gist of turn {i}", (f"t{i}",)) for i in range(50)]
    summary = RollingSummary((*gists, SummaryItem("what did we say in turn 7?", ("t7",))), 0)
    shares = MemoryBudget(recent=0.1, summary=0.1, retrieved=0.8, neighbours=0)
    out = assemble(budget=600, count=COUNT, history=history, user=user(), summary=summary,
                   ranking=ranking, shares=shares)  # fmt: skip
    retrieved = [i.sources[0] for i in out.items if i.section == "retrieved"]
    in_summary = [i.sources[0] for i in out.items if i.section == "summary"]
    assert retrieved == ranking[: len(retrieved)]
    assert 0 < len(retrieved) < len(ranking)
    assert set(ranking[len(retrieved) :]) <= set(in_summary)  # before any other item
    assert not set(in_summary) & set(retrieved)
    assert in_summary == sorted(in_summary, key=lambda i: int(i[1:]))  # in summary order
    assert out.tokens <= 600


def test_tool_calls_and_their_results_stay_together() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    history = [
        *turns(30),
        Turn("a", 30, "assistant", "", 0.0, tool_calls=(call,)),
        Turn("r", 31, "tool", "result " * 40, 0.0, tool_call_id="c1"),
        Turn("z", 32, "assistant", "done", 0.0),
    ]
    assert [len(g) for g in tool_safe_groups(history)][-2:] == [2, 1]
    for budget in range(60, 400, 7):
        out = assemble(budget=budget, count=COUNT, history=history, user=user())
        recent = [i.sources[0] for i in out.items if i.section == "recent"]
        assert ("a" in recent) == ("r" in recent), budget
        assert out.tokens <= budget


def test_a_retrieved_tool_call_turn_says_its_call() -> None:
    """A tool-call turn has no content: retrieved (as a hit's neighbour, say), it renders its
    call and arguments instead of an empty line."""
    call = {"id": "c1", "type": "function",
            "function": {"name": "lookup_order", "arguments": '{"order_id": "4417"}'}}  # fmt: skip
    history = [
        *turns(2),
        Turn("a", 2, "assistant", "", 0.0, tool_calls=(call,)),
        Turn("r", 3, "tool", "status: shipped", 0.0, tool_call_id="c1"),
        *turns(40)[4:],
    ]
    out = assemble(budget=400, count=COUNT, history=history, user=user(), ranking=["r"])
    lines = {i.sources[0]: i.text for i in out.items if i.section == "retrieved"}
    assert lines["a"].endswith(': [called lookup_order({"order_id": "4417"})]')
    assert lines["r"].endswith(": status: shipped")
    langchain_call = {"name": "lookup_order", "args": {"order_id": "4417"}}
    langchain_shaped = Turn("b", 2, "assistant", "", 0.0, tool_calls=(langchain_call,))
    assert retrieved_text(langchain_shaped).endswith('[called lookup_order({"order_id":"4417"})]')


def test_unused_shares_carry_over_to_the_next_section() -> None:
    """With nothing to summarize, the summary's share goes to retrieval."""
    history = turns(60)
    ranked = [f"t{i}" for i in range(0, 40)]
    lean = MemoryBudget(recent=0.2, summary=0.5, retrieved=0.3, neighbours=0)
    out = assemble(
        budget=800, count=COUNT, history=history, user=user(), ranking=ranked, shares=lean
    )
    retrieved = sum(i.tokens for i in out.items if i.section == "retrieved")
    assert retrieved > 0.3 * (800 - 40)  # more than its own share: the summary's came along


def test_without_a_user_turn_the_current_turn_is_kept_whole_or_refused() -> None:
    """An agent's call after a tool result: the tool exchange and the user turn that started it
    stay in the pack even past the recent share; a budget that cannot hold them is refused."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    history = [
        *turns(20),
        Turn("q", 20, "user", "show me the log", 0.0),
        Turn("a", 21, "assistant", "", 0.0, tool_calls=(call,)),
        Turn("r", 22, "tool", "event " * 60, 0.0, tool_call_id="c1"),
    ]
    out = assemble(budget=400, count=COUNT, history=history,
                   shares=MemoryBudget(recent=0.05, min_recent_turns=0))  # fmt: skip
    recent = [i.sources[0] for i in out.items if i.section == "recent"]
    assert recent[-3:] == ["q", "a", "r"]
    assert out.tokens <= 400
    with pytest.raises(ConfigurationError, match="cannot hold the current turn"):
        assemble(budget=60, count=COUNT, history=history)


def test_without_a_user_turn_a_plain_reply_alone_is_the_current_turn() -> None:
    """After a plain assistant reply (no tool results), the user turn before it is an ordinary
    recent turn: a long one is left out, not a reason to refuse the budget."""
    history = [Turn("q", 0, "user", "word " * 300, 0.0), Turn("a", 1, "assistant", "Noted.", 0.0)]
    out = assemble(budget=60, count=COUNT, history=history)
    assert [i.sources for i in out.items if i.section == "recent"] == [("a",)]


def test_a_budget_that_fits_the_current_turn_exactly_is_not_refused() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    history = [
        Turn("q", 0, "user", "show me the log", 0.0),
        Turn("a", 1, "assistant", "", 0.0, tool_calls=(call,)),
        Turn("r", 2, "tool", "event " * 20, 0.0, tool_call_id="c1"),
    ]
    whole = assemble(budget=2000, count=COUNT, history=history).tokens
    out = assemble(budget=whole, count=COUNT, history=history)
    assert [i.sources[0] for i in out.items if i.section == "recent"] == ["q", "a", "r"]
    assert out.tokens == whole
    with pytest.raises(ConfigurationError, match="cannot hold the current turn"):
        assemble(budget=whole - 1, count=COUNT, history=history)


def test_a_summary_item_ranks_by_the_turns_it_adds_to_the_pack() -> None:
    """An item about a retrieved turn and an unranked one ranks as the unranked one (what it
    adds); an item whose turns are all in the pack is left out."""
    summary = RollingSummary((
        SummaryItem("about turns 0 and 20", ("t0", "t20")),
        SummaryItem("about turns 5 and 6", ("t5", "t6")),
        SummaryItem("about turns 0 and 28", ("t0", "t28")),
    ), 0)  # fmt: skip
    one_item = COUNT("about turns 5 and 6") + 1
    chosen = _summary_items(summary, {"t0", "t28"}, one_item, user(), COUNT, ["t0", "t5"])
    assert [i.text for i in chosen] == ["about turns 5 and 6"]
    everything = _summary_items(summary, {"t0", "t28"}, 1000, user(), COUNT, ["t0", "t5"])
    assert [i.text for i in everything] == ["about turns 0 and 20", "about turns 5 and 6"]


def test_a_summary_item_whose_turns_end_up_retrieved_and_recent_is_left_out() -> None:
    """t0 retrieved, t5 in the recent window once it is extended: the item about both would
    say them twice."""
    count = lambda text: len(text.split())  # noqa: E731
    history = [Turn(f"t{i}", i, ("user", "assistant")[i % 2], f"message number {i} about things",
                    float(i)) for i in range(30)]  # fmt: skip
    summary = RollingSummary((SummaryItem("t0 and t5 said things", ("t0", "t5")),), covered=30)
    out = assemble(budget=400, count=count, history=history, summary=summary, ranking=["t0"],
                   user=PackItem("user", "what was message 0?", 4, ()))  # fmt: skip
    in_pack = {i.sources[0] for i in out.items if i.section in ("recent", "retrieved")}
    assert {"t0", "t5"} <= in_pack
    assert not [i for i in out.items if i.section == "summary"]
