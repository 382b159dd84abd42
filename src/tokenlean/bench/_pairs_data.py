"""Labelled text pairs for the semantic-cache benchmarks and calibration: the formats read, and
embedding every text once (cached on disk across runs)."""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tokenlean._canonical import canonicalize_text, fingerprint
from tokenlean._embeddings import Embedder, SentenceTransformerEmbedder
from tokenlean._errors import ConfigurationError, InvalidInputError

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


def load_pairs(path: Path, fmt: str, limit: int | None = None) -> list[Pair]:
    """Read labelled pairs in one of :data:`FORMATS`.

    Raises:
        ConfigurationError: unknown format or missing file.
        InvalidInputError: a row that does not have the format's shape.
    """
    if fmt not in FORMATS:
        raise ConfigurationError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not path.is_file():
        raise ConfigurationError(f"no such file: {path}")
    pairs: list[Pair] = []
    text = path.read_text(encoding="utf-8")
    try:
        if fmt == "gptcache":
            pairs = [Pair(row["origin"], row["similar"], True) for row in json.loads(text)]
        elif fmt == "stsb-tsv":
            for row in csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE):
                if len(row) < 10 or not row[9].replace(".", "", 1).isdigit():
                    continue  # the header, or a row without a score
                score = float(row[9])
                if score >= STSB_DUPLICATE or score <= STSB_DIFFERENT:
                    pairs.append(Pair(row[7], row[8], score >= STSB_DUPLICATE))
        elif fmt == "mrpc-tsv":
            for row in csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE):
                if row:
                    pairs.append(Pair(row[3], row[4], row[0].strip() == "1"))
        else:
            for line in text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    pairs.append(Pair(row["text_a"], row["text_b"], int(row["label"]) == 1))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not valid {fmt} data: {exc!r}") from exc
    return pairs[:limit] if limit else pairs


class TableEmbedder:
    """Serves precomputed embeddings (the benchmark embeds every text once, up front)."""

    def __init__(self, table: dict[str, npt.NDArray[np.float32]], dimension: int) -> None:
        self.table = table
        self._dimension = dimension

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        # The cache embeds canonical text; the table is keyed by it too.
        return np.stack([self.table[canonicalize_text(t)] for t in texts]).astype(np.float32)


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
