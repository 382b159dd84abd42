"""Redis cache store: one store shared by every replica of an application.

It runs on plain Redis 7 (no modules). Each write is one Lua script, so it is atomic for all
the processes sharing the server: the bounds (``max_entries``, ``max_bytes``) hold for the whole
deployment, not per process, and least-recently-used eviction sees every replica's lookups.

Layout, under the key prefix (``tokenlean:`` by default, so several applications can share a
server, each with its own prefix)::

    cache:secret          the key-derivation secret (created once, SET NX)
    cache:e:<address>     one entry (a hash: payload, vector, features, metadata)
    cache:meta            address -> size, tenant, layer, tags, plan version, expiry (JSON)
    cache:lru             sorted set: address -> recency (server microseconds)
    cache:exp             sorted set: address -> expiry (ms), for entries with a native TTL
    cache:ix:<kind>:<v>   sets of addresses by namespace (n), tenant (t), layer (l) and tag (g)
    cache:usage           the bytes held (the entry count is the size of ``cache:meta``)
    cache:clock           the last recency given, so recencies only grow
    cache:feed            a stream of the semantic entries' changes (the change feed)

The change feed is how each replica keeps its own vector indexes in step with the others: every
write, deletion, invalidation, eviction and expiry of a semantic entry appends one record
(``o``: ``p`` put, ``d`` deleted, ``e`` evicted, ``x`` expired; ``m``: the address) in the same
Lua script as the change itself, so the feed never misses or invents a change. It is bounded
(``XADD … MAXLEN ~ feed_length``); :meth:`RedisStore.changes_since` reads it from a position
and says when the position was trimmed away, and the replica then rebuilds from a scan.

An entry whose ``expires_at`` lies ahead of the server's clock gets a native TTL
(``PEXPIREAT``), so Redis reclaims its memory even if no cache ever deletes it; the next write
then removes its bookkeeping and reports it like an eviction. (An entry written with an
``expires_at`` already past on the server's clock, as under a test's fake clock, is left to the
cache, which deletes expired entries itself.)

A lookup (:meth:`RedisStore.get`) only reads: the recency it records is kept in this process
and sent with the next :meth:`~RedisStore.put` (or on close), as :class:`SQLiteStore` does.
Every failure raises a :class:`StoreError` naming the server (see
:mod:`tokenlean._redis_client`), which a cache treats as a miss or a dropped write.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from tokenlean._cache.partitions import FeedChange
from tokenlean._cache.store import Selector, StoredEntry
from tokenlean._errors import (
    ConfigurationError,
    CorruptedStoreError,
    StoreBackendError,
    StoreError,
)
from tokenlean._redis_client import DEFAULT_PREFIX, DEFAULT_URL, RedisConnection

__all__ = ["FEED_LENGTH", "RedisStore"]

TOUCH_LIMIT = 10_000
"""Lookups whose recency waits in this process for the next write, at most (the oldest are
dropped: those entries keep their previous recency)."""

_BATCH = 500  # addresses per script call or pipeline when deleting and scanning
_FEED_BATCH = 2_000  # change-feed records per script call

FEED_LENGTH = 100_000
"""Records the change feed keeps by default, about (``MAXLEN ~``: whole stream nodes are
trimmed, so a few more may stay)."""

_LUA_COMMON = """
local P, FEED_LEN = ARGV[1], tonumber(ARGV[2])
local META = P .. 'cache:meta'
local LRU = P .. 'cache:lru'
local EXP = P .. 'cache:exp'
local USAGE = P .. 'cache:usage'
local NULL = cjson.null

local function ix(kind, value) return P .. 'cache:ix:' .. kind .. ':' .. value end

-- Append a semantic entry's change to the feed (op: p put, d deleted, e evicted, x expired).
local function note(op, m)
  redis.call('XADD', P .. 'cache:feed', 'MAXLEN', '~', FEED_LEN, '*', 'o', op, 'm', m)
end

