"""A file that is not a tokenlean store is refused and left byte for byte untouched.

The other program's database is written by a separate process, in write-ahead-log mode, and
either left running or killed before it checkpoints: its ``-wal`` and ``-shm`` files hold data
the database file does not. Every file of it is hashed before and after tokenlean's attempt.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tokenlean as tl

WRITER = textwrap.dedent(
    """
    import os, sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE customers (id INTEGER, name TEXT, card TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'Ada', '4111111111111111')")
    if sys.argv[2] == "crash":
        os._exit(0)  # killed before any checkpoint: the -wal and -shm stay, holding the data
    print("ready", flush=True)
    sys.stdin.readline()  # keeps running, connection open, until told to stop
    """
)

OPENERS: dict[str, Callable[[Path], object]] = {
    "cache": lambda path: tl.SQLiteStore(path),
    "memory": lambda path: tl.SQLiteTranscriptStore(path),
}


def fingerprint(path: Path) -> dict[str, str]:
    """The sha256 of every file in the database's folder, by name."""
    return {
        item.name: hashlib.sha256(item.read_bytes()).hexdigest()
        for item in sorted(path.parent.iterdir())
    }


@pytest.fixture(params=["crashed writer", "running writer"])
def foreign_wal_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """Another program's database with a live write-ahead log beside it."""
    path = tmp_path / "app.db"
    mode = "crash" if request.param == "crashed writer" else "run"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if mode == "run":
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        else:
            process.wait(timeout=30)
        assert (tmp_path / "app.db-wal").stat().st_size > 0
        yield path
    finally:
        if process.poll() is None:
            assert process.stdin is not None
            process.stdin.write("\n")
            process.stdin.flush()
            process.wait(timeout=30)


@pytest.mark.parametrize("opener", sorted(OPENERS))
def test_a_foreign_database_with_a_live_wal_is_left_untouched(
    foreign_wal_database: Path, opener: str
) -> None:
    """Opening it as a store raises ForeignStoreError; the db, -wal and -shm are unchanged."""
    before = fingerprint(foreign_wal_database)
    assert {"app.db", "app.db-wal", "app.db-shm"} <= set(before)
    with pytest.raises(tl.ForeignStoreError, match="not modified"):
        OPENERS[opener](foreign_wal_database)
    assert fingerprint(foreign_wal_database) == before


def test_the_foreign_data_is_still_there_afterwards(foreign_wal_database: Path) -> None:
    """After the refusal, the other program's rows, still only in its -wal, are intact."""
    with pytest.raises(tl.ForeignStoreError):
        tl.SQLiteStore(foreign_wal_database)
    conn = sqlite3.connect(f"{foreign_wal_database.as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT name FROM customers").fetchall() == [("Ada",)]
    finally:
        conn.close()


def test_a_database_with_another_application_id_is_refused_untouched(tmp_path: Path) -> None:
    """A database whose header names another application is refused from its header alone."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE tokenlean_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.commit()
    conn.close()
    before = fingerprint(path)
    with pytest.raises(tl.ForeignStoreError, match="application id 0x000004d2"):
        tl.SQLiteStore(path)
    assert fingerprint(path) == before


def test_another_tokenlean_format_is_refused_untouched(tmp_path: Path) -> None:
    """A tokenlean memory file opened as a cache store is refused, its files unchanged."""
    path = tmp_path / "memory.db"
    tl.SQLiteTranscriptStore(path).close()
    before = fingerprint(path)
    with pytest.raises(tl.ForeignStoreError, match="'tokenlean-memory' file"):
        tl.SQLiteStore(path)
    assert fingerprint(path) == before


def test_an_empty_file_with_a_wal_beside_it_is_refused_untouched(tmp_path: Path) -> None:
    """An empty database file next to a non-empty -wal is someone's database, not a new file."""
    path = tmp_path / "app.db"
    path.write_bytes(b"")
    (tmp_path / "app.db-wal").write_bytes(os.urandom(4096))
    before = fingerprint(path)
    with pytest.raises(tl.ForeignStoreError, match="write-ahead log"):
        tl.SQLiteStore(path)
    assert fingerprint(path) == before


def test_tokenlean_still_opens_its_own_files_old_and_new(tmp_path: Path) -> None:
    """A store made without the application id (older versions) and a new one both open."""
    path = tmp_path / "cache.db"
    store = tl.SQLiteStore(path)
    store.put(tl.StoredEntry("ns", "k", b"v", 0.0))
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x746B6C6E
    conn.execute("PRAGMA application_id = 0")  # as a store written by an earlier version
    conn.commit()
    conn.close()
    assert tl.SQLiteStore(path).get("ns", "k") is not None
