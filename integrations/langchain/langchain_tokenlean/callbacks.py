"""A LangChain callback handler that feeds tokenlean's :class:`~tokenlean.MetricsCollector`.

Each chat model call is measured by the core's :func:`~tokenlean.start_call` (the same policy as
the LlamaIndex event handler): from ``on_chat_model_start`` to ``on_llm_end`` or
``on_llm_error``, with the provider-reported ``usage_metadata`` (input, output and cached input
tokens) or, when there is none, tokenlean's count of the prompt in the provider's shape (tool
calls and bound tool schemas included), labelled an estimate. A call answered from a cache
(tokenlean's marker, or LangChain's own cache, which zeroes ``total_cost``) is a hit that spent
no tokens. The task and tenant of a call come from the run's metadata (``tokenlean_task``,
``tokenlean_tenant``) or the handler's defaults. No prompt text is stored or exported.

The handler also carries per-call cache options from the run's metadata to the cache:
``metadata={"tokenlean_cache": "bypass"}`` skips the cache for that call and
``{"tokenlean_ttl_s": 60}`` keeps its answer for 60 s (:func:`tokenlean.cache_options` for the
duration of the call; LangChain looks its cache up after this handler has seen the call start).
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, suppress
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from langchain_tokenlean.memory import to_tokenlean
from tokenlean import (
    CallMetrics,
    ConfigurationError,
    MetricsRecorder,
    Usage,
    cache_options,
    start_call,
)

__all__ = ["TokenleanCallbackHandler"]


def _options(metadata: dict[str, Any]) -> AbstractContextManager[Any] | None:
    mode = metadata.get("tokenlean_cache")
    ttl_s = metadata.get("tokenlean_ttl_s")
    if mode is None and ttl_s is None:
        return None
    if mode not in (None, "bypass"):
        raise ConfigurationError(f"tokenlean_cache takes 'bypass', not {mode!r}")
    return cache_options(bypass=mode == "bypass", ttl_s=ttl_s)  # checked by the core


class TokenleanCallbackHandler(BaseCallbackHandler):
    """Records every chat model call into a :class:`~tokenlean.MetricsCollector`.

    Args:
        collector: where the figures go (any :class:`~tokenlean.MetricsRecorder`).
        tenant: default tenant label (hashed before it reaches any exporter); a run's
            ``metadata={"tokenlean_tenant": ...}`` overrides it.
        task: default task id (opened with ``collector.task(...)``); a run's
            ``metadata={"tokenlean_task": ...}`` overrides it, so one handler serves many tasks.
    """

    def __init__(self, collector: MetricsRecorder, *, tenant: str | None = None,
                 task: str | None = None) -> None:  # fmt: skip
        self.collector = collector
        self.tenant = tenant
        self.task = task
        self._calls: dict[UUID, CallMetrics] = {}
        self._scopes: dict[UUID, AbstractContextManager[Any]] = {}
        self._lock = threading.Lock()

    # Called in the caller's context (not a worker thread), so the cache options it sets for a
    # call are the ones the cache lookup of that call sees.
    run_inline = True

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]],
                            *, run_id: UUID, **kwargs: Any) -> None:  # fmt: skip
        params = kwargs.get("invocation_params") or {}
        metadata = kwargs.get("metadata") or {}
        model = str(
            params.get("model") or params.get("model_name") or params.get("_type") or "unknown"
        )
        batch = [to_tokenlean(m) for m in (messages[0] if messages else [])]
        for message in batch:
            message.pop("id", None)  # an id is not sent to the provider
        tools = params.get("tools") or None
        common: dict[str, Any] = {
            "model": model,
            "tenant": metadata.get("tokenlean_tenant", self.tenant),
            "task": metadata.get("tokenlean_task", self.task),
        }
        try:
            call = start_call(self.collector, messages=batch, tools=tools, **common)
        except Exception:  # tool schemas in a shape tokenlean cannot count: count the messages
            call = start_call(self.collector, messages=batch, **common)
        scope = _options(metadata)
        if scope is not None:
            scope.__enter__()
        with self._lock:
            self._calls[run_id] = call
            if scope is not None:
                self._scopes[run_id] = scope

    def _take(self, run_id: UUID) -> CallMetrics | None:
        with self._lock:
            scope = self._scopes.pop(run_id, None)
            call = self._calls.pop(run_id, None)
        if scope is not None:
            # ended in another context: the call's own context is gone with it
            with suppress(ValueError):
                scope.__exit__(None, None, None)
        return call

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        call = self._take(run_id)
        if call is None:
            return
        message = None
        for generations in response.generations:
            for generation in generations:
                if isinstance(generation, ChatGeneration) and isinstance(
                    generation.message, AIMessage
                ):
                    message = generation.message
        usage: dict[str, Any] = dict(message.usage_metadata or {}) if message is not None else {}
        meta = message.response_metadata if message is not None else {}
        marker = meta.get("tokenlean_cache")
        cache_hit = marker.get("layer") if isinstance(marker, dict) else None
        if cache_hit is None and usage.get("total_cost") == 0:  # LangChain's own cache
            cache_hit = "langchain"
        reported = None
        if "input_tokens" in usage:
            details = usage.get("input_token_details") or {}
            reported = Usage(
                int(usage["input_tokens"]),
                int(usage.get("output_tokens", 0)),
                int(details.get("cache_read", 0)),
            )
        call.finish(
            usage=reported,
            text=message.text if message is not None else None,
            cache_hit=cache_hit,
            model=str(meta.get("model_name") or meta.get("model") or "") or None,
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        call = self._take(run_id)
        if call is not None:
            call.fail(error)
