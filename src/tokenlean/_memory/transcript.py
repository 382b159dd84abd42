"""The raw transcript's port: every turn of every session, kept and never destroyed.

Turns are appended per ``(tenant, session)`` with a stable id and a timestamp; nothing in
tokenlean rewrites or deletes them (the compressed context is a view built for each call).
Small per-session state (the rolling summary, the slots) is kept beside them.

This module holds the :class:`TranscriptStore` protocol, the :class:`Turn` type and the checks
every backend shares; the backends are :mod:`tokenlean._memory.transcript_memory` and
:mod:`tokenlean._memory.transcript_sqlite`. ``tokenlean.testing.TranscriptStoreContract`` is the
behaviour suite they all pass.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tokenlean._errors import InvalidInputError, MalformedRequestError, NotSerializableError

__all__ = [
    "TranscriptStore",
    "Turn",
    "check_continuation",
    "encode_state",
    "encode_turn",
    "same_message",
    "turn_from_message",
]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True)
class Turn:
    """One message of a conversation.

    Attributes:
        id: stable id, unique within the session (given, or ``"t{index}"``).
        index: position in the session (0-based).
        role: ``system``, ``developer``, ``user``, ``assistant`` or ``tool``.
        content: the text.
        timestamp: seconds since the epoch (the memory's clock, or given).
        speaker: who spoke, when not just the role (a name in a multi-party conversation).
        tool_calls: an assistant turn's tool calls (OpenAI format).
        tool_call_id: the call a tool turn answers.
        metadata: anything else (a session date, an image caption…).
    """

    id: str
    index: int
    role: str
    content: str
    timestamp: float
    speaker: str | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    tool_call_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, message: Mapping[str, Any], index: int = 0) -> Turn:
        """Check an OpenAI-style message as :meth:`ConversationMemory.add` does, and make it
        a turn (at ``index``, timestamped now unless the message gives one).

        Raises:
            MalformedRequestError: no valid role, non-text content, or a tool turn without
                its call id.
        """
        return turn_from_message(message, index, time.time())

    def to_message(self) -> dict[str, Any]:
        """The turn as an OpenAI-style chat message."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [dict(call) for call in self.tool_calls]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.speaker and self.role == "user":
            message["name"] = "".join(
                ch if ch.isalnum() or ch in "_-" else "_" for ch in self.speaker
            )
        return message


def turn_from_message(
    message: Mapping[str, Any], index: int, now: float, turn_id: str | None = None
) -> Turn:
    """Validate an OpenAI-style message and make it a turn.

    Raises:
        MalformedRequestError: no valid role, non-text content, or a tool turn without its id.
    """
    if not isinstance(message, Mapping):
        raise MalformedRequestError(f"message {index} must be an object")
    role = message.get("role")
    if role not in _ROLES:
        raise MalformedRequestError(f"message {index}: role must be one of {sorted(_ROLES)}")
    content = message.get("content")
    if content is None:
        content = ""
    if isinstance(content, list):
        content = "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, Mapping)
        )
    if not isinstance(content, str):
        raise MalformedRequestError(f"message {index}: content must be text")
    tool_calls = message.get("tool_calls") or ()
    if not isinstance(tool_calls, list | tuple):
        raise MalformedRequestError(f"message {index}: tool_calls must be a list")
    if role == "tool" and not message.get("tool_call_id"):
        raise MalformedRequestError(f"message {index}: a tool message needs its tool_call_id")
    metadata = message.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise MalformedRequestError(f"message {index}: metadata must be an object")
    timestamp = message.get("timestamp", now)
    if not isinstance(timestamp, int | float) or not math.isfinite(timestamp):
        raise MalformedRequestError(f"message {index}: timestamp must be a finite number")
    return Turn(
        id=str(turn_id or message.get("id") or f"t{index}"),
        index=index,
        role=str(role),
        content=content,
        timestamp=float(timestamp),
        speaker=message.get("speaker") or message.get("name"),
        tool_calls=tuple(tool_calls),
        tool_call_id=message.get("tool_call_id"),
        metadata=dict(metadata),
    )


