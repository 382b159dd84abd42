"""LangChain integration of tokenlean."""

from langchain_tokenlean.bench import bench_model
from langchain_tokenlean.cache import LangChainAnswerJudge, TokenleanCache
from langchain_tokenlean.callbacks import TokenleanCallbackHandler
from langchain_tokenlean.chain_cache import TokenleanChainCache
from langchain_tokenlean.memory import (
    LangChainSlotExtractor,
    LangChainSummarizer,
    TokenleanChatMessageHistory,
    TokenleanMemoryMiddleware,
)
from langchain_tokenlean.retrievers import TokenBudgetCompressor, TokenleanRetriever
from langchain_tokenlean.routing import routed_chat_model

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
