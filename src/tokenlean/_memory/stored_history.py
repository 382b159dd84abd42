"""A session's transcript as a lazy sequence for assembly: only the turns a pack may hold are
read from the store (the end of the conversation in blocks, retrieved turns by id, a few turns
around them), so a context costs the same at turn 100 and at turn 10,000."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

from tokenlean._memory.transcript import TranscriptStore, Turn

__all__ = ["StoredHistory", "SystemTurns"]


@dataclass
class SystemTurns:
    """A session's system and developer turns among its first ``scanned`` turns."""

    scanned: int = 0
    turns: list[Turn] = field(default_factory=list)


class StoredHistory(Sequence[Turn]):
    """A session's turns below ``end`` other than its system turns, oldest first, read from the
    store only where they are asked for: assembly walks back from the end (read in blocks) and
    looks at the retrieved turns (read by id, :meth:`prefetch`) and their neighbours (read in
    small ranges)."""

    _BLOCK = 64  # turns read at once while walking back from the end
    _AROUND = 2  # turns read on either side of a turn asked for elsewhere

    def __init__(
        self, store: TranscriptStore, tenant: str, session: str, end: int,
        system: Sequence[Turn], read: dict[int, Turn] | None = None,
    ) -> None:  # fmt: skip
        self._store, self._tenant, self._session, self._end = store, tenant, session, end
        self._system = sorted(t.index for t in system if t.index < end)
        self._system_set = frozenset(self._system)
        self._system_turns = system
        self._read: dict[int, Turn] = {} if read is None else read
        self._tail = end  # the oldest turn read by walking back from the end

    def before(self, end: int) -> StoredHistory:
        """The same history, cut at transcript index ``end`` (sharing what was read)."""
        return StoredHistory(self._store, self._tenant, self._session, end,
                              self._system_turns, self._read)  # fmt: skip

    def prefetch(self, ids: Sequence[str]) -> None:
        """Read the turns with these ids in one call."""
        for turn in self._store.find(self._tenant, self._session, ids):
            self._read.setdefault(turn.index, turn)

    def __len__(self) -> int:
        return self._end - len(self._system)

    def position_of(self, index: int) -> int:
        """The position in this history of the turn at transcript ``index``."""
        return index - bisect_left(self._system, index)

    def _index_at(self, position: int) -> int:
        index = position
        for system in self._system:
            if system > index:
                break
            index += 1
        return index

    @overload
    def __getitem__(self, position: int) -> Turn: ...
    @overload
    def __getitem__(self, position: slice) -> list[Turn]: ...
    def __getitem__(self, position: int | slice) -> Turn | list[Turn]:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(position)
        index = self._index_at(position)
        turn = self._read.get(index)
        if turn is None:
            above = index + 1  # the next turn of this history (system turns are skipped)
            while above < self._tail and above in self._system_set:
                above += 1
            if above == self._tail:  # walking back from the end
                start, end = max(0, index + 1 - self._BLOCK), index + 1
                self._tail = start
            else:  # a neighbour of a retrieved turn
                start, end = max(0, index - self._AROUND), index + self._AROUND + 1
            for read in self._store.turns(self._tenant, self._session, start, end):
                self._read.setdefault(read.index, read)
            turn = self._read[index]
        return turn
