"""``CachedQueryEngine``: a LlamaIndex query engine that answers from a tokenlean cache when it can.

The cache is keyed on the query text and the *index version* (an opaque string naming what the
engine answers from). Both are part of the exact key; the version is the fixed part of the
semantic key and the query is the compared part, so under a semantic policy a paraphrase of an
earlier question over the same index version is answered, and nothing is ever answered across
versions. On a hit the wrapped engine is not called: the ``Response`` is rebuilt from the cache
(text, metadata and source nodes) and ``metadata["tokenlean_cache"]`` says which layer served it
and with what similarity, with the semantic hit's ``lookup_id`` for :meth:`feedback`. On a miss the
wrapped engine answers and the answer is stored, tagged with every cited source document, so
:meth:`CachedQueryEngine.invalidate_document` drops every answer that cited a changed document.

Only plain ``Response`` objects are cached; streaming and Pydantic responses pass through.
Policy (exact or error-bounded semantic, TTL, tenants) lives in the core
:class:`~tokenlean.CompletionCache`, exactly as for :class:`~llama_index.llms.tokenlean.CachedLLM`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.indices.base import BaseIndex
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc

from tokenlean import (
    CacheLookup,
    CacheRequest,
    CompletionCache,
    ConfigurationError,
    InvalidInputError,
    fingerprint,
)

__all__ = ["CachedQueryEngine"]

logger = logging.getLogger("tokenlean.llamaindex")

IndexVersion = str | Callable[[], str] | None
"""A fixed version string, a callable returning the current one, or None (unversioned)."""

_MODEL = "query-engine"


def _index_fingerprint(index: BaseIndex[Any]) -> str:
    """A fingerprint of the content hashes the index's docstore records (text and metadata of
    each node). Node ids are left out: LlamaIndex gives split nodes random ids, so the same
    documents indexed in another process (a restart, a replica) would get another version and
    a persistent cache would never answer."""
    hashes = index.docstore.get_all_document_hashes()  # {hash: node id}
    return fingerprint(*sorted(hashes))


def _json(value: Any) -> str | None:
    """``value`` as strict JSON text, or None when it has no JSON form."""
    try:
        return json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError):
        return None


def _sources(nodes: Sequence[NodeWithScore]) -> list[dict[str, Any]] | None:
    """The source nodes in LlamaIndex's docstore form, or None when one does not round-trip."""
    items = []
    for node in nodes:
        item = {"node": doc_to_json(node.node), "score": node.score}
        text = _json(item)
        if text is None:
            return None
        try:
            json_to_doc(json.loads(text)["node"])
        except (ValueError, TypeError, KeyError):  # an unknown node type, or invalid data
            return None
        items.append(item)
    return items


def _value(response: Response) -> dict[str, Any]:
    """What the cache keeps for a response. Metadata and sources are kept as JSON text, so an
    answer judge compares only the answer (it reads ``text`` fields anywhere in a value)."""
    sources = _sources(response.source_nodes)
    if sources is None and response.source_nodes:
        logger.debug("tokenlean: caching a query-engine answer without its source nodes")
    return {
        "response": response.response,
        "metadata": _json(response.metadata) if response.metadata is not None else None,
        "source_nodes": _json(sources) if sources is not None else None,
    }


def _response(result: CacheLookup) -> Response:
    value = result.value
    metadata = json.loads(value["metadata"]) if value.get("metadata") else {}
    sources = json.loads(value["source_nodes"]) if value.get("source_nodes") else []
    marker = {
        "hit": True,
        "layer": result.layer,
        "similarity": result.similarity,
        "lookup_id": result.lookup_id,
    }
    return Response(
        response=value.get("response"),
        source_nodes=[
            NodeWithScore(node=json_to_doc(item["node"]), score=item["score"]) for item in sources
        ],
        metadata={**metadata, "tokenlean_cache": marker},
    )


def _tags(response: Response) -> list[str]:
    """``doc:<ref_doc_id>`` for every source document the response cites."""
    return sorted({f"doc:{n.node.ref_doc_id}" for n in response.source_nodes if n.node.ref_doc_id})


