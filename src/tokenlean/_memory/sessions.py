"""What :class:`~tokenlean.ConversationMemory` keeps in process for each session, bounded.

Per session: the locks that order its writes in this process, the retrieval index of its turns
(the bulk of it: tens of kilobytes), the bookkeeping that lets a summary update count only new
turns, and the last failure of each step that runs after a turn is stored. All of it can be
rebuilt from the transcript store, so :class:`SessionStates` keeps at most ``max_sessions`` of
them and drops the least recently used; a dropped session is rebuilt lazily on its next use
(its index from the turn vectors the store keeps, embedding only turns it has none for; its
counts by one read of its unsummarized turns).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import islice

from tokenlean._retrieval.hybrid_index import HybridIndex

__all__ = ["SessionState", "SessionStates"]


@dataclass
class SessionState:
    """One session's in-process state.

    Attributes:
        lock: orders this process's writes to the session (its turns and slots).
        summary_lock: one summary update of the session at a time.
        index_lock: guards the retrieval index (a slow write does not hold up a context).
        index: the retrieval index of the session's turns (None until a context needs it).
        indexed: how many turns the index has seen.
        replied_to: the text of the last turn indexed, which the next one replies to.
        counted_from: the summary's ``covered`` when ``pending_tokens`` was counted
            (-1: nothing counted yet).
        counted_to: turns below this index are in ``pending_tokens``.
        pending_tokens: tokens of the older turns not summarized yet.
        retry_tokens: after a failed update, the pending tokens the next try waits for.
        summary_error, slot_error, index_error: the last failure of each step, None once the
            step succeeds again.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    summary_lock: threading.Lock = field(default_factory=threading.Lock)
    index_lock: threading.Lock = field(default_factory=threading.Lock)
    index: HybridIndex | None = None
    indexed: int = 0
    replied_to: str | None = None
    counted_from: int = -1
    counted_to: int = 0
    pending_tokens: int = 0
    retry_tokens: int = 0
    summary_error: str | None = None
    slot_error: str | None = None
    index_error: str | None = None

    def busy(self) -> bool:
        """Whether a call is using the state now (it is then not evicted)."""
        return any(lock.locked() for lock in (self.lock, self.summary_lock, self.index_lock))

    def errors(self) -> dict[str, str]:
        """The recorded failures, by name (empty when every step last succeeded)."""
        named = {"summary_error": self.summary_error, "slot_error": self.slot_error,
                 "index_error": self.index_error}  # fmt: skip
        return {name: error for name, error in named.items() if error is not None}


class SessionStates:
    """A least-recently-used map of ``(tenant, session)`` to :class:`SessionState`, holding at
    most ``max_sessions`` of them (sessions busy in another thread are skipped when evicting,
    so the cap can be passed briefly). Thread-safe.

    Example:
        >>> states = SessionStates(max_sessions=2)
        >>> a = states.get(("acme", "a"))
        >>> _ = states.get(("acme", "b")), states.get(("acme", "a")), states.get(("acme", "c"))
        >>> states.keys()  # "b" was the least recently used
        [('acme', 'a'), ('acme', 'c')]
        >>> states.get(("acme", "a")) is a
        True
        >>> states.release("acme", "a"), states.keys()
        (1, [('acme', 'c')])
    """

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._states: OrderedDict[tuple[str, str], SessionState] = OrderedDict()

    def get(self, key: tuple[str, str]) -> SessionState:
        """The session's state, made fresh if it is not held; it becomes the most recent."""
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
                return state
            state = self._states[key] = SessionState()
            excess = len(self._states) - self.max_sessions
            if excess > 0:
                idle = (k for k, s in self._states.items() if k != key and not s.busy())
                for old in list(islice(idle, excess)):
                    del self._states[old]
            return state

    def peek(self, key: tuple[str, str]) -> SessionState | None:
        """The session's state if it is held (its recency unchanged), else None."""
        with self._lock:
            return self._states.get(key)

    def release(self, tenant: str, session: str) -> int:
        """Drop the state of ``session`` and of its segments (``session#1``…); return how many
        states were dropped."""
        with self._lock:
            keys = [
                key
                for key in self._states
                if key[0] == tenant and (key[1] == session or _is_segment_of(key[1], session))
            ]
            for key in keys:
                del self._states[key]
            return len(keys)

    def keys(self) -> list[tuple[str, str]]:
        """The sessions held, least recently used first."""
        with self._lock:
            return list(self._states)


def _is_segment_of(name: str, session: str) -> bool:
    prefix, _, number = name.rpartition("#")
    return prefix == session and number.isdigit()