-- Remove one address everywhere; return its size, or false if it held no entry. With op, a
-- semantic entry's removal goes to the feed.
local function remove(m, op)
  local raw = redis.call('HGET', META, m)
  redis.call('ZREM', LRU, m)
  redis.call('ZREM', EXP, m)
  redis.call('DEL', P .. 'cache:e:' .. m)
  if not raw then return false end
  local e = cjson.decode(raw)
  redis.call('HDEL', META, m)
  redis.call('SREM', ix('n', e[1]), m)
  redis.call('SREM', ix('t', e[4]), m)
  redis.call('SREM', ix('l', e[5]), m)
  for _, tag in ipairs(e[6]) do redis.call('SREM', ix('g', tag), m) end
  redis.call('HINCRBY', USAGE, 'bytes', -e[3])
  if op and e[5] == 'semantic' then note(op, m) end
  return e[3]
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Remove entries whose native TTL has passed (Redis dropped, or is about to drop, the entry
-- itself); append their addresses to out, except skip.
local function reap(now, out, skip)
  local due = redis.call('ZRANGEBYSCORE', EXP, '-inf', string.format('%.0f', now / 1000),
                         'LIMIT', 0, 256)
  for _, m in ipairs(due) do
    if remove(m, 'x') and m ~= skip then table.insert(out, m) end
  end
end
"""

# ARGV: prefix, feed length, n touches, (address, recency) * n, address, meta JSON, max_entries
# (0: none), max_bytes (0: none), expiry in ms ('' : none), the writer's key secret (hex), then
# the entry's hash as field, value pairs. Returns the evicted addresses, or {'!secret'} (nothing
# written) when the server holds another secret: its data was lost and another replica made a
# new one. A missing secret is set back to the writer's, so replicas started later share it.
_PUT = (
    _LUA_COMMON
    + """
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call('ZADD', LRU, 'XX', 'GT', ARGV[i + 1], ARGV[i])
  i = i + 2
end
local m, meta_json = ARGV[i], ARGV[i + 1]
local max_e, max_b, exp_ms = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4]
local held = redis.call('GET', P .. 'cache:secret')
if not held then
  redis.call('SET', P .. 'cache:secret', ARGV[i + 5])
elseif held ~= ARGV[i + 5] then
  return {'!secret'}
end
local now = now_us()
local evicted = {}
reap(now, evicted, m)
remove(m)
local e = cjson.decode(meta_json)
local fields = {}
for j = i + 6, #ARGV do table.insert(fields, ARGV[j]) end
local key = P .. 'cache:e:' .. m
redis.call('HSET', key, unpack(fields))
redis.call('HSET', META, m, meta_json)
redis.call('SADD', ix('n', e[1]), m)
redis.call('SADD', ix('t', e[4]), m)
redis.call('SADD', ix('l', e[5]), m)
for _, tag in ipairs(e[6]) do redis.call('SADD', ix('g', tag), m) end
redis.call('HINCRBY', USAGE, 'bytes', e[3])
if e[5] == 'semantic' then note('p', m) end
local last = tonumber(redis.call('GET', P .. 'cache:clock') or '0')
local score = now
if score <= last then score = last + 1 end
score = string.format('%.0f', score)
redis.call('SET', P .. 'cache:clock', score)
redis.call('ZADD', LRU, score, m)
if exp_ms ~= '' and tonumber(exp_ms) > now / 1000 then
  redis.call('PEXPIREAT', key, exp_ms)
  redis.call('ZADD', EXP, exp_ms, m)
end
local count = redis.call('HLEN', META)
local bytes = tonumber(redis.call('HGET', USAGE, 'bytes') or '0')
local function over()
  return count > 1 and ((max_e > 0 and count > max_e) or (max_b > 0 and bytes > max_b))
end
while over() do
  local victims = redis.call('ZRANGE', LRU, 0, 63)
  local progress = false
  for _, v in ipairs(victims) do
    if not over() then break end
    if v ~= m then
      progress = true
      local size = remove(v, 'e')
      if size then
        count = count - 1
        bytes = bytes - size
        table.insert(evicted, v)
      end
    end
  end
  if not progress then break end
end
return evicted
"""
)

# ARGV: prefix, feed length, selector JSON [namespace, key, tenant, layer, tag, plan_version,
# expired_at] (null: any), then the candidate addresses.
_DELETE = (
    _LUA_COMMON
    + """
