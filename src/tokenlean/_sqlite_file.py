"""Opening tokenlean's SQLite files safely: never write to a file that is not ours.

Every tokenlean database has a ``tokenlean_meta`` table naming its ``format`` and
``schema_version``, and the files it makes now also carry tokenlean's ``application_id`` in their
header. :func:`open_database` creates a new file with a given schema. An existing file is first
inspected without being opened for writing (its 100-byte header, then its schema through an
immutable, read-only connection that takes no lock and leaves any ``-wal`` and ``-shm`` files
alone), so a file that is not a database or is damaged (:class:`CorruptedStoreError`), or another
program's database, another format or a newer schema (:class:`ForeignStoreError`), is refused
byte for byte untouched.

:func:`sqlite_error` turns an ``sqlite3`` error into the matching typed :class:`StoreError`
naming the file, and :func:`rollback` ends a failed transaction without masking its error.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

from tokenlean._errors import (
    CorruptedStoreError,
    ForeignStoreError,
    StoreClosedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreReadOnlyError,
)

__all__ = ["APPLICATION_ID", "open_database", "rollback", "sqlite_error"]

APPLICATION_ID = 0x746B6C6E
"""The ``application_id`` in the header of every file tokenlean creates (``"tkln"``)."""

_META = "CREATE TABLE tokenlean_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
_MAGIC = b"SQLite format 3\x00"

# SQLite's primary result codes, and what each means for a store.
_TYPED: dict[int, tuple[type[StoreError], str]] = {
    5: (StoreLockedError, "locked by another connection"),  # SQLITE_BUSY
    6: (StoreLockedError, "locked by another connection"),  # SQLITE_LOCKED
    8: (StoreReadOnlyError, "read-only"),  # SQLITE_READONLY
    11: (CorruptedStoreError, "damaged"),  # SQLITE_CORRUPT
    13: (StoreFullError, "disk full"),  # SQLITE_FULL
    26: (CorruptedStoreError, "not a database"),  # SQLITE_NOTADB
}


def sqlite_error(path: Path | str, operation: str, exc: BaseException) -> StoreError:
    """The typed :class:`StoreError` for ``exc``, raised by SQLite while ``operation`` ran on
    the file at ``path``; raise it ``from exc``.

    Example:
        >>> full = sqlite3.OperationalError("database or disk is full")
        >>> error = sqlite_error("cache.db", "put", full)
        >>> type(error).__name__, str(error)
        ('StoreFullError', 'cache.db: put failed (disk full): database or disk is full')
    """
    code = getattr(exc, "sqlite_errorcode", None)
    message = str(exc)
    if isinstance(code, int) and code & 0xFF in _TYPED:
        kind, what = _TYPED[code & 0xFF]
    elif isinstance(exc, sqlite3.ProgrammingError) and "closed" in message:
        kind, what = StoreClosedError, "the store is closed"
    elif "readonly" in message or "read-only" in message:
        kind, what = _TYPED[8]
    elif "disk is full" in message:
        kind, what = _TYPED[13]
    elif "locked" in message:
        kind, what = _TYPED[5]
    elif "malformed" in message or "not a database" in message:
        kind, what = _TYPED[11]
    else:
        kind, what = StoreError, "SQLite error"
    return kind(f"{path}: {operation} failed ({what}): {message}")


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the connection's open transaction, if any. A failing ``ROLLBACK`` (a full disk,
    an I/O error) is ignored, so that the error that made the caller roll back is the one raised;
    SQLite rolls the transaction back itself when it cannot be finished."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _use_wal(conn: sqlite3.Connection, attempts: int = 100) -> None:
    """Switch to write-ahead logging (persistent in the file). The switch needs a moment with
    no other connection in a transaction; when several open the file at once, retry briefly."""
    for attempt in range(attempts):
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_schema(path: Path) -> tuple[set[str], dict[str, str]]:
    """The tables and the ``format`` and ``schema_version`` meta rows in the database file
    itself, read through an immutable connection: no lock, no ``-wal`` or ``-shm`` opened or
    created, nothing written. Pages still in another program's write-ahead log are not seen."""
    uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta: dict[str, str] = {}
        if "tokenlean_meta" in tables:
            meta = dict(
                conn.execute(
                    "SELECT name, value FROM tokenlean_meta "
                    "WHERE name IN ('format', 'schema_version')"
                ).fetchall()
            )
        return tables, meta
    finally:
        conn.close()


def _refuse_foreign(path: Path, fmt: str, schema_version: int, meta: Mapping[str, str]) -> None:
    if meta.get("format") != fmt:
        raise ForeignStoreError(
            f"{path} is a {meta.get('format', 'unknown')!r} file, not {fmt!r}; it was not modified"
        )
    version = meta.get("schema_version", "")
    if not version.isdigit() or int(version) > schema_version:
        raise ForeignStoreError(
            f"{path} has {fmt} schema {version!r}; this tokenlean reads up to {schema_version}. "
            "It was not modified."
        )


