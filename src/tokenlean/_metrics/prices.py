"""Model prices: a dated table (input, output, cached-read and cache-write per million tokens).

Providers change prices; the figures here are the public list prices as of
:data:`PRICE_TABLE_AS_OF`, in US dollars per million tokens. Override or extend them from a JSON
file (``PriceTable.from_file``) with your negotiated prices. Costs are computed from
provider-reported usage when the response carries it, and from tokenlean's counts otherwise;
each :class:`Cost` says which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from tokenlean._errors import ConfigurationError

__all__ = ["PRICE_TABLE_AS_OF", "Cost", "ModelPrice", "PriceTable"]

PRICE_TABLE_AS_OF = date(2026, 4, 16)


@dataclass(frozen=True)
class ModelPrice:
    """Prices of one model family, USD per million tokens (longest ``model_prefix`` wins)."""

    model_prefix: str
    input: float
    output: float
    cached_read: float
    cache_write: float


@dataclass(frozen=True)
class Cost:
    """A cost in USD and where its token counts came from."""

    usd: float
    source: Literal["provider", "estimate"]
    model: str
    priced: bool = True


_DEFAULT = (
    ModelPrice("gpt-5-nano", 0.05, 0.40, 0.005, 0.05),
    ModelPrice("gpt-5-mini", 0.25, 2.00, 0.025, 0.25),
    ModelPrice("gpt-5", 1.25, 10.00, 0.125, 1.25),
    ModelPrice("gpt-4.1-nano", 0.10, 0.40, 0.025, 0.10),
    ModelPrice("gpt-4.1-mini", 0.40, 1.60, 0.10, 0.40),
    ModelPrice("gpt-4.1", 2.00, 8.00, 0.50, 2.00),
    ModelPrice("gpt-4o-mini", 0.15, 0.60, 0.075, 0.15),
    ModelPrice("gpt-4o", 2.50, 10.00, 1.25, 2.50),
    ModelPrice("claude-opus-4", 15.00, 75.00, 1.50, 18.75),
    ModelPrice("claude-sonnet-4", 3.00, 15.00, 0.30, 3.75),
    ModelPrice("claude-haiku-4-5", 1.00, 5.00, 0.10, 1.25),
    ModelPrice("claude-3-5-haiku", 0.80, 4.00, 0.08, 1.00),
)


class PriceTable:
    """Looks up prices and computes costs.

    Example:
        >>> table = PriceTable.default()
        >>> table.cost("gpt-4o-mini", input_tokens=1_000_000, output_tokens=0).usd
        0.15
    """

    def __init__(self, prices: tuple[ModelPrice, ...] | list[ModelPrice]) -> None:
        self.prices = tuple(prices)

    @classmethod
    def default(cls) -> PriceTable:
        return cls(_DEFAULT)

    @classmethod
    def from_file(cls, path: str | Path, *, extend_default: bool = True) -> PriceTable:
        """Prices from a JSON file: ``{"model-prefix": {"input": …, "output": …,
        "cached_read": …, "cache_write": …}}`` (USD per million tokens).

        Raises:
            ConfigurationError: a missing file or a malformed entry.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            custom = [
                ModelPrice(
                    prefix,
                    float(p["input"]),
                    float(p["output"]),
                    float(p.get("cached_read", p["input"])),
                    float(p.get("cache_write", p["input"])),
                )
                for prefix, p in data.items()
            ]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(f"invalid price file {path}: {exc}") from exc
        return cls([*custom, *(_DEFAULT if extend_default else ())])

    def price(self, model: str) -> ModelPrice | None:
        name = model.split("/")[-1].lower()
        matches = [p for p in self.prices if name.startswith(p.model_prefix)]
        return max(matches, key=lambda p: len(p.model_prefix)) if matches else None

    def cost(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
        source: Literal["provider", "estimate"] = "provider",
    ) -> Cost:
        """The cost of one call; ``cached_tokens`` are part of ``input_tokens`` billed at the
        cached-read price. An unknown model costs 0 with ``priced=False``."""
        price = self.price(model)
        if price is None:
            return Cost(0.0, source, model, priced=False)
        uncached = max(input_tokens - cached_tokens - cache_write_tokens, 0)
        usd = (
            uncached * price.input
            + cached_tokens * price.cached_read
            + cache_write_tokens * price.cache_write
            + output_tokens * price.output
        ) / 1e6
        return Cost(round(usd, 10), source, model)
