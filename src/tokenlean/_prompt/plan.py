"""Prompt plans: a prompt as ordered segments, static first and volatile last.

Provider prefix caches (and tokenlean's own cache keys) only help when the start of a prompt is
byte-identical across requests. A :class:`PromptPlan` holds the parts of a prompt by kind and
always renders them in this order, whatever order they were added in:

1. ``policy``    versioned instruction blocks (static)
2. ``tools``     tool schemas, serialized deterministically (static)
3. ``retrieved`` retrieved facts or documents
4. ``state``     conversation state: summary, slots, and values moved out of the static part
5. ``history``   earlier turns, as chat messages
6. ``user``      the current user turn

Static text is canonicalized, and volatile values in it (timestamps, ids) are moved into the
``state`` segment by default, so a clock in the system prompt no longer breaks the cache. The
plan reports the fingerprint and token length of its static prefix, every value it moved, and
the tokens of each segment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal

from tokenlean._canonical import CanonicalizeOptions, canonical_json, canonicalize_text, fingerprint
from tokenlean._errors import ConfigurationError, MalformedRequestError
from tokenlean._prompt.volatile import MaskedValue, VolatileDetector, VolatileMasker
from tokenlean._tokens.counting import get_token_counter
from tokenlean._tokens.messages import TOKENS_PER_MESSAGE, count_message_tokens, count_tool_tokens

__all__ = ["PromptPlan", "RenderedPrompt", "Segment", "SegmentKind", "VolatileMode"]

VolatileMode = Literal["move", "mask", "keep"]
_PLAN_FORMAT = "tokenlean-plan-v1"


class SegmentKind(str, Enum):
    """The kinds of prompt segment, in the order a plan renders them."""

    POLICY = "policy"
    TOOLS = "tools"
    RETRIEVED = "retrieved"
    STATE = "state"
    HISTORY = "history"
    USER = "user"

    @property
    def is_static(self) -> bool:
        """Policy and tools form the static, cacheable prefix."""
        return self in (SegmentKind.POLICY, SegmentKind.TOOLS)


_ORDER = {kind: index for index, kind in enumerate(SegmentKind)}


@dataclass(frozen=True)
class Segment:
    """One part of a prompt.

    Attributes:
        kind: where the segment goes (see :class:`SegmentKind`).
        text: the canonical text as sent (for ``tools``, their canonical JSON; for ``history``,
            the canonical JSON of the messages).
        name: a label for reports, e.g. ``"refund-policy"``.
        version: the version of a policy block; part of the static fingerprint.
        sources: ids of the documents or turns the segment came from (provenance).
        items: the structured payload of ``tools`` (schemas) and ``history`` (messages).
        key_text: the text the fingerprint is taken over: ``text`` with volatile values
            masked when the plan masks them.
    """

    kind: SegmentKind
    text: str
    name: str = ""
    version: str | None = None
    sources: tuple[str, ...] = ()
    items: tuple[Mapping[str, Any], ...] = ()
    key_text: str = ""


@dataclass(frozen=True)
class RenderedPrompt:
    """A plan rendered to OpenAI-style chat messages, with its accounting.

    Attributes:
        messages: chat messages in plan order.
        tools: tool schemas (OpenAI format), empty without tools.
        segment_tokens: ``(kind, name, tokens)`` for each segment, message overhead included.
        total_tokens: prompt tokens of the whole request, as :func:`count_message_tokens` counts.
        static_prefix_tokens: tokens of the static prefix (policy messages and tools).
        static_prefix_fingerprint: stable hash of the static prefix.
        moved: volatile values taken out of the static prefix (or masked in its fingerprint).
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    segment_tokens: list[tuple[str, str, int]]
    total_tokens: int
    static_prefix_tokens: int
    static_prefix_fingerprint: str
    moved: tuple[MaskedValue, ...]


def _static_fingerprint(segments: Sequence[Segment]) -> str:
    parts = [_PLAN_FORMAT]
    for segment in segments:
        if segment.kind.is_static:
            parts += [segment.kind.value, segment.name, segment.version or "", segment.key_text]
    return fingerprint(*parts)