@runtime_checkable
class TranscriptStore(Protocol):
    """Where transcripts live. Implementations are thread-safe and never delete turns.

    :class:`~tokenlean.ConversationMemory` never reads a whole transcript to write to it: it
    uses :meth:`count`, ranges of :meth:`turns` and :meth:`find`, whose cost must not grow with
    the session (an index, not a scan), so that ``add()`` costs the same at any length.

    Two optional groups of methods, used when a store has them:

    - ``update_state(tenant, session, name, change)``: replace a state value with
      ``change(current)`` atomically (no concurrent update lost); without it, state is read,
      changed and written.
    - ``get_vectors(tenant, session, keys) -> dict[str, bytes]`` and
      ``put_vectors(tenant, session, vectors)``: the embeddings of the session's turns, by a key
      that names the text and the model (see :mod:`tokenlean._memory.turn_vectors`), so that a
      restart or another replica does not embed a stored turn again. Without them, a process
      embeds the turns it has not seen. Unknown keys are skipped; storing a key again replaces
      its value.

    ``tokenlean.testing.TranscriptStoreContract`` checks an implementation against this.
    """

    def append(self, tenant: str, session: str, turns: Sequence[Turn]) -> None:
        """Append turns (their indexes continue the session's), all of them or none.

        Raises:
            InvalidInputError: an index that does not continue the session, a turn id already
                in the session (or twice in the batch), text that is not valid Unicode, or a
                timestamp that is not a finite number.
            NotSerializableError: tool calls or metadata with no JSON form.
            StoreError: the storage failed (a closed store, a full disk…).
        """
        ...

    def turns(
        self, tenant: str, session: str, start: int = 0, end: int | None = None
    ) -> list[Turn]:
        """The session's turns with ``start <= index < end`` (``end=None``: to the last one), in
        order: by default every turn. A new list; empty for an unknown session or a range past
        the end. ``start`` and ``end`` are not negative. Reading a range costs what the range
        holds, not what the session holds."""
        ...

    def count(self, tenant: str, session: str) -> int:
        """How many turns the session holds (the index the next turn takes), without reading
        them: the cost does not grow with the session."""
        ...

    def find(self, tenant: str, session: str, ids: Collection[str]) -> list[Turn]:
        """The session's turns whose id is in ``ids``, in order (unknown ids are skipped).
        The cost grows with ``ids``, not with the session."""
        ...

    def get_state(self, tenant: str, session: str, name: str) -> Any:
        """A piece of session state (JSON), or None."""
        ...

    def put_state(self, tenant: str, session: str, name: str, value: Any) -> None:
        """Store a piece of session state (JSON-serializable), replacing the previous value.

        Raises:
            NotSerializableError: a value with no JSON form (the previous value is kept).
        """
        ...


def same_message(stored: Turn, turn: Turn, *, timestamp: bool) -> bool:
    """Whether ``stored`` is ``turn`` as a store gives it back: the same role, text, speaker,
    tool calls, tool call id and metadata (compared as JSON), and the same timestamp when
    ``timestamp`` (a retry that gave none gets a new one from the clock). Ids and indexes are
    not compared."""
    if (stored.role, stored.content, stored.speaker, stored.tool_call_id) != (
        turn.role, turn.content, turn.speaker, turn.tool_call_id,
    ):  # fmt: skip
        return False
    if timestamp and stored.timestamp != turn.timestamp:
        return False
    return _loose_json([dict(c) for c in stored.tool_calls], dict(stored.metadata)) == _loose_json(
        [dict(c) for c in turn.tool_calls], dict(turn.metadata)
    )


def _loose_json(*values: Any) -> str:
    return json.dumps(values, sort_keys=True, default=repr)


def check_continuation(
    start: int, turns: Sequence[Turn], existing_ids: Collection[str] = frozenset()
) -> None:
    """Check that ``turns`` continue a session holding ``start`` turns with ``existing_ids``.

    Raises:
        InvalidInputError: an index other than the next one, or an id already in the session
            or twice in the batch.
    """
    seen: set[str] = set()
    for offset, turn in enumerate(turns):
        if turn.index != start + offset:
            raise InvalidInputError(
                f"turn {turn.id!r} has index {turn.index}, expected {start + offset}"
            )
        if turn.id in existing_ids or turn.id in seen:
            raise InvalidInputError(f"turn id {turn.id!r} is already in the session")
        seen.add(turn.id)


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:  # ValueError: a circular reference
        raise NotSerializableError(f"{what} has no JSON form: {exc}") from exc


def encode_turn(turn: Turn) -> tuple[str, str]:
    """Check that a turn can be stored; return its tool calls and its metadata as JSON.

    Raises:
        InvalidInputError: text that is not valid Unicode (a lone surrogate), or a timestamp
            that is not a finite number.
        NotSerializableError: tool calls or metadata with no JSON form.
    """
    for name in ("id", "role", "content", "speaker", "tool_call_id"):
        text = getattr(turn, name)
        if text is not None:
            try:
                str(text).encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(
                    f"turn {turn.id!r}: {name} is not valid Unicode text ({exc.reason})"
                ) from exc
    if not isinstance(turn.timestamp, int | float) or not math.isfinite(turn.timestamp):
        raise InvalidInputError(f"turn {turn.id!r}: timestamp must be a finite number")
    tool_calls = _json([dict(call) for call in turn.tool_calls], f"turn {turn.id!r}: tool_calls")
    metadata = _json(dict(turn.metadata), f"turn {turn.id!r}: metadata")
    return tool_calls, metadata


def encode_state(value: Any) -> str:
    """A session-state value as JSON.

    Raises:
        NotSerializableError: a value with no JSON form.
    """
    return _json(value, "session state")
