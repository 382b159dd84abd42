"""tokenlean's caching query engine for LlamaIndex."""

from llama_index.query_engine.tokenlean.base import CachedQueryEngine

__all__ = ["CachedQueryEngine"]
