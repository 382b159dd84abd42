"""tokenlean's budgeted hybrid retriever for LlamaIndex."""

from llama_index.retrievers.tokenlean.base import TokenleanRetriever

__all__ = ["TokenleanRetriever"]
