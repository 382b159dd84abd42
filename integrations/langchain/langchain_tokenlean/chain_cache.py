"""A LangChain runnable that caches a whole chain on its question input.

:class:`TokenleanChainCache` wraps a chain whose input is a dict (a RAG chain's ``question``
and ``context``). It converts each call into a tokenlean :class:`~tokenlean.CacheRequest` that
says what is compared: the question, matched semantically, and every other input, matched
exactly (``CacheRequest.split``). Then it delegates: whether a hit is served (exact, semantic
within the route's error bound, or an exploration the model must answer) is the
:class:`~tokenlean.CompletionCache`'s decision, as for every other tokenlean adapter.

Outputs are kept in LangChain's serialized form (``langchain_core.load.dumpd``), so a string,
a dict or an ``AIMessage`` comes back as it went in. An input or output with no serialized form
is simply not cached: the call goes to the chain and never fails because of the cache.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.load import dumpd, load
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import ConfigDict, PrivateAttr

from langchain_tokenlean.cache import marked_message
from tokenlean import (
    CacheLookup,
    CachePolicy,
    CacheRequest,
    CompletionCache,
    ConfigurationError,
    InvalidInputError,
    NotSerializableError,
    canonical_json,
    fingerprint,
)

__all__ = ["TokenleanChainCache"]

logger = logging.getLogger("tokenlean.langchain")

_BYPASS = "bypass"
_SERVED_LIMIT = 1024


def _json_form(value: Any) -> Any:
    """LangChain's serialized form of ``value``, or None when some part of it has none."""
    try:
        data = dumpd(value)
    except (TypeError, ValueError):
        return None
    return data if _serializable(data) else None


def _serializable(data: Any) -> bool:
    if isinstance(data, dict):
        if data.get("lc") == 1 and data.get("type") == "not_implemented":
            return False
        return all(_serializable(item) for item in data.values())
    if isinstance(data, list):
        return all(_serializable(item) for item in data)
    return True


def _bypassed(config: RunnableConfig) -> bool:
    return (config.get("metadata") or {}).get("tokenlean_cache") == _BYPASS


