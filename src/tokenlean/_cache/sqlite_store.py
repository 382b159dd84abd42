"""SQLite cache store: the embedded default for persistence.

Payloads, vectors, features and metadata survive a restart. The file is checked when opened:
a file that is not a database, or a damaged one, raises :class:`CorruptedStoreError`; a database
that is not a tokenlean store (or of a newer schema) raises :class:`ForeignStoreError`. Neither is
ever written to. One process should write a store at a time; any number of threads and asyncio
tasks in that process may share it.

A lookup (:meth:`SQLiteStore.get`) only reads: the recency it records for least-recently-used
eviction is kept in memory and written with the next :meth:`~SQLiteStore.put` (or on close), so
a read-only file still answers lookups. Every failure raises a typed :class:`StoreError` naming
the file, with SQLite's error as its cause.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tokenlean._cache.store import Selector, StoredEntry
from tokenlean._errors import ConfigurationError, CorruptedStoreError, StoreClosedError
from tokenlean._sqlite_file import open_database, rollback, sqlite_error

__all__ = ["SQLiteStore"]

FORMAT = "tokenlean-cache"
SCHEMA_VERSION = 1
TOUCH_LIMIT = 65_536
"""Lookups whose recency waits in memory for the next write, at most (the oldest are dropped:
those entries keep their previous recency)."""

_SCHEMA = """
CREATE TABLE tokenlean_entries (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    layer TEXT NOT NULL,
    tenant TEXT NOT NULL,
    tags TEXT NOT NULL,
    plan_version TEXT,
    vector BLOB,
    features TEXT,
    size INTEGER NOT NULL,
    accessed INTEGER NOT NULL,
    UNIQUE (namespace, key)
);
CREATE INDEX tokenlean_entries_accessed ON tokenlean_entries (accessed);
CREATE INDEX tokenlean_entries_tenant ON tokenlean_entries (tenant, layer);
"""
_COLUMNS = (
    "namespace, key, payload, created_at, expires_at, layer, tenant, tags, plan_version, "
    "vector, features"
)


def _row_to_entry(row: tuple[Any, ...]) -> StoredEntry:
    return StoredEntry(
        namespace=row[0],
        key=row[1],
        payload=bytes(row[2]),
        created_at=row[3],
        expires_at=row[4],
        layer=row[5],
        tenant=row[6],
        tags=tuple(json.loads(row[7])),
        plan_version=row[8],
        vector=bytes(row[9]) if row[9] is not None else None,
        features=row[10],
    )


class SQLiteStore:
    """A persistent store in one SQLite file, bounded by entry count and bytes (LRU).

    Args:
        path: the database file; created (with its folder) if missing.
        max_entries: most entries held (None: unbounded).
        max_bytes: most bytes of payload, vectors and features held (None: unbounded).
        check: run SQLite's ``quick_check`` when opening an existing file.
        lock_timeout_s: seconds a write waits for another connection's lock before it fails
            with :class:`StoreLockedError` (a cache then drops the write).

    Raises:
        CorruptedStoreError: the file is not a database or is damaged.
        ForeignStoreError: the database is not a tokenlean store of a readable schema.
        StoreError: the file cannot be opened or created.

    Every operation raises a :class:`StoreError` naming the file when SQLite fails:
    :class:`StoreReadOnlyError`, :class:`StoreFullError`, :class:`StoreLockedError`,
    :class:`CorruptedStoreError`, :class:`StoreClosedError` after :meth:`close`, or
    :class:`StoreError` itself; SQLite's error is the cause.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "cache.db")
        >>> store = SQLiteStore(path)
        >>> _ = store.put(StoredEntry("ns", "k", b"v", 0.0))
        >>> store.close()
        >>> SQLiteStore(path).get("ns", "k").payload
        b'v'
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        check: bool = True,
        lock_timeout_s: float = 5.0,
    ) -> None:
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if value is not None and value < 1:
                raise ConfigurationError(f"{name} must be >= 1 or None, got {value}")
        if lock_timeout_s < 0:
            raise ConfigurationError(f"lock_timeout_s must be >= 0, got {lock_timeout_s}")
        self.path = Path(path)
        absolute = str(self.path.absolute())  # before the working folder can change
        unsafe = any(c in absolute for c in "?#\t\r\n")  # a URI cannot carry these
        self._location = None if unsafe else f"sqlite:///{absolute}"
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.lock_timeout_s = lock_timeout_s
        self._lock = threading.Lock()
        # (namespace, key) -> recency tick of lookups not yet written (see TOUCH_LIMIT)
        self._touched: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._conn, self._secret = self._open(check)
        try:
            count, size, accessed = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(accessed), 0) "
                "FROM tokenlean_entries"
            ).fetchone()
        except sqlite3.Error as exc:
            self._conn.close()
            raise sqlite_error(self.path, "opening the cache store", exc) from exc
        self._count, self._bytes, self._tick = int(count), int(size), int(accessed)
        self._data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]

    # ------------------------------------------------------------------ opening

    def _open(self, check: bool) -> tuple[sqlite3.Connection, bytes]:
        conn, meta = open_database(
            self.path,
            fmt=FORMAT,
            schema_version=SCHEMA_VERSION,
            schema=_SCHEMA,
            initial_meta={"secret": secrets.token_hex(32)},
            check=check,
            timeout=self.lock_timeout_s,
        )
        try:
            secret = bytes.fromhex(meta["secret"])
        except (KeyError, ValueError):
            secret = b""
        if len(secret) < 16:
            conn.close()
            raise CorruptedStoreError(f"{self.path} has no valid key secret")
        return conn, secret

    # ------------------------------------------------------------------ operations

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def uri(self) -> str | None:
        """The URI :func:`tokenlean.open_store` reopens this store from:
        ``sqlite:////absolute/path.db`` with its bounds (the path made absolute when the store
        was opened), or None for a path holding ``?``, ``#``, a tab or a line break, which a
        URI cannot carry.

        Example:
            >>> import tempfile, os
            >>> path = os.path.join(tempfile.mkdtemp(), "cache.db")
            >>> store = SQLiteStore(path, max_entries=100)
            >>> store.uri == f"sqlite:///{path}?max_entries=100"
            True
            >>> store.close()
        """
        if self._location is None:
            return None
        bounds = (("max_entries", self.max_entries), ("max_bytes", self.max_bytes))
        query = urlencode([(name, value) for name, value in bounds if value is not None])
        return self._location + (f"?{query}" if query else "")

    def _run(self, what: str, fn: Any) -> Any:
        with self._lock:
            if self._conn is None:
                raise StoreClosedError(f"{self.path}: the store is closed")
            try:
                # a transaction an earlier failure left open (its ROLLBACK failed too)
                rollback(self._conn)
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise sqlite_error(self.path, f"cache store {what}", exc) from exc

    def _sync(self, conn: sqlite3.Connection) -> None:
        """Bring the entry count, the byte total and the recency clock up to date when another
        connection (another process sharing the file) committed since this one last looked:
        inside a write transaction, so the bounds hold for the file, not per process. A store
        no other connection writes to never recounts."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            count, size, accessed = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(accessed), 0) "
                "FROM tokenlean_entries"
            ).fetchone()
            self._count, self._bytes = int(count), int(size)
            self._tick = max(self._tick, int(accessed))
            self._data_version = version

    def _write_touches(self, conn: sqlite3.Connection) -> None:
        """Write the recency of the lookups since the last write (inside its transaction)."""
        if self._touched:
            conn.executemany(
                "UPDATE tokenlean_entries SET accessed = ? WHERE namespace = ? AND key = ?",
                [(tick, ns, key) for (ns, key), tick in self._touched.items()],
            )

    def get(self, namespace: str, key: str) -> StoredEntry | None:
        def run(conn: sqlite3.Connection) -> StoredEntry | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM tokenlean_entries WHERE namespace = ? AND key = ?",
                (namespace, key),
            ).fetchone()
            if row is None:
                return None
            # Recency is recorded in memory: a lookup never writes (see TOUCH_LIMIT).
            self._tick += 1
            self._touched[(namespace, key)] = self._tick
            self._touched.move_to_end((namespace, key))
            if len(self._touched) > TOUCH_LIMIT:
                self._touched.popitem(last=False)
            return _row_to_entry(row)

        result: StoredEntry | None = self._run("get", run)
        return result

    def put(self, entry: StoredEntry) -> list[tuple[str, str]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._sync(conn)
                self._write_touches(conn)
                old = conn.execute(
                    "SELECT size FROM tokenlean_entries WHERE namespace = ? AND key = ?",
                    (entry.namespace, entry.key),
                ).fetchone()
                self._tick += 1
                conn.execute(
                    f"INSERT OR REPLACE INTO tokenlean_entries ({_COLUMNS}, size, accessed) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.namespace,
                        entry.key,
                        entry.payload,
                        entry.created_at,
                        entry.expires_at,
                        entry.layer,
                        entry.tenant,
                        json.dumps(list(entry.tags)),
                        entry.plan_version,
                        entry.vector,
                        entry.features,
                        entry.size,
                        self._tick,
                    ),
                )
                count = self._count + (0 if old else 1)
                size = self._bytes + entry.size - (old[0] if old else 0)
                evicted: list[tuple[str, str]] = []
                while count > 1 and (
                    (self.max_entries is not None and count > self.max_entries)
                    or (self.max_bytes is not None and size > self.max_bytes)
                ):
                    batch = conn.execute(
                        "SELECT namespace, key, size FROM tokenlean_entries "
                        "WHERE NOT (namespace = ? AND key = ?) ORDER BY accessed LIMIT 64",
                        (entry.namespace, entry.key),
                    ).fetchall()
                    if not batch:
                        break
                    for namespace, key, victim_size in batch:
                        if count <= 1 or not (
                            (self.max_entries is not None and count > self.max_entries)
                            or (self.max_bytes is not None and size > self.max_bytes)
                        ):
                            break
                        conn.execute(
                            "DELETE FROM tokenlean_entries WHERE namespace = ? AND key = ?",
                            (namespace, key),
                        )
                        count -= 1
                        size -= victim_size
                        evicted.append((namespace, key))
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            self._touched.clear()
            self._count, self._bytes = count, size
            return evicted

        result: list[tuple[str, str]] = self._run("put", run)
        return result

    def delete(self, selector: Selector) -> list[tuple[str, str]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column in ("namespace", "key", "tenant", "layer", "plan_version"):
            value = getattr(selector, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if selector.tag is not None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?)")
            params.append(selector.tag)
        if selector.expired_at is not None:
            clauses.append("expires_at IS NOT NULL AND expires_at <= ?")
            params.append(selector.expired_at)
        where = " AND ".join(clauses) or "1"

        def run(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._sync(conn)
                rows = conn.execute(
                    f"SELECT namespace, key, size FROM tokenlean_entries WHERE {where}", params
                ).fetchall()
                conn.execute(f"DELETE FROM tokenlean_entries WHERE {where}", params)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            self._count -= len(rows)
            self._bytes -= sum(row[2] for row in rows)
            return [(row[0], row[1]) for row in rows]

        result: list[tuple[str, str]] = self._run("delete", run)
        return result

    def scan(self, layer: str | None = None) -> Iterator[StoredEntry]:
        def run(conn: sqlite3.Connection) -> list[StoredEntry]:
            if layer is None:
                rows = conn.execute(f"SELECT {_COLUMNS} FROM tokenlean_entries").fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM tokenlean_entries WHERE layer = ?", (layer,)
                ).fetchall()
            return [_row_to_entry(row) for row in rows]

        entries: list[StoredEntry] = self._run("scan", run)
        yield from entries

    def usage(self) -> tuple[int, int]:
        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            self._sync(conn)  # what other processes sharing the file wrote counts too
            return self._count, self._bytes

        result: tuple[int, int] = self._run("usage", run)
        return result

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                # Keep the lookups' recency, then fold the write-ahead log into the database
                # file (both best effort: a read-only or full file keeps what it has).
                rollback(self._conn)
                if self._touched:
                    try:
                        self._conn.execute("BEGIN IMMEDIATE")
                        self._write_touches(self._conn)
                        self._conn.execute("COMMIT")
                    except sqlite3.Error:
                        rollback(self._conn)
                    self._touched.clear()
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"
