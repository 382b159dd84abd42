"""A calibrated semantic route on traffic unlike its calibration pairs (issue 17's review, a user's
replica app built from the docs): the served error against the budget.

The workload is generated, not a data set: 40 plans (10 colours x 10 tiers, drawn from 100) asked
in 4 phrasings; the answer is the plan's price, so "the red basic plan" and "the blue basic plan"
(one word apart, cosine about 0.95) have different answers. Three routes, each over the same
``--steps`` requests (a lookup; on a miss or an exploration the model answers and the answer is
stored and judged, as deployed):

- ``cold``: no calibration;
- ``calibrated_random``: calibrated first with 600 labelled pairs drawn from the same generator
  (half same plan, half two random plans: the negatives are easy, unlike each query's nearest
  stored plan, which differs by one word);
- ``calibrated_nearest``: calibrated with 600 pairs shaped like the candidates the route serves
  (same plan in another phrasing, or the same phrasing with one word changed).

Usage: ``HF_HUB_OFFLINE=1 .venv/bin/python scripts/calibration_mismatch.py [--steps N] [--json]``
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

import tokenlean as tl

TIERS = ["basic", "premium", "family", "student", "business", "travel", "senior", "kids", "pro",
         "team"]  # fmt: skip
COLOURS = ["red", "blue", "green", "black", "white", "pink", "grey", "gold", "cyan", "teal"]
PHRASINGS = [
    "what is the price of the {c} {p} plan per month",
    "how much does the {c} {p} plan cost each month",
    "monthly price for the {c} {p} plan",
    "tell me the cost of the {c} {p} plan per month please",
]


def _ask(text: str) -> tl.CacheRequest:
    return tl.CacheRequest(model="gpt-4o-mini", messages=({"role": "user", "content": text},))


def _random_pairs(rng: random.Random, n: int) -> list[tuple[str, str, bool]]:
    pairs = []
    for _ in range(n):
        c1, p1, t1 = rng.choice(COLOURS), rng.choice(TIERS), rng.choice(PHRASINGS)
        c2, p2, t2 = rng.choice(COLOURS), rng.choice(TIERS), rng.choice(PHRASINGS)
        if rng.random() < 0.5:
            c2, p2 = c1, p1
        pairs.append((t1.format(c=c1, p=p1), t2.format(c=c2, p=p2), (c1, p1) == (c2, p2)))
    return pairs


def _nearest_pairs(rng: random.Random, n: int) -> list[tuple[str, str, bool]]:
    pairs = []
    for _ in range(n):
        c, p, t = rng.choice(COLOURS), rng.choice(TIERS), rng.choice(PHRASINGS)
        if rng.random() < 0.5:  # the same plan, asked another way
            other = rng.choice([x for x in PHRASINGS if x != t])
            pairs.append((t.format(c=c, p=p), other.format(c=c, p=p), True))
        elif rng.random() < 0.5:  # the same words, another colour
            colour = rng.choice([x for x in COLOURS if x != c])
            pairs.append((t.format(c=c, p=p), t.format(c=colour, p=p), False))
        else:  # the same words, another tier
            tier = rng.choice([x for x in TIERS if x != p])
            pairs.append((t.format(c=c, p=p), t.format(c=c, p=tier), False))
    return pairs


def run(mode: str, steps: int, embedder: tl.Embedder, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    cache = tl.CompletionCache(
        routes={"faq": tl.CachePolicy.semantic(compare=tl.last_user_turn)},
        embedder=embedder, judge=tl.equal_answers, background_judging=False, seed=1,
    )  # fmt: skip
    if mode == "calibrated_random":
        cache.calibrate(_random_pairs(random.Random(seed + 1), 600), route="faq")
    elif mode == "calibrated_nearest":
        cache.calibrate(_nearest_pairs(random.Random(seed + 1), 600), route="faq")
    served = wrong = calls = 0
    first_half_wrong = first_half_served = 0
    for step in range(steps):
        c, p, t = rng.choice(COLOURS), rng.choice(TIERS), rng.choice(PHRASINGS)
        text, truth = t.format(c=c, p=p), f"{c}-{p}"
        result = cache.lookup(_ask(text), route="faq")
        if result.hit and result.layer == "semantic":
            served += 1
            wrong += result.value != truth
            if step < steps // 2:
                first_half_served += 1
                first_half_wrong += result.value != truth
        elif not result.hit:
            calls += 1
            cache.store(_ask(text), truth, route="faq")
    acceptance = cache.acceptance("faq")
    cache.close()
    return {
        "mode": mode,
        "requests": steps,
        "semantic_hits": served,
        "wrong": wrong,
        "error_rate": round(wrong / served, 4) if served else 0.0,
        "error_rate_first_half": round(first_half_wrong / first_half_served, 4)
        if first_half_served
        else 0.0,
        "model_calls": calls,
        "calibration_overruled": acceptance["calibration_overruled"],
        "cut": acceptance["cut"],
        "max_error_rate": cache.policy_for("faq").max_error_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    embedder = tl.default_embedder()
    rows = [run(mode, args.steps, embedder)
            for mode in ("cold", "calibrated_random", "calibrated_nearest")]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for row in rows:
        print(f"{row['mode']:<20} hits {row['semantic_hits']:>5}  wrong {row['wrong']:>4}  "
              f"error {row['error_rate']:.3f} (first half {row['error_rate_first_half']:.3f}, "
              f"budget {row['max_error_rate']})  model calls {row['model_calls']:>5}  "
              f"calibration overruled {row['calibration_overruled']}")  # fmt: skip


if __name__ == "__main__":
    main()