def _inspect(path: Path, fmt: str, schema_version: int) -> bool:
    """Decide, without opening ``path`` for writing, whether it is a tokenlean ``fmt`` file to
    open (True) or a missing or empty file to make one in (False).

    Raises:
        CorruptedStoreError: not a database, or unreadable.
        ForeignStoreError: another program's database, another format, or a newer schema.
    """
    wal = path.with_name(path.name + "-wal")
    if _size(path) == 0:
        if _size(wal) > 0:
            raise ForeignStoreError(
                f"{path} is empty but {wal.name} beside it holds a write-ahead log: another "
                "program's database is being written there; it was not modified"
            )
        return False
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    if len(header) < 100 or not header.startswith(_MAGIC):
        raise CorruptedStoreError(
            f"{path} is not a readable SQLite database (no SQLite header); left as it is"
        )
    application_id = int.from_bytes(header[68:72], "big")
    if application_id not in (0, APPLICATION_ID):
        raise ForeignStoreError(
            f"{path} is another application's SQLite database (application id "
            f"{application_id:#010x}); it was not modified"
        )
    error: sqlite3.Error | None = None
    for attempt in range(3):  # a checkpoint by another process can tear a page we read
        try:
            tables, meta = _read_schema(path)
            break
        except sqlite3.Error as exc:
            error = exc
            time.sleep(0.05 * (attempt + 1))
    else:
        if application_id == APPLICATION_ID:
            return True  # ours, but damaged: opening it checks it and says so
        raise CorruptedStoreError(
            f"{path} is not a readable SQLite database ({error}); left as it is"
        ) from error
    if not tables:
        if _size(wal) > 0:
            raise ForeignStoreError(
                f"{path} has no tables in its main file and a write-ahead log ({wal.name}) "
                "beside it: another program's database; it was not modified"
            )
        return False  # an empty database: made into a store, as a missing file is
    if "tokenlean_meta" not in tables:
        raise ForeignStoreError(
            f"{path} is a database with other tables ({', '.join(sorted(tables))}), "
            f"not a {fmt} file; it was not modified"
        )
    _refuse_foreign(path, fmt, schema_version, meta)
    return True


def open_database(
    path: Path,
    *,
    fmt: str,
    schema_version: int,
    schema: str,
    initial_meta: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = 30.0,
) -> tuple[sqlite3.Connection, dict[str, str]]:
    """Open (or create) the tokenlean database at ``path``; return it and its meta table.

    An existing file is inspected read-only first, and refused untouched (not even its
    ``-wal`` or ``-shm`` files) when it is not a tokenlean ``fmt`` file of a readable schema.
    An existing store is opened without writing to it, so a read-only file opens for reading.

    Args:
        path: the file; created with its folder when missing.
        fmt: the expected ``format`` (e.g. ``"tokenlean-cache"``).
        schema_version: the newest schema this code reads.
        schema: SQL creating the tables of a new file (besides ``tokenlean_meta``).
        initial_meta: extra meta rows for a new file.
        check: run SQLite's ``quick_check`` on an existing file.
        timeout: seconds an operation waits for another connection's lock.

    Raises:
        CorruptedStoreError: not a database, or damaged.
        ForeignStoreError: another program's database, another tokenlean format, or a newer
            schema.
        StoreError: the file cannot be opened or created (a typed subclass when SQLite says
            why: read-only, disk full, locked).
    """
    if path.exists() and not path.is_file():
        raise StoreError(f"{path} is not a file")
    existing = _inspect(path, fmt, schema_version)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=timeout
        )
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        if existing and check:
            status = conn.execute("PRAGMA quick_check").fetchone()[0]
            if status != "ok":
                raise CorruptedStoreError(f"{path} is damaged ({status}); left as it is")
        if not existing:
            # Creation happens in one write transaction, re-checked inside it, so two processes
            # opening a new file at once cannot both create it or see it half made.
            conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {
                    r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                if not tables:
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    for statement in (_META + schema).split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    rows = {
                        "format": fmt,
                        "schema_version": str(schema_version),
                        **(initial_meta or {}),
                    }
                    conn.executemany(
                        "INSERT INTO tokenlean_meta (name, value) VALUES (?, ?)", rows.items()
                    )
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "tokenlean_meta" not in tables:
            raise ForeignStoreError(
                f"{path} is a database with other tables ({', '.join(sorted(tables))}), "
                f"not a {fmt} file; it was not modified"
            )
        meta = dict(conn.execute("SELECT name, value FROM tokenlean_meta").fetchall())
        _refuse_foreign(path, fmt, schema_version, meta)
        _use_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
    except (CorruptedStoreError, ForeignStoreError):
        conn.close()
        raise
    except sqlite3.OperationalError as exc:  # read-only, full, locked…: say which
        conn.close()
        raise sqlite_error(path, "opening", exc) from exc
    except sqlite3.Error as exc:
        conn.close()
        raise CorruptedStoreError(
            f"{path} is not a readable SQLite database ({exc}); left as it is"
        ) from exc
    return conn, meta
