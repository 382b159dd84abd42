"""tokenlean's budgeted context memory for LlamaIndex agents and chat engines."""

from llama_index.memory.tokenlean.base import TokenleanMemory

__all__ = ["TokenleanMemory"]
