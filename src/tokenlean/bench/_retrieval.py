"""``tokenlean bench retrieval``: ranking quality and recall within a token budget on BEIR data.

For each query of the split: nDCG@10 and recall@10 over documents (a document scores as its best
chunk), recall within the budget (a relevant document counts when any of its text is in the
packed context), tokens packed, and search latency without the query embedding. Four variants in
one run, on one index: tokenlean (hybrid fusion + reranking + packing with trimming), BM25 alone
and dense alone (each packed by the same packer), and dense top-k packed as whole documents.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._canonical import fingerprint
from tokenlean._embeddings import Embedder, SentenceTransformerEmbedder, default_embedder
from tokenlean._errors import ConfigurationError, InvalidInputError
from tokenlean._input import describe_value, read_json_lines, read_text_file
from tokenlean._retrieval.documents import Document
from tokenlean._retrieval.hybrid_index import HybridIndex
from tokenlean._retrieval.packing import pack_chunks
from tokenlean._retrieval.search import HybridSearcher, ScoredChunk
from tokenlean._stats import p95
from tokenlean._tokens.counting import get_token_counter

__all__ = ["load_beir", "retrieval_bench"]


BEIR_SHAPE = "a line is an object with an '_id', a 'text' string and an optional 'title' string"


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _beir_rows(path: Path, what: str) -> list[tuple[str, str, str]]:
    """``(id, text, title)`` of each line of a BEIR corpus or queries file."""
    rows = []
    for number, row in read_json_lines(path):
        where = f"{path}:{number}: not a BEIR {what} line"
        if not isinstance(row, dict):
            raise InvalidInputError(f"{where}: this line is {describe_value(row)}; {BEIR_SHAPE}")
        fields = {"_id": row.get("_id"), "text": row.get("text"), "title": row.get("title") or ""}
        identifier, text, title = fields.values()
        wrong = next(
            (
                key
                for key, value in fields.items()
                if not isinstance(value, str) and not (key == "_id" and _is_integer(value))
            ),
            None,
        )
        if wrong is not None:
            found = describe_value(fields[wrong]) if wrong in row else "missing"
            raise InvalidInputError(f"{where}: its {wrong!r} is {found}; {BEIR_SHAPE}")
        rows.append((str(identifier), str(text), str(title).strip()))
    return rows


def load_beir(
    folder: Path, split: str
) -> tuple[list[Document], dict[str, str], dict[str, dict[str, int]]]:
    """Corpus, queries and qrels of a BEIR-layout folder.

    Raises:
        ConfigurationError: a missing file.
        InvalidInputError: a file that is not UTF-8, or a malformed line (the message names it
            and quotes at most a short excerpt).
    """
    if not folder.is_dir():
        raise ConfigurationError(
            f"no such BEIR folder: {folder} (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)"
        )
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (corpus_path, queries_path, qrels_path):
        if not path.is_file():
            raise ConfigurationError(f"BEIR folder {folder} has no {path.relative_to(folder)}")
    documents = [
        Document(doc_id, f"{title}. {text}" if title else text, {"title": title})
        for doc_id, text, title in _beir_rows(corpus_path, "corpus")
    ]
    queries = {query_id: text for query_id, text, _ in _beir_rows(queries_path, "queries")}
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(read_text_file(qrels_path).split("\n"), 1):
        row = line.rstrip("\r").split("\t")
        if not line.strip() or row[0] == "query-id":
            continue
        try:
            score = int(row[2])
        except (IndexError, ValueError):
            raise InvalidInputError(
                f"{qrels_path}:{number}: not a qrels row: it has {len(row)} column(s), expected "
                "query-id, corpus-id and an integer score, tab-separated"
            ) from None
        if score > 0:
            qrels.setdefault(row[0], {})[row[1]] = score
    return documents, queries, qrels


class _DiskCachedEmbedder:
    """Embeds through ``inner``, remembering vectors in a file between benchmark runs."""

    def __init__(self, inner: Embedder, path: Path | None) -> None:
        self.inner = inner
        self.path = path
        self.table: dict[str, npt.NDArray[np.float32]] = {}
        if path is not None and path.is_file():
            data = np.load(path, allow_pickle=False)
            self.table = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def model_name(self) -> str:
        return str(getattr(self.inner, "model_name", type(self.inner).__qualname__))

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        missing = [t for t in dict.fromkeys(texts) if fingerprint(t) not in self.table]
        if missing:
            if len(missing) > 100:
                print(f"embedding {len(missing)} texts...", file=sys.stderr)
            for text, vector in zip(missing, self.inner.embed(missing), strict=True):
                self.table[fingerprint(text)] = vector
        return np.stack([self.table[fingerprint(t)] for t in texts]).astype(np.float32)

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            keys = np.array(list(self.table))
            np.savez(self.path, keys=keys, vectors=np.stack(list(self.table.values())))


def _ndcg_at_10(ranked_docs: list[str], relevant: dict[str, int]) -> float:
    dcg = sum(
        (2 ** relevant.get(doc, 0) - 1) / math.log2(rank + 2)
        for rank, doc in enumerate(ranked_docs[:10])
    )
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum((2**grade - 1) / math.log2(rank + 2) for rank, grade in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def _docs_in_order(results: Sequence[ScoredChunk]) -> list[str]:
    return list(dict.fromkeys(r.chunk.doc_id for r in results))


def _summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    latencies = [r["latency_ms"] for r in rows]
    return {
        "queries": len(rows),
        "ndcg_at_10": round(statistics.fmean(r["ndcg"] for r in rows), 4),
        "recall_at_10": round(statistics.fmean(r["recall10"] for r in rows), 4),
        "recall_in_budget": round(statistics.fmean(r["recall_budget"] for r in rows), 4),
        "mean_tokens": round(statistics.fmean(r["tokens"] for r in rows), 1),
        "latency_ms_p50": round(statistics.median(latencies), 3),
        "latency_ms_p95": round(p95(latencies), 3),
    }


def retrieval_bench(
    folder: Path,
    split: str = "train",
    *,
    budget: int = 1000,
    limit: int | None = None,
    embedder: Embedder | None = None,
    chunk_tokens: int = 160,
) -> dict[str, Any]:
    """Run the benchmark and return its figures (see the module documentation)."""
    from tokenlean._retrieval.documents import SentenceSplitter

    documents, queries, qrels = load_beir(folder, split)
    query_ids = [q for q in qrels if q in queries][: limit or None]
    if not query_ids:
        raise InvalidInputError(f"no {split} queries with judgements in {folder}")
    base = embedder or default_embedder()
    cache_path = None
    if isinstance(base, SentenceTransformerEmbedder):
        cache_path = (
            Path(tempfile.gettempdir())
            / "tokenlean-bench-embeddings"
            / f"beir-{fingerprint(base.model_name, str(folder.resolve()))}.npz"
        )
    cached = _DiskCachedEmbedder(base, cache_path)
    counter = get_token_counter()
    index = HybridIndex(embedder=cached, splitter=SentenceSplitter(chunk_tokens, counter=counter))
    start = time.perf_counter()
    index.add(documents)
    index.built()
    build_s = time.perf_counter() - start
    query_vectors = cached.embed([queries[q] for q in query_ids])
    cached.save()
    searcher = HybridSearcher(index)
    doc_text = {d.id: d.text for d in documents}
    doc_tokens: dict[str, int] = {}

    def run(
        search: Callable[[str, npt.NDArray[np.float32]], list[ScoredChunk]], whole_docs: bool
    ) -> dict[str, Any]:
        rows = []
        for qid, vector in zip(query_ids, query_vectors, strict=True):
            query, relevant = queries[qid], qrels[qid]
            t0 = time.perf_counter()
            results = search(query, vector)
            elapsed = (time.perf_counter() - t0) * 1000
            ranked = _docs_in_order(results)
            if whole_docs:
                used, packed_docs = 0, list[str]()
                for doc in ranked:
                    if doc not in doc_tokens:
                        doc_tokens[doc] = counter(doc_text[doc])
                    cost = doc_tokens[doc] + (2 if packed_docs else 0)
                    if used + cost <= budget:
                        packed_docs.append(doc)
                        used += cost
                tokens, in_budget = used, set(packed_docs)
            else:
                packed = pack_chunks(results, budget, query=query, counter=counter)
                tokens, in_budget = packed.tokens, set(packed.doc_ids)
            rows.append({
                "ndcg": _ndcg_at_10(ranked, relevant),
                "recall10": len(set(ranked[:10]) & set(relevant)) / len(relevant),
                "recall_budget": len(in_budget & set(relevant)) / len(relevant),
                "tokens": tokens,
                "latency_ms": elapsed,
            })  # fmt: skip
        return _summary(rows)

    def mode(name: str) -> Callable[[str, npt.NDArray[np.float32]], list[ScoredChunk]]:
        def search(query: str, vector: npt.NDArray[np.float32]) -> list[ScoredChunk]:
            return searcher.search(query, k=50, query_vector=vector, mode=name)  # type: ignore[arg-type]

        return search

    return {
        "data": {
            "folder": str(folder),
            "split": split,
            "documents": len(documents),
            "chunks": index.chunk_count,
            "queries": len(query_ids),
            "budget": budget,
            "index_build_s": round(build_s, 1),
        },
        "tokenlean": run(mode("hybrid"), whole_docs=False),
        "bm25": run(mode("lexical"), whole_docs=False),
        "dense": run(mode("dense"), whole_docs=False),
        "dense_whole_docs": run(mode("dense"), whole_docs=True),
    }


def print_report(result: dict[str, Any]) -> None:
    """A terminal table of :func:`retrieval_bench`'s result."""
    from rich.console import Console
    from rich.table import Table

    data = result["data"]
    console = Console(width=max(120, Console().width))
    table = Table(
        title=f"Retrieval on {data['folder']} ({data['split']}: {data['queries']} queries, "
        f"{data['documents']} documents, budget {data['budget']} tokens)"
    )
    columns = ("variant", "nDCG@10", "recall@10", "recall in budget", "mean tokens")
    for column in (*columns, "p50 ms", "p95 ms"):
        table.add_column(column)
    for name in ("tokenlean", "bm25", "dense", "dense_whole_docs"):
        row = result[name]
        table.add_row(
            name,
            f"{row['ndcg_at_10']:.3f}",
            f"{row['recall_at_10']:.3f}",
            f"{row['recall_in_budget']:.3f}",
            f"{row['mean_tokens']:.0f}",
            f"{row['latency_ms_p50']:.1f}",
            f"{row['latency_ms_p95']:.1f}",
        )
    console.print(table)