class CachedQueryEngine(BaseQueryEngine):
    """Wraps any LlamaIndex query engine with a tokenlean :class:`~tokenlean.CompletionCache`.

    Args:
        query_engine: the engine that answers on a miss.
        cache: the tokenlean cache (default: exact, in memory). With
            ``CompletionCache(policy=CachePolicy.semantic())`` paraphrases of an earlier
            question are answered once the route's evidence bounds the error rate.
        index_version: names what the engine answers from: a string, a callable returning the
            current one (asked on every query), or None (unversioned). Answers are only served
            to queries under the same version, so change it whenever the index, the LLM, the
            prompts or the retrieval settings change. Engines sharing a cache and a tenant must
            differ in it. :meth:`from_index` derives it from an index's documents.
        tenant: tenant namespace of every lookup.
        route: the cache policy route.
        callback_manager: LlamaIndex callbacks (default: the wrapped engine's).

    Example:
        >>> from llama_index.core import Document, MockEmbedding, VectorStoreIndex
        >>> from llama_index.core.llms import MockLLM
        >>> index = VectorStoreIndex.from_documents(
        ...     [Document(text="Refunds take 14 days.", id_="refunds")],
        ...     embed_model=MockEmbedding(embed_dim=8),
        ... )
        >>> engine = CachedQueryEngine.from_index(index, llm=MockLLM())
        >>> first = engine.query("How long do refunds take?")
        >>> engine.query("How long do refunds take?").metadata["tokenlean_cache"]["layer"]
        'exact'
        >>> engine.invalidate_document("refunds")
        1
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        cache: CompletionCache | None = None,
        *,
        index_version: IndexVersion = None,
        tenant: str = "default",
        route: str | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if not isinstance(query_engine, BaseQueryEngine):
            raise ConfigurationError(
                f"CachedQueryEngine wraps a LlamaIndex query engine, not "
                f"{type(query_engine).__name__}"
            )
        if cache is not None and not isinstance(cache, CompletionCache):
            raise ConfigurationError(f"cache must be a CompletionCache, not {type(cache).__name__}")
        super().__init__(callback_manager or query_engine.callback_manager)
        self._query_engine = query_engine
        self._cache = cache or CompletionCache()
        self._cache.check_target(tenant=tenant, route=route)
        self._index_version = index_version
        self.tenant = tenant
        self.route = route

    @classmethod
    def from_index(
        cls,
        index: BaseIndex[Any],
        cache: CompletionCache | None = None,
        *,
        query_engine: BaseQueryEngine | None = None,
        tenant: str = "default",
        route: str | None = None,
        **query_engine_kwargs: Any,
    ) -> CachedQueryEngine:
        """A cached engine over ``index`` whose version follows the index's documents.

        The version is a fingerprint of ``index.docstore.get_all_document_hashes()``, taken on
        every query: inserting, updating or refreshing a document (``insert``,
        ``update_ref_doc``, ``refresh_ref_docs``), or deleting it with
        ``delete_from_docstore=True``, changes it and retires every earlier answer. Nodes
        inserted with ``insert_nodes`` have no document hash and are not seen, nor are changes
        of the LLM or prompts; pass an explicit ``index_version`` to the constructor then. The
        fingerprint reads the whole docstore's hashes, which is cheap in memory but a scan on a
        remote docstore.

        Args:
            index: the index the engine answers from.
            cache: the tokenlean cache (default: exact, in memory).
            query_engine: the engine to wrap (default: ``index.as_query_engine(**kwargs)``).
            tenant: tenant namespace of every lookup.
            route: the cache policy route.
            query_engine_kwargs: passed to ``index.as_query_engine`` (``llm``,
                ``similarity_top_k``…).
        """
        engine = query_engine or index.as_query_engine(**query_engine_kwargs)
        return cls(
            engine, cache, index_version=lambda: _index_fingerprint(index), tenant=tenant,
            route=route,
        )  # fmt: skip

    @property
    def cache(self) -> CompletionCache:
        """The tokenlean cache behind this engine."""
        return self._cache

    @property
    def query_engine(self) -> BaseQueryEngine:
        """The wrapped engine, called on misses."""
        return self._query_engine

    @property
    def index_version(self) -> str:
        """The current index version ("" when unversioned)."""
        version = self._index_version
        return (version() if callable(version) else version) or ""

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self._query_engine}

    # ------------------------------------------------------------------ cache I/O-free parts

    def _request(self, query_bundle: QueryBundle) -> CacheRequest:
        version = self.index_version
        query = query_bundle.query_str
        return CacheRequest(
            model=_MODEL,
            messages=({"role": "user", "content": query},),
            params={"index_version": version},
            split=(version, query),
        )

    def _store_options(self, response: Response) -> dict[str, Any]:
        return {"tenant": self.tenant, "route": self.route, "tags": _tags(response)}

    # ------------------------------------------------------------------ public API

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        request = self._request(query_bundle)
        result = self._cache.lookup(request, tenant=self.tenant, route=self.route)
        if result.hit:
            return _response(result)
        response = self._query_engine.query(query_bundle)
        if isinstance(response, Response):
            self._cache.store(request, _value(response), **self._store_options(response))
        return response

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        request = self._request(query_bundle)
        result = await self._cache.alookup(request, tenant=self.tenant, route=self.route)
        if result.hit:
            return _response(result)
        response = await self._query_engine.aquery(query_bundle)
        if isinstance(response, Response):
            await self._cache.astore(request, _value(response), **self._store_options(response))
        return response

    def invalidate_document(self, doc_id: str) -> int:
        """Remove every cached answer that cited document ``doc_id`` (its ``ref_doc_id``), in
        every tenant; return how many."""
        return self._cache.invalidate(tag=f"doc:{doc_id}")

    def feedback(self, response: Response | str, *, correct: bool) -> bool:
        """Tell the cache whether a semantic hit this engine served was right.

        A wrong hit's entry is removed; either way the verdict is evidence for the route's
        error-bounded acceptance rule (see :meth:`tokenlean.CompletionCache.feedback`).

        Args:
            response: a response this engine served from the cache (its
                ``metadata["tokenlean_cache"]`` marker holds the ``lookup_id``), or the id.
            correct: whether the served answer was right.

        Returns:
            True when the entry was found (and, for ``correct=False``, removed).

        Raises:
            InvalidInputError: the response was not served by the cache, or was an exact hit
                (only semantic hits have a lookup id).
        """
        marker = (
            response
            if isinstance(response, str)
            else (response.metadata or {}).get("tokenlean_cache")
        )
        if marker is None:
            raise InvalidInputError("this response was not served by the tokenlean cache")
        return self._cache.feedback(marker, correct=correct, route=self.route)

    async def afeedback(self, response: Response | str, *, correct: bool) -> bool:
        """:meth:`feedback` off the event loop."""
        return await asyncio.to_thread(self.feedback, response, correct=correct)
