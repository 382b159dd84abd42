"""``RedisTranscriptStore``: transcripts on a Redis server, shared by every replica.

Layout, under the key prefix (``tokenlean:`` by default), for each ``(tenant, session)``::

    memory:turns:<session>     a list: one JSON turn per index (RPUSH; never rewritten)
    memory:ids:<session>       a hash: turn id -> index
    memory:state:<session>     a hash: state name -> JSON value
    memory:version:<session>   a hash: state name -> version (bumped by every write)
    memory:vectors:<session>   a hash: turn embedding key -> float16 vector (768 bytes for
                               a 384-dimension model)

An append is one Lua script: it checks that the batch starts at the session's length and that
no id is already in the session, then pushes the whole batch, so several processes appending to
one session never interleave, lose or duplicate a turn, and readers only ever see whole batches.
A state write bumps the value's version in the same transaction; :meth:`update_state` changes a
value with compare-and-set on that version, so concurrent updates are never lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from tokenlean._errors import ConfigurationError, InvalidInputError, StoreLockedError
from tokenlean._memory.transcript import Turn, check_continuation, encode_state, encode_turn
from tokenlean._redis_client import DEFAULT_PREFIX, DEFAULT_URL, RedisConnection

__all__ = ["RedisTranscriptStore"]

_PUSH_CHUNK = 1_000  # values per RPUSH / HSET inside the script (Lua's unpack has a limit)

# KEYS: turns, ids. ARGV: expected length, n, ids * n, encoded turns * n.
_APPEND = f"""
local length = redis.call('LLEN', KEYS[1])
if length ~= tonumber(ARGV[1]) then return {{'index', length}} end
local n = tonumber(ARGV[2])
for i = 3, 2 + n do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then return {{'id', ARGV[i]}} end
end
local chunk = {_PUSH_CHUNK}
for first = 0, n - 1, chunk do
  local last = math.min(first + chunk, n) - 1
  local values, pairs = {{}}, {{}}
  for k = first, last do
    table.insert(values, ARGV[3 + n + k])
    table.insert(pairs, ARGV[3 + k])
    table.insert(pairs, tostring(length + k))
  end
  redis.call('RPUSH', KEYS[1], unpack(values))
  redis.call('HSET', KEYS[2], unpack(pairs))
