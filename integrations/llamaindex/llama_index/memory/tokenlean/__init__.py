"""tokenlean's budgeted context memory for LlamaIndex agents and chat engines."""

from llama_index.memory.tokenlean.base import LlamaIndexSummarizer, TokenleanMemory

__all__ = ["LlamaIndexSummarizer", "TokenleanMemory"]
