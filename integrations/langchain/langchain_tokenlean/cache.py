"""A LangChain ``BaseCache`` backed by tokenlean's :class:`~tokenlean.CompletionCache`.

The adapter converts LangChain's ``(prompt, llm_string)`` pair into a tokenlean
:class:`~tokenlean.CacheRequest` and its generations to and from JSON, then delegates: policy
(exact or semantic, TTL, temperature bound, tenant isolation) lives in the core, exactly as for
LlamaIndex users.

On a hit, a chat message is marked in ``response_metadata["tokenlean_cache"]`` (layer and
similarity) and its ``usage_metadata`` token counts are zero, so usage accounting does not count
a cached answer as spent tokens; the counts the original call reported are kept in the marker.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.messages import AIMessage, message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, Generation

from tokenlean import CacheLookup, CacheRequest, CompletionCache, NotSerializableError

__all__ = ["TokenleanCache"]

logger = logging.getLogger("tokenlean.langchain")

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",
          "function": "function", "chat": "user"}  # fmt: skip
_TEMPERATURE = re.compile(r"""['"]temperature['"]\s*[:,]\s*([0-9]*\.?[0-9]+)""")


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
            "role": _ROLES.get(kind, kind),
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


def _load(data: dict[str, Any], result: CacheLookup) -> Generation:
    if data.get("kind") != "chat":
        return Generation(text=data["text"], generation_info=data.get("generation_info"))
    message = messages_from_dict([data["message"]])[0]
    marker: dict[str, Any] = {"hit": True, "layer": result.layer, "similarity": result.similarity}
    if isinstance(message, AIMessage):
        if message.usage_metadata:
            marker["original_usage"] = dict(message.usage_metadata)
        message = message.model_copy(
            update={
                "usage_metadata": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
                "response_metadata": {**message.response_metadata, "tokenlean_cache": marker},
            }
        )
    return ChatGeneration(message=message, generation_info=data.get("generation_info"))


class TokenleanCache(BaseCache):
    """LangChain cache over a tokenlean :class:`~tokenlean.CompletionCache`.

    Use it globally with ``set_llm_cache`` or per model with ``ChatModel(cache=...)``. The
    cache's policy decides exact or semantic matching; ``tenant`` isolates tenants (one
    adapter per tenant, or pass ``tenant`` per call through :meth:`for_tenant`).

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
        cache: CompletionCache | None = None,
        *,
        tenant: str = "default",
        route: str | None = None,
    ) -> None:
        self.cache = cache or CompletionCache()
        self.tenant = tenant
        self.route = route

    def for_tenant(self, tenant: str) -> TokenleanCache:
        """The same underlying cache, for another tenant."""
        return TokenleanCache(self.cache, tenant=tenant, route=self.route)

    @staticmethod
    def _request(prompt: str, llm_string: str) -> CacheRequest:
        params: dict[str, Any] = {"llm_string": llm_string}
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