end
return {{'ok', length + n}}
"""

# KEYS: state, version. ARGV: name, expected version, JSON value. Returns the new version, or
# false when another write came first.
_COMPARE_AND_SET = """
local version = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if version ~= tonumber(ARGV[2]) then return false end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
"""


def _session(tenant: str, session: str) -> str:
    """One string per ``(tenant, session)``, unambiguous whatever the two hold."""
    return f"{len(tenant)}:{tenant}{session}"


def _encode(turn: Turn) -> str:
    tool_calls, metadata = encode_turn(turn)
    return json.dumps(
        [turn.id, turn.index, turn.role, turn.content, turn.timestamp, turn.speaker,
         tool_calls, turn.tool_call_id, metadata]
    )  # fmt: skip


def _decode(raw: bytes) -> Turn:
    id_, index, role, content, timestamp, speaker, tool_calls, tool_call_id, metadata = json.loads(
        raw
    )
    return Turn(id=id_, index=index, role=role, content=content, timestamp=timestamp,
                speaker=speaker, tool_calls=tuple(json.loads(tool_calls)),
                tool_call_id=tool_call_id, metadata=json.loads(metadata))  # fmt: skip


class RedisTranscriptStore:
    """Transcripts and session state on a Redis server: every replica that opens the same URL
    and prefix sees the same sessions, and a restart loses nothing. Thread-safe.

    Args:
        url: the server (``redis://host:port/db``).
        prefix: prepended to every key, so several applications can share a server.
        timeout_s: seconds to connect and to wait for each reply before the operation fails.

    Raises:
        MissingDependencyError: redis-py is not installed (``pip install 'tokenlean[redis]'``).
        ConfigurationError: an invalid URL or prefix.

    Every operation raises a :class:`StoreError` naming the server when Redis fails
    (:class:`StoreBackendError` for a lost connection, :class:`StoreClosedError` after
    :meth:`close`…), with redis-py's error as the cause. A command is never retried on its own:
    after a lost connection, an append may or may not have been stored, and the next append
    from the same turn index tells which (it is refused if the turns are there).

    Example:
        >>> from tokenlean import RedisTranscriptStore, Turn
        >>> store = RedisTranscriptStore("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> store.append("acme", "ticket-42", [Turn("t0", 0, "user", "Hi", 1.0)])  # doctest: +SKIP
        >>> store.count("acme", "ticket-42")  # doctest: +SKIP
        1
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, prefix: str = DEFAULT_PREFIX, timeout_s: float = 1.0
    ) -> None:
        if not prefix:
            raise ConfigurationError("prefix must not be empty")
        self.prefix = prefix
        self._redis = RedisConnection(
            url, what="A RedisTranscriptStore", timeout_s=timeout_s, retries=0
        )
        self.url = self._redis.name
        self._append = self._redis.client.register_script(_APPEND)
        self._compare_and_set = self._redis.client.register_script(_COMPARE_AND_SET)

    @property
    def uri(self) -> str:
        """The URI :func:`tokenlean.open_transcript_store` reopens this store from: the
        server's URL as given (scheme, user, host, port, db and redis-py options) with the
        prefix and timeout as options. A password is masked as ``***`` (in the user part and
        in ``password``-like options), so the URI is safe to log or serialize; give the
        password back before opening it (a masked URI is refused).

        Example:
            >>> RedisTranscriptStore("rediss://app:S3cret@127.0.0.1:6380/2", prefix="app:").uri
            'rediss://app:***@127.0.0.1:6380/2?prefix=app:&timeout_s=1.0'
        """
        return self._redis.uri([("prefix", self.prefix)])

    def _key(self, kind: str, tenant: str, session: str) -> str:
        return f"{self.prefix}memory:{kind}:{_session(tenant, session)}"

    def append(self, tenant: str, session: str, turns: Sequence[Turn]) -> None:
        batch = list(turns)
        encoded = [_encode(turn) for turn in batch]
        if not batch:
            self._redis.call("append", lambda: None)  # a closed store still refuses
            return
        check_continuation(batch[0].index, batch)  # in order, no id twice in the batch
        keys = [self._key("turns", tenant, session), self._key("ids", tenant, session)]
        args: list[str | int] = [batch[0].index, len(batch), *(t.id for t in batch), *encoded]
        outcome = self._redis.call("append", lambda: self._append(keys=keys, args=args))
        kind, detail = outcome[0].decode(), outcome[1]
        if kind == "index":
            raise InvalidInputError(
                f"turn {batch[0].id!r} has index {batch[0].index}, expected {detail}"
            )
        if kind == "id":
            raise InvalidInputError(f"turn id {detail.decode()!r} is already in the session")

    def turns(
        self, tenant: str, session: str, start: int = 0, end: int | None = None
    ) -> list[Turn]:
        key = self._key("turns", tenant, session)
        if end is not None and end <= start:
            self._redis.call("read", lambda: None)
            return []
        last = -1 if end is None else end - 1
        raw: Any = self._redis.call("read", lambda: self._redis.client.lrange(key, start, last))
        return [_decode(item) for item in raw]

    def count(self, tenant: str, session: str) -> int:
        key = self._key("turns", tenant, session)
        length: Any = self._redis.call("read", lambda: self._redis.client.llen(key))
        return int(length)

    def find(self, tenant: str, session: str, ids: Collection[str]) -> list[Turn]:
        wanted = sorted(set(ids))
        ids_key, turns_key = self._key("ids", tenant, session), self._key("turns", tenant, session)

        def run() -> list[bytes]:
            if not wanted:
                return []
            found: Any = self._redis.client.hmget(ids_key, wanted)
            indexes = sorted({int(index) for index in found if index is not None})
            pipe = self._redis.client.pipeline(transaction=False)
            for index in indexes:
                pipe.lindex(turns_key, index)
            return [item for item in pipe.execute() if item is not None]

        return [_decode(item) for item in self._redis.call("read", run)]

    def get_state(self, tenant: str, session: str, name: str) -> Any:
        return self.get_state_version(tenant, session, name)[0]

    def get_state_version(self, tenant: str, session: str, name: str) -> tuple[Any, int]:
        """A piece of session state and its version (0: never written), for
        :meth:`compare_and_set_state`."""
        state, version = self._key("state", tenant, session), self._key("version", tenant, session)

        def run() -> list[Any]:
            pipe = self._redis.client.pipeline(transaction=True)
            pipe.hget(state, name)
            pipe.hget(version, name)
            result: list[Any] = pipe.execute()
            return result

        raw, number = self._redis.call("read", run)
        return (json.loads(raw) if raw is not None else None), int(number or 0)

    def put_state(self, tenant: str, session: str, name: str, value: Any) -> None:
        raw = encode_state(value)
        state, version = self._key("state", tenant, session), self._key("version", tenant, session)

        def run() -> None:
            pipe = self._redis.client.pipeline(transaction=True)
            pipe.hset(state, name, raw)
            pipe.hincrby(version, name, 1)
            pipe.execute()

        self._redis.call("write", run)

    def compare_and_set_state(
        self, tenant: str, session: str, name: str, value: Any, version: int
    ) -> int | None:
        """Store ``value`` only if the state is still at ``version`` (from
        :meth:`get_state_version`); return the new version, or None when another write came
        first (nothing is stored).

        Raises:
            NotSerializableError: a value with no JSON form.
        """
        raw = encode_state(value)
        keys = [self._key("state", tenant, session), self._key("version", tenant, session)]
        result: Any = self._redis.call(
            "write", lambda: self._compare_and_set(keys=keys, args=[name, version, raw])
        )
        return None if result is None else int(result)

    def update_state(
        self,
        tenant: str,
        session: str,
        name: str,
        change: Callable[[Any], Any],
        *,
        attempts: int = 64,
    ) -> Any:
        """Replace a piece of state with ``change(current)`` without losing a concurrent update:
        when another write comes between the read and the write, ``change`` runs again on the
        new value. Returns the value stored.

        Raises:
            StoreLockedError: other writers won ``attempts`` times in a row.
            NotSerializableError: ``change`` returned a value with no JSON form.
        """
        for _ in range(attempts):
            current, version = self.get_state_version(tenant, session, name)
            value = change(current)
            if self.compare_and_set_state(tenant, session, name, value, version) is not None:
                return value
        raise StoreLockedError(
            f"Redis server {self.url}: state {name!r} of session {session!r} changed under "
            f"{attempts} attempts to update it"
        )

    def get_vectors(self, tenant: str, session: str, keys: Collection[str]) -> dict[str, bytes]:
        """Stored turn embeddings by key (unknown keys skipped): one ``HMGET``."""
        wanted = sorted(set(keys))
        key = self._key("vectors", tenant, session)

        def run() -> list[Any]:
            found: list[Any] = self._redis.client.hmget(key, wanted) if wanted else []
            return found

        found = self._redis.call("read", run)
        return {name: value for name, value in zip(wanted, found, strict=True) if value is not None}

    def put_vectors(self, tenant: str, session: str, vectors: Mapping[str, bytes]) -> None:
        """Store turn embeddings by key (replacing a key's previous value): one ``HSET``."""
        mapping: dict[Any, bytes] = {str(name): bytes(value) for name, value in vectors.items()}
        key = self._key("vectors", tenant, session)
        if mapping:
            self._redis.call("write", lambda: self._redis.client.hset(key, mapping=mapping))

    def close(self) -> None:
        """Close the connections; later operations raise :class:`StoreClosedError`."""
        self._redis.close()

    def __repr__(self) -> str:
        return f"RedisTranscriptStore({self.url!r}, prefix={self.prefix!r})"
