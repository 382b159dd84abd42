"""The behaviour suite every transcript store must pass (see :mod:`tokenlean.testing`)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from tokenlean._errors import InvalidInputError, NotSerializableError, StoreError
from tokenlean._memory.transcript import TranscriptStore, Turn
from tokenlean._memory.uri import open_transcript_store
from tokenlean.testing._cache_contract import assert_no_password
from tokenlean.testing._workers import run_workers

__all__ = ["TranscriptStoreContract"]


def _turn(index: int, turn_id: str | None = None, **fields: Any) -> Turn:
    base: dict[str, Any] = {
        "id": turn_id or f"t{index}",
        "index": index,
        "role": "user",
        "content": f"message {index}",
        "timestamp": 1_000.0 + index,
    }
    base.update(fields)
    return Turn(**base)


class TranscriptStoreContract:
    """Behaviour every :class:`~tokenlean.TranscriptStore` must have. Subclass as ``Test…``
    and implement :meth:`make_store`; persistent stores also set ``persistent = True`` and
    implement :meth:`reopen`. A store with a ``close()`` method must refuse work once closed.
    A store with a ``uri`` must be reopened from it by :meth:`open_uri`
    (:func:`tokenlean.open_transcript_store` unless overridden), and its ``uri`` must never
    hold a password."""

    persistent = False

    def make_store(self) -> TranscriptStore:
        """A new, empty store."""
        raise NotImplementedError

    def reopen(self, store: TranscriptStore) -> TranscriptStore:
        """Close ``store`` and open the same storage again (persistent stores only)."""
        raise NotImplementedError

    def open_uri(self, uri: str) -> TranscriptStore:
        """The store a ``uri`` names (for stores with a ``uri``; override for URIs that
        :func:`tokenlean.open_transcript_store` does not read)."""
        return open_transcript_store(uri)

    def test_is_a_transcript_store(self) -> None:
        """The store implements the protocol."""
        assert isinstance(self.make_store(), TranscriptStore)

    def test_an_unknown_session_is_empty(self) -> None:
        """A session never written has no turns and no state."""
        store = self.make_store()
        assert store.turns("acme", "nobody") == []
        assert store.get_state("acme", "nobody", "summary") is None

    def test_turns_round_trip_every_field(self) -> None:
        """Turns come back exactly as appended, tool calls and metadata included."""
        store = self.make_store()
        call = {"id": "call_1", "type": "function",
                "function": {"name": "track", "arguments": '{"order": 1234}'}}  # fmt: skip
        turns = [
            _turn(0, "u1", speaker="Ana", metadata={"date": "2024-05-01", "tags": ["a", "b"]}),
            _turn(1, "a1", role="assistant", content="", tool_calls=(call,)),
            _turn(2, "r1", role="tool", content='{"status": "shipped"}', tool_call_id="call_1"),
            _turn(3, "a2", role="assistant", content="It shipped.", timestamp=1_714_550_400.25),
        ]
        store.append("acme", "s1", turns)
        assert store.turns("acme", "s1") == turns

    def test_appends_keep_order_across_batches(self) -> None:
        """Batches append in order and indexes run on; an empty batch changes nothing."""
        store = self.make_store()
        store.append("acme", "s1", [_turn(0)])
        store.append("acme", "s1", [_turn(1), _turn(2), _turn(3)])
        store.append("acme", "s1", [])
        store.append("acme", "s1", [_turn(4), _turn(5)])
        stored = store.turns("acme", "s1")
        assert [t.index for t in stored] == [0, 1, 2, 3, 4, 5]
        assert [t.content for t in stored] == [f"message {i}" for i in range(6)]

    def test_count_follows_the_appends(self) -> None:
        """count() is 0 for an unknown session, then the number of turns stored; a refused
        batch does not change it, and each session counts its own."""
        store = self.make_store()
        assert store.count("acme", "s1") == 0
        store.append("acme", "s1", [_turn(0), _turn(1), _turn(2)])
        assert store.count("acme", "s1") == 3
        try:
            store.append("acme", "s1", [_turn(3), _turn(5)])
        except InvalidInputError:
            assert store.count("acme", "s1") == 3
        else:
            raise AssertionError("a batch with a gap was accepted")
        store.append("acme", "s1", [_turn(3)])
        store.append("acme", "s2", [_turn(0)])
        assert (store.count("acme", "s1"), store.count("acme", "s2")) == (4, 1)
        assert (store.count("globex", "s1"), store.count("acme", "s3")) == (0, 0)

    def test_a_range_of_turns_is_the_slice_of_the_transcript(self) -> None:
        """turns(start, end) holds the turns with start <= index < end, in order: end=None runs
        to the last turn, and a range past the end is cut short or empty."""
        store = self.make_store()
        turns = [_turn(i, role=("user", "assistant")[i % 2]) for i in range(12)]
        store.append("acme", "s1", turns)
        store.append("acme", "s2", [_turn(0, content="other session")])
        for start, end in ((0, None), (0, 12), (3, 7), (10, None), (11, 12), (5, 5), (8, 100),
                           (12, None), (40, 50), (0, 0)):  # fmt: skip
            assert store.turns("acme", "s1", start, end) == turns[start:end], (start, end)
        assert store.turns("acme", "s1", start=9) == turns[9:]
        assert store.turns("acme", "s1", end=2) == turns[:2]
        assert store.turns("acme", "nobody", 0, 5) == []

    def test_find_returns_the_turns_with_those_ids(self) -> None:
        """find() returns the session's turns with the given ids, in transcript order, skipping
        unknown ids; it sees only its own session."""
        store = self.make_store()
        turns = [_turn(i, f"id-{i}") for i in range(6)]
        store.append("acme", "s1", turns)
        store.append("acme", "s2", [_turn(0, "id-9")])
        assert store.find("acme", "s1", ["id-4", "id-1", "nope", "id-4"]) == [turns[1], turns[4]]
        assert store.find("acme", "s1", {"id-5"}) == [turns[5]]
        assert store.find("acme", "s1", []) == []
        assert store.find("acme", "s1", ["id-9"]) == []
        assert store.find("globex", "s1", ["id-1"]) == []
        many = [f"id-{i}" for i in range(2_000)]  # more ids than one query may bind
        assert store.find("acme", "s1", many) == turns

    def test_turns_returns_a_copy(self) -> None:
        """Changing the returned list does not change the transcript."""
        store = self.make_store()
        store.append("acme", "s1", [_turn(0), _turn(1)])
        first = store.turns("acme", "s1")
        first.clear()
        assert len(store.turns("acme", "s1")) == 2

    def test_sessions_and_tenants_are_isolated(self) -> None:
        """Each (tenant, session) has its own turns, indexes and ids."""
        store = self.make_store()
        store.append("acme", "s1", [_turn(0, content="acme s1")])
        store.append("globex", "s1", [_turn(0, content="globex s1")])  # same id, other tenant
        store.append("acme", "s2", [_turn(0, content="acme s2"), _turn(1, content="more")])
        assert [t.content for t in store.turns("acme", "s1")] == ["acme s1"]
        assert [t.content for t in store.turns("globex", "s1")] == ["globex s1"]
        assert [t.content for t in store.turns("acme", "s2")] == ["acme s2", "more"]
        assert store.turns("globex", "s2") == []

    def test_state_round_trips_and_is_replaced(self) -> None:
        """A state value comes back as written (any JSON); a second put replaces it."""
        store = self.make_store()
        value = {"items": [{"text": "Order 1234 → Lyon ✓", "sources": ["t0", "t3"]}],
                 "covered": 4, "ratio": 0.5, "done": False, "note": None}  # fmt: skip
        store.put_state("acme", "s1", "summary", value)
        assert store.get_state("acme", "s1", "summary") == value
        store.put_state("acme", "s1", "summary", [1, "two"])
        assert store.get_state("acme", "s1", "summary") == [1, "two"]
        for scalar in ("text", 7, 2.5, True):
            store.put_state("acme", "s1", "epoch", scalar)
            assert store.get_state("acme", "s1", "epoch") == scalar
        assert store.turns("acme", "s1") == []

    def test_state_is_isolated_by_tenant_session_and_name(self) -> None:
        """State is addressed by (tenant, session, name) and independent of the turns."""
        store = self.make_store()
        store.append("acme", "s1", [_turn(0)])
        store.put_state("acme", "s1", "slots", {"city": "Paris"})
        store.put_state("acme", "s1", "epoch", 1)
        store.put_state("acme", "s2", "slots", {"city": "Lyon"})
        store.put_state("globex", "s1", "slots", {"city": "Nice"})
        assert store.get_state("acme", "s1", "slots") == {"city": "Paris"}
        assert store.get_state("acme", "s1", "epoch") == 1
        assert store.get_state("acme", "s2", "slots") == {"city": "Lyon"}
        assert store.get_state("globex", "s1", "slots") == {"city": "Nice"}
        assert store.get_state("globex", "s1", "epoch") is None
        assert len(store.turns("acme", "s1")) == 1

    def test_an_index_that_does_not_continue_is_refused_and_nothing_is_lost(self) -> None:
        """A gap, an overlap or a wrong index anywhere in a batch raises InvalidInputError
        and stores none of the batch; the transcript is unchanged and can go on."""
        store = self.make_store()
        store.append("acme", "s1", [_turn(0), _turn(1)])
        before = store.turns("acme", "s1")
        for bad in ([_turn(3)], [_turn(1, "again")], [_turn(2), _turn(4)], [_turn(2), _turn(2)]):
            try:
                store.append("acme", "s1", bad)
            except InvalidInputError:
                pass
            else:
                raise AssertionError(f"indexes {[t.index for t in bad]} were accepted")
            assert store.turns("acme", "s1") == before
        store.append("acme", "s1", [_turn(2)])
        assert [t.index for t in store.turns("acme", "s1")] == [0, 1, 2]

    def test_a_repeated_id_is_refused_and_nothing_is_lost(self) -> None:
        """An id already in the session, or twice in a batch, raises InvalidInputError and
        stores none of the batch."""
        store = self.make_store()
        store.append("acme", "s1", [_turn(0, "a"), _turn(1, "b")])
        before = store.turns("acme", "s1")
        for bad in ([_turn(2, "c"), _turn(3, "a")], [_turn(2, "c"), _turn(3, "c")]):
            try:
                store.append("acme", "s1", bad)
            except InvalidInputError:
                pass
            else:
                raise AssertionError(f"ids {[t.id for t in bad]} were accepted")
            assert store.turns("acme", "s1") == before
        store.append("acme", "s2", [_turn(0, "a")])  # ids are per session
        store.append("acme", "s1", [_turn(2, "c")])
        assert [t.id for t in store.turns("acme", "s1")] == ["a", "b", "c"]

    def test_what_json_cannot_hold_raises_not_serializable_and_nothing_is_lost(self) -> None:
        """Tool calls, metadata or a state value with no JSON form raise NotSerializableError
        (an InvalidInputError); the batch is not stored and the previous state is kept."""
        store = self.make_store()
        store.append("acme", "s1", [_turn(0)])
        store.put_state("acme", "s1", "slots", {"city": "Paris"})
        before = store.turns("acme", "s1")
        bad_turns = [
            _turn(2, metadata={"seen": {1, 2}}),
            _turn(2, role="assistant", tool_calls=({"id": "c", "args": object()},)),
        ]
        for bad in bad_turns:
            try:
                store.append("acme", "s1", [_turn(1), bad])
            except NotSerializableError:
                pass
            else:
                raise AssertionError("a turn with no JSON form was accepted")
            assert store.turns("acme", "s1") == before
        try:
            store.put_state("acme", "s1", "slots", {"cities": {"Paris", "Lyon"}})
        except NotSerializableError:
            pass
        else:
            raise AssertionError("a state value with no JSON form was accepted")
        assert store.get_state("acme", "s1", "slots") == {"city": "Paris"}

    def test_invalid_text_or_timestamp_is_refused_and_nothing_is_lost(self) -> None:
        """Text with a lone surrogate (not encodable Unicode) or a timestamp that is not a
        finite number raises InvalidInputError; the batch is not stored."""
        store = self.make_store()
        store.append("acme", "s1", [_turn(0)])
        before = store.turns("acme", "s1")
        for bad in (
            _turn(2, content="broken \ud800 text"),
            _turn(2, speaker="\udfff"),
            _turn(2, timestamp=math.nan),
            _turn(2, timestamp=math.inf),
        ):
            try:
                store.append("acme", "s1", [_turn(1), bad])
            except InvalidInputError:
                pass
            else:
                raise AssertionError(f"{bad!r} was accepted")
            assert store.turns("acme", "s1") == before

    def test_unicode_and_large_content_round_trip(self) -> None:
        """Any Unicode text (emoji, CJK, right-to-left, combining marks, NUL) and large turns
        and batches come back unchanged."""
        store = self.make_store()
        texts = ["Grüße 👋🏽 from Zürich", "注文1234はどこですか", "طلب رقم ١٢٣٤", "e\u0301 vs é",
                 "nul \x00 inside", "line\r\nbreaks\ttabs", "x" * 2_000_000]  # fmt: skip
        turns = [_turn(i, f"ü-{i}", content=text, speaker=text[:8]) for i, text in enumerate(texts)]
        store.append("acme", "sessión 🌍", turns)
        assert store.turns("acme", "sessión 🌍") == turns
        many = [_turn(i) for i in range(len(texts), len(texts) + 2_000)]
        store.append("acme", "sessión 🌍", many)
        assert store.turns("acme", "sessión 🌍") == turns + many

    def test_concurrent_appends_keep_every_turn_exactly_once(self) -> None:
        """Eight threads appending to one shared session (retrying when another took the
        index) and to their own sessions: every turn is stored once, in order, no gaps."""
        store = self.make_store()
        per_worker = 25

        def work(worker: int) -> None:
            for i in range(per_worker):
                store.append("acme", f"own-{worker}", [_turn(i, f"w{worker}-{i}")])
                for _attempt in range(10_000):
                    start = store.count("acme", "shared")
                    try:
                        store.append("acme", "shared", [_turn(start, f"w{worker}-{i}")])
                        break
                    except InvalidInputError:
                        continue  # another thread appended first: take the new length
                else:
                    raise AssertionError("never got to append")

        assert run_workers(work, 8) == []
        shared = store.turns("acme", "shared")
        assert [t.index for t in shared] == list(range(8 * per_worker))
        ids = [t.id for t in shared]
        assert sorted(ids) == sorted(f"w{w}-{i}" for w in range(8) for i in range(per_worker))
        for w in range(8):
            mine = [int(i.split("-")[1]) for i in ids if i.startswith(f"w{w}-")]
            assert mine == list(range(per_worker))  # each worker's turns in its order
            own = store.turns("acme", f"own-{w}")
            assert [t.id for t in own] == [f"w{w}-{i}" for i in range(per_worker)]

    def test_readers_see_whole_batches(self) -> None:
        """A batch appears all at once: a concurrent reader, or counter, never sees part of
        one."""
        store = self.make_store()
        done = threading.Event()
        seen: list[int] = []
        errors: list[BaseException] = []

        def read() -> None:
            try:
                while not done.is_set():
                    stored = store.turns("acme", "s1")
                    seen.append(len(stored))
                    assert [t.index for t in stored] == list(range(len(stored)))
                    seen.append(store.count("acme", "s1"))
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for batch in range(40):
                store.append("acme", "s1", [_turn(batch * 3 + k) for k in range(3)])
        finally:
            done.set()
            reader.join()
        assert errors == []
        assert all(n % 3 == 0 for n in seen)
        assert len(store.turns("acme", "s1")) == store.count("acme", "s1") == 120

    def test_turns_and_state_survive_a_restart(self) -> None:
        """A persistent store reopened holds the same turns and state (persistent stores)."""
        if not self.persistent:
            return
        store = self.make_store()
        turns = [_turn(0, metadata={"k": ["v"]}), _turn(1, role="assistant", content="héllo")]
        store.append("acme", "s1", turns)
        store.put_state("acme", "s1", "summary", {"items": [], "covered": 2})
        reopened = self.reopen(store)
        assert reopened.turns("acme", "s1") == turns
        assert reopened.get_state("acme", "s1", "summary") == {"items": [], "covered": 2}
        reopened.append("acme", "s1", [_turn(2)])  # and the session goes on
        assert [t.index for t in reopened.turns("acme", "s1")] == [0, 1, 2]

    def test_turn_vectors_round_trip_per_session(self) -> None:
        """Stores with ``get_vectors``/``put_vectors`` give back the bytes stored under a key,
        skip unknown keys, replace a key written again, and keep sessions and tenants apart
        (stores without them: skipped)."""
        store: Any = self.make_store()
        if not hasattr(store, "get_vectors"):
            return
        assert store.get_vectors("acme", "s1", ["k1"]) == {}
        store.put_vectors("acme", "s1", {"k1": b"\x00\x01" * 4, "k2": b"\xff" * 8})
        store.put_vectors("acme", "s1", {})  # nothing to write
        assert store.get_vectors("acme", "s1", ["k1", "k2", "k3"]) == {
            "k1": b"\x00\x01" * 4,
            "k2": b"\xff" * 8,
        }
        store.put_vectors("acme", "s1", {"k1": b"\x07" * 8})
        assert store.get_vectors("acme", "s1", ["k1"]) == {"k1": b"\x07" * 8}
        assert store.get_vectors("acme", "s2", ["k1"]) == {}
        assert store.get_vectors("other", "s1", ["k1"]) == {}
        many = {f"key{i}": i.to_bytes(4, "big") for i in range(1_200)}
        store.put_vectors("acme", "s3", many)
        assert store.get_vectors("acme", "s3", list(many)) == many

    def test_turn_vectors_survive_a_restart(self) -> None:
        """Stored vectors are still there after a reopen (persistent stores with vectors)."""
        store: Any = self.make_store()
        if not self.persistent or not hasattr(store, "put_vectors"):
            return
        store.put_vectors("acme", "s1", {"k1": b"\x01" * 8})
        reopened: Any = self.reopen(store)
        assert reopened.get_vectors("acme", "s1", ["k1"]) == {"k1": b"\x01" * 8}

    def test_a_closed_store_refuses_work(self) -> None:
        """After close() (stores that have one), every operation raises StoreError."""
        store = self.make_store()
        close: Callable[[], object] | None = getattr(store, "close", None)
        if close is None:
            return
        close()
        operations: list[Callable[[], object]] = [
            lambda: store.turns("acme", "s1"),
            lambda: store.turns("acme", "s1", 2, 4),
            lambda: store.count("acme", "s1"),
            lambda: store.find("acme", "s1", ["t0"]),
            lambda: store.append("acme", "s1", [_turn(0)]),
            lambda: store.get_state("acme", "s1", "slots"),
            lambda: store.put_state("acme", "s1", "slots", {}),
        ]
        if hasattr(store, "get_vectors"):
            vectors: Any = store
            operations += [
                lambda: vectors.get_vectors("acme", "s1", ["k1"]),
                lambda: vectors.put_vectors("acme", "s1", {"k1": b"\x01"}),
            ]
        for operation in operations:
            try:
                operation()
            except StoreError:
                continue
            raise AssertionError("a closed store answered")

    def test_the_uri_reopens_the_store(self) -> None:
        """A store's ``uri`` (stores that have one) opens a store with the same ``uri``; a
        persistent one holds the same turns and state."""
        store = self.make_store()
        uri = getattr(store, "uri", None)
        if uri is None:
            return
        assert isinstance(uri, str)
        turns = [_turn(0), _turn(1, role="assistant", content="héllo")]
        store.append("acme", "s1", turns)
        store.put_state("acme", "s1", "summary", {"covered": 2})
        again = self.open_uri(uri)
        try:
            assert getattr(again, "uri", None) == uri
            if self.persistent:
                assert again.turns("acme", "s1") == turns
                assert again.get_state("acme", "s1", "summary") == {"covered": 2}
        finally:
            close: Callable[[], object] | None = getattr(again, "close", None)
            if close is not None:
                close()

    def test_the_uri_never_holds_a_password(self) -> None:
        """A store's ``uri`` (stores that have one) holds ``***`` wherever a password would
        be: it is safe to log or serialize."""
        uri = getattr(self.make_store(), "uri", None)
        if uri is not None:
            assert_no_password(uri)
