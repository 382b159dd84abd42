"""bench_model plugs a LangChain chat model into the end-to-end harness."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_tokenlean import bench_model

from tokenlean.bench import generate_workload, run_harness
from tokenlean.testing import HashingEmbedder


def test_a_langchain_model_runs_the_harness() -> None:
    """The harness runs on a LangChain chat model; its usage and answers are what count."""
    workload = generate_workload(users=1, sessions_per_user=1, questions_per_session=2)
    answers = [q.answer for s in workload.sessions for q in s.questions]

    def factory(name: str) -> Any:
        replies = [AIMessage(f"The answer is {a}.", usage_metadata={"input_tokens": 100,
                   "output_tokens": 5, "total_tokens": 105}) for a in answers * 8]  # fmt: skip
        return bench_model(FakeMessagesListChatModel(responses=replies), name)

    result = run_harness(workload, embedder=HashingEmbedder(64), model_factory=factory)
    baseline = result["variants"]["baseline"]
    assert baseline["success_rate"] == 1.0
    assert baseline["input_tokens_per_task"] == 100.0
