"""``tokenlean bench tokens``: how fast tokenlean counts tokens, next to tiktoken itself.

Measured in one run, on one prompt, so the ratios hold on a noisy shared machine:

- ``tiktoken``: ``len(encoding.encode_ordinary(text))``, the floor;
- ``uncached``: tokenlean's counter on a text it has not seen (hashing + counting + storing);
- ``cached``: the same counter on a text it has seen (a hash and a lookup).

Every figure is the median of ``reps`` timed calls, in microseconds.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from tokenlean._tokens.counting import CachedTokenCounter, TiktokenCounter, get_token_counter

__all__ = ["run_token_bench", "token_bench"]

_SENTENCE = (
    "The customer asked whether the warranty covers a battery that no longer holds a charge, "
    "and the agent checked the purchase date before answering. "
)


def _prompt(target_tokens: int, count: Callable[[str], int]) -> str:
    text = ""
    while count(text) < target_tokens:
        text += _SENTENCE
    return text


def _median_us(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def token_bench(reps: int = 200, target_tokens: int = 2000) -> dict[str, object]:
    """Run the benchmark and return its figures."""
    counter = get_token_counter("gpt-4")
    assert isinstance(counter, CachedTokenCounter)
    inner = counter.inner
    if not isinstance(inner, TiktokenCounter):
        raise RuntimeError("no tiktoken encoding is available; nothing to compare against")
    encoding = inner.encoding
    text = _prompt(target_tokens, inner)
    fresh = CachedTokenCounter(inner, maxsize=reps + 8)
    variants = [f"{i:08d} {text}" for i in range(reps)]
    it = iter(variants)

    tiktoken_us = _median_us(lambda: len(encoding.encode_ordinary(text)), reps)
    uncached_us = _median_us(lambda: fresh(next(it)), reps)
    fresh(text)
    cached_us = _median_us(lambda: fresh(text), reps)
    return {
        "encoding": encoding.name,
        "prompt_tokens": inner(text),
        "prompt_chars": len(text),
        "reps": reps,
        "tiktoken_us_p50": round(tiktoken_us, 1),
        "uncached_us_p50": round(uncached_us, 1),
        "cached_us_p50": round(cached_us, 1),
        "uncached_vs_tiktoken": round(uncached_us / tiktoken_us, 3),
        "cached_speedup_vs_tiktoken": round(tiktoken_us / cached_us, 1),
    }


def run_token_bench(reps: int = 200, target_tokens: int = 2000, as_json: bool = False) -> None:
    """Print the token-counting benchmark."""
    result = token_bench(reps=reps, target_tokens=target_tokens)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"Counting a {result['prompt_tokens']}-token prompt ({result['encoding']}), "
        f"median of {reps} calls:\n"
        f"  tiktoken encode_ordinary : {result['tiktoken_us_p50']:>9} us\n"
        f"  tokenlean, unseen text   : {result['uncached_us_p50']:>9} us "
        f"({result['uncached_vs_tiktoken']}x tiktoken)\n"
        f"  tokenlean, seen text     : {result['cached_us_p50']:>9} us "
        f"({result['cached_speedup_vs_tiktoken']}x faster than tiktoken)"
    )
