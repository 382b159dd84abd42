"""``SQLiteTranscriptStore``: transcripts in a SQLite file, surviving restarts."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenlean._errors import InvalidInputError
from tokenlean._memory.transcript import Turn, check_continuation, encode_state, encode_turn
from tokenlean._sqlite_file import open_database, rollback, sqlite_error

__all__ = ["SQLiteTranscriptStore"]

_COLUMNS = "idx, id, role, content, timestamp, speaker, tool_calls, tool_call_id, metadata"
_LAST_INDEX = "SELECT idx FROM turns WHERE tenant = ? AND session = ? ORDER BY idx DESC LIMIT 1"
_FIND_CHUNK = 500  # ids per query: far below SQLite's limit on bound parameters

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

# Turn embeddings: made on the first write, so that a file from before them (or a read-only one)
# opens unchanged; a file without the table simply has no vectors yet.
_VECTORS_TABLE = """
CREATE TABLE IF NOT EXISTS turn_vectors (
    tenant TEXT NOT NULL, session TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (tenant, session, key)
)
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

    Reads of a range, :meth:`count` and :meth:`find` go through the primary key and the
    unique id index: their cost does not grow with the session.

    Raises:
        CorruptedStoreError / ForeignStoreError: the file is damaged or not a tokenlean memory.
        StoreError: the file failed; a :class:`StoreFullError`, :class:`StoreReadOnlyError`,
            :class:`StoreLockedError` or :class:`StoreClosedError` when that is the cause. It
            names the file and keeps SQLite's error as its cause.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        absolute = str(self.path.absolute())  # before the working folder can change
        unsafe = any(c in absolute for c in "?#\t\r\n")  # a URI cannot carry these
        self._location = None if unsafe else f"sqlite:///{absolute}"
        self._conn, _ = open_database(
            self.path, fmt="tokenlean-memory", schema_version=1, schema=_SCHEMA
        )
        self._lock = threading.Lock()

    @property
    def uri(self) -> str | None:
        """The URI :func:`tokenlean.open_transcript_store` reopens this store from:
        ``sqlite:////absolute/path.db`` (the path made absolute when the store was opened), or
        None for a path holding ``?``, ``#``, a tab or a line break, which a URI cannot carry.

        Example:
            >>> import tempfile, os
            >>> path = os.path.join(tempfile.mkdtemp(), "memory.db")
            >>> store = SQLiteTranscriptStore(path)
            >>> store.uri == f"sqlite:///{path}"
            True
            >>> store.close()
        """
        return self._location

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
                    last = self._conn.execute(_LAST_INDEX, (tenant, session)).fetchone()
                    # ids already stored: the UNIQUE constraint below
                    check_continuation(last[0] + 1 if last else 0, batch)
                    self._conn.executemany("INSERT INTO turns VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                    self._conn.execute("COMMIT")
                except BaseException:
                    rollback(self._conn)
                    raise
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" in str(exc):
                    raise InvalidInputError(f"a turn id is already in session {session!r}") from exc
                raise sqlite_error(self.path, "append", exc) from exc
            except sqlite3.Error as exc:
                raise sqlite_error(self.path, "append", exc) from exc

    def turns(
        self, tenant: str, session: str, start: int = 0, end: int | None = None
    ) -> list[Turn]:
        query = f"SELECT {_COLUMNS} FROM turns WHERE tenant = ? AND session = ? AND idx >= ?"
        params: tuple[object, ...] = (tenant, session, start)
        if end is not None:
            query, params = query + " AND idx < ?", (*params, end)
        with self._lock:
            try:
                rows = self._conn.execute(query + " ORDER BY idx", params).fetchall()
            except sqlite3.Error as exc:
                raise sqlite_error(self.path, "read", exc) from exc
        return [_turn(row) for row in rows]

    def count(self, tenant: str, session: str) -> int:
        with self._lock:
            try:
                last = self._conn.execute(_LAST_INDEX, (tenant, session)).fetchone()
            except sqlite3.Error as exc:
                raise sqlite_error(self.path, "read", exc) from exc
        return int(last[0]) + 1 if last else 0

    def find(self, tenant: str, session: str, ids: Collection[str]) -> list[Turn]:
        with self._lock:
            try:
                rows = self._select_in(f"SELECT {_COLUMNS} FROM turns", "id", tenant, session, ids)
            except sqlite3.Error as exc:
                raise sqlite_error(self.path, "read", exc) from exc
        return [_turn(row) for row in sorted(rows, key=lambda row: int(row[0]))]

    def _select_in(
        self, select: str, column: str, tenant: str, session: str, values: Collection[str]
    ) -> list[tuple[Any, ...]]:
        """The session's rows of ``select`` whose ``column`` is one of ``values``, queried in
        chunks (SQLite bounds the parameters of one statement); the caller holds the lock."""
        wanted = sorted(set(values))
        rows: list[tuple[Any, ...]] = []
        for at in range(0, len(wanted), _FIND_CHUNK):
            chunk = wanted[at : at + _FIND_CHUNK]
            rows += self._conn.execute(
                f"{select} WHERE tenant = ? AND session = ? "
                f"AND {column} IN ({','.join('?' * len(chunk))})",
                (tenant, session, *chunk),
            ).fetchall()
        return rows

    def get_state(self, tenant: str, session: str, name: str) -> Any:
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT value FROM session_state WHERE tenant = ? AND session = ? AND name = ?",
                    (tenant, session, name),
                ).fetchone()
            except sqlite3.Error as exc:
                raise sqlite_error(self.path, "read", exc) from exc
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
                raise sqlite_error(self.path, "write", exc) from exc

    def update_state(
        self, tenant: str, session: str, name: str, change: Callable[[Any], Any]
    ) -> Any:
        """Replace a piece of state with ``change(current)`` in one write transaction, so a
        concurrent update (another process on the same file) is never lost. Returns the value
        stored.

        Raises:
            NotSerializableError: ``change`` returned a value with no JSON form (nothing is
                written).
            StoreError: the file could not be read or written (nothing is written).
        """
        with self._write() as conn:
            row = conn.execute(
                "SELECT value FROM session_state WHERE tenant = ? AND session = ? AND name = ?",
                (tenant, session, name),
            ).fetchone()
            value = change(json.loads(row[0]) if row else None)
            conn.execute(
                "INSERT OR REPLACE INTO session_state VALUES (?, ?, ?, ?)",
                (tenant, session, name, encode_state(value)),
            )
        return value

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the store's lock: committed when the block ends, rolled
        back if it raises; SQLite's errors become :class:`StoreError` naming the file."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    rollback(self._conn)
                    raise
            except sqlite3.Error as exc:
                raise sqlite_error(self.path, "write", exc) from exc

    def get_vectors(self, tenant: str, session: str, keys: Collection[str]) -> dict[str, bytes]:
        """Stored turn embeddings by key (unknown keys skipped)."""
        with self._lock:
            try:
                rows = self._select_in(
                    "SELECT key, vector FROM turn_vectors", "key", tenant, session, keys
                )
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return {}  # nothing stored in this file yet
                raise sqlite_error(self.path, "read", exc) from exc
            except sqlite3.Error as exc:
                raise sqlite_error(self.path, "read", exc) from exc
        return dict(rows)

    def put_vectors(self, tenant: str, session: str, vectors: Mapping[str, bytes]) -> None:
        """Store turn embeddings by key (replacing a key's previous value), in one transaction."""
        rows = [(tenant, session, str(key), bytes(value)) for key, value in vectors.items()]
        if not rows:
            return
        with self._write() as conn:
            conn.execute(_VECTORS_TABLE)
            conn.executemany("INSERT OR REPLACE INTO turn_vectors VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _turn(row: Sequence[Any]) -> Turn:
    return Turn(id=row[1], index=row[0], role=row[2], content=row[3], timestamp=row[4],
                speaker=row[5], tool_calls=tuple(json.loads(row[6])), tool_call_id=row[7],
                metadata=json.loads(row[8]))  # fmt: skip
