"""LangChain integration of tokenlean."""

from langchain_tokenlean.cache import TokenleanCache
from langchain_tokenlean.memory import (
    LangChainSlotExtractor,
    LangChainSummarizer,
    TokenleanChatMessageHistory,
    TokenleanMemoryMiddleware,
)
from langchain_tokenlean.retrievers import TokenBudgetCompressor, TokenleanRetriever

__all__ = [
    "LangChainSlotExtractor",
    "LangChainSummarizer",
    "TokenBudgetCompressor",
    "TokenleanCache",
    "TokenleanChatMessageHistory",
    "TokenleanMemoryMiddleware",
    "TokenleanRetriever",
]
