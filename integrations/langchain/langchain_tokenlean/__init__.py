"""LangChain integration of tokenlean."""

from langchain_tokenlean.cache import TokenleanCache

__all__ = ["TokenleanCache"]
