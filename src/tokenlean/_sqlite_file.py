"""Opening tokenlean's SQLite files safely: never write to a file that is not ours.

Every tokenlean database has a ``tokenlean_meta`` table naming its ``format`` and
``schema_version``. :func:`open_database` creates a new file with a given schema, and refuses,
without writing a byte, a file that is not a database or is damaged (:class:`CorruptedStoreError`),
a database with other tables, another format or a newer schema (:class:`ForeignStoreError`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

from tokenlean._errors import CorruptedStoreError, ForeignStoreError, StoreError

__all__ = ["open_database"]

_META = "CREATE TABLE tokenlean_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"


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


def open_database(
    path: Path,
    *,
    fmt: str,
    schema_version: int,
    schema: str,
    initial_meta: Mapping[str, str] | None = None,
    check: bool = True,
) -> tuple[sqlite3.Connection, dict[str, str]]:
    """Open (or create) the tokenlean database at ``path``; return it and its meta table.

    Args:
        path: the file; created with its folder when missing.
        fmt: the expected ``format`` (e.g. ``"tokenlean-cache"``).
        schema_version: the newest schema this code reads.
        schema: SQL creating the tables of a new file (besides ``tokenlean_meta``).
        initial_meta: extra meta rows for a new file.
        check: run SQLite's ``quick_check`` on an existing file.

    Raises:
        CorruptedStoreError: not a database, or damaged.
        ForeignStoreError: another program's database, another tokenlean format, or a newer
            schema.
        StoreError: the file cannot be opened or created.
    """
    if path.exists() and not path.is_file():
        raise StoreError(f"{path} is not a file")
    existed = path.exists() and path.stat().st_size > 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        if existed and check:
            status = conn.execute("PRAGMA quick_check").fetchone()[0]
            if status != "ok":
                raise CorruptedStoreError(f"{path} is damaged ({status}); left as it is")
        # Creation happens in one write transaction, re-checked inside it, so two processes
        # opening a new file at once cannot both create it or see it half made.
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not tables:
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
            conn.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        conn.close()
        raise StoreError(f"cannot open {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise CorruptedStoreError(
            f"{path} is not a readable SQLite database ({exc}); left as it is"
        ) from exc
    except CorruptedStoreError:
        conn.close()
        raise
    if tables and "tokenlean_meta" not in tables:
        conn.close()
        raise ForeignStoreError(
            f"{path} is a database with other tables ({', '.join(sorted(tables))}), "
            f"not a {fmt} file; it was not modified"
        )
    meta = dict(conn.execute("SELECT name, value FROM tokenlean_meta").fetchall())
    if meta.get("format") != fmt:
        conn.close()
        raise ForeignStoreError(
            f"{path} is a {meta.get('format', 'unknown')!r} file, not {fmt!r}; it was not modified"
        )
    version = meta.get("schema_version", "")
    if not version.isdigit() or int(version) > schema_version:
        conn.close()
        raise ForeignStoreError(
            f"{path} has {fmt} schema {version!r}; this tokenlean reads up to {schema_version}. "
            "It was not modified."
        )
    try:
        _use_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot configure {path}: {exc}") from exc
    return conn, meta
