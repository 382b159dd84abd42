"""``tokenlean cache stats|list|invalidate|clear STORE``: what a SQLite cache store holds, shown
without prompt text or payloads, and entries removed by tenant, tag, plan version or all."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

import tokenlean as tl
from tokenlean._cache.request import CacheRequest
from tokenlean.cli import main
from tokenlean.cli._store_commands import acceptance_key
from tokenlean.testing import FakeClock, HashingEmbedder

PROMPT = "prompt-text-that-must-not-be-printed"
PAYLOAD = "payload-that-must-not-be-printed"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A store of 8 entries: 7 exact ones (tenants acme and globex with tags and plan
    versions, 2 of them expired, and one of route ``faq`` for tenant "default") and the
    acceptance state of route ``faq``."""
    path = tmp_path / "cache.db"
    clock = FakeClock(1_000.0)  # long ago: entries with a TTL have expired by now
    faq = tl.CachePolicy.semantic(max_error_rate=0.1)
    cache = tl.CompletionCache(
        tl.SQLiteStore(path), routes={"faq": faq}, embedder=HashingEmbedder(), clock=clock
    )
    short = tl.CompletionCache(tl.SQLiteStore(path), policy=tl.CachePolicy.exact(ttl_s=60),
                               clock=clock)  # fmt: skip
    for i in range(4):
        request = CacheRequest.from_prompt(f"{PROMPT} {i}", model="m")
        cache.store(request, {"content": f"{PAYLOAD} {i}"}, tenant="acme" if i % 2 else "globex",
                    tags=["faq-v1"] if i < 3 else [], plan_version="p1" if i else "p2")  # fmt: skip
    for i in range(2):
        short.store(CacheRequest.from_prompt(f"{PROMPT} short {i}", model="m"), "x", tenant="acme")
    cache.store(CacheRequest.from_prompt(f"{PROMPT} semantic", model="m"), "y", route="faq")
    cache.calibrate([("how do I pay", "how can I pay", True), ("refund", "a refund", True)],
                    route="faq")  # fmt: skip
    cache.close()
    short.close()
    return path