@dataclass(frozen=True)
class PromptPlan:
    """An ordered, canonical prompt: build it with the ``with_*`` methods, then render it.

    Each ``with_*`` method returns a new plan; a plan is never modified in place.

    Args:
        counter: token counter (default: the counter for ``model``).
        model: model name, used to pick the default counter.
        volatile: what to do with volatile values in static segments: ``"move"`` (default)
            replaces them with placeholders and states their values in the ``state`` segment;
            ``"mask"`` keeps them in the text but leaves them out of the fingerprint (the
            provider's cache still misses, tokenlean's keys are stable); ``"keep"`` does neither.
        detectors: volatile-value detectors (default: timestamps, UUIDs, request ids).
        canonicalize: options for text canonicalization, or None to send text unchanged.
        system_role: role of the messages rendered from policy, retrieved and state segments.

    Example:
        >>> plan = (
        ...     PromptPlan(model="gpt-4o")
        ...     .with_user("Where is my order?")
        ...     .with_policy("You are a support agent. Now: 2026-11-27T10:00:00Z", version="v1")
        ... )
        >>> [m["role"] for m in plan.render().messages]
        ['system', 'system', 'user']
        >>> plan.render().moved[0].value
        '2026-11-27T10:00:00Z'
    """

    model: str | None = None
    counter: Callable[[str], int] | None = None
    volatile: VolatileMode = "move"
    detectors: Sequence[VolatileDetector] | None = None
    canonicalize: CanonicalizeOptions | None = field(default_factory=CanonicalizeOptions)
    system_role: str = "system"
    segments: tuple[Segment, ...] = ()

    def __post_init__(self) -> None:
        if self.volatile not in ("move", "mask", "keep"):
            raise ConfigurationError(
                f"volatile must be 'move', 'mask' or 'keep', not {self.volatile!r}"
            )

    # ---------------------------------------------------------------------------- building

    def _text(self, text: str) -> str:
        if not isinstance(text, str):
            raise MalformedRequestError(f"segment text must be a string, not {type(text).__name__}")
        return canonicalize_text(text, self.canonicalize) if self.canonicalize else text

    def _add(self, segment: Segment) -> PromptPlan:
        return replace(self, segments=(*self.segments, segment))

    def with_policy(
        self, text: str, *, name: str = "policy", version: str | None = None
    ) -> PromptPlan:
        """Add a static instruction block. Give it a ``version`` to make changes traceable."""
        return self._add(Segment(SegmentKind.POLICY, self._text(text), name, version))

    def with_tools(self, tools: Sequence[Mapping[str, Any]], *, name: str = "tools") -> PromptPlan:
        """Add tool schemas (OpenAI ``tools`` format); serialized with sorted keys.

        Raises:
            MalformedRequestError: a tool is not an object with a function name.
        """
        items: list[Mapping[str, Any]] = []
        for index, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
                raise MalformedRequestError(
                    f"tool {index} must look like {{'type': 'function', 'function': {{'name': …}}}}"
                )
            items.append(tool)
        text = canonical_json(items)
        return self._add(Segment(SegmentKind.TOOLS, text, name, items=tuple(items)))

    def with_retrieved(
        self, text: str, *, name: str = "retrieved", sources: Sequence[str] = ()
    ) -> PromptPlan:
        """Add retrieved facts or documents, with the ids they came from."""
        return self._add(
            Segment(SegmentKind.RETRIEVED, self._text(text), name, sources=tuple(sources))
        )

    def with_state(
        self, text: str, *, name: str = "state", sources: Sequence[str] = ()
    ) -> PromptPlan:
        """Add conversation state (a summary, structured slots)."""
        return self._add(Segment(SegmentKind.STATE, self._text(text), name, sources=tuple(sources)))

    def with_history(
        self, messages: Sequence[Mapping[str, Any]], *, name: str = "history"
    ) -> PromptPlan:
        """Add earlier turns as chat messages (text content is canonicalized).

        A message's ``id`` key, if any, is kept as provenance in ``sources`` and not sent.

        Raises:
            MalformedRequestError: a message is not an object with a ``role``.
        """
        items: list[dict[str, Any]] = []
        sources: list[str] = []
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise MalformedRequestError(f"history message {index} needs a 'role' string")
            item = {key: value for key, value in message.items() if key != "id"}
            if "id" in message:
                sources.append(str(message["id"]))
            if isinstance(item.get("content"), str):
                item["content"] = self._text(item["content"])
            items.append(item)
        return self._add(
            Segment(
                SegmentKind.HISTORY,
                canonical_json(items),
                name,
                sources=tuple(sources),
                items=tuple(items),
            )
        )

    def with_user(self, text: str, *, name: str = "user") -> PromptPlan:
        """Set the current user turn (the last message)."""
        return self._add(Segment(SegmentKind.USER, self._text(text), name))

    @classmethod
    def from_request(cls, request: Mapping[str, Any], **options: Any) -> PromptPlan:
        """Build a plan from a chat-completions request body.

        Leading ``system``/``developer`` messages become policy blocks (one given as text
        parts, as a :class:`~tokenlean.ContextPack` renders it: its first part a policy block,
        the static prefix, and the rest a state block, what changes from call to call),
        ``tools`` the tools segment, a final ``user`` message the user turn, and every other
        message history (in its original order). ``options`` are passed to the constructor;
        ``model`` defaults to the request's.

        Raises:
            MalformedRequestError: the request has no ``messages`` list.
        """
        messages = request.get("messages") if isinstance(request, Mapping) else None
        if not isinstance(messages, list):
            raise MalformedRequestError("a chat request needs a 'messages' list")
        model = request.get("model")
        options.setdefault("model", model if isinstance(model, str) else None)
        plan = cls(**options)
        rest = list(messages)
        index = 0
        while (
            rest and isinstance(rest[0], Mapping) and rest[0].get("role") in ("system", "developer")
        ):
            content = rest.pop(0).get("content")
            parts = [content] if isinstance(content, str) else _text_parts(content)
            if parts is None:
                raise MalformedRequestError(f"system message {index} must have text content")
            plan = plan.with_policy(parts[0], name=f"system-{index}")
            if len(parts) > 1:
                plan = plan.with_state("".join(parts[1:]), name=f"system-{index}-state")
            index += 1
        tools = request.get("tools")
        if tools:
            plan = plan.with_tools(tools)
        user: str | None = None
        last = rest[-1] if rest else None
        if (
            isinstance(last, Mapping)
            and last.get("role") == "user"
            and isinstance(last.get("content"), str)
        ):
            user = rest.pop()["content"]
        if rest:
            plan = plan.with_history(rest)
        if user is not None:
            plan = plan.with_user(user)
        return plan

    # ---------------------------------------------------------------------------- views

    def _resolve(self) -> tuple[list[Segment], tuple[MaskedValue, ...]]:
        """Segments in render order with volatile values handled, and the values found."""
        ordered = sorted(self.segments, key=lambda s: _ORDER[s.kind])  # stable within a kind
        if self.volatile == "keep":
            return [replace(s, key_text=s.text) for s in ordered], ()
        masker = VolatileMasker(self.detectors)
        out: list[Segment] = []
        found: list[MaskedValue] = []
        for segment in ordered:
            if segment.kind is SegmentKind.POLICY:
                result = masker.mask(segment.text)
                found.extend(result.masked)
                text = result.text if self.volatile == "move" else segment.text
                out.append(replace(segment, text=text, key_text=result.text))
            else:
                out.append(replace(segment, key_text=segment.text))
        if found and self.volatile == "move":
            values = {item.placeholder: item.value for item in found}  # one value each
            lines = "\n".join(f"{ph} = {value}" for ph, value in values.items())
            text = f"Current values:\n{lines}"
            moved = Segment(SegmentKind.STATE, text, "volatile-values", key_text=text)
            at = next(
                (i for i, s in enumerate(out) if _ORDER[s.kind] > _ORDER[SegmentKind.STATE]),
                len(out),
            )
            out.insert(at, moved)
        return out, tuple(found)

    def ordered(self) -> list[Segment]:
        """The segments in render order, with volatile values handled as configured."""
        return self._resolve()[0]

    def moved_values(self) -> tuple[MaskedValue, ...]:
        """Volatile values found in the static segments (moved or masked, per ``volatile``)."""
        return self._resolve()[1]

    def static_prefix_fingerprint(self) -> str:
        """A hash of the static prefix (policy blocks and tools, with names and versions).

        Stable across processes and runs; changes when any static text, version or tool schema
        changes, and does not change with volatile values unless ``volatile="keep"``.
        """
        return _static_fingerprint(self.ordered())

    def _counter(self) -> Callable[[str], int]:
        return self.counter or get_token_counter(self.model)

    def render(self) -> RenderedPrompt:
        """Render to OpenAI-style messages and tools, with token accounting.

        Raises:
            MalformedRequestError: the plan has no segment at all.
        """
        if not self.segments:
            raise MalformedRequestError("an empty prompt plan cannot be rendered")
        count = self._counter()
        messages: list[dict[str, Any]] = []
        tools: list[dict[str, Any]] = []
        accounting: list[tuple[str, str, int]] = []
        static_tokens = 0
        segments, moved = self._resolve()
        for segment in segments:
            if segment.kind is SegmentKind.TOOLS:
                tools.extend(dict(t) for t in segment.items)
                tokens = count_tool_tokens(segment.items, model=self.model, counter=count)
            elif segment.kind is SegmentKind.HISTORY:
                history = [dict(m) for m in segment.items]
                messages.extend(history)
                tokens = sum(
                    count_message_tokens(history, model=self.model, counter=count).per_message
                )
            else:
                role = "user" if segment.kind is SegmentKind.USER else self.system_role
                messages.append({"role": role, "content": segment.text})
                tokens = TOKENS_PER_MESSAGE + count(role) + count(segment.text)
            accounting.append((segment.kind.value, segment.name, tokens))
            if segment.kind.is_static:
                static_tokens += tokens
        total = count_message_tokens(messages, model=self.model, tools=tools, counter=count).total
        return RenderedPrompt(
            messages=messages,
            tools=tools,
            segment_tokens=accounting,
            total_tokens=total,
            static_prefix_tokens=static_tokens,
            static_prefix_fingerprint=_static_fingerprint(segments),
            moved=moved,
        )

    def __len__(self) -> int:
        return len(self.segments)


def _text_parts(content: Any) -> list[str] | None:
    """The texts of a non-empty list of text parts, or None if ``content`` is anything else."""
    if not isinstance(content, list) or not content:
        return None
    texts: list[str] = []
    for part in content:
        text = part.get("text") if isinstance(part, Mapping) else None
        if not isinstance(text, str) or part.get("type") != "text":
            return None
        texts.append(text)
    return texts
