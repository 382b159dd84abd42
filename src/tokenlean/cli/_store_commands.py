"""``tokenlean cache stats|list|invalidate|clear STORE``: look into a SQLite cache store, and
remove entries from it.

Only what the store keeps in the clear is shown: hashed keys, tenants and partitions, layers,
sizes, times, tags and plan versions. Prompt text is never in a store, and payloads (the cached
answers) are never printed. ``stats`` and ``list`` only read entries (through the store's
``scan`` and ``usage``); :class:`SQLiteStore` has no read-only mode, so opening the file may
still switch it to write-ahead logging and fold the log back in on close, as any open does.
A route name is not kept either: a route's acceptance state is recognized by the hash of the
route names given with ``--route``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from tokenlean._cache.learning import acceptance_address
from tokenlean._cache.request import hash_tenant
from tokenlean._cache.sqlite_store import SQLiteStore
from tokenlean._cache.store import Selector, StoredEntry
from tokenlean._errors import ConfigurationError
from tokenlean._input import excerpt
from tokenlean.cli._app import JsonOpt, VersionOpt, cache_app

__all__ = ["acceptance_key", "entry_rows", "open_store", "store_path", "store_stats"]

LAYERS = ("exact", "semantic", "retrieval", "acceptance")
"""The layers tokenlean's caches write."""

StoreArg = Annotated[
    str, typer.Argument(help="SQLite cache store (an existing file, or sqlite:///path).")
]
RoutesOpt = Annotated[
    list[str] | None,
    typer.Option("--route", help="A route name, to recognize its acceptance state (repeatable)."),
]


_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def store_path(store: str | Path) -> Path:
    """The SQLite file a command's store argument names: a path, or a ``sqlite:///relative``
    or ``sqlite:////absolute`` URI, read as :func:`tokenlean.open_store` reads it (its options,
    such as a store's own ``?max_entries=``, are not the commands' concern and are ignored).

    Raises:
        ConfigurationError: another kind of URI (the cache commands manage SQLite stores only),
            or a ``sqlite:`` URI without a path after ``sqlite:///``.
    """
    match = _URI.match(str(store))
    if match is None:
        return Path(store)
    parts = urlsplit(str(store))
    if match.group(1).lower() != "sqlite":
        raise ConfigurationError(
            f"the cache commands take a SQLite store (a path or sqlite:///path), not a "
            f"{match.group(1)}:// URI; manage other stores from Python (tokenlean.open_store)"
        )
    if parts.netloc or len(parts.path) < 2:
        raise ConfigurationError(
            f"{store!r} names no file: sqlite:///relative.db or sqlite:////absolute.db"
        )
    return Path(parts.path[1:])


def open_store(store: str | Path) -> SQLiteStore:
    """The existing SQLite cache store at ``store`` (or a ``sqlite:///`` URI); never creates one.

    Raises:
        ConfigurationError: no such file, a folder, an empty file, or another kind of URI.
        StoreError: the file is not a tokenlean cache store, or is damaged (it is left as is).
    """
    path = store_path(store)
    if path.is_dir():
        raise ConfigurationError(f"{path} is a folder, not a cache store")
    if not path.is_file():
        raise ConfigurationError(f"no such store: {path}")
    if path.stat().st_size == 0:
        raise ConfigurationError(f"{path} is empty, not a tokenlean cache store")
    return SQLiteStore(path)


def acceptance_key(secret: bytes, route: str | None, version: str) -> str:
    """The key under which a :class:`CompletionCache` keeps the acceptance state of ``route``
    (None: the default policy) at policy ``version``, in a store with ``secret``."""
    return acceptance_address(secret, route, version)[1]


def _route_names(secret: bytes, routes: Iterable[str], version: str) -> dict[str, str]:
    """Acceptance key -> route label, for the default route and ``routes``."""
    labels = {acceptance_key(secret, None, version): "(default)"}
    labels.update({acceptance_key(secret, route, version): route for route in routes})
    return labels


