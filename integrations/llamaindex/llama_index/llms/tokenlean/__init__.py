"""tokenlean's caching LLM wrapper for LlamaIndex."""

from llama_index.llms.tokenlean.base import CachedLLM

__all__ = ["CachedLLM"]
