"""Calibration is evidence the route's own traffic can overrule: calibration pairs are chosen by
whoever labelled them, the candidates the route serves are each query's nearest entry, so a
region certified with calibration rows holds only while the route's own rows inside it agree."""

from __future__ import annotations

import io

import numpy as np
import pytest

import tokenlean as tl
from tests.cache.test_error_bounded import features, state
from tokenlean.testing import HashingEmbedder


def _calibrated(rows: int = 300) -> tl.AcceptanceState:
    """Easy calibration: right above cosine 0.85, wrong below 0.80."""
    learner = state(monitor_rate=0.0)
    for i in range(rows):
        learner.add(features(0.85 + 0.15 * i / rows), True, prior=True)
        learner.add(features(0.50 + 0.30 * i / rows), False, prior=True)
    learner.refit()
    return learner


def test_calibration_rows_open_a_region_and_are_counted_as_such() -> None:
    learner = _calibrated()
    snapshot = learner.snapshot()
    assert snapshot.serving
    assert snapshot.cut is not None
    assert snapshot.cut < 0.86
    assert snapshot.calibration_evidence == 600
    assert snapshot.calibration_overruled is False


def test_traffic_wrong_inside_the_calibrated_region_overrules_the_calibration() -> None:
    """The nearest-entry candidates err where calibration said they would not: two wrong of
    five served-like rows (P < 5% at a 5% error rate) set the calibration aside at once."""
    learner = _calibrated()
    for cosine, right in [(0.90, True), (0.91, False), (0.88, True), (0.89, True), (0.92, False)]:
        learner.add(features(cosine), right, entry=None)
    snapshot = learner.snapshot()
    assert snapshot.calibration_overruled is True
    # Drawn from five traffic rows alone, no region passes: the route is back to cold start.
    assert snapshot.serving is False
    assert learner.decide(features(0.95))[0] == "miss"


def test_traffic_that_agrees_with_the_calibration_keeps_it() -> None:
    learner = _calibrated()
    for i in range(40):
        learner.add(features(0.86 + 0.003 * i), i != 7)  # one wrong in 40: not above 5%
    learner.refit()
    snapshot = learner.snapshot()
    assert snapshot.calibration_overruled is False
    assert snapshot.serving
    assert learner.decide(features(0.99))[0] in ("serve", "explore")


def test_traffic_errors_outside_the_region_do_not_overrule_it() -> None:
    """Wrong rows below the cut (the misses the route judged) say nothing about served hits."""
    learner = _calibrated()
    for i in range(30):
        learner.add(features(0.60 + 0.005 * i), False)
    learner.refit()
    assert learner.snapshot().calibration_overruled is False
    assert learner.snapshot().serving


def test_the_calibration_flag_persists_and_older_evidence_reads_as_traffic() -> None:
    learner = _calibrated(100)
    learner.add(features(0.95), True)
    learner.refit()
    copy = state()
    assert copy.load_bytes(learner.to_bytes())
    assert copy.snapshot() == learner.snapshot()
    assert copy.snapshot().calibration_evidence == 200
    # Evidence saved before the flag existed (no "prior" array) is all traffic.
    with np.load(io.BytesIO(learner.to_bytes())) as saved:
        arrays = {name: saved[name] for name in saved.files if name != "prior"}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    older = state()
    assert older.load_bytes(buffer.getvalue())
    assert older.snapshot().calibration_evidence == 0
    assert older.snapshot().evidence == 201


def test_calibrate_marks_its_rows() -> None:
    """CompletionCache.calibrate adds calibration rows; the cache's own judgements do not."""
    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
        judge=tl.equal_answers,
        background_judging=False,
    )
    added = cache.calibrate(
        [(f"status of order {i}", f"status of my order {i}", True) for i in range(30)]
    )
    acceptance = cache.acceptance()
    assert acceptance["calibration_evidence"] == added
    assert acceptance["calibration_evidence"] > 0
    assert acceptance["calibration_overruled"] is False


@pytest.mark.parametrize(
    "example",
    [
        ("a", "b"),
        ("a", "b", True, "extra"),
        ("a", "b", "0"),
        ("a", "b", "no"),
        ("a", "b", None),
        ("a", "b", 2),
        ("a", "b", 0.5),
        (None, "b", True),
        ("a", b"b", True),
        "abc",
    ],
)
def test_a_malformed_calibration_example_is_refused_and_nothing_is_added(example: object) -> None:
    """A label that is not a bool or 1/0 (a string "0" is true in Python) or an example of
    the wrong shape is an InvalidInputError naming it; the rows before it are not added."""
    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
        judge=tl.equal_answers,
        background_judging=False,
    )
    good = ("status of order 1", "status of my order 1", True)
    with pytest.raises(tl.InvalidInputError, match="calibration example 1"):
        cache.calibrate([good, example])  # type: ignore[list-item]
    assert cache.acceptance()["evidence"] == 0
    assert cache.calibrate([good, ("status of order 2", "status of my order 2", 1)]) == 2
