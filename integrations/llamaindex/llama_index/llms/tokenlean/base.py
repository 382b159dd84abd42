"""``CachedLLM``: a delegating LlamaIndex LLM that answers from a tokenlean cache when it can.

LlamaIndex has no response-cache hook, so the cache sits in a wrapper. On a miss the call goes to
the wrapped LLM, which fires its own instrumentation events, and the answer is stored. On a hit
the answer comes from the cache through decorated replay methods, so LlamaIndex's start, progress
and end events fire just as for a model call, and ``additional_kwargs["tokenlean_cache"]`` says
which layer served it, with what similarity and, for a semantic hit, its ``lookup_id``.
``chat`` and ``stream_chat`` share entries: a streamed hit replays the cached text in chunks.
:meth:`CachedLLM.feedback` passes a user's verdict on a served hit back to the cache.

``CachedLLM`` is a ``FunctionCallingLLM``: tool calling (``chat_with_tools`` and its async and
streaming forms, ``get_tool_calls_from_response``), and so ``FunctionAgent`` and structured
output, delegate to the wrapped LLM, with the prepared chat (messages and tool schemas) keyed in
the cache. ``to_dict``/``from_dict`` round-trip the wrapped LLM and the cache's configuration.

Policy (exact or semantic, TTL, temperature bound, tenants) lives in the core
:class:`~tokenlean.CompletionCache`, exactly as for LangChain users.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Generator, Sequence
from contextvars import ContextVar
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
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.llms.tokenlean.store_uri import (
    cache_store_uri,
    refuse_masked,
    type_name,
)

from tokenlean import (
    CacheLookup,
    CachePolicy,
    CacheRequest,
    CacheStore,
    CallOptions,
    CompletionCache,
    ConfigurationError,
    InvalidInputError,
    MemoryStore,
    PromptAnswerJudge,
    SQLiteStore,
    TemplateSplitter,
    cache_options,
    last_user_turn,
    open_store,
    replay_stream,
)

__all__ = ["CachedLLM", "LlamaIndexAnswerJudge"]

# The cached value, handed from a public method to the decorated replay method that returns it.
_HIT: ContextVar[Any] = ContextVar("tokenlean_cached_llm_hit", default=None)
_CHUNK_CHARS = 16


def _dump(response: ChatResponse | CompletionResponse) -> dict[str, Any]:
    data = response.model_dump(mode="json", exclude={"raw"})
    data["delta"] = None
    return data


def _message(message: ChatMessage) -> dict[str, Any]:
    """A message as the cache keys it: role and text, plus every non-text block (images…) and
    additional fields (tool calls), so messages differing in those never share an entry."""
    data: dict[str, Any] = {"role": message.role.value, "content": message.content or ""}
    blocks = [
        block.model_dump(mode="json")
        for block in message.blocks
        if getattr(block, "block_type", "text") != "text"
    ]
    if blocks:
        data["blocks"] = blocks
    if message.additional_kwargs:
        data["additional_kwargs"] = json.loads(json.dumps(message.additional_kwargs, default=str))
    return data


def _jsonable(value: Any) -> Any:
    """A JSON form of a call's keyword arguments for the cache key: tools by their schema,
    pydantic models and classes by their data and schema."""
    metadata = getattr(value, "metadata", None)
    if metadata is not None and callable(getattr(metadata, "to_openai_tool", None)):
        return metadata.to_openai_tool(skip_length_check=True)
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return value.model_json_schema()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_jsonable))


def _llm_class(name: str) -> type[LLM]:
    """The imported LLM class whose ``class_name()`` is ``name``."""
    seen: list[type[Any]] = [LLM]
    while seen:
        cls = seen.pop()
        try:
            if cls.class_name() == name:
                return cast(type[LLM], cls)
        except Exception:  # an abstract base without a class name
            pass
        seen.extend(cls.__subclasses__())
    raise ConfigurationError(
        f"no LLM class named {name!r} is imported: import its LlamaIndex integration before "
        "CachedLLM.from_dict"
    )


def _cache_config(cache: CompletionCache) -> dict[str, Any]:
    """The cache's configuration: its store as the URI that reopens it (password masked), or,
    for a store of another kind, its type (``from_dict`` then needs ``cache=``)."""
    store = cache.store_backend
    uri = cache_store_uri(store)
    location: dict[str, Any] = (
        {"kind": "custom", "type": type_name(store)}
        if uri is None
        else {"kind": uri.split(":", 1)[0], "uri": uri}
    )
    return {
        "store": location,
        "policy": cache.policy.model_dump(mode="json"),
        "routes": {name: p.model_dump(mode="json") for name, p in cache.routes.items()},
        "compare": {
            name: _compare_config(p)
            for name, p in [("", cache.policy), *cache.routes.items()]
            if p.compare is not None
        },
    }


def _compare_config(policy: CachePolicy) -> dict[str, Any]:
    """What a semantic policy compares: ``last_user_turn``, a ``TemplateSplitter`` (its
    settings; what it learned is relearned), or a custom splitter (not serialized)."""
    compare = policy.compare
    if compare is last_user_turn:
        return {"kind": "last_user_turn"}
    if type(compare) is TemplateSplitter:
        return {"kind": "template", "min_block_chars": compare.min_block_chars,
                "learn_requests": compare.learn_requests,
                "context_messages": compare.context_messages}  # fmt: skip
    return {"kind": "custom", "type": type_name(compare)}


def _with_compare(name: str, policy: CachePolicy, config: dict[str, Any] | None) -> CachePolicy:
    """``policy`` with the splitter ``config`` describes (None: data written before splitters
    were recorded, the policy's default).

    Raises:
        ConfigurationError: the splitter was custom (not serialized).
    """
    if config is None:
        return policy
    kind = config.get("kind")
    if kind == "last_user_turn":
        compare: Any = last_user_turn
    elif kind == "template":
        compare = TemplateSplitter(
            min_block_chars=int(config["min_block_chars"]),
            learn_requests=int(config["learn_requests"]),
            context_messages=config.get("context_messages"),
        )
    else:
        where = f"route {name!r}" if name else "the default policy"
        raise ConfigurationError(
            f"CachedLLM.from_dict: {where} compares with a custom splitter "
            f"({config.get('type')}), which is not serialized; {_REMEDY}"
        )
    return CachePolicy.model_validate({**policy.model_dump(), "compare": compare})


_REMEDY = (
    "pass the cache to CachedLLM.from_dict(data, cache=...): a store URI with its credentials "
    "(the serialized policy and routes are kept) or a CompletionCache"
)


def _cache_from_config(config: dict[str, Any], store: CacheStore | None = None) -> CompletionCache:
    """The cache ``config`` describes, on ``store`` when given (a URI's credentials restored).

    Raises:
        ConfigurationError: the store is not described (a custom one) or its URI's password
            was masked, and no ``store`` is given.
    """
    location = config.get("store") or {"kind": "memory"}
    if store is None:
        if location.get("kind") == "custom":
            raise ConfigurationError(
                f"CachedLLM.from_dict: the cache's {location.get('type')} store is not "
                f"serialized; {_REMEDY}"
            )
        if "uri" in location:
            uri = str(location["uri"])
            refuse_masked(uri, owner="CachedLLM.from_dict", remedy=_REMEDY)
            store = open_store(uri)
        elif location.get("kind") == "sqlite":  # data written before store URIs
            store = SQLiteStore(location["path"])
        elif location.get("kind") == "memory":
            store = MemoryStore()
        else:
            raise ConfigurationError(f"unknown cache store in CachedLLM data: {location!r}")
    compare = config.get("compare") or {}
    return CompletionCache(
        store,
        policy=_with_compare(
            "", CachePolicy.model_validate(config.get("policy") or {}), compare.get("")
        ),
        routes={
            name: _with_compare(name, CachePolicy.model_validate(p), compare.get(name))
            for name, p in (config.get("routes") or {}).items()
        },
    )


def _call_options(kwargs: dict[str, Any]) -> CallOptions:
    """Per-call cache options from a call's keyword arguments, removed from them (the wrapped
    LLM never sees them): ``tokenlean_cache="bypass"`` and ``tokenlean_ttl_s=seconds``."""
    mode = kwargs.pop("tokenlean_cache", None)
    ttl_s = kwargs.pop("tokenlean_ttl_s", None)
    if mode not in (None, "bypass"):
        raise ConfigurationError(f"tokenlean_cache takes 'bypass', not {mode!r}")
    return CallOptions(bypass=mode == "bypass", ttl_s=ttl_s)  # checked by the core


def _marker(result: CacheLookup) -> dict[str, Any]:
    return {
        "hit": True,
        "layer": result.layer,
        "similarity": result.similarity,
        "lookup_id": result.lookup_id,
    }


def _chat_response(result: CacheLookup) -> ChatResponse:
    response = ChatResponse.model_validate(result.value)
    response.additional_kwargs = {**response.additional_kwargs, "tokenlean_cache": _marker(result)}
    return response


def _chat_chunks(result: CacheLookup) -> list[ChatResponse]:
    final = _chat_response(result)
    text = final.message.content or ""
    chunks, so_far = [], ""
    for piece in replay_stream(text, _CHUNK_CHARS) if text else [""]:
        so_far += piece
        message = ChatMessage(role=final.message.role, content=so_far)
        chunks.append(
            ChatResponse(message=message, delta=piece, additional_kwargs=final.additional_kwargs)
        )
    chunks[-1].message = final.message  # the complete message, tool calls included
    return chunks


def _completion_response(result: CacheLookup) -> CompletionResponse:
    response = CompletionResponse.model_validate(result.value)
    response.additional_kwargs = {**response.additional_kwargs, "tokenlean_cache": _marker(result)}
    return response


def _completion_chunks(result: CacheLookup) -> list[CompletionResponse]:
    final = _completion_response(result)
    chunks, so_far = [], ""
    for piece in replay_stream(final.text, _CHUNK_CHARS) if final.text else [""]:
        so_far += piece
        chunks.append(
            CompletionResponse(text=so_far, delta=piece, additional_kwargs=final.additional_kwargs)
        )
    return chunks


class CachedLLM(FunctionCallingLLM):
    """Wraps any LlamaIndex LLM with a tokenlean :class:`~tokenlean.CompletionCache`.

    Args:
        llm: the LLM to call on a miss.
        cache: the tokenlean cache (default: exact, in memory).
        tenant: tenant namespace of every lookup.
        route: the cache policy route.

    Example:
        >>> from llama_index.core.llms import MockLLM
        >>> llm = CachedLLM(MockLLM())
        >>> llm.complete("hello").text == llm.complete("hello").text
        True
    """

    llm: SerializeAsAny[LLM] = Field(description="The wrapped LLM, called on cache misses.")
    tenant: str = Field(default="default", description="Tenant namespace of the cache.")
    route: str | None = Field(default=None, description="Cache policy route.")
    _cache: CompletionCache = PrivateAttr()

    def __init__(
        self,
        llm: LLM,
        cache: CompletionCache | str | None = None,
        *,
        tenant: str = "default",
        route: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(llm, LLM):
            raise ConfigurationError(
                f"CachedLLM wraps a LlamaIndex LLM, not {type(llm).__name__} (a model name is "
                "not an LLM: build the LLM with its integration first)"
            )
        kwargs.setdefault("callback_manager", llm.callback_manager)
        kwargs.update(llm=llm, tenant=tenant, route=route)
        super().__init__(**kwargs)
        if isinstance(cache, str):  # a store URI: memory://, sqlite:///path, redis://host/db
            refuse_masked(cache, owner="CachedLLM", remedy="give the URI with its password")
        # None or a URI opens a cache; the core names anything else (ConfigurationError).
        self._cache = cache if isinstance(cache, CompletionCache) else CompletionCache(cache)
        self._cache.check_target(tenant=tenant, route=route)

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanCachedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    @property
    def cache(self) -> CompletionCache:
        """The tokenlean cache behind this LLM."""
        return self._cache

    # ------------------------------------------------------------------ serialization

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """This LLM's data: the wrapped LLM's own ``to_dict`` (with its class name) and the
        cache's configuration (policy, routes, and its store as the URI that reopens it,
        ``memory://``, ``sqlite:///…`` or ``redis://…?prefix=…``; not its entries, which stay
        in the store).

        Credentials are never written: a Redis password is masked (``redis://user:***@…``).
        What each policy compares is kept (``last_user_turn``, or a ``TemplateSplitter``'s
        settings; what it learned is relearned). A custom store is recorded by its type only,
        and a custom ``compare`` splitter or judge is not serialized: :meth:`from_dict` then
        needs ``cache=`` (without it, a custom splitter is a ``ConfigurationError``).
        """
        data = super().to_dict(**kwargs)
        data["llm"] = self.llm.to_dict(**kwargs)
        data["tokenlean_cache"] = _cache_config(self._cache)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> CachedLLM:
        """Rebuild from :meth:`to_dict`'s data: the wrapped LLM's class must be imported.

        ``cache=`` gives the cache back where the data cannot: a store URI with its credentials
        (``cache="redis://user:password@host:6379/0?prefix=app:"``; the serialized policy and
        routes are kept), a store, or a whole :class:`~tokenlean.CompletionCache` (used as is).

        Raises:
            ConfigurationError: the wrapped LLM's class is not imported; or the cache's store
                was custom, or its password was masked, and no ``cache=`` is given.

        Example:
            >>> from llama_index.core.llms import MockLLM
            >>> data = CachedLLM(MockLLM(), "memory://?max_entries=100").to_dict()
            >>> data["tokenlean_cache"]["store"]["uri"]
            'memory://?max_entries=100'
            >>> CachedLLM.from_dict(data).cache.store_backend.max_entries
            100
        """
        data = {**data, **kwargs}
        data.pop("class_name", None)
        if "llm" not in data:
            raise ConfigurationError(
                "CachedLLM.from_dict: the data holds no 'llm' (give what to_dict returned)"
            )
        inner = data.pop("llm")
        if isinstance(inner, dict):
            inner = _llm_class(str(inner.get("class_name"))).from_dict(inner)
        cache = data.pop("cache", None)
        config = data.pop("tokenlean_cache", None) or {}
        if isinstance(cache, str):
            refuse_masked(
                cache, owner="CachedLLM.from_dict", remedy="give the URI with its password"
            )
            cache = open_store(cache)
        if not isinstance(cache, CompletionCache):
            cache = _cache_from_config(config, cache)
        return cls(inner, cache, **data)

    # ------------------------------------------------------------------ tool calling

    def _function_llm(self) -> FunctionCallingLLM:
        if not isinstance(self.llm, FunctionCallingLLM):
            raise ConfigurationError(
                f"the wrapped {self.llm.class_name()} does not call tools (it is not a "
                "FunctionCallingLLM)"
            )
        return self.llm

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The wrapped LLM's preparation; the resulting ``chat`` call is cached like any other."""
        return self._function_llm()._prepare_chat_with_tools_compat(
            tools,
            user_msg=user_msg,
            chat_history=chat_history,
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            **kwargs,
        )

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[Any],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        return self._function_llm()._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The wrapped LLM's reading of a response's tool calls (a cached one included)."""
        return self._function_llm().get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )

    def feedback(self, target: ChatResponse | CompletionResponse | str, *, correct: bool) -> bool:
        """Tell the cache whether a semantic hit this LLM served was right (thumbs up or down).

        A wrong hit's entry is removed; either way the verdict is evidence for the route's
        error-bounded acceptance rule (see :meth:`tokenlean.CompletionCache.feedback`).

        Args:
            target: a response this LLM served from the cache (its
                ``additional_kwargs["tokenlean_cache"]`` marker holds the ``lookup_id``; for a
                stream, any chunk), or the lookup id itself.
            correct: whether the served answer was right.

        Returns:
            True when the entry was found (and, for ``correct=False``, removed).

        Raises:
            InvalidInputError: the response was not served by the cache, or was an exact hit
                (only semantic hits have a lookup id).
        """
        marker = (
            target if isinstance(target, str) else target.additional_kwargs.get("tokenlean_cache")
        )
        if marker is None:
            raise InvalidInputError("this response was not served by the tokenlean cache")
        return self._cache.feedback(marker, correct=correct, route=self.route)

    async def afeedback(
        self, target: ChatResponse | CompletionResponse | str, *, correct: bool
    ) -> bool:
        """:meth:`feedback` off the event loop."""
        return await asyncio.to_thread(self.feedback, target, correct=correct)

    # ------------------------------------------------------------------ keys

    def _request(
        self, kind: str, messages: list[dict[str, Any]], kwargs: dict[str, Any]
    ) -> CacheRequest:
        params: dict[str, Any] = {
            "kind": kind,
            # JSON-safe copies; the cache request canonicalizes (sorts) them itself
            "llm": _json(self.llm.to_payload()),
            "kwargs": _json(kwargs),
        }
        temperature = kwargs.get("temperature", getattr(self.llm, "temperature", None))
        if isinstance(temperature, int | float):
            params["temperature"] = temperature
        model = f"llamaindex:{self.llm.class_name()}:{self.llm.metadata.model_name}"
        return CacheRequest(model=model, messages=tuple(messages), params=params)

    def _chat_request(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> CacheRequest:
        return self._request("chat", [_message(m) for m in messages], kwargs)

    def _completion_request(
        self, prompt: str, formatted: bool, kwargs: dict[str, Any]
    ) -> CacheRequest:
        return self._request(
            "complete", [{"role": "user", "content": prompt}], {**kwargs, "formatted": formatted}
        )

    def _lookup(self, request: CacheRequest, options: CallOptions) -> CacheLookup:
        with cache_options(bypass=options.bypass, ttl_s=options.ttl_s):
            return self._cache.lookup(request, tenant=self.tenant, route=self.route)

    async def _alookup(self, request: CacheRequest, options: CallOptions) -> CacheLookup:
        with cache_options(bypass=options.bypass, ttl_s=options.ttl_s):
            return await self._cache.alookup(request, tenant=self.tenant, route=self.route)

    def _store(
        self,
        request: CacheRequest,
        response: ChatResponse | CompletionResponse,
        options: CallOptions,
    ) -> None:
        with cache_options(bypass=options.bypass, ttl_s=options.ttl_s):
            self._cache.store(request, _dump(response), tenant=self.tenant, route=self.route)

    async def _astore(
        self,
        request: CacheRequest,
        response: ChatResponse | CompletionResponse,
        options: CallOptions,
    ) -> None:
        with cache_options(bypass=options.bypass, ttl_s=options.ttl_s):
            await self._cache.astore(request, _dump(response), tenant=self.tenant, route=self.route)

    # ------------------------------------------------------------------ replays (events fire)

    @llm_chat_callback()
    def _replay_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return _chat_response(_HIT.get())

    @llm_chat_callback()
    def _replay_stream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseGen:
        return (chunk for chunk in _chat_chunks(_HIT.get()))

    @llm_chat_callback()
    async def _areplay_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return _chat_response(_HIT.get())

    @llm_chat_callback()
    async def _areplay_stream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        chunks = _chat_chunks(_HIT.get())

        async def gen() -> ChatResponseAsyncGen:
            for chunk in chunks:
                yield chunk

        return gen()

    @llm_completion_callback()
    def _replay_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return _completion_response(_HIT.get())

    @llm_completion_callback()
    def _replay_stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return (chunk for chunk in _completion_chunks(_HIT.get()))

    @llm_completion_callback()
    async def _areplay_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return _completion_response(_HIT.get())

    @llm_completion_callback()
    async def _areplay_stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        chunks = _completion_chunks(_HIT.get())

        async def gen() -> CompletionResponseAsyncGen:
            for chunk in chunks:
                yield chunk

        return gen()

    @staticmethod
    def _with_hit(result: CacheLookup, fn: Any, *args: Any, **kwargs: Any) -> Any:
        token = _HIT.set(result)
        try:
            return fn(*args, **kwargs)
        finally:
            _HIT.reset(token)

    @staticmethod
    async def _awith_hit(result: CacheLookup, fn: Any, *args: Any, **kwargs: Any) -> Any:
        token = _HIT.set(result)
        try:
            return await fn(*args, **kwargs)
        finally:
            _HIT.reset(token)

    def _record(
        self, request: CacheRequest, stream: Any, options: CallOptions
    ) -> Generator[Any, None, None]:
        last = None
        for chunk in stream:
            last = chunk
            yield chunk
        if last is not None:  # only a fully consumed stream is cached
            self._store(request, last, options)

    async def _arecord(
        self, request: CacheRequest, stream: Any, options: CallOptions
    ) -> AsyncGenerator[Any, None]:
        last = None
        async for chunk in stream:
            last = chunk
            yield chunk
        if last is not None:
            await self._astore(request, last, options)

    # ------------------------------------------------------------------ public API

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        options = _call_options(kwargs)
        request = self._chat_request(messages, kwargs)
        result = self._lookup(request, options)
        if result.hit:
            return cast(ChatResponse, self._with_hit(result, self._replay_chat, messages, **kwargs))
        response = self.llm.chat(messages, **kwargs)
        self._store(request, response, options)
        return response

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        options = _call_options(kwargs)
        request = self._chat_request(messages, kwargs)
        result = self._lookup(request, options)
        if result.hit:
            return cast(
                ChatResponseGen,
                self._with_hit(result, self._replay_stream_chat, messages, **kwargs),
            )
        return self._record(request, self.llm.stream_chat(messages, **kwargs), options)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        options = _call_options(kwargs)
        request = self._chat_request(messages, kwargs)
        result = await self._alookup(request, options)
        if result.hit:
            return cast(
                ChatResponse, await self._awith_hit(result, self._areplay_chat, messages, **kwargs)
            )
        response = await self.llm.achat(messages, **kwargs)
        await self._astore(request, response, options)
        return response

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        options = _call_options(kwargs)
        request = self._chat_request(messages, kwargs)
        result = await self._alookup(request, options)
        if result.hit:
            return cast(
                ChatResponseAsyncGen,
                await self._awith_hit(result, self._areplay_stream_chat, messages, **kwargs),
            )
        return self._arecord(request, await self.llm.astream_chat(messages, **kwargs), options)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        options = _call_options(kwargs)
        request = self._completion_request(prompt, formatted, kwargs)
        result = self._lookup(request, options)
        if result.hit:
            return cast(
                CompletionResponse,
                self._with_hit(
                    result, self._replay_complete, prompt, formatted=formatted, **kwargs
                ),
            )
        response = self.llm.complete(prompt, formatted=formatted, **kwargs)
        self._store(request, response, options)
        return response

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        options = _call_options(kwargs)
        request = self._completion_request(prompt, formatted, kwargs)
        result = self._lookup(request, options)
        if result.hit:
            return cast(
                CompletionResponseGen,
                self._with_hit(
                    result, self._replay_stream_complete, prompt, formatted=formatted, **kwargs
                ),
            )
        return self._record(
            request, self.llm.stream_complete(prompt, formatted=formatted, **kwargs), options
        )

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        options = _call_options(kwargs)
        request = self._completion_request(prompt, formatted, kwargs)
        result = await self._alookup(request, options)
        if result.hit:
            return cast(
                CompletionResponse,
                await self._awith_hit(
                    result, self._areplay_complete, prompt, formatted=formatted, **kwargs
                ),
            )
        response = await self.llm.acomplete(prompt, formatted=formatted, **kwargs)
        await self._astore(request, response, options)
        return response

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        options = _call_options(kwargs)
        request = self._completion_request(prompt, formatted, kwargs)
        result = await self._alookup(request, options)
        if result.hit:
            return cast(
                CompletionResponseAsyncGen,
                await self._awith_hit(
                    result, self._areplay_stream_complete, prompt, formatted=formatted, **kwargs
                ),
            )
        return self._arecord(
            request,
            await self.llm.astream_complete(prompt, formatted=formatted, **kwargs),
            options,
        )


class LlamaIndexAnswerJudge(PromptAnswerJudge):
    """An answer judge for the error-bounded semantic cache backed by any LlamaIndex LLM (see
    :class:`~tokenlean.PromptAnswerJudge`): ``CompletionCache(judge=LlamaIndexAnswerJudge(llm))``.
    Use a small, cheap model; it is asked only when the texts differ."""

    def __init__(self, llm: LLM, *, prompt: str | None = None) -> None:
        super().__init__(lambda text: llm.complete(text).text, prompt=prompt)
        self.llm = llm
