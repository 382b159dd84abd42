"""What the semantic cache compares: the part of a request that varies between paraphrases.

A semantic lookup splits a request into a *fixed* part, which must match exactly (it joins the
partition key), and a *compared* part, which is embedded and matched by similarity. A splitter
is any callable ``(CacheRequest) -> (fixed, compared) | None`` (None: this request is matched
exactly or not at all); GPTCache calls the same idea ``pre_embedding_func``.

- :func:`last_user_turn`: the last user turn is compared; system messages, earlier turns,
  model, settings and tools are fixed.
- :class:`TemplateSplitter` (the default): like :func:`last_user_turn`, but learns the route's
  template scaffolding from its own requests and compares only the shortest variable slot of
  the last user turn (the question), keeping every other slot (retrieved context, chat
  history) in the fixed part. Three questions over one shared context then never match each
  other on the strength of the context.
- your own callable, for a route whose requests you know (``lambda r: (fixed, question)``).
"""

from __future__ import annotations

import difflib
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from tokenlean._canonical import canonical_json, fingerprint

if TYPE_CHECKING:
    from tokenlean._cache.request import CacheRequest

__all__ = ["Splitter", "TemplateSplitter", "last_user_turn"]

Splitter = Callable[["CacheRequest"], "tuple[str, str] | None"]
"""``(request) -> (fixed, compared)``, or None when the request has nothing to compare."""

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def last_user_turn(request: CacheRequest) -> tuple[str, str] | None:
    """Compare the last user turn; everything before it is fixed (see
    :meth:`CacheRequest.split_last_user_turn`)."""
    return request.split_last_user_turn(None)


class TemplateSplitter:
    """Learns a route's prompt template from its requests and compares only the question slot.

    The template is the list of text blocks (at least ``min_block_chars`` visible characters
    each) that every request of the route seen so far shares, in order: LangChain's
    ``Question: {question}\\nContext: {context}`` learns ``["Question: ", "\\nContext: "]``. A
    request that does not contain the blocks in order is matched exactly; once such requests are
    a majority of the last ``2 * learn_requests``, the splitter relearns (the template keeps only
    what they share, and its version changes, which retires earlier keys: misses, never wrong
    hits), so one odd request cannot reset a route. While it learns (the first
    ``learn_requests`` distinct requests) every request that does not fit teaches it at once.
    A plain chat route, whose questions share no scaffolding, learns an empty
    template and compares its whole last turn. The compared slot is the shortest non-empty
    variable slot; every other slot is part of the fixed key. Until ``learn_requests`` distinct
    requests have been seen, requests are matched exactly (the error-bounded policy serves no
    semantic hit that early anyway).

    Args:
        min_block_chars: least visible characters of a template block (shorter common runs,
            such as a shared "the", are treated as variable text).
        learn_requests: distinct requests seen before the template is used.
        context_messages: messages before the last user turn kept in the fixed part (None:
            all of them).

    Example:
        >>> from tokenlean import CacheRequest
        >>> splitter = TemplateSplitter(learn_requests=2)
        >>> ask = lambda q, c: CacheRequest.from_prompt(
        ...     f"Question: {q}\\nContext: {c}\\nAnswer:", model="m")
        >>> splitter(ask("Who won?", "Long report on the final match...")) is None
        True
        >>> splitter(ask("Where is it held?", "Another long article about a city...")) is None
        True
        >>> splitter(ask("When does it start?", "A third, unrelated page..."))[1]  # "?" is shared
        'When does it start'
    """

    def __init__(
        self,
        *,
        min_block_chars: int = 8,
        learn_requests: int = 4,
        context_messages: int | None = None,
    ) -> None:
        self.min_block_chars = min_block_chars
        self.learn_requests = learn_requests
        self.context_messages = context_messages
        self._seen: set[str] = set()
        self._recent: deque[tuple[bool, str]] = deque(maxlen=2 * learn_requests)
        self._lock = threading.Lock()
        self._blocks: list[str] | None = None
        self._version = ""

    @property
    def template(self) -> list[str] | None:
        """The learned blocks (None before the first request)."""
        with self._lock:
            return list(self._blocks) if self._blocks is not None else None

    def _slots(self, text: str) -> list[str] | None:
        """The variable slots of ``text`` under the current template, or None if it does not
        fit."""
        assert self._blocks is not None
        slots, position = [], 0
        for block in self._blocks:
            found = text.find(block, position)
            if found < 0:
                return None
            slots.append(text[position:found])
            position = found + len(block)
        slots.append(text[position:])
        return slots

    def _learn(self, text: str) -> None:
        assert self._blocks is not None
        old = _TOKEN.findall("\x00".join(self._blocks))
        new = _TOKEN.findall(text)
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        blocks = [
            part
            for match in matcher.get_matching_blocks()
            for part in "".join(old[match.a : match.a + match.size]).split("\x00")
            if len(re.sub(r"\s", "", part)) >= self.min_block_chars
        ]
        self._blocks = blocks
        self._version = fingerprint(*blocks)

    def __call__(self, request: CacheRequest) -> tuple[str, str] | None:
        split = request.split_last_user_turn(self.context_messages)
        if split is None:
            return None
        context, text = split
        with self._lock:
            learning = len(self._seen) < self.learn_requests
            if learning:
                self._seen.add(fingerprint(text))
            if self._blocks is None:
                self._blocks, self._version = [text], fingerprint(text)
                return None
            slots = self._slots(text)
            self._recent.append((slots is not None, text))
            misfits = [t for fits, t in self._recent if not fits]
            relearn = learning or len(misfits) > self.learn_requests  # a majority of the window
            if slots is None and relearn:
                for misfit in misfits if not learning else [text]:
                    self._learn(misfit)
                self._recent.clear()
                slots = self._slots(text)
            version = self._version
        if learning or slots is None:
            return None
        filled = [(len(s.strip()), i) for i, s in enumerate(slots) if s.strip()]
        if not filled:
            return None  # identical to the template: exact matching covers it
        _, chosen = min(filled)
        rest = [s if i != chosen else None for i, s in enumerate(slots)]
        fixed = canonical_json({"context": context, "template": version, "slots": rest})
        return fixed, slots[chosen].strip()
