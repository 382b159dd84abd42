"""Appending a batch of turns exactly once: retries recognised, other writers raced.

A caller that does not know whether its ``add`` went through (a timeout, a lost connection)
sends the same messages again. The position a message would take cannot identify it across
such a retry (the first attempt moved the session on), so :func:`append_once` recognises the
retry by what the caller sent:

- a message with an ``id`` already stored, as the same message, is not stored again (the
  store's :meth:`~tokenlean.TranscriptStore.find` looks it up by id);
- a batch without ids that is exactly the session's latest turns (the ids those turns got
  derived from their index, and the same content) is the batch itself, already stored.

Several writers (threads with their own memory, processes) may append to one session: when
another takes the next index first, the store refuses the append; the session has then grown,
so the batch is looked at again at the new end. A refusal that did not come with growth is the
batch's own fault and is raised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from tokenlean._errors import InvalidInputError, StoreError
from tokenlean._memory.transcript import TranscriptStore, Turn, same_message

__all__ = ["MAX_CONFLICTS", "append_once"]

MAX_CONFLICTS = 1000
"""Appends in a row that may lose the race for the next index to other writers (each loss means
another writer stored its turns) before :func:`append_once` gives up."""


def append_once(
    store: TranscriptStore,
    tenant: str,
    session: str,
    messages: Sequence[Mapping[str, Any]],
    batch: Sequence[Turn],
) -> tuple[list[Turn], list[Turn]]:
    """Store the turns of ``batch`` the session does not hold yet, in one append.

    Args:
        messages: the messages as the caller gave them (their ``id`` and ``timestamp``
            fields tell given values from defaults).
        batch: the validated turns of ``messages``, in order (indexes and default ids are
            assigned here).

    Returns:
        (the batch's turns as stored, in batch order; those stored by this call).

    Raises:
        InvalidInputError: an id already in the session for another message, or a batch the
            store refuses (an id twice in it, text that is not valid Unicode…).
        StoreError: the store failed, or ``MAX_CONFLICTS`` appends in a row lost the race.

    Example:
        >>> from tokenlean import MemoryTranscriptStore
        >>> store = MemoryTranscriptStore()
        >>> messages = [{"role": "user", "content": "Where is order 1234?"}]
        >>> batch = [Turn("t0", 0, "user", "Where is order 1234?", 5.0)]
        >>> [[t.id for t in part] for part in append_once(store, "acme", "s1", messages, batch)]
        [['t0'], ['t0']]
        >>> [[t.id for t in part] for part in append_once(store, "acme", "s1", messages, batch)]
        [['t0'], []]
    """
    given = [str(m["id"]) if m.get("id") else None for m in messages]
    timed = ["timestamp" in m for m in messages]
    for _attempt in range(MAX_CONFLICTS):
        start = store.count(tenant, session)
        repeated = _repeated_tail(store, tenant, session, start, batch, given, timed)
        if repeated is not None:
            return repeated, []
        ids = [turn_id for turn_id in given if turn_id is not None]
        known = {t.id: t for t in store.find(tenant, session, ids)} if ids else {}
        turns: list[Turn] = []
        new: list[Turn] = []
        for turn, turn_id, has_time in zip(batch, given, timed, strict=True):
            stored = known.get(turn_id) if turn_id is not None else None
            if stored is not None:
                if not same_message(stored, turn, timestamp=has_time):
                    raise InvalidInputError(
                        f"turn id {turn_id!r} is already in session {session!r}, "
                        "for another message"
                    )
                turns.append(stored)
                continue
            index = start + len(new)
            new.append(replace(turn, index=index, id=turn_id or f"t{index}"))
            turns.append(new[-1])
        if not new:
            return turns, []
        try:
            store.append(tenant, session, new)
        except InvalidInputError:
            if store.count(tenant, session) == start:
                raise  # the batch itself is refused
            continue  # another writer took the index first: look again
        return turns, new
    raise StoreError(
        f"could not append to session {session!r}: {MAX_CONFLICTS} appends in a row lost the "
        "race for the next index to other writers"
    )


def _repeated_tail(
    store: TranscriptStore, tenant: str, session: str, start: int, batch: Sequence[Turn],
    given: list[str | None], timed: list[bool],
) -> list[Turn] | None:  # fmt: skip
    """The session's last turns, if they are this batch already (a retried ``add``)."""
    if start < len(batch) or all(turn_id is not None for turn_id in given):
        return None  # with every id given, find() recognises stored messages
    tail = store.turns(tenant, session, start - len(batch), start)
    if len(tail) != len(batch):
        return None
    for stored, turn, turn_id, has_time in zip(tail, batch, given, timed, strict=True):
        if stored.id != (turn_id or f"t{stored.index}"):
            return None
        if not same_message(stored, turn, timestamp=has_time):
            return None
    return tail
