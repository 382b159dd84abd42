"""A LangChain ``BaseCache`` backed by tokenlean's :class:`~tokenlean.CompletionCache`.

The adapter converts LangChain's ``(prompt, llm_string)`` pair into a tokenlean
:class:`~tokenlean.CacheRequest` and its generations to and from JSON, then delegates: policy
(exact or semantic, TTL, temperature bound, tenant isolation) lives in the core, exactly as for
LlamaIndex users.

On a hit, a chat message is marked in ``response_metadata["tokenlean_cache"]`` (layer,
similarity and, for a semantic hit, the ``lookup_id`` that :meth:`TokenleanCache.feedback` takes)
and its ``usage_metadata`` token counts are zero, so usage accounting does not count a cached
answer as spent tokens; the counts the original call reported are kept in the marker. A plain-text
generation served by the semantic layer carries the same marker in
``generation_info["tokenlean_cache"]`` (an exact hit is returned exactly as it was stored).
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    message_to_dict,
    messages_from_dict,
)
from langchain_core.outputs import ChatGeneration, Generation

from tokenlean import (
    CacheLookup,
    CacheRequest,
    CompletionCache,
    InvalidInputError,
    NotSerializableError,
    PromptAnswerJudge,
    normalize_role,
)

__all__ = ["LangChainAnswerJudge", "TokenleanCache"]

logger = logging.getLogger("tokenlean.langchain")

_TEMPERATURE = re.compile(r"""['"]temperature['"]\s*[:,]\s*([0-9]*\.?[0-9]+)""")


@functools.lru_cache(maxsize=1024)
def _canonical_settings(llm_string: str) -> str:
    """LangChain's ``llm_string`` with the dictionaries in its parameters part in sorted key
    order (memoized: a model's string repeats on every call).

    LangChain writes the bound parameters (tools, stop, decoding settings) as Python's repr of
    their sorted items, after the model's own JSON and ``---``; dictionaries inside (a tool
    schema) keep the key order they were written in, so the same tool written twice would be
    two keys. The repr is kept (a string whose dictionaries are already sorted, as when no
    tool is bound, is unchanged, so existing entries stay reachable); parameters that are not
    plain literals are kept as LangChain wrote them."""
    head, separator, tail = llm_string.rpartition("---")
    if not separator:
        head, tail = "", llm_string
    try:
        canonical = repr(_sorted_dicts(ast.literal_eval(tail)))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return llm_string
    return f"{head}{separator}{canonical}"


