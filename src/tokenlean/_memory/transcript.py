"""The raw transcript: every turn of every session, kept and never destroyed.

Turns are appended per ``(tenant, session)`` with a stable id and a timestamp; nothing in
tokenlean rewrites or deletes them (the compressed context is a view built for each call).
Small per-session state (the rolling summary, the slots) is kept beside them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tokenlean._errors import InvalidInputError, MalformedRequestError, StoreError
from tokenlean._sqlite_file import open_database

__all__ = ["MemoryTranscriptStore", "SQLiteTranscriptStore", "TranscriptStore", "Turn"]

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
    if not isinstance(timestamp, int | float):
        raise MalformedRequestError(f"message {index}: timestamp must be a number")
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
    """Where transcripts live. Implementations are thread-safe and never delete turns."""

    def append(self, tenant: str, session: str, turns: Sequence[Turn]) -> None:
        """Append turns (their indexes continue the session's)."""
        ...

    def turns(self, tenant: str, session: str) -> list[Turn]:
        """Every turn of the session, in order."""
        ...

    def get_state(self, tenant: str, session: str, name: str) -> Any:
        """A piece of session state (JSON), or None."""
        ...

    def put_state(self, tenant: str, session: str, name: str, value: Any) -> None:
        """Store a piece of session state (JSON-serializable)."""
        ...


class MemoryTranscriptStore:
    """Transcripts in process memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: dict[tuple[str, str], list[Turn]] = {}
        self._state: dict[tuple[str, str, str], str] = {}

    def append(self, tenant: str, session: str, turns: Sequence[Turn]) -> None:
        with self._lock:
            stored = self._turns.setdefault((tenant, session), [])
            _check_append(stored, turns)
            stored.extend(turns)

    def turns(self, tenant: str, session: str) -> list[Turn]:
        with self._lock:
            return list(self._turns.get((tenant, session), ()))

    def get_state(self, tenant: str, session: str, name: str) -> Any:
        with self._lock:
            raw = self._state.get((tenant, session, name))
        return json.loads(raw) if raw is not None else None

    def put_state(self, tenant: str, session: str, name: str, value: Any) -> None:
        raw = json.dumps(value)
        with self._lock:
            self._state[(tenant, session, name)] = raw


def _check_append(stored: Sequence[Turn], turns: Sequence[Turn]) -> None:
    ids = {t.id for t in stored}
    for offset, turn in enumerate(turns):
        if turn.index != len(stored) + offset:
            raise InvalidInputError(f"turn {turn.id!r} has index {turn.index}, expected "
                                    f"{len(stored) + offset}")  # fmt: skip
        if turn.id in ids:
            raise InvalidInputError(f"turn id {turn.id!r} is already in the session")
        ids.add(turn.id)


_SCHEMA = """
CREATE TABLE turns (
    tenant TEXT NOT NULL, session TEXT NOT NULL, idx INTEGER NOT NULL, id TEXT NOT NULL,
    role TEXT NOT NULL, content TEXT NOT NULL, timestamp REAL NOT NULL, speaker TEXT,
    tool_calls TEXT NOT NULL, tool_call_id TEXT, metadata TEXT NOT NULL,
    PRIMARY KEY (tenant, session, idx), UNIQUE (tenant, session, id)
);
CREATE TABLE session_state (
    tenant TEXT NOT NULL, session TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (tenant, session, name)
);
"""


class SQLiteTranscriptStore:
    """Transcripts in a SQLite file: they survive restarts. Thread-safe.

    Raises:
        CorruptedStoreError / ForeignStoreError: the file is damaged or not a tokenlean memory.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn, _ = open_database(
            self.path, fmt="tokenlean-memory", schema_version=1, schema=_SCHEMA
        )
        self._lock = threading.Lock()

    def append(self, tenant: str, session: str, turns: Sequence[Turn]) -> None:
        rows = [
            (tenant, session, t.index, t.id, t.role, t.content, t.timestamp, t.speaker,
             json.dumps([dict(c) for c in t.tool_calls]), t.tool_call_id,
             json.dumps(dict(t.metadata)))
            for t in turns
        ]  # fmt: skip
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                (count,) = self._conn.execute(
                    "SELECT COUNT(*) FROM turns WHERE tenant = ? AND session = ?", (tenant, session)
                ).fetchone()
                for offset, turn in enumerate(turns):  # ids are checked by UNIQUE below
                    if turn.index != count + offset:
                        raise InvalidInputError(
                            f"turn {turn.id!r} has index {turn.index}, expected {count + offset}"
                        )
                self._conn.executemany("INSERT INTO turns VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                self._conn.execute("COMMIT")
            except InvalidInputError:
                self._conn.execute("ROLLBACK")
                raise
            except Exception as exc:
                self._conn.execute("ROLLBACK")
                if "UNIQUE" in str(exc):
                    raise InvalidInputError(f"a turn id is already in session {session!r}") from exc
                raise StoreError(f"could not append to {self.path}: {exc}") from exc

    def turns(self, tenant: str, session: str) -> list[Turn]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT idx, id, role, content, timestamp, speaker, tool_calls, tool_call_id, "
                "metadata FROM turns WHERE tenant = ? AND session = ? ORDER BY idx",
                (tenant, session),
            ).fetchall()
        return [
            Turn(id=r[1], index=r[0], role=r[2], content=r[3], timestamp=r[4], speaker=r[5],
                 tool_calls=tuple(json.loads(r[6])), tool_call_id=r[7], metadata=json.loads(r[8]))
            for r in rows
        ]  # fmt: skip

    def get_state(self, tenant: str, session: str, name: str) -> Any:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM session_state WHERE tenant = ? AND session = ? AND name = ?",
                (tenant, session, name),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def put_state(self, tenant: str, session: str, name: str, value: Any) -> None:
        raw = json.dumps(value)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO session_state VALUES (?, ?, ?, ?)",
                (tenant, session, name, raw),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
