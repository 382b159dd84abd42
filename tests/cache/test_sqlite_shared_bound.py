"""A SQLite cache file shared by several handles (processes) keeps its bounds for the file, and
every handle reports the file's usage, not only its own writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import tokenlean as tl
from tokenlean.testing._workers import run_workers


def _entry(i: int, who: str) -> tl.StoredEntry:
    return tl.StoredEntry("ns", f"{who}-{i}", b"x" * 10, 0.0)


def test_two_handles_keep_one_bound_for_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    stores = [tl.SQLiteStore(path, max_entries=10, max_bytes=150) for _ in range(2)]
    try:
        for i in range(15):
            for who, store in zip("ab", stores, strict=True):
                store.put(_entry(i, who))
        with sqlite3.connect(path) as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM tokenlean_entries").fetchone()
        assert count == 10
        assert stores[0].usage() == stores[1].usage() == (10, 100)
        # The most recent writes of both handles survive: one least-recently-used order.
        keys = {entry.key for entry in stores[0].scan()}
        assert keys == {f"{who}-{i}" for i in range(10, 15) for who in "ab"}
    finally:
        for store in stores:
            store.close()


def test_concurrent_writers_never_leave_the_file_over_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    stores = [tl.SQLiteStore(path, max_entries=25) for _ in range(4)]

    def work(n: int) -> None:
        for i in range(60):
            stores[n].put(_entry(i, f"w{n}"))

    try:
        assert run_workers(work, 4) == []
        assert all(store.usage()[0] == 25 for store in stores)
        assert len(list(stores[0].scan())) == 25
    finally:
        for store in stores:
            store.close()
