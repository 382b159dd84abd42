"""``tokenlean cache calibrate|acceptance``: give a semantic route evidence offline, and show it.

``calibrate`` reads labelled pairs (the ``bench cache`` formats) or a JSONL stream of
``{"text", "answer"}`` and turns them into evidence as the cache itself would meet it: each
query against its nearest cached text (for pairs, the nearest first text; for a stream, the
nearest earlier prompt), right when the answers agree. The evidence is written into a SQLite
cache store under the route's name and policy version, where a :class:`CompletionCache` with
the same store, route and version finds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from tokenlean._cache.completion import CompletionCache
from tokenlean._cache.policy import CachePolicy
from tokenlean._cache.sqlite_store import SQLiteStore
from tokenlean._canonical import canonicalize_text
from tokenlean._embeddings import Embedder, default_embedder
from tokenlean._errors import ConfigurationError
from tokenlean.bench._cache_pairs import FORMATS, load_pairs
from tokenlean.bench._cache_stream import load_stream
from tokenlean.cli._app import BudgetOpt, JsonOpt, RouteOpt, VersionOpt, cache_app
from tokenlean.cli._store_commands import open_store, store_path

__all__ = ["calibrate_store", "show_acceptance"]


class _Memo:
    """Embeds each text once, however often it is asked for (calibration embeds twice)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.dimension = inner.dimension
        self.model_name = getattr(inner, "model_name", type(inner).__qualname__)
        self._seen: dict[str, Any] = {}

    def embed(self, texts: Any) -> Any:
        missing = list(dict.fromkeys(t for t in texts if t not in self._seen))
        if missing:
            self._seen.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self._seen[t] for t in texts]) if texts else self.inner.embed([])


def _stream_examples(
    rows: list[tuple[str, str]], embedder: Embedder
) -> list[tuple[str, str, bool]]:
    vectors = embedder.embed([canonicalize_text(t) for t, _ in rows])
    examples = []
    for i in range(1, len(rows)):
        scores = vectors[:i] @ vectors[i]
        j = int(np.argmax(scores))
        examples.append((rows[j][0], rows[i][0], rows[j][1] == rows[i][1]))
    return examples


def _open(
    store: Path, route: str | None, max_error_rate: float, version: str, embedder: Embedder | None
) -> CompletionCache:
    policy = CachePolicy.semantic(max_error_rate=max_error_rate, version=version)
    return CompletionCache(
        SQLiteStore(store),
        policy=policy,
        routes={route: policy} if route else None,
        embedder=embedder,
    )


def calibrate_store(
    data: Path,
    store: str | Path,
    *,
    fmt: str = "stream",
    route: str | None = None,
    max_error_rate: float = 0.05,
    version: str = "1",
    limit: int | None = None,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Add the evidence in ``data`` to the route's acceptance state in ``store``.

    Raises:
        ConfigurationError: unknown format or missing file.
        InvalidInputError: malformed data.
    """
    if fmt not in (*FORMATS, "stream"):
        raise ConfigurationError(f"--format must be stream or one of {', '.join(FORMATS)}")
    # The data is read (and refused when malformed) before the model loads.
    stream = load_stream(data, limit) if fmt == "stream" else None
    pairs = load_pairs(data, fmt, limit) if stream is None else []
    path = store_path(store)
    if path.is_dir():
        raise ConfigurationError(f"--store {path} is a folder, not a cache store")
    if not path.parent.is_dir():
        raise ConfigurationError(f"--store {path}: no such folder {path.parent}")
    embedder = _Memo(embedder or default_embedder())
    if stream is not None:
        examples = _stream_examples(stream, embedder)
    else:
        # The pairs as labelled, as CompletionCache.calibrate takes them: a label is about its
        # own two texts (another pair may well share the answer), so no pair is re-matched.
        examples = [(p.text_a, p.text_b, p.duplicate) for p in pairs]
    cache = _open(path, route, max_error_rate, version, embedder)
    try:
        added = cache.calibrate(examples, route=route)
        acceptance = cache.acceptance(route)
    finally:
        cache.close()
    return {"examples": len(examples), "added": added, "route": route or "", **acceptance}


def show_acceptance(
    store: str | Path, *, route: str | None = None, max_error_rate: float = 0.05, version: str = "1"
) -> dict[str, Any]:
    """What the route has learned, as kept in ``store``."""
    open_store(store).close()  # refuses a missing, empty or foreign file before anything else
    cache = _open(store_path(store), route, max_error_rate, version, None)
    try:
        return {"route": route or "", **cache.acceptance(route)}
    finally:
        cache.close()


@cache_app.command("calibrate")
def cache_calibrate(
    data: Annotated[Path, typer.Argument(help="Labelled pairs, or a JSONL stream.")],
    store: Annotated[
        str, typer.Option(help="SQLite cache store (a path or sqlite:///path) to write to.")
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="stream, gptcache, mrpc-tsv, stsb-tsv or pairs-jsonl.")
    ] = "stream",
    route: RouteOpt = None,
    max_error_rate: BudgetOpt = 0.05,
    version: VersionOpt = "1",
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use the first N pairs or prompts.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add offline evidence to a semantic route's error-bounded acceptance rule."""

    result = calibrate_store(
        data, store, fmt=fmt, route=route, max_error_rate=max_error_rate, version=version,
        limit=limit,
    )  # fmt: skip
    _print_acceptance(result, as_json)


@cache_app.command("acceptance")
def cache_acceptance(
    store: Annotated[str, typer.Argument(help="SQLite cache store (a path or sqlite:///path).")],
    route: RouteOpt = None,
    max_error_rate: BudgetOpt = 0.05,
    version: VersionOpt = "1",
    as_json: JsonOpt = False,
) -> None:
    """Show a semantic route's evidence, error bound and acceptance region."""

    result = show_acceptance(store, route=route, max_error_rate=max_error_rate, version=version)
    _print_acceptance(result, as_json)


def _print_acceptance(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        typer.echo(f"{key:>20}: {value}")
