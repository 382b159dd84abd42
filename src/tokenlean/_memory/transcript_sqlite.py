"""``SQLiteTranscriptStore``: transcripts in a SQLite file, surviving restarts."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenlean._errors import InvalidInputError, StoreError
from tokenlean._memory.transcript import Turn, check_continuation, encode_state, encode_turn
from tokenlean._sqlite_file import open_database

__all__ = ["SQLiteTranscriptStore"]

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
    """Transcripts in a SQLite file: they survive restarts. Thread-safe, and several processes
    may share the file (each append is one transaction).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from tokenlean import SQLiteTranscriptStore, Turn
        >>> folder = tempfile.TemporaryDirectory()
        >>> store = SQLiteTranscriptStore(Path(folder.name) / "memory.db")
        >>> store.append(
        ...     "acme",
        ...     "ticket-42",
        ...     [
        ...         Turn("t0", 0, "user", "Where is order 1234?", 1.0),
        ...         Turn("t1", 1, "assistant", "It left Lyon today.", 2.0),
        ...     ],
        ... )
        >>> store.close()
        >>> reopened = SQLiteTranscriptStore(Path(folder.name) / "memory.db")  # a restart
        >>> [(t.id, t.content) for t in reopened.turns("acme", "ticket-42")]
        [('t0', 'Where is order 1234?'), ('t1', 'It left Lyon today.')]
        >>> reopened.close()
        >>> folder.cleanup()

    Raises:
        CorruptedStoreError / ForeignStoreError: the file is damaged or not a tokenlean memory.
        StoreError: an operation on a closed store, or the file failed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn, _ = open_database(
            self.path, fmt="tokenlean-memory", schema_version=1, schema=_SCHEMA
        )
        self._lock = threading.Lock()

    def append(self, tenant: str, session: str, turns: Sequence[Turn]) -> None:
        batch = list(turns)
        rows = []
        for t in batch:
            tool_calls, metadata = encode_turn(t)
            rows.append((tenant, session, t.index, t.id, t.role, t.content, t.timestamp,
                         t.speaker, tool_calls, t.tool_call_id, metadata))  # fmt: skip
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    (count,) = self._conn.execute(
                        "SELECT COUNT(*) FROM turns WHERE tenant = ? AND session = ?",
                        (tenant, session),
                    ).fetchone()
                    check_continuation(count, batch)  # ids already stored: UNIQUE below
                    self._conn.executemany("INSERT INTO turns VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" in str(exc):
                    raise InvalidInputError(f"a turn id is already in session {session!r}") from exc
                raise StoreError(f"could not append to {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"could not append to {self.path}: {exc}") from exc

    def turns(self, tenant: str, session: str) -> list[Turn]:
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT idx, id, role, content, timestamp, speaker, tool_calls, tool_call_id, "
                    "metadata FROM turns WHERE tenant = ? AND session = ? ORDER BY idx",
                    (tenant, session),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"could not read {self.path}: {exc}") from exc
        return [
            Turn(id=r[1], index=r[0], role=r[2], content=r[3], timestamp=r[4], speaker=r[5],
                 tool_calls=tuple(json.loads(r[6])), tool_call_id=r[7], metadata=json.loads(r[8]))
            for r in rows
        ]  # fmt: skip

    def get_state(self, tenant: str, session: str, name: str) -> Any:
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT value FROM session_state WHERE tenant = ? AND session = ? AND name = ?",
                    (tenant, session, name),
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"could not read {self.path}: {exc}") from exc
        return json.loads(row[0]) if row else None

    def put_state(self, tenant: str, session: str, name: str, value: Any) -> None:
        raw = encode_state(value)
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO session_state VALUES (?, ?, ?, ?)",
                    (tenant, session, name, raw),
                )
            except sqlite3.Error as exc:
                raise StoreError(f"could not write to {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()
