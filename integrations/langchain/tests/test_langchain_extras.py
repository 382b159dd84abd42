"""What works with ``langchain-core`` alone, and what the ``agents`` extra adds.

Each check runs in a fresh interpreter whose imports of ``langchain`` and ``langgraph`` fail, as
they do where ``langchain-tokenlean`` was installed without ``[agents]``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import langchain_tokenlean
from langchain.agents.middleware import AgentMiddleware

WITHOUT_AGENTS = textwrap.dedent(
    """
    import sys

    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("langchain", "langgraph"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
    """
)


def _run_without_agents(code: str) -> str:
    script = WITHOUT_AGENTS + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_cache_and_the_other_components_work_with_langchain_core_alone() -> None:
    """Without langchain and LangGraph, everything but the middleware imports and the cache
    answers a repeated prompt."""
    out = _run_without_agents(
        """
        from langchain_core.language_models import FakeListChatModel
        from langchain_tokenlean import (
            LangChainSummarizer, TokenBudgetCompressor, TokenleanCache, TokenleanCallbackHandler,
            TokenleanChainCache, TokenleanChatMessageHistory, TokenleanRetriever, bench_model,
            routed_chat_model,
        )

        model = FakeListChatModel(responses=["first", "second"], cache=TokenleanCache())
        model.invoke("Where is my order?")
        print(model.invoke("Where is my order?").content)
        print(sorted({m.split(".")[0] for m in sys.modules} & {"langchain", "langgraph"}))
        """
    )
    assert out.splitlines() == ["first", "[]"]


def test_the_middleware_without_the_agents_extra_names_it() -> None:
    """Importing TokenleanMemoryMiddleware without langchain raises MissingDependencyError with
    the command that installs the extra."""
    out = _run_without_agents(
        """
        from tokenlean import MissingDependencyError

        try:
            from langchain_tokenlean import TokenleanMemoryMiddleware
        except MissingDependencyError as error:
            print(error.extra)
            print(error)
        """
    )
    extra, message = out.splitlines()
    assert extra == "agents"
    assert message.endswith("pip install 'langchain-tokenlean[agents]'")


def test_with_the_agents_extra_the_middleware_is_an_agent_middleware() -> None:
    """Where langchain is installed, the package exports the middleware class."""
    assert issubclass(langchain_tokenlean.TokenleanMemoryMiddleware, AgentMiddleware)
    assert "TokenleanMemoryMiddleware" in langchain_tokenlean.__all__
