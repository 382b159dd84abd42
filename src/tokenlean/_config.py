"""Configuration: frozen pydantic models and the ``TOKENLEAN_*`` environment settings."""

from __future__ import annotations

import os
import threading

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tokenlean._errors import ConfigurationError

__all__ = ["FrozenModel", "TokenleanSettings", "current_settings", "load_settings"]


class FrozenModel(BaseModel):
    """Base of tokenlean's configuration models: immutable, and unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenleanSettings(BaseSettings):
    """Process-wide defaults, read from ``TOKENLEAN_*`` environment variables.

    Every field can also be passed explicitly; explicit arguments to a component always win over
    these defaults.

    Example:
        >>> settings = TokenleanSettings(offline=True)
        >>> settings.offline
        True
    """

    # An empty variable (`TOKENLEAN_OFFLINE=` in a compose file) means unset, not invalid.
    model_config = SettingsConfigDict(
        env_prefix="TOKENLEAN_", frozen=True, extra="forbid", env_ignore_empty=True
    )

    encoding: str | None = Field(
        default=None,
        description="Force one tiktoken encoding (e.g. 'cl100k_base') instead of mapping from the "
        "model name.",
    )
    offline: bool = Field(
        default=False,
        description="Never try to download tiktoken encodings; use the bundled offline ones.",
    )
    token_cache_size: int = Field(
        default=4096,
        ge=0,
        description="Entries in the token-count LRU cache (0 disables it).",
    )
    embedding_model: str | None = Field(
        default=None,
        description="sentence-transformers model name or local path; default: the bundled "
        "all-MiniLM-L6-v2.",
    )
    embedding_device: str = Field(default="cpu", description="torch device for embeddings.")
    embedding_batch_size: int = Field(default=64, ge=1, le=4096)
    max_input_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        description="Largest input the CLI and request parser accept, in bytes.",
    )
    metrics_secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Key of the hashed tenant labels in metrics (HMAC-SHA256): give every process "
        "of a deployment the same value, so labels agree across processes and restarts. Unset: "
        "a random key per process.",
    )


def load_settings(**overrides: object) -> TokenleanSettings:
    """Read the settings from the environment, with explicit ``overrides`` on top.

    Raises:
        ConfigurationError: an environment variable or override has an invalid value.
    """
    try:
        return TokenleanSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(f"invalid tokenlean settings: {exc}") from exc


_cache: dict[tuple[tuple[str, str], ...], TokenleanSettings] = {}
_cache_lock = threading.Lock()


def current_settings() -> TokenleanSettings:
    """The settings for the current environment, parsed once per distinct ``TOKENLEAN_*`` set.

    Hot paths call this instead of :func:`load_settings`: parsing settings costs hundreds of
    microseconds, reading the environment a few.

    Raises:
        ConfigurationError: an environment variable has an invalid value.
    """
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("TOKENLEAN_")))
    with _cache_lock:
        cached = _cache.get(key)
    if cached is None:
        cached = load_settings()
        with _cache_lock:
            _cache[key] = cached
    return cached
