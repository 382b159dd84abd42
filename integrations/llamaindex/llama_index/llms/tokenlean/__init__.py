"""tokenlean's LLM wrappers for LlamaIndex: caching and routing."""

from llama_index.llms.tokenlean.base import CachedLLM, LlamaIndexAnswerJudge
from llama_index.llms.tokenlean.routed import RoutedLLM

__all__ = ["CachedLLM", "LlamaIndexAnswerJudge", "RoutedLLM"]
