"""Labelled text pairs for the semantic-cache benchmarks and calibration: the formats read, and
embedding every text once (cached on disk across runs)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._canonical import canonicalize_text, fingerprint
from tokenlean._embeddings import Embedder, SentenceTransformerEmbedder
from tokenlean._errors import ConfigurationError, EmbeddingError, InvalidInputError
from tokenlean._input import (
    describe_value,
    read_json_file,
    read_json_lines,
    read_text_file,
)

__all__ = ["FORMATS", "Pair", "TableEmbedder", "embed_all", "load_pairs", "nearest_examples"]

FORMATS = ("gptcache", "mrpc-tsv", "stsb-tsv", "pairs-jsonl")
STSB_DUPLICATE = 4.0  # STS-B scores 4-5: "mostly" or "completely equivalent" (the data's scale)
STSB_DIFFERENT = 2.0  # 0-2: not equivalent; pairs in between are left out as ambiguous


@dataclass(frozen=True)
class Pair:
    """Two texts and whether the second is a duplicate (paraphrase) of the first."""

    text_a: str
    text_b: str
    duplicate: bool


PAIRS_JSONL_SHAPE = "each line is an object with 'text_a' and 'text_b' strings and a 'label' 1 or 0"
GPTCACHE_SHAPE = "a JSON list of objects with 'origin' and 'similar' strings"
MRPC_SHAPE = "each row has a 0/1 label, two ids and the two texts, tab-separated"
STSB_SHAPE = "rows have the texts in columns 8 and 9, a 0-5 score in column 10, tab-separated"


def load_pairs(path: Path, fmt: str, limit: int | None = None) -> list[Pair]:
    """Read labelled pairs in one of :data:`FORMATS` (see ``docs/cli.md``, "Input formats").

    Raises:
        ConfigurationError: unknown format, missing file or a folder.
        InvalidInputError: a file that is not UTF-8, or a row that does not have the format's
            shape; the message names the line and the expected keys or columns, and quotes
            at most a short excerpt of the row. Also a file that holds no pairs.
    """
    if fmt not in FORMATS:
        raise ConfigurationError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "pairs-jsonl":
        pairs = _pairs_jsonl(path, limit)
        shape = PAIRS_JSONL_SHAPE
    elif fmt == "gptcache":
        pairs, shape = _gptcache(path), GPTCACHE_SHAPE
    else:
        pairs = _tsv(path, fmt)
        shape = MRPC_SHAPE if fmt == "mrpc-tsv" else STSB_SHAPE
    if not pairs:
        raise InvalidInputError(f"{path} holds no pairs ({fmt}: {shape})")
    return pairs[:limit] if limit else pairs


def _label(value: Any) -> bool | None:
    """1 or 0 (also as a string or a boolean); None for anything else."""
    if isinstance(value, str):
        value = value.strip()
        return {"1": True, "0": False}.get(value)
    if isinstance(value, bool | int | float) and value in (0, 1):
        return bool(value)
    return None


def _pair_problem(row: Any) -> str | None:
    """What is wrong with one parsed pairs-jsonl line (None: nothing)."""
    if not isinstance(row, dict):
        return f"this line is {describe_value(row)}"
    missing = [key for key in ("text_a", "text_b", "label") if key not in row]
    if missing:
        return f"this line has no {' or '.join(map(repr, missing))} ({describe_value(row)})"
    for key in ("text_a", "text_b"):
        if not isinstance(row[key], str):
            return f"its {key!r} is {describe_value(row[key])}"
    if _label(row["label"]) is None:
        return f"its 'label' is {describe_value(row['label'])}"
    return None


def _pairs_jsonl(path: Path, limit: int | None) -> list[Pair]:
    pairs: list[Pair] = []
    for number, row in read_json_lines(path):
        problem = _pair_problem(row)
        if problem:
            raise InvalidInputError(
                f"{path}:{number}: not valid pairs-jsonl data: {problem}; {PAIRS_JSONL_SHAPE}"
            )
        pairs.append(Pair(row["text_a"], row["text_b"], bool(_label(row["label"]))))
        if limit and len(pairs) >= limit:
            break
    return pairs


def _gptcache(path: Path) -> list[Pair]:
    data = read_json_file(path)
    if not isinstance(data, list):
        raise InvalidInputError(
            f"{path}: not valid gptcache data: the file holds {describe_value(data)}; "
            f"{GPTCACHE_SHAPE}"
        )
    pairs = []
    for index, row in enumerate(data):
        problem = None
        if not isinstance(row, dict):
            problem = f"item {index} is {describe_value(row)}"
        else:
            for key in ("origin", "similar"):
                if not isinstance(row.get(key), str):
                    found = describe_value(row[key]) if key in row else "missing"
                    problem = f"item {index}'s {key!r} is {found}"
                    break
        if problem:
            raise InvalidInputError(f"{path}: not valid gptcache data: {problem}; {GPTCACHE_SHAPE}")
        pairs.append(Pair(row["origin"], row["similar"], True))
    return pairs


def _tsv(path: Path, fmt: str) -> list[Pair]:
    pairs = []
    for number, line in enumerate(read_text_file(path).split("\n"), 1):
        row = line.rstrip("\r").split("\t")
        if fmt == "stsb-tsv":
            if len(row) < 10 or not row[9].replace(".", "", 1).isdigit():
                continue  # the header, or a row without a score
            score = float(row[9])
            if score >= STSB_DUPLICATE or score <= STSB_DIFFERENT:
                pairs.append(Pair(row[7], row[8], score >= STSB_DUPLICATE))
            continue
        if not line.strip():
            continue
        if len(row) < 5 or row[0].strip() not in ("0", "1"):
            if number == 1 and len(row) >= 5:
                continue  # a header ("Quality  #1 ID  #2 ID  #1 String  #2 String")
            columns = f"{len(row)} column{'s' if len(row) != 1 else ''}"
            first = "a first column that is not 0 or 1" if len(row) >= 5 else columns
            raise InvalidInputError(
                f"{path}:{number}: not valid mrpc-tsv data: this row has {first}; {MRPC_SHAPE}"
            )
        pairs.append(Pair(row[3], row[4], row[0].strip() == "1"))
    return pairs


class TableEmbedder:
    """Serves precomputed embeddings (the benchmark embeds every text once, up front).

    Args:
        table: vectors by canonical text.
        dimension: their dimension.
        fallback: embeds a text the table lacks (and remembers it). Without one, such a text
            raises :class:`EmbeddingError`: the cache compared a part of a text that was not
            embedded ahead (a route's template splitter cuts the question out of texts that
            share a template).
    """

    def __init__(
        self,
        table: dict[str, npt.NDArray[np.float32]],
        dimension: int,
        fallback: Embedder | None = None,
    ) -> None:
        self.table = table
        self._dimension = dimension
        self.fallback = fallback

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        # The cache embeds canonical text; the table is keyed by it too.
        keys = [canonicalize_text(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self.table))
        if missing and self.fallback is None:
            raise EmbeddingError(
                f"{len(missing)} compared text(s) were not embedded ahead: the route's splitter "
                "compared only a part of a text (texts that share a template)"
            )
        if missing:
            assert self.fallback is not None
            self.table.update(zip(missing, self.fallback.embed(missing), strict=True))
        return np.stack([self.table[k] for k in keys]).astype(np.float32)


def embed_all(embedder: Embedder, texts: list[str]) -> npt.NDArray[np.float32]:
    """Embed every text once; reuse the result across runs from a cache file when the same
    model embedded the same texts before (embedding thousands of texts takes minutes here)."""
    name = embedder.model_name if isinstance(embedder, SentenceTransformerEmbedder) else None
    cache_file = None
    if name is not None:
        folder = Path(tempfile.gettempdir()) / "tokenlean-bench-embeddings"
        cache_file = folder / f"{fingerprint(name, *texts)}.npy"
        if cache_file.is_file():
            cached: npt.NDArray[np.float32] = np.load(cache_file)
            if cached.shape[0] == len(texts):
                return cached
    print(f"embedding {len(texts)} texts...", file=sys.stderr)
    vectors = embedder.embed(texts)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_file, vectors)
    return vectors


def nearest_examples(
    pairs: list[Pair], vectors_a: npt.NDArray[np.float32], vectors_b: npt.NDArray[np.float32]
) -> list[tuple[str, str, bool]]:
    """Calibration examples as the cache would meet them: each pair's second text against its
    nearest first text, right only when that is its own pair's and the pair is a duplicate."""
    nearest = np.argmax(vectors_b @ vectors_a.T, axis=1)
    return [
        (pairs[int(j)].text_a, pair.text_b, int(j) == i and pair.duplicate)
        for i, (pair, j) in enumerate(zip(pairs, nearest, strict=True))
    ]
