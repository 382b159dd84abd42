"""tokenlean's token-budget node postprocessor for LlamaIndex."""

from llama_index.postprocessor.tokenlean.base import TokenBudgetPostprocessor

__all__ = ["TokenBudgetPostprocessor"]
