"""``RoutedLLM``: a LlamaIndex LLM that sends each call to a small or a large LLM.

The path is chosen by tokenlean's :class:`~tokenlean.Router` gates (rules, a learned gate) on
the last user message (or the prompt); a small answer the verifier doubts is replaced by the
large LLM's (for non-streaming calls). The wrapped LLMs fire their own instrumentation events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, SerializeAsAny
from llama_index.core.llms.llm import LLM

from tokenlean import Gate, Router

__all__ = ["RoutedLLM"]


def _chat_text(response: ChatResponse) -> str:
    return response.message.content or ""


def _completion_text(response: CompletionResponse) -> str:
    return response.text


def _last_user(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role.value == "user":
            return message.content or ""
    return messages[-1].content or "" if messages else ""


class RoutedLLM(LLM):
    """Routes between two LlamaIndex LLMs.

    Args:
        small: the cheap LLM.
        large: the capable LLM.
        gates: tokenlean gates, consulted in order (default: small).
        verifier: ``fn(text, answer_text) -> confidence``; below ``min_confidence`` a small
            answer is escalated to the large LLM.
    """

    small: SerializeAsAny[LLM] = Field(description="The small LLM.")
    large: SerializeAsAny[LLM] = Field(description="The large LLM.")
    _router: Router = PrivateAttr()

    def __init__(
        self,
        small: LLM,
        large: LLM,
        *,
        gates: Sequence[Gate] = (),
        verifier: Callable[[str, str], float] | None = None,
        min_confidence: float = 0.5,
        cost: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.update(small=small, large=large)
        super().__init__(**kwargs)
        self._router = Router(  # its paths come with each call
            gates=gates,
            verifier=verifier,
            min_confidence=min_confidence,
            cost=cost,
        )

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanRoutedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.large.metadata

    @property
    def router(self) -> Router:
        return self._router

    def _pick(self, text: str) -> LLM:
        return self.small if self._router.decide(text, text=text).path == "small" else self.large

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return cast(
            ChatResponse,
            self._router.run(
                _last_user(messages),
                small=lambda _: self.small.chat(messages, **kwargs),
                large=lambda _: self.large.chat(messages, **kwargs),
                answer=_chat_text,
            ),
        )

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return cast(
            ChatResponse,
            await self._router.arun(
                _last_user(messages),
                small=lambda _: self.small.achat(messages, **kwargs),
                large=lambda _: self.large.achat(messages, **kwargs),
                answer=_chat_text,
            ),
        )

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return cast(
            CompletionResponse,
            self._router.run(
                prompt,
                small=lambda _: self.small.complete(prompt, formatted=formatted, **kwargs),
                large=lambda _: self.large.complete(prompt, formatted=formatted, **kwargs),
                answer=_completion_text,
            ),
        )

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return cast(
            CompletionResponse,
            await self._router.arun(
                prompt,
                small=lambda _: self.small.acomplete(prompt, formatted=formatted, **kwargs),
                large=lambda _: self.large.acomplete(prompt, formatted=formatted, **kwargs),
                answer=_completion_text,
            ),
        )

    def _account(self, llm: LLM) -> None:
        self._router.record("small" if llm is self.small else "large")

    # Streams are routed but not escalated: their text arrives before it can be verified.
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        llm = self._pick(_last_user(messages))
        self._account(llm)
        return llm.stream_chat(messages, **kwargs)

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        llm = self._pick(_last_user(messages))
        self._account(llm)
        return await llm.astream_chat(messages, **kwargs)

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        llm = self._pick(prompt)
        self._account(llm)
        return llm.stream_complete(prompt, formatted=formatted, **kwargs)

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        llm = self._pick(prompt)
        self._account(llm)
        return await llm.astream_complete(prompt, formatted=formatted, **kwargs)
