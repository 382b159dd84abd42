"""One model call, measured the same way whichever framework reports it.

A framework's callback or event handler calls :func:`start_call` when a call starts and then
:meth:`CallMetrics.finish` (or :meth:`CallMetrics.fail`) when it ends; the policy of what gets
recorded lives here, once, for the LangChain handler and the LlamaIndex handler alike:

- a call answered by a cache (``cache_hit``: tokenlean's layer, or ``"framework"`` for a
  framework's own cache) is recorded as a hit that spent no tokens;
- provider-reported usage is recorded as such (``usage_source="provider"``), with tokenlean's
  estimate of the prompt beside it;
- without usage, the prompt estimate and a count of the answer are recorded, labelled estimates;
- a failed call is recorded with its error's type, and the prompt estimate as input.

The prompt estimate counts the messages and the tool schemas in the provider's shape
(:func:`~tokenlean.count_message_tokens`), so it is the same number a memory's budget checks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenlean._metrics.collector import MetricsRecorder
from tokenlean._tokens.counting import count_tokens
from tokenlean._tokens.messages import count_message_tokens

__all__ = ["CallMetrics", "Usage", "start_call"]


@dataclass(frozen=True)
class Usage:
    """What a provider reported for one call (input tokens include the cached ones)."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0


class CallMetrics:
    """A model call in flight. Finish it exactly once: :meth:`finish` or :meth:`fail`.

    Example:
        >>> from tokenlean import MetricsCollector
        >>> collector = MetricsCollector()
        >>> call = start_call(collector, model="gpt-4o-mini",
        ...                   messages=[{"role": "user", "content": "Hi there"}])
        >>> record = call.finish(usage=Usage(input_tokens=9, output_tokens=3))
        >>> record.input_tokens, record.usage_source, record.estimated_input_tokens
        (9, 'provider', 9)
        >>> start_call(collector, model="gpt-4o-mini", prompt="Hi").finish(
        ...     text="Hello!", cache_hit="exact").input_tokens
        0
    """

    def __init__(
        self,
        recorder: MetricsRecorder,
        *,
        model: str,
        estimate: int,
        tenant: str | None,
        task: str | None,
        operation: str,
    ) -> None:
        self.recorder = recorder
        self.model = model
        self.estimate = estimate
        self.tenant = tenant
        self.task = task
        self.operation = operation
        self.started = time.perf_counter()
        self.done = False

    def _latency(self) -> float:
        self.done = True
        return time.perf_counter() - self.started

    def finish(
        self,
        *,
        usage: Usage | None = None,
        text: str | None = None,
        cache_hit: str | None = None,
        model: str | None = None,
    ) -> Any:
        """Record the call's end: ``usage`` as the provider reported it (None: estimate),
        ``text`` the answer (counted when there is no usage), ``cache_hit`` the layer that
        answered it, ``model`` the model the provider says answered (default: the one started).
        Returns what the recorder returns (a :class:`~tokenlean.RequestRecord`)."""
        latency = self._latency()
        model = model or self.model
        common: dict[str, Any] = {
            "latency_s": latency,
            "estimated_input_tokens": self.estimate,
            "tenant": self.tenant,
            "task": self.task,
            "operation": self.operation,
        }
        if cache_hit is not None:
            return self.recorder.record_request(
                model, input_tokens=0, output_tokens=0, usage_source="estimate",
                cache_hit=cache_hit, **common,
            )  # fmt: skip
        if usage is not None:
            return self.recorder.record_request(
                model, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens, usage_source="provider", **common,
            )  # fmt: skip
        output = count_tokens(text or "", model=model) if text else 0
        return self.recorder.record_request(
            model, input_tokens=self.estimate, output_tokens=output, usage_source="estimate",
            **common,
        )  # fmt: skip

    def fail(self, error: BaseException | str) -> Any:
        """Record the call as failed (its prompt still counted as an estimate)."""
        name = error if isinstance(error, str) else type(error).__name__
        return self.recorder.record_request(
            self.model, input_tokens=self.estimate, output_tokens=0,
            latency_s=self._latency(), usage_source="estimate",
            estimated_input_tokens=self.estimate, tenant=self.tenant, task=self.task,
            operation=self.operation, error=name,
        )  # fmt: skip


def start_call(
    recorder: MetricsRecorder,
    *,
    model: str,
    messages: Sequence[Mapping[str, Any]] | None = None,
    prompt: str | None = None,
    tools: Sequence[Any] | None = None,
    tenant: str | None = None,
    task: str | None = None,
    operation: str = "chat",
) -> CallMetrics:
    """Start measuring a call of ``model`` on ``messages`` (OpenAI-style, tool calls in the
    provider's shape) and ``tools``, or on a plain ``prompt``."""
    if messages is not None:
        estimate = count_message_tokens(list(messages), tools=tools or None, model=model).total
    else:
        estimate = count_tokens(prompt or "", model=model)
    return CallMetrics(
        recorder, model=model, estimate=estimate, tenant=tenant, task=task, operation=operation
    )
