"""LangChain integration of tokenlean."""

from langchain_tokenlean.cache import TokenleanCache
from langchain_tokenlean.memory import TokenleanChatMessageHistory, TokenleanMemoryMiddleware
from langchain_tokenlean.retrievers import TokenBudgetCompressor, TokenleanRetriever

__all__ = [
    "TokenBudgetCompressor",
    "TokenleanCache",
    "TokenleanChatMessageHistory",
    "TokenleanMemoryMiddleware",
    "TokenleanRetriever",
]