def store_stats(
    store: SQLiteStore, *, routes: Iterable[str] = (), version: str = "1", now: float | None = None
) -> dict[str, Any]:
    """Entries and bytes by layer, expired entries, distinct tenants and the acceptance states
    present (by route, for the routes named)."""
    now = time.time() if now is None else now
    names = _route_names(store.secret, routes, version)
    layers: dict[str, dict[str, int]] = {}
    expired, tenants, oldest = 0, set(), None
    acceptance: list[str] = []
    for entry in store.scan():
        figures = layers.setdefault(entry.layer, {"entries": 0, "bytes": 0})
        figures["entries"] += 1
        figures["bytes"] += entry.size
        expired += entry.expired(now)
        if entry.tenant:
            tenants.add(entry.tenant)
        oldest = entry.created_at if oldest is None else min(oldest, entry.created_at)
        if entry.layer == "acceptance":
            acceptance.append(names.get(entry.key, ""))
    entries, size = store.usage()
    return {
        "store": str(store.path),
        "entries": entries,
        "bytes": size,
        "layers": dict(sorted(layers.items())),
        "expired": expired,
        "tenants": len(tenants),
        "oldest_age_s": round(now - oldest, 1) if oldest is not None else None,
        "acceptance_states": len(acceptance),
        "acceptance_routes": sorted(label for label in acceptance if label),
        "policy_version": version,
    }


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def entry_rows(
    entries: Iterable[StoredEntry], *, secret: bytes, routes: Iterable[str] = (),
    version: str = "1", now: float | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per entry, newest first: hashed key and partition, layer, route (acceptance
    states of the named routes), hashed tenant, size, age, expiry, tags and plan version.
    No payload, and no text: a store holds none."""
    now = time.time() if now is None else now
    names = _route_names(secret, routes, version)
    ordered = sorted(entries, key=lambda entry: -entry.created_at)
    return [
        {
            "key": entry.key,
            "partition": entry.namespace,
            "layer": entry.layer,
            "route": names.get(entry.key) if entry.layer == "acceptance" else None,
            "tenant": entry.tenant or None,
            "bytes": entry.size,
            "age_s": round(now - entry.created_at, 1),
            "expires_in_s": round(entry.expires_at - now, 1) if entry.expires_at else None,
            "expired": entry.expired(now),
            "tags": list(entry.tags),
            "plan_version": entry.plan_version,
        }
        for entry in ordered
    ]


@cache_app.command("stats")
def cache_stats(
    store: StoreArg, route: RoutesOpt = None, version: VersionOpt = "1", as_json: JsonOpt = False
) -> None:
    """Entries and bytes by layer, expired entries, tenants and acceptance states of a store."""
    cache_store = open_store(store)
    try:
        result = store_stats(cache_store, routes=route or (), version=version)
    finally:
        cache_store.close()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{result['store']}: {result['entries']:,} entries, {result['bytes']:,} bytes")
    for layer, figures in result["layers"].items():
        typer.echo(f"  {layer:<11} {figures['entries']:>9,} entries {figures['bytes']:>13,} bytes")
    typer.echo(f"  expired     {result['expired']:>9,} (removed lazily or by purge_expired)")
    typer.echo(f"  tenants     {result['tenants']:>9,} (hashed)")
    if result["oldest_age_s"] is not None:
        typer.echo(f"  oldest entry {_age(result['oldest_age_s'])} old")
    routes = result["acceptance_routes"]
    named = ", ".join(r if r == "(default)" else excerpt(r, 40) for r in routes)
    typer.echo(
        f"  acceptance states: {result['acceptance_states']}"
        + (f" (routes at policy version {version}: {named})" if named else "")
    )


@cache_app.command("list")
def cache_list(
    store: StoreArg,
    limit: Annotated[int, typer.Option(min=1, help="Show at most N entries.")] = 50,
    layer: Annotated[
        str | None,
        typer.Option(help="Only this layer: exact, semantic, retrieval or acceptance."),
    ] = None,
    route: RoutesOpt = None,
    version: VersionOpt = "1",
    as_json: JsonOpt = False,
) -> None:
    """The newest entries: hashed key, layer, route, tenant, size and age (never a payload)."""
    if layer is not None and layer not in LAYERS:
        raise ConfigurationError(f"--layer takes {', '.join(LAYERS)}, not {excerpt(layer, 40)}")
    cache_store = open_store(store)
    try:
        rows = entry_rows(
            cache_store.scan(layer=layer), secret=cache_store.secret, routes=route or (),
            version=version,
        )  # fmt: skip
    finally:
        cache_store.close()
    shown = rows[:limit]
    if as_json:
        typer.echo(json.dumps({"total": len(rows), "entries": shown}, indent=2))
        return
    header = f"{'key':<12}  {'layer':<10}  {'route':<14}  {'tenant':<12}  {'bytes':>9}  {'age':>6}"
    typer.echo(header + "  tags")
    for row in shown:
        route_label = excerpt(row["route"], 14)[1:-1] if row["route"] else "-"
        tags = ", ".join(excerpt(t, 30) for t in row["tags"][:3]) or "-"
        age = _age(row["age_s"]) + ("*" if row["expired"] else "")
        typer.echo(
            f"{row['key'][:12]:<12}  {row['layer']:<10}  {route_label:<14}  "
            f"{(row['tenant'] or '-')[:12]:<12}  {row['bytes']:>9,}  {age:>6}  {tags}"
        )
    more = f"; showing the newest {len(shown)}" if len(rows) > len(shown) else ""
    typer.echo(f"{len(rows):,} entries{more} (* expired; keys and tenants are hashes)", err=True)


@cache_app.command("invalidate")
def cache_invalidate(
    store: StoreArg,
    tenant: Annotated[
        str | None, typer.Option(help="Remove this tenant's entries (the id the app passes).")
    ] = None,
    tag: Annotated[str | None, typer.Option(help="Remove entries with this tag.")] = None,
    plan_version: Annotated[
        str | None, typer.Option(help="Remove entries of this prompt-plan or index version.")
    ] = None,
) -> None:
    """Remove the entries matching every criterion given (as CompletionCache.invalidate does)."""
    if tenant is None and tag is None and plan_version is None:
        raise ConfigurationError("invalidate needs --tenant, --tag or --plan-version")
    cache_store = open_store(store)
    try:
        selector = Selector(
            tenant=hash_tenant(cache_store.secret, tenant) if tenant is not None else None,
            tag=tag,
            plan_version=plan_version,
        )
        removed = len(cache_store.delete(selector))
    finally:
        cache_store.close()
    typer.echo(f"removed {removed:,} entries")


@cache_app.command("clear")
def cache_clear(
    store: StoreArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove every entry, learned acceptance states included (asks first, unless --yes)."""
    cache_store = open_store(store)
    try:
        entries, _ = cache_store.usage()
        if not yes and not _confirmed(f"Remove all {entries:,} entries from {store}?"):
            typer.echo("cancelled: nothing removed", err=True)
            raise typer.Exit(1)
        removed = len(cache_store.delete(Selector()))
    finally:
        cache_store.close()
    typer.echo(f"removed {removed:,} entries")


def _confirmed(question: str) -> bool:
    """Ask on the terminal; no answer (end of input, no terminal) is a no."""
    try:
        return bool(typer.confirm(question, default=False, err=True))
    except (typer.Abort, OSError):
        typer.echo("", err=True)  # end the prompt's line
        return False
