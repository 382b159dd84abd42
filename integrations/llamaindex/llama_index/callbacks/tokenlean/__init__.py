"""tokenlean metrics for LlamaIndex's instrumentation."""

from llama_index.callbacks.tokenlean.base import TokenleanEventHandler

__all__ = ["TokenleanEventHandler"]