def _sorted_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_dicts(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return type(value)(_sorted_dicts(item) for item in value)
    return value


def _is_serialized_message(item: Any) -> bool:
    ident = item.get("id") if isinstance(item, dict) else None
    return (
        item.get("lc") == 1
        and item.get("type") == "constructor"
        and isinstance(ident, list)
        and bool(ident)
        and str(ident[-1]).endswith(("Message", "MessageChunk"))
    )


def _messages(prompt: str) -> list[dict[str, Any]]:
    """Chat messages from LangChain's serialized prompt (``dumps(messages)``), keeping every
    field that can change the answer; any other prompt (a plain LLM prompt, even one that
    happens to be JSON) is one user turn, verbatim."""
    try:
        data = json.loads(prompt)
    except ValueError:
        data = None
    if not isinstance(data, list) or not data or not all(map(_is_serialized_message, data)):
        return [{"role": "user", "content": prompt}]
    messages = []
    for item in data:
        kwargs = item.get("kwargs", {})
        kind = str(kwargs.get("type", ""))
        message: dict[str, Any] = {
            "role": normalize_role(kind),
            "content": kwargs.get("content", ""),
        }
        for field in ("name", "tool_calls", "tool_call_id", "additional_kwargs"):
            if kwargs.get(field):
                message[field] = kwargs[field]
        messages.append(message)
    return messages


def _dump(generation: Generation) -> dict[str, Any]:
    if isinstance(generation, ChatGeneration):
        return {
            "kind": "chat",
            "message": message_to_dict(generation.message),
            "generation_info": generation.generation_info,
        }
    return {"kind": "text", "text": generation.text, "generation_info": generation.generation_info}


def _marker(result: CacheLookup) -> dict[str, Any]:
    """What a hit carries: its layer, similarity and, for a semantic hit, its lookup id."""
    marker: dict[str, Any] = {"hit": True, "layer": result.layer, "similarity": result.similarity}
    if result.lookup_id is not None:
        marker["lookup_id"] = result.lookup_id
    return marker


def marked_message(message: AIMessage, result: CacheLookup) -> AIMessage:
    """``message`` as served from the cache: marked, with zero spent tokens (the original
    usage is kept in the marker)."""
    marker = _marker(result)
    if message.usage_metadata:
        marker["original_usage"] = dict(message.usage_metadata)
    return message.model_copy(
        update={
            "usage_metadata": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
            "response_metadata": {**message.response_metadata, "tokenlean_cache": marker},
        }
    )


def _load(data: dict[str, Any], result: CacheLookup) -> Generation:
    info = data.get("generation_info")
    if data.get("kind") != "chat":
        if result.layer == "semantic":
            info = {**(info or {}), "tokenlean_cache": _marker(result)}
        return Generation(text=data["text"], generation_info=info)
    message = messages_from_dict([data["message"]])[0]
    if isinstance(message, AIMessage):
        message = marked_message(message, result)
    return ChatGeneration(message=message, generation_info=info)


def _lookup_id(target: BaseMessage | Generation | str) -> str:
    """The lookup id a cached answer carries in its marker.

    Raises:
        InvalidInputError: ``target`` was not served from the cache, or was an exact hit.
    """
    if isinstance(target, str):
        return target
    if isinstance(target, ChatGeneration):
        target = target.message
    if isinstance(target, BaseMessage):
        marker = target.response_metadata.get("tokenlean_cache")
    elif isinstance(target, Generation):
        marker = (target.generation_info or {}).get("tokenlean_cache")
    else:
        marker = None
    if not isinstance(marker, Mapping):
        raise InvalidInputError(
            "feedback needs an answer served from the tokenlean cache (its "
            "'tokenlean_cache' marker) or a lookup id"
        )
    lookup_id = marker.get("lookup_id")
    if not isinstance(lookup_id, str):
        raise InvalidInputError(
            f"this {marker.get('layer')} hit has no lookup id: feedback applies to the semantic "
            "hits of an error-bounded route"
        )
    return lookup_id


class TokenleanCache(BaseCache):
    """LangChain cache over a tokenlean :class:`~tokenlean.CompletionCache`.

    Use it globally with ``set_llm_cache`` or per model with ``ChatModel(cache=...)``. The
    cache's policy decides exact or semantic matching; ``tenant`` isolates tenants (one
    adapter per tenant, or pass ``tenant`` per call through :meth:`for_tenant`). A user's
    verdict on a semantic hit goes back through :meth:`feedback`.

    Args:
        cache: the tokenlean cache (default: an exact, in-memory one).
        tenant: tenant namespace for every lookup and update.
        route: the cache policy route to use.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> model = FakeListChatModel(responses=["first", "second"], cache=TokenleanCache())
        >>> model.invoke("hi").content, model.invoke("hi").content
        ('first', 'first')
    """

    def __init__(
        self,
        cache: CompletionCache | str | None = None,
        *,
        tenant: str = "default",
        route: str | None = None,
    ) -> None:
        # A store URI (memory://, sqlite:///path, redis://host/db) or None opens a cache; the
        # core names anything else (ConfigurationError).
        self.cache = cache if isinstance(cache, CompletionCache) else CompletionCache(cache)
        self.cache.check_target(tenant=tenant, route=route)
        self.tenant = tenant
        self.route = route

    def for_tenant(self, tenant: str) -> TokenleanCache:
        """The same underlying cache, for another tenant."""
        return TokenleanCache(self.cache, tenant=tenant, route=self.route)

    @staticmethod
    def _request(prompt: str, llm_string: str) -> CacheRequest:
        params: dict[str, Any] = {"llm_string": _canonical_settings(llm_string)}
        match = _TEMPERATURE.search(llm_string)
        if match:
            params["temperature"] = float(match.group(1))
        return CacheRequest(model="langchain", messages=tuple(_messages(prompt)), params=params)

    def _generations(self, result: CacheLookup) -> RETURN_VAL_TYPE | None:
        if not result.hit:
            return None
        return [_load(item, result) for item in result.value]

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Cached generations for this prompt and model configuration, or None."""
        request = self._request(prompt, llm_string)
        return self._generations(self.cache.lookup(request, tenant=self.tenant, route=self.route))

    @staticmethod
    def _value(return_val: RETURN_VAL_TYPE) -> list[dict[str, Any]] | None:
        """JSON form of the generations; values without one (a datetime in metadata) become
        strings, and anything still unserializable means: do not cache (never fail the call)."""
        try:
            dumped = [_dump(generation) for generation in return_val]
            value: list[dict[str, Any]] = json.loads(json.dumps(dumped, default=str))
            return value
        except (TypeError, ValueError) as exc:
            logger.warning("tokenlean: response not cached, it has no JSON form (%s)", exc)
            return None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Cache the generations of a model call (a failure to cache never fails the call)."""
        value = self._value(return_val)
        if value is None:
            return
        try:
            self.cache.store(
                self._request(prompt, llm_string), value, tenant=self.tenant, route=self.route
            )
        except NotSerializableError as exc:
            logger.warning("tokenlean: response not cached (%s)", exc)

    def feedback(self, target: BaseMessage | Generation | str, *, correct: bool) -> bool:
        """Tell the cache whether a semantic hit was right (a user's thumbs up or down).

        ``target`` is the answer as LangChain returned it (an ``AIMessage``, a
        ``ChatGeneration`` or a ``Generation`` carrying the ``tokenlean_cache`` marker) or the
        marker's ``lookup_id``. Delegates to :meth:`tokenlean.CompletionCache.feedback`: a
        wrong hit's entry is removed, and either way the verdict is evidence of the route's
        error bound.

        Returns:
            True when the entry was found (and, for ``correct=False``, removed).

        Raises:
            InvalidInputError: ``target`` was not served from the cache, or was an exact hit.
        """
        return self.cache.feedback(_lookup_id(target), correct=correct, route=self.route)

    def clear(self, **kwargs: Any) -> None:
        """Remove this adapter's tenant's entries; ``clear(all_tenants=True)`` removes all."""
        if kwargs.get("all_tenants"):
            self.cache.clear()
        else:
            self.cache.invalidate(tenant=kwargs.get("tenant", self.tenant))

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        request = self._request(prompt, llm_string)
        result = await self.cache.alookup(request, tenant=self.tenant, route=self.route)
        return self._generations(result)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        value = self._value(return_val)
        if value is None:
            return
        try:
            await self.cache.astore(
                self._request(prompt, llm_string), value, tenant=self.tenant, route=self.route
            )
        except NotSerializableError as exc:
            logger.warning("tokenlean: response not cached (%s)", exc)

    async def aclear(self, **kwargs: Any) -> None:
        self.clear(**kwargs)

    async def afeedback(self, target: BaseMessage | Generation | str, *, correct: bool) -> bool:
        """:meth:`feedback` off the event loop."""
        return await asyncio.to_thread(self.feedback, target, correct=correct)


class LangChainAnswerJudge(PromptAnswerJudge):
    """An answer judge for the error-bounded semantic cache backed by any LangChain chat model
    (see :class:`~tokenlean.PromptAnswerJudge`): ``CompletionCache(judge=LangChainAnswerJudge(
    model))``. Use a small, cheap model; it is asked only when the texts differ."""

    def __init__(self, model: Any, *, prompt: str | None = None) -> None:
        super().__init__(text_completion(model), prompt=prompt)
        self.model = model


def text_completion(model: Any) -> Callable[[str], str]:
    """``complete(prompt) -> text`` through a LangChain chat model (one human message)."""

    def complete(text: str) -> str:
        reply = model.invoke([HumanMessage(text)])
        return reply.text if isinstance(reply, BaseMessage) else str(reply)

    return complete
