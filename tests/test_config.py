"""Settings: frozen, strict, read from TOKENLEAN_* environment variables."""

from __future__ import annotations

import pydantic
import pytest

from tokenlean import ConfigurationError, TokenleanSettings, load_settings


def test_settings_read_tokenlean_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOKENLEAN_* variables set the matching fields."""
    monkeypatch.setenv("TOKENLEAN_OFFLINE", "1")
    monkeypatch.setenv("TOKENLEAN_TOKEN_CACHE_SIZE", "17")
    monkeypatch.setenv("TOKENLEAN_ENCODING", "cl100k_base")
    settings = load_settings()
    assert settings.offline is True
    assert settings.token_cache_size == 17
    assert settings.encoding == "cl100k_base"


def test_explicit_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit argument beats the environment variable."""
    monkeypatch.setenv("TOKENLEAN_TOKEN_CACHE_SIZE", "17")
    assert load_settings(token_cache_size=3).token_cache_size == 3


def test_invalid_environment_value_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A malformed variable raises ConfigurationError naming the field."""
    monkeypatch.setenv("TOKENLEAN_TOKEN_CACHE_SIZE", "-5")
    with pytest.raises(ConfigurationError, match="token_cache_size"):
        load_settings()


def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """`TOKENLEAN_OFFLINE=` (as compose files write it) is the default, not an error."""
    monkeypatch.setenv("TOKENLEAN_OFFLINE", "")
    monkeypatch.setenv("TOKENLEAN_TOKEN_CACHE_SIZE", "")
    settings = load_settings()
    assert settings.offline is False
    assert settings.token_cache_size == TokenleanSettings().token_cache_size


def test_unknown_override_is_rejected() -> None:
    """Settings forbid fields they do not define."""
    with pytest.raises(ConfigurationError):
        load_settings(no_such_setting=True)


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after creation."""
    settings = TokenleanSettings()
    with pytest.raises(pydantic.ValidationError):
        settings.offline = True  # type: ignore[misc]


def test_current_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached settings are re-read when a TOKENLEAN_* variable changes."""
    from tokenlean._config import current_settings

    assert current_settings().offline is False
    monkeypatch.setenv("TOKENLEAN_OFFLINE", "true")
    assert current_settings().offline is True
    assert current_settings() is current_settings()
