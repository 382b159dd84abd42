"""Every store meets the shared contract; SQLite also survives restarts and refuses bad files."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest

import tokenlean as tl
from tokenlean.testing import CacheStoreContract


class TestMemoryStore(CacheStoreContract):
    def make_store(self, **limits: Any) -> tl.CacheStore:
        return tl.MemoryStore(**limits)


class TestSQLiteStore(CacheStoreContract):
    persistent = True

    def make_store(self, **limits: Any) -> tl.CacheStore:
        return tl.SQLiteStore(Path(tempfile.mkdtemp()) / "cache.db", **limits)

    def reopen(self, store: tl.CacheStore) -> tl.CacheStore:
        assert isinstance(store, tl.SQLiteStore)
        store.close()
        return tl.SQLiteStore(store.path)


def test_a_file_that_is_not_a_database_is_refused_and_left_intact(tmp_path: Path) -> None:
    """Garbage in the file gives CorruptedStoreError; the bytes are unchanged."""
    path = tmp_path / "cache.db"
    garbage = b"this is not a database, it is a shopping list\n" * 100
    path.write_bytes(garbage)
    with pytest.raises(tl.CorruptedStoreError, match="not a readable SQLite database"):
        tl.SQLiteStore(path)
    assert path.read_bytes() == garbage


def test_a_damaged_database_is_refused(tmp_path: Path) -> None:
    """A store whose pages were overwritten is reported damaged, not emptied."""
    path = tmp_path / "cache.db"
    store = tl.SQLiteStore(path)
    for i in range(200):
        store.put(tl.StoredEntry("ns", f"k{i}", b"x" * 500, 0.0))
    store.close()
    data = bytearray(path.read_bytes())
    for offset in range(4096 + 100, min(len(data), 4096 * 6), 7):
        data[offset] = 0xFF
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(tl.CorruptedStoreError):
        tl.SQLiteStore(path)
    assert path.read_bytes() == before


def test_a_foreign_database_is_refused_and_not_modified(tmp_path: Path) -> None:
    """Someone else's SQLite database gives ForeignStoreError and keeps its tables."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'Ada')")
    conn.commit()
    conn.close()
    with pytest.raises(tl.ForeignStoreError, match="customers"):
        tl.SQLiteStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM customers").fetchall() == [("Ada",)]
    assert "tokenlean_meta" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A store written by a newer tokenlean is not touched by this one."""
    path = tmp_path / "cache.db"
    tl.SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE tokenlean_meta SET value = '99' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(tl.ForeignStoreError, match="schema '99'"):
        tl.SQLiteStore(path)


def test_a_folder_path_is_a_store_error(tmp_path: Path) -> None:
    """Pointing the store at a directory is a clear error."""
    with pytest.raises(tl.StoreError):
        tl.SQLiteStore(tmp_path)


@pytest.mark.parametrize("limit", [{"max_entries": 0}, {"max_bytes": -1}])
def test_invalid_limits_are_configuration_errors(tmp_path: Path, limit: dict[str, int]) -> None:
    """Limits below one are rejected by both stores."""
    with pytest.raises(tl.ConfigurationError):
        tl.MemoryStore(**limit)
    with pytest.raises(tl.ConfigurationError):
        tl.SQLiteStore(tmp_path / "c.db", **limit)
