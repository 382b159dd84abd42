"""tokenlean's budgeted context memory for LlamaIndex agents and chat engines."""

from llama_index.memory.tokenlean.base import (
    LlamaIndexSummarizer,
    TokenleanFunctionAgent,
    TokenleanMemory,
    to_llamaindex,
    to_tokenlean,
)

__all__ = [
    "LlamaIndexSummarizer",
    "TokenleanFunctionAgent",
    "TokenleanMemory",
    "to_llamaindex",
    "to_tokenlean",
]