def test_stats_gives_entries_and_bytes_by_layer(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Entries and bytes per layer add up to the store's usage; expired entries, tenants and
    the acceptance states (named for the routes given) are counted."""
    store = tl.SQLiteStore(store_path)
    entries, size = store.usage()
    store.close()
    code, out, _ = run(["cache", "stats", str(store_path), "--route", "faq", "--json"], capsys)
    assert code == 0
    stats = json.loads(out)
    assert (stats["entries"], stats["bytes"]) == (entries, size)
    assert sum(layer["entries"] for layer in stats["layers"].values()) == entries
    assert sum(layer["bytes"] for layer in stats["layers"].values()) == size
    assert entries == 8
    assert stats["layers"]["exact"]["entries"] == 7
    assert stats["layers"]["acceptance"]["entries"] == 1
    assert stats["expired"] == 2
    assert stats["tenants"] == 3  # acme, globex and the default tenant
    assert stats["acceptance_states"] == 1
    assert stats["acceptance_routes"] == ["faq"]
    code, out, _ = run(["cache", "stats", str(store_path)], capsys)
    assert code == 0
    assert f"{entries:,} entries" in out
    assert "expired" in out
    assert PROMPT not in out
    assert PAYLOAD not in out


def test_list_shows_hashed_entries_never_text_or_payloads(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each entry by key prefix, layer, route (for a named route's acceptance state), hashed
    tenant, size and age; --limit, --layer and --json work, and nothing of a prompt or an
    answer is printed."""
    code, out, err = run(["cache", "list", str(store_path), "--route", "faq"], capsys)
    assert code == 0
    assert PROMPT not in out + err
    assert PAYLOAD not in out + err
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["key", "layer", "route", "tenant"]
    assert len(lines) == 1 + 8
    assert any(line.split()[1:3] == ["acceptance", "faq"] for line in lines)
    assert "8 entries" in err
    code, out, err = run(["cache", "list", str(store_path), "--layer", "exact", "--limit", "2",
                          "--json"], capsys)  # fmt: skip
    assert code == 0
    listing = json.loads(out)
    assert listing["total"] == 7
    assert len(listing["entries"]) == 2
    assert {entry["layer"] for entry in listing["entries"]} == {"exact"}
    assert set(listing["entries"][0]) == {
        "key", "partition", "layer", "route", "tenant", "bytes", "age_s", "expires_in_s",
        "expired", "tags", "plan_version",
    }  # fmt: skip
    assert PAYLOAD not in out
    code, _, err = run(["cache", "list", str(store_path), "--layer", "nope"], capsys)
    assert code == 2
    assert "--layer takes exact, semantic, retrieval, acceptance" in err


def test_the_acceptance_key_is_the_one_the_cache_writes(store_path: Path) -> None:
    """``acceptance_key`` derives the key a CompletionCache keeps a route's evidence under."""
    store = tl.SQLiteStore(store_path)
    keys = {entry.key for entry in store.scan(layer="acceptance")}
    assert keys == {acceptance_key(store.secret, "faq", "1")}
    store.close()


@pytest.mark.parametrize(
    ("criteria", "removed"),
    [
        (["--tenant", "acme"], 4),  # two stored, two short-lived
        (["--tag", "faq-v1"], 3),
        (["--plan-version", "p1"], 3),
        (["--tenant", "globex", "--plan-version", "p2"], 1),
        (["--tenant", "nobody"], 0),
    ],
)
def test_invalidate_removes_what_matches_every_criterion(
    store_path: Path, capsys: pytest.CaptureFixture[str], criteria: list[str], removed: int
) -> None:
    """Tenants are hashed with the store's secret as the cache hashes them; the count printed
    is the count removed."""
    before = tl.SQLiteStore(store_path)
    entries, _ = before.usage()
    before.close()
    code, out, _ = run(["cache", "invalidate", str(store_path), *criteria], capsys)
    assert code == 0
    assert out.strip() == f"removed {removed} entries"
    after = tl.SQLiteStore(store_path)
    assert after.usage()[0] == entries - removed
    after.close()


def test_invalidate_needs_a_criterion(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --tenant, --tag or --plan-version nothing is removed: use clear for that."""
    code, _, err = run(["cache", "invalidate", str(store_path)], capsys)
    assert code == 2
    assert "needs --tenant, --tag or --plan-version" in err


def test_clear_asks_first(
    store_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """clear asks for confirmation: "n" (or no answer) removes nothing and exits 1; "y" or
    --yes removes every entry."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    code, out, err = run(["cache", "clear", str(store_path)], capsys)
    assert code == 1
    assert "Remove all 8 entries" in err
    assert "nothing removed" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = run(["cache", "clear", str(store_path)], capsys)
    assert code == 1
    assert "nothing removed" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, _ = run(["cache", "clear", str(store_path)], capsys)
    assert code == 0
    assert out.strip() == "removed 8 entries"
    code, out, _ = run(["cache", "clear", str(store_path), "--yes"], capsys)
    assert out.strip() == "removed 0 entries"


@pytest.mark.parametrize("command", ["stats", "list", "invalidate", "clear", "acceptance"])
def test_a_missing_or_empty_store_is_an_error_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """The store commands never create a store: a missing path, an empty file or a folder is
    a one-line error."""
    extra = {"invalidate": ["--tag", "x"], "clear": ["--yes"]}.get(command, [])
    missing = tmp_path / "missing.db"
    code, _, err = run(["cache", command, str(missing), *extra], capsys)
    assert code == 2
    assert "no such store" in err
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    code, _, err = run(["cache", command, str(empty), *extra], capsys)
    assert code == 2
    assert "is empty, not a tokenlean cache store" in err
    assert empty.stat().st_size == 0
    code, _, err = run(["cache", command, str(tmp_path), *extra], capsys)
    assert code == 2
    assert "is a folder" in err


def test_a_store_given_as_a_uri(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sqlite:////absolute/path names the file; another kind of URI is an error that says the
    commands take SQLite stores, and nothing is created (a redis URI is never a file path)."""
    code, out, _ = run(["cache", "stats", f"sqlite:///{store_path}", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["entries"] == 8
    for uri in ("redis://127.0.0.1:6379/11", "mysql://nowhere/x"):
        code, _, err = run(["cache", "stats", uri], capsys)
        assert code == 2
        assert "take a SQLite store" in err
    code, out, _ = run(
        ["cache", "stats", f"sqlite:///{store_path}?max_entries=9", "--json"], capsys
    )
    assert code == 0  # a store's own uri, options and all, names its file
    code, _, err = run(["cache", "stats", "sqlite://cache.db"], capsys)
    assert code == 2
    assert "names no file" in err
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"text": "a", "answer": "1"}\n')
    for store, message in (
        ("redis://127.0.0.1:6379/11", "take a SQLite store"),
        (str(tmp_path / "no" / "such" / "x.db"), "no such folder"),
        ("sqlite://cache.db", "names no file"),
    ):
        code, _, err = run(["cache", "calibrate", str(data), "--store", store], capsys)
        assert code == 2
        assert message in err
    assert not (tmp_path / "no").exists()
    assert not Path("redis:").exists()
    assert not Path("ache.db").exists()
