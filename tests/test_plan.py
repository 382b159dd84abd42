"""Prompt plans: static-to-volatile order, per-segment tokens, stable static fingerprints."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from typing import Any

import pytest

import tokenlean as tl

POLICY = "You are the support agent of Northwind.\nBe concise.   Never guess order data."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order.",
            "parameters": {
                "type": "object",
                "properties": {"order": {"type": "string", "description": "Order number."}},
            },
        },
    }
]


def _plan(**options: Any) -> tl.PromptPlan:
    return (
        tl.PromptPlan(model="gpt-4", **options)
        .with_user("Where is order 1234?")
        .with_history(
            [
                {"role": "user", "content": "hi", "id": "t1"},
                {"role": "assistant", "content": "hello", "id": "t2"},
            ]
        )
        .with_state("customer tier: gold", sources=["slot:tier"])
        .with_retrieved("Order 1234 shipped Monday.", sources=["doc-9"])
        .with_tools(TOOLS)
        .with_policy(POLICY, name="support", version="v3")
    )


def test_segments_render_static_to_volatile_whatever_the_insertion_order() -> None:
    """Policy, tools, retrieved, state, history, user: always in that order."""
    plan = _plan()
    assert [s.kind.value for s in plan.ordered()] == [
        "policy",
        "tools",
        "retrieved",
        "state",
        "history",
        "user",
    ]
    rendered = plan.render()
    assert [m["role"] for m in rendered.messages] == [
        "system",
        "system",
        "system",
        "user",
        "assistant",
        "user",
    ]
    assert rendered.messages[-1]["content"] == "Where is order 1234?"
    assert rendered.tools[0]["function"]["name"] == "lookup_order"


def test_rendered_accounting_adds_up_to_the_request_count() -> None:
    """Segment tokens plus reply priming equal the count of the rendered request."""
    rendered = _plan().render()
    segment_sum = sum(tokens for _, _, tokens in rendered.segment_tokens)
    assert segment_sum + 3 == rendered.total_tokens
    recount = tl.count_message_tokens(rendered.messages, model="gpt-4", tools=rendered.tools)
    assert recount.total == rendered.total_tokens
    static = sum(t for kind, _, t in rendered.segment_tokens if kind in ("policy", "tools"))
    assert rendered.static_prefix_tokens == static


def test_static_text_is_canonicalized() -> None:
    """Whitespace noise in the policy does not reach the prompt."""
    rendered = _plan().render()
    assert "Be concise. Never" in rendered.messages[0]["content"]


def test_provenance_is_kept_per_segment() -> None:
    """Retrieved and state segments keep their sources; history keeps its turn ids."""
    by_kind = {s.kind.value: s for s in _plan().ordered()}
    assert by_kind["retrieved"].sources == ("doc-9",)
    assert by_kind["state"].sources == ("slot:tier",)
    assert by_kind["history"].sources == ("t1", "t2")
    assert all("id" not in m for m in _plan().render().messages)


def test_fingerprint_ignores_everything_after_the_static_prefix() -> None:
    """Changing the user turn, history, state or retrieved facts keeps the fingerprint."""
    base = tl.PromptPlan().with_policy(POLICY, version="v3").with_tools(TOOLS)
    one = base.with_user("a").with_retrieved("x").static_prefix_fingerprint()
    two = base.with_user("b").with_state("y").static_prefix_fingerprint()
    assert one == two


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.with_policy("Another block."),
        lambda p: tl.PromptPlan().with_policy(POLICY, version="v4").with_tools(TOOLS),
        lambda p: tl.PromptPlan().with_policy(POLICY + " Extra.", version="v3").with_tools(TOOLS),
        lambda p: tl.PromptPlan().with_policy(POLICY, version="v3"),
    ],
)
def test_fingerprint_changes_with_any_static_content(change: Any) -> None:
    """A new block, a new version, new policy text or removed tools change the fingerprint."""
    base = tl.PromptPlan().with_policy(POLICY, version="v3").with_tools(TOOLS)
    assert change(base).static_prefix_fingerprint() != base.static_prefix_fingerprint()


def test_fingerprint_ignores_tool_key_order_and_whitespace() -> None:
    """Tool schemas serialized with other key orders, and policy whitespace, hash the same."""
    shuffled = json.loads(json.dumps(TOOLS[0]), object_pairs_hook=lambda p: dict(reversed(p)))
    a = tl.PromptPlan().with_policy(POLICY, version="v3").with_tools(TOOLS)
    b = tl.PromptPlan().with_policy(POLICY.replace(" ", "  ") + "\r\n", version="v3")
    b = b.with_tools([shuffled])
    assert a.static_prefix_fingerprint() == b.static_prefix_fingerprint()


def test_volatile_values_move_out_of_the_static_prefix() -> None:
    """A timestamp in the policy becomes a placeholder; its value is stated after the prefix."""
    policy = "Support agent. Current time: 2026-11-27T10:00:00Z. Request id: req_0123456789ab"
    plan = tl.PromptPlan().with_policy(policy).with_user("hi")
    rendered = plan.render()
    assert rendered.messages[0]["content"] == (
        "Support agent. Current time: [timestamp#1]. Request id: [request_id#1]"
    )
    assert rendered.messages[1]["content"] == (
        "Current values:\n[timestamp#1] = 2026-11-27T10:00:00Z\n[request_id#1] = req_0123456789ab"
    )
    assert [m.value for m in rendered.moved] == ["2026-11-27T10:00:00Z", "req_0123456789ab"]
    later = tl.PromptPlan().with_policy(policy.replace("10:00", "11:30")).with_user("hi")
    assert later.static_prefix_fingerprint() == plan.static_prefix_fingerprint()


def test_mask_mode_keeps_the_text_but_stabilizes_the_fingerprint() -> None:
    """volatile='mask' sends values in place; the fingerprint still ignores them."""
    policy = "Now: 2026-11-27T10:00:00Z"
    plan = tl.PromptPlan(volatile="mask").with_policy(policy)
    later = tl.PromptPlan(volatile="mask").with_policy(policy.replace("10:00", "11:00"))
    assert plan.render().messages == [{"role": "system", "content": policy}]
    assert plan.render().moved[0].value == "2026-11-27T10:00:00Z"
    assert plan.static_prefix_fingerprint() == later.static_prefix_fingerprint()


def test_keep_mode_leaves_volatile_values_alone() -> None:
    """volatile='keep' neither moves nor masks; the fingerprint changes with the value."""
    plan = tl.PromptPlan(volatile="keep").with_policy("Now: 2026-11-27T10:00:00Z")
    later = tl.PromptPlan(volatile="keep").with_policy("Now: 2026-11-27T11:00:00Z")
    assert plan.render().moved == ()
    assert plan.static_prefix_fingerprint() != later.static_prefix_fingerprint()


def test_invalid_volatile_mode_is_rejected() -> None:
    """An unknown volatile mode is a ConfigurationError."""
    with pytest.raises(tl.ConfigurationError):
        tl.PromptPlan(volatile="drop")  # type: ignore[arg-type]


def test_plans_are_immutable_values() -> None:
    """with_* returns a new plan and leaves the original as it was."""
    base = tl.PromptPlan()
    extended = base.with_policy("x")
    assert len(base) == 0
    assert len(extended) == 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: tl.PromptPlan().render(), "empty"),
        (lambda: tl.PromptPlan().with_tools([{"name": "x"}]), "tool 0"),
        (lambda: tl.PromptPlan().with_history([{"content": "x"}]), "role"),
        (lambda: tl.PromptPlan().with_policy(42), "string"),  # type: ignore[arg-type]
    ],
)
def test_malformed_plans_raise_clear_errors(build: Any, message: str) -> None:
    """Empty plans, tools without a function name, roleless history are MalformedRequestError."""
    with pytest.raises(tl.MalformedRequestError, match=message):
        build()


def test_a_request_body_becomes_a_plan() -> None:
    """Leading system messages are policy, the final user message the user turn."""
    request = {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": "Policy A"},
            {"role": "developer", "content": "Policy B"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "second"},
        ],
        "tools": TOOLS,
    }
    plan = tl.PromptPlan.from_request(request)
    assert plan.model == "gpt-4"
    assert [s.kind.value for s in plan.ordered()] == [
        "policy",
        "policy",
        "tools",
        "history",
        "user",
    ]
    assert plan.render().messages[-1] == {"role": "user", "content": "second"}


_FINGERPRINT_SCRIPT = """
import tokenlean as tl
plan = tl.PromptPlan().with_policy("Policy at 2026-01-01T00:00:00Z", version="v1").with_tools(
    [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": 2}}}]
)
print(plan.static_prefix_fingerprint())
"""


def test_fingerprints_are_identical_across_processes_and_hash_seeds() -> None:
    """Two interpreters with different hash seeds compute the same fingerprint as this one."""
    results = set()
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _FINGERPRINT_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        results.add(out.stdout.strip())
    namespace: dict[str, Any] = {}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(_FINGERPRINT_SCRIPT, namespace)
    results.add(buffer.getvalue().strip())
    assert len(results) == 1
    # A fixed value: a fingerprint that changes between releases is a breaking change.
    assert results == {"a62c4ccd2ec4551287f20be97511bf82"}
