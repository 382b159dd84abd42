"""LangChain integration of tokenlean.

Everything here needs only ``langchain-core``, except ``TokenleanMemoryMiddleware``, which needs
LangChain's agents (``pip install 'langchain-tokenlean[agents]'``): it is imported on first use,
and without the extra that raises :class:`~tokenlean.MissingDependencyError` naming it.
"""

from typing import TYPE_CHECKING, Any

from langchain_tokenlean.bench import bench_model
from langchain_tokenlean.cache import LangChainAnswerJudge, TokenleanCache
from langchain_tokenlean.callbacks import TokenleanCallbackHandler
from langchain_tokenlean.chain_cache import TokenleanChainCache
from langchain_tokenlean.memory import (
    LangChainSlotExtractor,
    LangChainSummarizer,
    TokenleanChatMessageHistory,
)
from langchain_tokenlean.retrievers import TokenBudgetCompressor, TokenleanRetriever
from langchain_tokenlean.routing import routed_chat_model

if TYPE_CHECKING:
    from langchain_tokenlean.middleware import TokenleanMemoryMiddleware

__all__ = [
    "LangChainAnswerJudge",
    "LangChainSlotExtractor",
    "LangChainSummarizer",
    "TokenBudgetCompressor",
    "TokenleanCache",
    "TokenleanCallbackHandler",
    "TokenleanChainCache",
    "TokenleanChatMessageHistory",
    "TokenleanMemoryMiddleware",
    "TokenleanRetriever",
    "bench_model",
    "routed_chat_model",
]


def __getattr__(name: str) -> Any:
    if name == "TokenleanMemoryMiddleware":
        from langchain_tokenlean.middleware import TokenleanMemoryMiddleware

        return TokenleanMemoryMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
