"""The harness's model port, and the simulated model that implements it.

A benchmark model answers one prompt and says what the call took (:class:`BenchReply`); a
model that can take a batch in one request also implements :class:`BatchBenchModel`, and the
``all_levers`` variant's micro-batcher then sends it whole batches. ``langchain_tokenlean.bench``
wraps any LangChain chat model as a :class:`BenchModel`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tokenlean._canonical import canonical_json, fingerprint
from tokenlean._errors import ConfigurationError
from tokenlean._tokens.messages import count_message_tokens
from tokenlean.bench._workload import Question

__all__ = [
    "MAIN_MODEL",
    "OUTPUT_TOKENS",
    "SMALL_MODEL",
    "UNSURE",
    "BatchBenchModel",
    "BenchModel",
    "BenchReply",
    "SimulatedModel",
    "as_bench_model",
]

MAIN_MODEL, SMALL_MODEL = "gpt-4o-mini", "gpt-4.1-nano"
OUTPUT_TOKENS = 10
UNSURE = "I don't know"


@dataclass(frozen=True)
class BenchReply:
    """One model call: the answer's text and what the call took.

    Attributes:
        text: the answer.
        input_tokens: prompt tokens billed (as the provider reports them, or counted).
        cached_tokens: of those, the tokens read from the provider's prefix cache.
        output_tokens: completion tokens.
        latency_ms: the call's latency (for a batch item: the whole batch's).
    """

    text: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    latency_ms: float


@runtime_checkable
class BenchModel(Protocol):
    """A model the harness can drive: ``model`` is its price-table name."""

    model: str

    def call(
        self,
        messages: list[dict[str, Any]],
        question: Question,
        *,
        counter: Callable[[str], int],
        tools: Sequence[Any] = (),
    ) -> BenchReply:
        """Answer ``messages`` (the prompt; ``question`` is the workload's question, with its
        gold answer, for simulators); ``counter`` counts tokens a model does not report."""
        ...

    def is_correct(self, answer: str, gold: str) -> bool:
        """Whether ``answer`` gives the ``gold`` answer."""
        ...


@runtime_checkable
class BatchBenchModel(BenchModel, Protocol):
    """A :class:`BenchModel` that answers a batch of prompts in one request."""

    def call_batch(
        self,
        batch: Sequence[tuple[list[dict[str, Any]], Question]],
        *,
        counter: Callable[[str], int],
        tools: Sequence[Any] = (),
    ) -> list[BenchReply]:
        """One reply per ``(messages, question)``, in order."""
        ...


def _parts(content: Any) -> list[str]:
    """A message's text: one string, or the text of each of its parts."""
    if isinstance(content, list):
        return [str(p.get("text") or "") for p in content if isinstance(p, dict)]
    return [str(content or "")]


def _text(content: Any) -> str:
    return "".join(_parts(content))


_NUMBER = re.compile(r"(\d+)")
_CITY = re.compile(r"(?:deliver my orders to|delivery_city:) ([A-Z][a-z]+)")
_PURCHASE = re.compile(r"(?:I bought the|purchased_product:) ([A-Z][a-z]+ [a-z]+)")
_KEYWORDS = {
    "warranty": "warranty",
    "battery": "battery",
    "return": "Returns",
    "charging": "charges fully",
}