local s = cjson.decode(ARGV[3])
local removed = {}
for i = 4, #ARGV do
  local m = ARGV[i]
  local raw = redis.call('HGET', META, m)
  if raw then
    local e = cjson.decode(raw)
    local ok = (s[1] == NULL or e[1] == s[1]) and (s[2] == NULL or e[2] == s[2])
      and (s[3] == NULL or e[4] == s[3]) and (s[4] == NULL or e[5] == s[4])
      and (s[6] == NULL or e[7] == s[6])
      and (s[7] == NULL or (e[8] ~= NULL and e[8] <= s[7]))
    if ok and s[5] ~= NULL then
      ok = false
      for _, tag in ipairs(e[6]) do if tag == s[5] then ok = true end end
    end
    if ok then
      remove(m, 'd')
      table.insert(removed, m)
    end
  end
end
return removed
"""
)

# ARGV: prefix, feed length. Removes the entries whose native TTL passed; returns the count and
# bytes held.
_USAGE = (
    _LUA_COMMON
    + """
reap(now_us(), {}, false)
return {redis.call('HLEN', META), tonumber(redis.call('HGET', USAGE, 'bytes') or '0')}
"""
)

# ARGV: prefix, position ('': the feed's end), most records. A position is "<id>/<n>": the last
# record read and how many records the stream had received up to it. (XINFO's
# max-deleted-entry-id does not move when MAXLEN trims, so trimming is told by counting: the
# first record kept is the (entries-added - length + 1)th one.) Returns {'trimmed'} when records
# after the position were trimmed away (or the feed was reset), else {'ok', new position,
# records}: each {id, op, address, vector or false, expiry or false} (a put's vector and expiry
# as they are now; false when the entry is gone again).
_CHANGES = """
local FEED = ARGV[1] .. 'cache:feed'
local position, most = ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', FEED) == 0 then
  if position == '' or string.match(position, '/0$') then return {'ok', '0-0/0', {}} end
  return {'trimmed'}
end
local raw = redis.call('XINFO', 'STREAM', FEED)
local info = {}
for i = 1, #raw, 2 do info[raw[i]] = raw[i + 1] end
local added = tonumber(info['entries-added'])
if position == '' then return {'ok', info['last-generated-id'] .. '/' .. added, {}} end
local id, seen = string.match(position, '^(%d+-%d+)/(%d+)$')
seen = tonumber(seen)
if seen == nil or seen > added or added - tonumber(info['length']) > seen then
  return {'trimmed'}
end
local out = {}
for _, record in ipairs(redis.call('XRANGE', FEED, '(' .. id, '+', 'COUNT', most)) do
  local fields = {}
  for i = 1, #record[2], 2 do fields[record[2][i]] = record[2][i + 1] end
  local vector, expiry = false, false
  if fields['o'] == 'p' then
    local got = redis.call('HMGET', ARGV[1] .. 'cache:e:' .. fields['m'], 'e', 'x')
    vector, expiry = got[1], got[2]
  end
  table.insert(out, {record[1], fields['o'], fields['m'], vector, expiry})
  id, seen = record[1], seen + 1
end
return {'ok', id .. '/' .. seen, out}
"""

_OPS = {b"p": "put", b"d": "deleted", b"e": "evicted", b"x": "expired"}


def _address(namespace: str, key: str) -> str:
    """One string per ``(namespace, key)``, unambiguous whatever the two hold."""
    return f"{len(namespace)}:{namespace}{key}"


def _pair(address: bytes | str) -> tuple[str, str]:
    text = address.decode() if isinstance(address, bytes) else address
    length, _, rest = text.partition(":")
    n = int(length)
    return rest[:n], rest[n:]


def _fields(entry: StoredEntry) -> list[Any]:
    """The entry's hash, as field, value pairs (absent optional fields are left out)."""
    fields: list[Any] = [
        "n", entry.namespace, "k", entry.key, "p", entry.payload,
        "c", repr(float(entry.created_at)), "l", entry.layer, "t", entry.tenant,
        "g", json.dumps(list(entry.tags)),
    ]  # fmt: skip
    for name, value in (
        ("x", None if entry.expires_at is None else repr(float(entry.expires_at))),
        ("v", entry.plan_version),
        ("e", entry.vector),
        ("f", entry.features),
    ):
        if value is not None:
            fields += [name, value]
    return fields


