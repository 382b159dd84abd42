"""The error tree: every tokenlean error is also the built-in a caller would catch."""

from __future__ import annotations

import pytest

import tokenlean as tl


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (tl.ConfigurationError, ValueError),
        (tl.MissingDependencyError, ImportError),
        (tl.InvalidInputError, ValueError),
        (tl.InputDecodeError, ValueError),
        (tl.InputTooLargeError, ValueError),
        (tl.MalformedRequestError, ValueError),
        (tl.NotSerializableError, TypeError),
        (tl.TokenizerUnavailableError, RuntimeError),
        (tl.EmbeddingError, RuntimeError),
        (tl.BatchError, RuntimeError),
        (tl.BatchQueueFullError, RuntimeError),
        (tl.BatchClosedError, RuntimeError),
        (tl.StoreError, RuntimeError),
        (tl.CorruptedStoreError, RuntimeError),
        (tl.ForeignStoreError, RuntimeError),
    ],
)
def test_each_error_subclasses_tokenlean_error_and_its_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    """Each error can be caught as TokenleanError and as the matching built-in."""
    assert issubclass(error, tl.TokenleanError)
    assert issubclass(error, builtin)


def test_missing_dependency_error_names_the_extra_to_install() -> None:
    """The message of a missing optional dependency says which extra provides it."""
    error = tl.MissingDependencyError("faiss-cpu", "semantic", "The semantic cache")
    assert "pip install 'tokenlean[semantic]'" in str(error)
    assert error.extra == "semantic"
    assert error.name == "faiss-cpu"


def test_the_batcher_errors_share_the_batch_error_base() -> None:
    """A full queue and a closed batcher can be caught together as BatchError."""
    assert issubclass(tl.BatchQueueFullError, tl.BatchError)
    assert issubclass(tl.BatchClosedError, tl.BatchError)


def test_every_public_exception_is_in_the_one_error_tree() -> None:
    """Each exception tokenlean exports is defined in the error module, under TokenleanError."""
    exported = {
        name: obj
        for name in tl.__all__
        if isinstance(obj := getattr(tl, name), type) and issubclass(obj, BaseException)
    }
    assert exported
    for name, error in exported.items():
        assert error.__module__ == "tokenlean._errors", name
        assert issubclass(error, tl.TokenleanError), name