class TokenleanChainCache(RunnableSerializable[dict[str, Any], Any]):
    """Cache a chain's outputs on its question input (semantically) and its other inputs
    (exactly).

    Wrap the chain, then use the wrapper wherever the chain was used: ``invoke``, ``ainvoke``
    and ``batch`` look the inputs up first and call the chain only on a miss (or when the route
    explores a would-be hit), storing its output. The question is compared by meaning; every
    other input (retrieved context, chat history, options) must match exactly, so different
    questions over one shared context never answer each other. A call with
    ``config={"metadata": {"tokenlean_cache": "bypass"}}`` skips the cache. ``stream`` yields
    the whole output at once.

    Entries are keyed on ``name`` (default: the chain's name). Give each chain wrapped over one
    :class:`~tokenlean.CompletionCache` a distinct name: two unnamed ``prompt | model`` chains
    are both called ``RunnableSequence`` and would share answers.

    Args:
        chain: the runnable to cache; it takes a dict of inputs.
        cache: the tokenlean cache (default: an in-memory, error-bounded semantic one).
        question_key: the input compared by meaning.
        tenant: tenant namespace for every lookup and store.
        route: the cache policy route to use.
        name: the chain's name in cache keys and traces.

    Example:
        >>> from langchain_core.runnables import RunnableLambda
        >>> from tokenlean import CompletionCache
        >>> calls = []
        >>> chain = RunnableLambda(lambda d: calls.append(d) or f"About {d['topic']}.")
        >>> cached = TokenleanChainCache(chain, cache=CompletionCache(), name="faq")
        >>> cached.invoke({"question": "What is it?", "topic": "tea"})
        'About tea.'
        >>> cached.invoke({"question": "What is it?", "topic": "tea"}), len(calls)
        ('About tea.', 1)
    """

    chain: Runnable[Any, Any]
    cache: CompletionCache
    question_key: str = "question"
    tenant: str = "default"
    route: str | None = None

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _served: OrderedDict[str, str] = PrivateAttr(default_factory=OrderedDict)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _last: CacheLookup | None = PrivateAttr(default=None)

    def __init__(
        self,
        chain: Runnable[Any, Any],
        *,
        cache: CompletionCache | None = None,
        question_key: str = "question",
        tenant: str = "default",
        route: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            chain=chain,
            cache=cache if cache is not None else CompletionCache(policy=CachePolicy.semantic()),
            question_key=question_key,
            tenant=tenant,
            route=route,
            name=name,
            **kwargs,
        )
        self.cache.check_target(tenant=tenant, route=route)
        if name is None and getattr(chain, "name", None) is None:
            logger.warning(
                "tokenlean: entries of this chain are keyed on its default name %r; give "
                "TokenleanChainCache a name= so two chains never share answers",
                chain.get_name(),
            )

    # ------------------------------------------------------------------ conversion

    @property
    def InputType(self) -> type[dict[str, Any]]:
        return self.chain.InputType

    @property
    def OutputType(self) -> Any:
        return self.chain.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.chain.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.chain.get_output_schema(config)

    @property
    def last_lookup(self) -> CacheLookup | None:
        """The outcome of the most recent cached call (of any thread); for tests and logs."""
        return self._last

    def _request(self, inputs: Any) -> CacheRequest | None:
        """The cache request of ``inputs``; None when an input has no serialized form.

        Raises:
            InvalidInputError: the inputs are not a dict, or the question is not a string.
            ConfigurationError: the inputs have no ``question_key``.
        """
        if not isinstance(inputs, Mapping):
            raise InvalidInputError(
                f"TokenleanChainCache takes a dict of inputs, got {type(inputs).__name__}"
            )
        if self.question_key not in inputs:
            raise ConfigurationError(
                f"the chain's inputs have no {self.question_key!r} key (question_key); "
                f"they have {sorted(map(str, inputs))}"
            )
        question = inputs[self.question_key]
        if not isinstance(question, str):
            raise InvalidInputError(
                f"input {self.question_key!r} must be a string, got {type(question).__name__}"
            )
        others = _json_form({k: v for k, v in inputs.items() if k != self.question_key})
        if others is None:
            return None
        try:
            fixed = canonical_json(others)
        except NotSerializableError:
            return None
        return CacheRequest(
            model=f"chain:{self.name or self.chain.get_name()}",
            messages=({"role": "user", "content": question},),
            params={"inputs": others},
            split=(fixed, question),
        )

    def _served_key(self, request: CacheRequest) -> str:
        return fingerprint(self.tenant, request.canonical())

    def _output(self, request: CacheRequest, result: CacheLookup) -> tuple[bool, Any]:
        """``(True, output)`` for a hit whose output loads; remembers a semantic hit's lookup
        id for :meth:`feedback`."""
        key = self._served_key(request)
        with self._lock:
            self._last = result
            if result.hit and result.lookup_id is not None:
                self._served[key] = result.lookup_id
                self._served.move_to_end(key)
                while len(self._served) > _SERVED_LIMIT:
                    self._served.popitem(last=False)
            else:
                self._served.pop(key, None)
        if not result.hit:
            return False, None
        try:
            output = load(result.value, allowed_objects="core")
        except Exception as exc:  # an entry this LangChain cannot revive is a miss
            logger.warning(
                "tokenlean: cached chain output not loadable, calling the chain (%s)", exc
            )
            return False, None
        if isinstance(output, AIMessage):
            output = marked_message(output, result)
        return True, output

    # ------------------------------------------------------------------ sync

    def invoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        """Answer from the cache, or run the chain and cache its output."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    def _invoke(
        self,
        inputs: dict[str, Any],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        child = patch_config(config, callbacks=run_manager.get_child())
        request = self._request(inputs)
        if request is None or _bypassed(config):
            return self.chain.invoke(inputs, child, **kwargs)
        result = self.cache.lookup(request, tenant=self.tenant, route=self.route)
        served, output = self._output(request, result)
        if served:
            return output
        output = self.chain.invoke(inputs, child, **kwargs)
        value = _json_form(output)
        if value is not None:
            try:
                self.cache.store(request, value, tenant=self.tenant, route=self.route)
            except NotSerializableError as exc:
                logger.warning("tokenlean: chain output not cached (%s)", exc)
        return output

    def feedback(self, target: Mapping[str, Any] | str, *, correct: bool) -> bool:
        """Tell the cache whether the semantic hit last served for ``target`` was right.

        ``target`` is the inputs of a call (this wrapper remembers the lookup id of the last
        semantic hit it served for them, for its most recent 1024 inputs) or a lookup id.
        Delegates to :meth:`tokenlean.CompletionCache.feedback`: a wrong hit's entry is
        removed, and either way the verdict is evidence of the route's error bound.

        Returns:
            True when the entry was found (and, for ``correct=False``, removed); False when the
            last answer for these inputs was not a semantic hit, or is no longer remembered.

        Raises:
            InvalidInputError: bad inputs, or a malformed lookup id.
            ConfigurationError: the inputs have no ``question_key``.
        """
        if isinstance(target, str):
            lookup_id: str | None = target
        else:
            request = self._request(target)
            if request is None:
                return False
            with self._lock:
                lookup_id = self._served.pop(self._served_key(request), None)
        if lookup_id is None:
            return False
        return self.cache.feedback(lookup_id, correct=correct, route=self.route)

    # ------------------------------------------------------------------ async

    async def ainvoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        """Async :meth:`invoke`: the cache runs off the event loop, the chain via ``ainvoke``."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    async def _ainvoke(
        self,
        inputs: dict[str, Any],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        child = patch_config(config, callbacks=run_manager.get_child())
        request = self._request(inputs)
        if request is None or _bypassed(config):
            return await self.chain.ainvoke(inputs, child, **kwargs)
        result = await self.cache.alookup(request, tenant=self.tenant, route=self.route)
        served, output = self._output(request, result)
        if served:
            return output
        output = await self.chain.ainvoke(inputs, child, **kwargs)
        value = _json_form(output)
        if value is not None:
            try:
                await self.cache.astore(request, value, tenant=self.tenant, route=self.route)
            except NotSerializableError as exc:
                logger.warning("tokenlean: chain output not cached (%s)", exc)
        return output

    async def afeedback(self, target: Mapping[str, Any] | str, *, correct: bool) -> bool:
        """:meth:`feedback` off the event loop."""
        return await asyncio.to_thread(self.feedback, target, correct=correct)