def _entry(raw: dict[bytes, bytes]) -> StoredEntry:
    def text(name: bytes) -> str | None:
        value = raw.get(name)
        return None if value is None else value.decode()

    expires = text(b"x")
    return StoredEntry(
        namespace=raw[b"n"].decode(),
        key=raw[b"k"].decode(),
        payload=bytes(raw[b"p"]),
        created_at=float(raw[b"c"]),
        expires_at=None if expires is None else float(expires),
        layer=raw[b"l"].decode(),
        tenant=raw[b"t"].decode(),
        tags=tuple(json.loads(raw[b"g"])),
        plan_version=text(b"v"),
        vector=raw.get(b"e"),
        features=text(b"f"),
    )


class RedisStore:
    """A cache store on a Redis server, shared by every process that opens the same URL and
    prefix; bounded by entry count and bytes for all of them together (LRU).

    Args:
        url: the server (``redis://host:port/db``; see :class:`RedisConnection` for the forms).
        prefix: prepended to every key, so several applications can share a server.
        max_entries: most entries held by the whole deployment (None: unbounded). Give every
            replica the same bounds: each write enforces the bounds its store was given.
        max_bytes: most bytes of payload, vectors and features held (None: unbounded).
        timeout_s: seconds to connect and to wait for each reply before the operation fails
            (a cache then misses, or drops the write).
        feed_length: records the change feed keeps, about (older ones are trimmed; a replica
            that falls further behind rebuilds its indexes from a scan).

    Raises:
        MissingDependencyError: redis-py is not installed (``pip install 'tokenlean[redis]'``).
        ConfigurationError: an invalid URL, prefix or bound.
        StoreError: the server cannot be reached to read or create the store's secret.

    Every operation raises a :class:`StoreError` naming the server when Redis fails:
    :class:`StoreBackendError` for a lost connection or a timeout, :class:`StoreReadOnlyError`
    on a read-only replica, :class:`StoreFullError` at ``maxmemory``,
    :class:`StoreClosedError` after :meth:`close`; redis-py's error is the cause.

    Example:
        >>> store = RedisStore("redis://127.0.0.1:6379/0", prefix="doctest:")  # doctest: +SKIP
        >>> _ = store.put(StoredEntry("ns", "k", b"v", 0.0))  # doctest: +SKIP
        >>> store.get("ns", "k").payload  # doctest: +SKIP
        b'v'
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        timeout_s: float = 1.0,
        feed_length: int = FEED_LENGTH,
    ) -> None:
        for name, value in (
            ("max_entries", max_entries),
            ("max_bytes", max_bytes),
            ("feed_length", feed_length),
        ):
            if value is not None and value < 1:
                raise ConfigurationError(f"{name} must be >= 1 or None, got {value}")
        if not prefix:
            raise ConfigurationError("prefix must not be empty")
        self.prefix, self.max_entries, self.max_bytes = prefix, max_entries, max_bytes
        self.feed_length = feed_length
        # Writes are idempotent (a replace, a delete), so one retry on a fresh connection is safe.
        self._redis = RedisConnection(url, what="A RedisStore", timeout_s=timeout_s, retries=1)
        self.url = self._redis.name
        client = self._redis.client
        self._put_script = client.register_script(_PUT)
        self._delete_script = client.register_script(_DELETE)
        self._usage_script = client.register_script(_USAGE)
        self._changes_script = client.register_script(_CHANGES)
        self._lock = threading.Lock()
        # address -> server recency of lookups not yet written (see TOUCH_LIMIT)
        self._touched: OrderedDict[str, int] = OrderedDict()
        # Read on first use, not here: a replica starting while Redis is down still starts, and
        # its caches fail open (misses, dropped writes) until the server answers.
        self._secret: bytes | None = None

    @property
    def uri(self) -> str:
        """The URI :func:`tokenlean.open_store` reopens this store from: the server's URL as
        given (scheme, user, host, port, db and redis-py options) with the prefix, bounds,
        timeout and feed length as options. A password is masked as ``***`` (in the user part
        and in ``password``-like options), so the URI is safe to log or serialize; give the
        password back before opening it (a masked URI is refused).

        Example:
            >>> RedisStore("redis://app:S3cret@127.0.0.1:6379/0", prefix="app:").uri
            'redis://app:***@127.0.0.1:6379/0?prefix=app:&feed_length=100000&timeout_s=1.0'
        """
        return self._redis.uri(
            [
                ("prefix", self.prefix),
                ("max_entries", self.max_entries),
                ("max_bytes", self.max_bytes),
                ("feed_length", self.feed_length),
            ]
        )

    def _key(self, name: str) -> str:
        return f"{self.prefix}cache:{name}"

    def _load_secret(self) -> bytes:
        client = self._redis.client
        client.set(self._key("secret"), secrets.token_hex(32), nx=True)
        raw: Any = client.get(self._key("secret"))
        try:
            secret = bytes.fromhex(_text(raw)) if raw is not None else b""
        except (UnicodeDecodeError, ValueError):
            secret = b""
        if len(secret) < 16:
            raise CorruptedStoreError(
                f"Redis server {self.url}: {self._key('secret')} is not a valid key secret"
            )
        return secret

    @property
    def secret(self) -> bytes:
        """The deployment's key secret, created once on the server (``SET NX``) and read on
        first use.

        Raises:
            StoreError: the server cannot be reached (the next use tries again).
            CorruptedStoreError: the stored secret is not valid.
        """
        secret = self._secret  # read once: _secret_changed may reset it meanwhile
        if secret is None:
            with self._lock:
                secret = self._secret
                if secret is None:
                    secret = self._redis.call("reading the key secret", self._load_secret)
                    self._secret = secret
        return secret

    def get(self, namespace: str, key: str) -> StoredEntry | None:
        address = _address(namespace, key)

        def run() -> tuple[dict[bytes, bytes], list[int]]:
            pipe = self._redis.client.pipeline(transaction=False)
            pipe.hgetall(self._key("e:" + address))
            pipe.time()
            raw, (seconds, micros) = pipe.execute()
            return raw, [seconds, micros]

        raw, (seconds, micros) = self._redis.call("get", run)
        if not raw:
            return None
        # Recency is kept here until the next write: a lookup never writes (see TOUCH_LIMIT).
        with self._lock:
            self._touched[address] = seconds * 1_000_000 + micros
            self._touched.move_to_end(address)
            if len(self._touched) > TOUCH_LIMIT:
                self._touched.popitem(last=False)
        return _entry(raw)

    def _take_touches(self) -> list[Any]:
        with self._lock:
            touches = [value for pair in self._touched.items() for value in pair]
            self._touched.clear()
        return touches

    def put(self, entry: StoredEntry) -> list[tuple[str, str]]:
        meta = json.dumps(
            [entry.namespace, entry.key, entry.size, entry.tenant, entry.layer,
             list(entry.tags), entry.plan_version, entry.expires_at]
        )  # fmt: skip
        expiry = "" if entry.expires_at is None else str(int(entry.expires_at * 1000))
        secret = self.secret.hex()
        touches = self._take_touches()
        args = [
            self.prefix, self.feed_length, len(touches) // 2, *touches,
            _address(entry.namespace, entry.key), meta,
            self.max_entries or 0, self.max_bytes or 0, expiry, secret, *_fields(entry),
        ]  # fmt: skip
        evicted = self._redis.call("put", lambda: self._put_script(args=args))
        if evicted and _text(evicted[0]) == "!secret":
            self._secret_changed(secret)
        return [_pair(address) for address in evicted]

    def _secret_changed(self, used: str) -> None:
        """The server holds another key secret than ``used``: forget ours (the next use reads
        the server's) and refuse the operation, whose keys were made with the old one.

        Raises:
            StoreBackendError: always.
        """
        with self._lock:
            if self._secret is not None and self._secret.hex() == used:
                self._secret = None
        raise StoreBackendError(
            f"Redis server {self.url}: the key secret changed on the server (its data was lost "
            "or flushed, and another replica made a new secret); nothing was written, and the "
            "server's secret is used from now on"
        )

    def _candidates(self, selector: Selector) -> Iterable[Any]:
        """Addresses that may match, from the narrowest index the selector allows."""
        client = self._redis.client
        if selector.namespace is not None and selector.key is not None:
            return [_address(selector.namespace, selector.key)]
        for kind, value in (
            ("g", selector.tag),
            ("t", selector.tenant),
            ("n", selector.namespace),
            ("l", selector.layer),
        ):
            if value is not None:
                return client.sscan_iter(self._key(f"ix:{kind}:{value}"), count=_BATCH)
        # (HSCAN NOVALUES needs Redis 7.4: take the keys of the pairs)
        return (address for address, _ in client.hscan_iter(self._key("meta"), count=_BATCH))

    def delete(self, selector: Selector) -> list[tuple[str, str]]:
        # An invalidation's keys (a hashed tenant, a namespace) were made with our secret: on a
        # server that lost its data to another replica's new secret they would match nothing.
        # (Removing everything needs no key: clear() is never refused.)
        if selector != Selector():
            secret = self.secret.hex()
            held = self._redis.call("reading the key secret", lambda: self._redis.client.get(
                self._key("secret")))  # fmt: skip
            if held is not None and _text(held) != secret:
                self._secret_changed(secret)
        spec = json.dumps(
            [selector.namespace, selector.key, selector.tenant, selector.layer, selector.tag,
             selector.plan_version, selector.expired_at]
        )  # fmt: skip

        def run() -> list[Any]:
            # Read the candidates first: deleting while a scan cursor walks a set may skip some.
            candidates = list(dict.fromkeys(self._candidates(selector)))
            removed: list[Any] = []
            for at in range(0, len(candidates), _BATCH):
                batch = candidates[at : at + _BATCH]
                removed += self._delete_script(args=[self.prefix, self.feed_length, spec, *batch])
            return removed

        return [_pair(address) for address in self._redis.call("delete", run)]

    def scan(self, layer: str | None = None) -> Iterator[StoredEntry]:
        def run() -> list[StoredEntry]:
            addresses = list(dict.fromkeys(self._candidates(Selector(layer=layer))))
            entries: list[StoredEntry] = []
            for at in range(0, len(addresses), _BATCH):
                pipe = self._redis.client.pipeline(transaction=False)
                for address in addresses[at : at + _BATCH]:
                    pipe.hgetall(self._key("e:" + _text(address)))
                entries += [
                    entry
                    for entry in map(_entry, filter(None, pipe.execute()))
                    if layer is None or entry.layer == layer
                ]
            return entries

        entries: list[StoredEntry] = self._redis.call("scan", run)
        yield from entries

    def usage(self) -> tuple[int, int]:
        count, size = self._redis.call(
            "usage", lambda: self._usage_script(args=[self.prefix, self.feed_length])
        )
        return int(count), int(size)

    def changes_since(self, position: str | None) -> tuple[list[FeedChange], str] | None:
        """The semantic entries' changes after ``position``, in order, and the new position;
        None when records after ``position`` were trimmed from the feed (rebuild from a scan).
        ``position`` None asks for the feed's end: no changes, and the position to follow from.

        A put carries the entry's vector and expiry as they are when read (no vector: the entry
        is gone again, and a later record says so).
        """

        def run() -> tuple[list[FeedChange], str] | None:
            at = "" if position is None else position
            changes: list[FeedChange] = []
            while True:
                reply: Any = self._changes_script(args=[self.prefix, at, _FEED_BATCH])
                if reply[0] == b"trimmed":
                    return None
                at = _text(reply[1])
                for _, op, address, vector, expiry in reply[2]:
                    namespace, key = _pair(address)
                    changes.append(
                        FeedChange(
                            _OPS.get(bytes(op), "deleted"), namespace, key,
                            None if not vector else bytes(vector),
                            None if not expiry else float(expiry),
                        )
                    )  # fmt: skip
                if len(reply[2]) < _FEED_BATCH:
                    return changes, at

        return self._redis.call("reading the change feed", run)

    def close(self) -> None:
        """Send the recency of the lookups since the last write (best effort), then close."""
        if self._redis.closed:
            return
        touches = self._take_touches()
        if touches:
            pairs = dict(zip(touches[::2], touches[1::2], strict=True))
            # best effort: on failure those entries keep their previous recency
            with contextlib.suppress(StoreError):
                self._redis.call(
                    "close",
                    lambda: self._redis.client.zadd(self._key("lru"), pairs, xx=True, gt=True),
                )
        self._redis.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"


def _text(address: bytes | str) -> str:
    return address.decode() if isinstance(address, bytes) else address
