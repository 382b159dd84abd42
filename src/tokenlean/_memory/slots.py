"""Slot-based structured state: typed facts about the conversation, pinned in every context.

The application declares its slots as a pydantic model (entities, preferences, constraints,
permissions, open tasks, tool results…). Extractors propose values from each new turn; a later
value supersedes an earlier one and the history of every change is kept, with the turn it came
from. A value the model rejects is refused with a clear error and nothing changes
(:meth:`ConversationMemory.add <tokenlean.ConversationMemory.add>` records that error as the
session's ``slot_error`` instead of raising it: the turn is stored either way).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from tokenlean._errors import ConfigurationError, InvalidInputError
from tokenlean._memory.transcript import Turn

__all__ = ["RegexExtractor", "SlotChange", "SlotExtractor", "SlotState"]


@dataclass(frozen=True)
class SlotChange:
    """One change of one slot: the old and new value, the turn that caused it, and when."""

    slot: str
    old: Any
    new: Any
    turn_id: str | None
    timestamp: float


@runtime_checkable
class SlotExtractor(Protocol):
    """Proposes slot values from a turn: ``{slot: value}`` (empty when it finds nothing)."""

    def extract(self, turn: Turn) -> Mapping[str, Any]: ...


class RegexExtractor:
    """Fills one slot from a regular expression's first group (or the whole match).

    Example:
        >>> import re
        >>> extractor = RegexExtractor("order_id", r"order\\s+#?(\\d{4,})", flags=re.I)
        >>> from tokenlean._memory.transcript import Turn
        >>> extractor.extract(Turn("t0", 0, "user", "Where is order #12345?", 0.0))
        {'order_id': '12345'}
    """

    def __init__(
        self,
        slot: str,
        pattern: str,
        *,
        flags: int = 0,
        roles: Sequence[str] = ("user",),
        transform: Callable[[str], Any] | None = None,
    ) -> None:
        try:
            self.pattern = re.compile(pattern, flags)
        except re.error as exc:
            raise ConfigurationError(f"slot {slot!r}: invalid pattern: {exc}") from exc
        self.slot = slot
        self.roles = tuple(roles)
        self.transform = transform

    def extract(self, turn: Turn) -> Mapping[str, Any]:
        if turn.role not in self.roles:
            return {}
        match = self.pattern.search(turn.content)
        if match is None:
            return {}
        value = match.group(1) if match.groups() else match.group(0)
        return {self.slot: self.transform(value) if self.transform else value}


class SlotState:
    """The current slot values of one session, validated by the application's model.

    Raises:
        InvalidInputError: an update the model rejects (nothing is changed).

    Example:
        >>> from pydantic import BaseModel
        >>> class Trip(BaseModel):
        ...     city: str | None = None
        ...     travellers: int = 1
        >>> state = SlotState(Trip)
        >>> [(c.slot, c.new) for c in state.update({"city": "Lisbon", "travellers": 2},
        ...                                        turn_id="t0")]
        [('city', 'Lisbon'), ('travellers', 2)]
        >>> state.update({"city": "Porto"}, turn_id="t3")  # a later value supersedes
        [SlotChange(slot='city', old='Lisbon', new='Porto', turn_id='t3', timestamp=0.0)]
        >>> print(state.render())
        city: Porto
        travellers: 2
        >>> state.sources()  # the turns the current values came from
        ('t3', 't0')
        >>> from tokenlean import InvalidInputError
        >>> try:
        ...     state.update({"travellers": "many"})
        ... except InvalidInputError:
        ...     print("rejected; travellers is still", state.current.travellers)
        rejected; travellers is still 2
    """

    def __init__(self, model: type[BaseModel], values: Mapping[str, Any] | None = None,
                 history: Sequence[SlotChange] = ()) -> None:  # fmt: skip
        self.model = model
        try:
            self.current = model.model_validate(dict(values or {}))
        except ValidationError as exc:
            raise InvalidInputError(f"invalid stored slots: {exc}") from exc
        self.history = list(history)

    def update(
        self, values: Mapping[str, Any], *, turn_id: str | None = None, timestamp: float = 0.0
    ) -> list[SlotChange]:
        """Set slots; return the changes made (unchanged values make none)."""
        unknown = set(values) - set(self.model.model_fields)
        if unknown:
            raise InvalidInputError(f"unknown slots: {sorted(unknown)}")
        merged = {**self.current.model_dump(), **values}
        try:
            updated = self.model.model_validate(merged)
        except ValidationError as exc:
            raise InvalidInputError(f"rejected slot values {dict(values)}: {exc}") from exc
        changes = []
        for name in values:
            old, new = getattr(self.current, name), getattr(updated, name)
            if old != new:
                changes.append(SlotChange(name, _plain(old), _plain(new), turn_id, timestamp))
        self.current = updated
        self.history.extend(changes)
        return changes

    def render(self) -> str:
        """The set slots as ``name: value`` lines (unset ones are omitted)."""
        lines = []
        for name, value in self.current.model_dump(mode="json").items():
            if value not in (None, "", [], {}):
                lines.append(f"{name}: {value}")
        return "\n".join(lines)

    def sources(self) -> tuple[str, ...]:
        """Ids of the turns the current values came from."""
        latest: dict[str, str | None] = {}
        for change in self.history:
            latest[change.slot] = change.turn_id
        return tuple(dict.fromkeys(t for t in latest.values() if t))

    def to_json(self) -> dict[str, Any]:
        return {
            "values": self.current.model_dump(mode="json"),
            "history": [[c.slot, c.old, c.new, c.turn_id, c.timestamp] for c in self.history],
        }

    @classmethod
    def from_json(cls, model: type[BaseModel], data: Any) -> SlotState:
        if not isinstance(data, dict):
            return cls(model)
        history = [SlotChange(*row) for row in data.get("history", [])]
        return cls(model, data.get("values"), history)


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