@dataclass
class SimulatedModel:
    """Answers from the context; documented latency and price.

    **Answers.** The value of the asked fact in the *last* place of the context that states it,
    or "I don't know". A delivery-city question takes the last "deliver my orders to X" (or the
    slot line ``delivery_city: X``); a product question the number in the last sentence naming
    the product and the attribute; a question about "the product I bought" first finds the last
    purchase ("I bought the X", or ``purchased_product: X``), then that product's fact. With
    ``multi_hop=False`` (the small model) the model answers "I don't know" to those two-hop
    questions, which is what makes the router escalate.

    **Latency.** One call takes ``overhead_ms + prefill_ms_per_token x uncached input tokens +
    cached_prefill_ms_per_token x cached input tokens + decode_ms_per_token x output tokens``.
    A batch (:meth:`call_batch`) runs its items in parallel: it pays the overhead once and takes
    its longest item's time, and every item in it waits for the whole batch.

    **Prefix cache.** The provider caches prefixes at message boundaries: the longest run of
    leading messages (after the tool schemas) seen before, if at least ``min_cached_tokens``
    long, is read from cache, billed at the price table's cached-read price.
    """

    model: str = MAIN_MODEL
    multi_hop: bool = True
    overhead_ms: float = 250.0
    prefill_ms_per_token: float = 0.04
    cached_prefill_ms_per_token: float = 0.004
    decode_ms_per_token: float = 12.0
    min_cached_tokens: int = 1024
    _seen: set[str] = field(default_factory=set)

    def answer(self, messages: list[dict[str, Any]], question: Question) -> str:
        text = "\n".join(_text(m.get("content")) for m in messages[:-1])
        if question.fact == "delivery city":
            cities = _CITY.findall(text)
            return cities[-1] if cities else UNSURE
        subject, attribute = question.fact.rsplit(" ", 1)
        if subject == "purchase":
            purchases = _PURCHASE.findall(text)
            if not self.multi_hop or not purchases:
                return UNSURE
            subject = purchases[-1]
        sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
        hits = [
            s
            for s in sentences
            if subject in s
            and _KEYWORDS[attribute] in s
            and _NUMBER.search(s)
            and not s.rstrip().endswith("?")
        ]
        numbers = _NUMBER.findall(hits[-1]) if hits else []
        return numbers[0] if numbers else UNSURE

    def _tokens(
        self, messages: list[dict[str, Any]], count: Callable[[str], int], tools: Sequence[Any]
    ) -> tuple[int, int]:
        counted = count_message_tokens(messages, tools=tools or None, counter=count)
        tokens, cached, running = counted.total, 0, counted.tools
        key = fingerprint(self.model, canonical_json(list(tools)))
        for message in messages[:-1]:
            # The provider caches whole messages, and within one, up to a breakpoint after its
            # first text part (the memory pack's static system prompt): both count as prefixes.
            parts = _parts(message.get("content"))
            for number, part in enumerate(parts, 1):
                key = fingerprint(key, str(message.get("role")), part)
                running += count(part) + (4 if number == len(parts) else 0)
                if key in self._seen and running >= self.min_cached_tokens:
                    cached = running
                self._seen.add(key)
        return tokens, cached

    def _time(self, tokens: int, cached: int) -> float:
        return (
            self.prefill_ms_per_token * (tokens - cached)
            + self.cached_prefill_ms_per_token * cached
            + self.decode_ms_per_token * OUTPUT_TOKENS
        )

    def call(
        self,
        messages: list[dict[str, Any]],
        question: Question,
        *,
        counter: Callable[[str], int],
        tools: Sequence[Any] = (),
    ) -> BenchReply:
        """Answer, with the call's input tokens, cached input tokens and latency."""
        tokens, cached = self._tokens(messages, counter, tools)
        return BenchReply(
            self.answer(messages, question), tokens, cached, OUTPUT_TOKENS,
            self.overhead_ms + self._time(tokens, cached),
        )  # fmt: skip

    def call_batch(
        self,
        batch: Sequence[tuple[list[dict[str, Any]], Question]],
        *,
        counter: Callable[[str], int],
        tools: Sequence[Any] = (),
    ) -> list[BenchReply]:
        """:meth:`call` for a batch: the overhead once, the longest item's time for all."""
        figures = [self._tokens(messages, counter, tools) for messages, _ in batch]
        latency = self.overhead_ms + max((self._time(*f) for f in figures), default=0.0)
        return [
            BenchReply(self.answer(messages, question), tokens, cached, OUTPUT_TOKENS, latency)
            for (messages, question), (tokens, cached) in zip(batch, figures, strict=True)
        ]

    @staticmethod
    def is_correct(answer: str, gold: str) -> bool:
        """Exactly the gold answer."""
        return answer == gold


class LegacyModel:
    """A model written for the harness before :class:`BenchModel` (``answer(messages,
    question)``, then ``call(messages, counter, tools)`` returning ``(input tokens, cached
    tokens, latency ms)``, optionally ``is_correct``), seen as a :class:`BenchModel`.
    Deprecated: :func:`as_bench_model` warns when it wraps one."""

    def __init__(self, model: Any) -> None:
        self.inner = model
        self.model = str(model.model)

    def call(
        self,
        messages: list[dict[str, Any]],
        question: Question,
        *,
        counter: Callable[[str], int],
        tools: Sequence[Any] = (),
    ) -> BenchReply:
        text = str(self.inner.answer(messages, question))
        tokens, cached, latency = self.inner.call(messages, counter, tools)
        return BenchReply(text, int(tokens), int(cached), OUTPUT_TOKENS, float(latency))

    def is_correct(self, answer: str, gold: str) -> bool:
        judge = getattr(self.inner, "is_correct", None)
        return bool(judge(answer, gold)) if judge is not None else answer == gold


def as_bench_model(model: Any) -> BenchModel:
    """``model`` as a :class:`BenchModel`: itself, or an old-style model wrapped (with a
    :class:`DeprecationWarning`).

    Raises:
        ConfigurationError: neither.
    """
    if isinstance(model, BenchModel):
        return model
    if all(callable(getattr(model, name, None)) for name in ("answer", "call")) and hasattr(
        model, "model"
    ):
        warnings.warn(
            "a harness model with answer() and call(messages, counter, tools) is deprecated: "
            "implement tokenlean.bench.BenchModel (call(messages, question, *, counter, tools) "
            "-> BenchReply, and is_correct)",
            DeprecationWarning,
            stacklevel=3,
        )
        return LegacyModel(model)
    raise ConfigurationError(
        f"the model factory returned a {type(model).__name__}, not a BenchModel "
        "(it needs `model`, `call(messages, question, *, counter, tools)` and "
        "`is_correct(answer, gold)`)"
    )
