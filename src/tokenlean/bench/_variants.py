"""The harness's variants as objects: which levers each one pulls.

The four standard variants are :data:`VARIANTS`; a :class:`Variant` of your own (another
combination of levers) runs through :func:`~tokenlean.bench.run_harness` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["VARIANTS", "Variant", "variant_named"]


@dataclass(frozen=True)
class Variant:
    """One way of building and sending the prompt.

    Attributes:
        name: the key of its figures in the result.
        memory: documents retrieved within a budget and the session through
            :class:`~tokenlean.ConversationMemory` (False: every document and the whole history,
            every time).
        volatile: without memory, what the prompt plan does with volatile values (the
            timestamp): ``keep`` them in place or ``move`` them after the static prefix.
        static_first: with memory, the policy alone in a first message (a cacheable prefix),
            then the retrieved documents, the time and the memory's context. Without it, the
            policy is the memory pack's static system prompt (also a cacheable prefix, the
            first part of the pack's system message), and the time and the documents follow in
            a message of their own.
        cache: the completion cache: ``none``, ``exact`` (keyed on the canonical prompt) or
            ``semantic`` (the question compared, product-fact route only, invalidated when a
            document it used changes).
        retrieval_cache: cache retrieval results.
        route_and_batch: the small model first with escalation and a learned gate, and the
            misses of each wave through a micro-batcher.
    """

    name: str
    memory: bool = False
    volatile: Literal["keep", "move"] = "keep"
    static_first: bool = False
    cache: Literal["none", "exact", "semantic"] = "none"
    retrieval_cache: bool = False
    route_and_batch: bool = False


VARIANTS: tuple[Variant, ...] = (
    Variant("baseline"),
    Variant("cached", volatile="move", cache="exact"),
    Variant("summarized_retrieved", memory=True),
    Variant(
        "all_levers",
        memory=True,
        static_first=True,
        cache="semantic",
        retrieval_cache=True,
        route_and_batch=True,
    ),
)
"""The standard four, in the order they are reported."""


def variant_named(name: str) -> Variant | None:
    """The standard variant called ``name`` (None: no such variant)."""
    return next((v for v in VARIANTS if v.name == name), None)
