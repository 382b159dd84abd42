"""The error-bounded acceptance rule of the semantic cache: serve a candidate only where the
route's own evidence says the error rate of served hits is within its budget.

A semantic route declares ``max_error_rate`` (the share of served semantic hits that may be
wrong). Every time the cache learns whether a candidate would have been right (a miss whose
fresh answer the judge compares with the nearest entry's, an exploration, a user's feedback, an
offline calibration), it records one *evidence* row: the candidate's pair features (cosine
similarity and the verifier's text features, never text) and whether it was right.

**The region.** Rows are ranked by a score and the route serves ``score >= cut``. From the most
similar rows down, the region grows while the one-sided Clopper-Pearson upper confidence bound of
its error rate stays within the budget, and stops at the first row where it does not
(fixed-sequence testing, as in Learn-then-Test: it never jumps over a stretch of errors to a
larger region that happens to pass again). The score is cosine similarity, or a logistic model
of "the candidate is right" over all pair features (scikit-learn, standardized, default L2)
when that certifies a larger region. The model is fitted on the rows where the decision lies
(cosine at or above the median cosine of the rows judged right) and its region is chosen on
out-of-fold scores (two folds), so no row is scored by a model that saw it. The model serves only
inside the range of the rows its region holds (:meth:`AcceptanceState._supported`): it does not
extrapolate past its evidence. With too little
evidence no region passes and the route serves exact hits only: cold start is safe.

**Exploration.** Inside the region, a share of would-be hits is still sent to the model and
judged (shadow verification): all of them until the region holds the ``m`` rows the bound needs
(``m = ln(1 / (1 - confidence)) / max_error_rate``, 60 for 5% at 95%), then ``(m / n)^2`` for
``n`` rows, never less than ``monitor_rate``, so drift keeps being noticed. Every constant comes
from the policy or from these statistics, not from a data set.

**Calibration.** Rows from :meth:`~tokenlean.CompletionCache.calibrate` are marked: the route's
own rows inside a region they helped certify can overrule them (:meth:`AcceptanceState._learn`),
because calibration pairs are chosen by whoever labelled them and the candidates served are each
query's nearest entry.

**Per entry.** Once an entry was judged wrong for a query at cosine ``s``, it is never served
again at a cosine of ``s`` or less (a per-entry floor, in the spirit of vCache's per-prompt
thresholds).
"""

from __future__ import annotations

import io
import logging
import math
import random
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tokenlean._errors import MissingDependencyError

__all__ = ["AcceptanceSnapshot", "AcceptanceState", "Decision"]

logger = logging.getLogger("tokenlean.cache")

Decision = Literal["serve", "explore", "miss"]
_Rule = tuple[Any, "float | None", "float | None", "float | None", float, Any]
_FORMAT = 1


def _load_learning() -> tuple[Any, Any, Any]:
    """scikit-learn's logistic regression and scaler, and SciPy's beta distribution."""
    try:
        from scipy.stats import beta
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        raise MissingDependencyError(
            "scikit-learn", "semantic", "The error-bounded semantic cache"
        ) from exc
    return LogisticRegression, StandardScaler, beta


@dataclass(frozen=True)
class AcceptanceSnapshot:
    """What a route has learned, for stats and metrics.

    Attributes:
        evidence: rows of evidence held (after the window).
        evidence_wrong: rows judged wrong.
        fitted: True when the region is drawn on the logistic model's score (``cut`` is then
            that score, which ranks candidates but is not a calibrated probability); False when
            on cosine (``cut`` is a cosine).
        serving: True once some region passes the bound (before that: exact hits only).
        cut: the least model score served (None: nothing served).
        error_estimate: error rate of the evidence inside the region.
        error_upper_bound: its upper confidence bound (at most ``max_error_rate`` when serving).
        region_evidence: effective number of evidence rows inside the region.
        explore_probability: share of would-be hits sent to the model to be judged.
        entry_floors: entries with a per-entry floor.
        calibration_evidence: rows of ``evidence`` that came from calibration.
        calibration_overruled: True when the route's own rows inside the calibrated region
            showed an error rate above the budget, so the rule is drawn without the
            calibration rows (:meth:`AcceptanceState._learn`).
    """

    evidence: int
    evidence_wrong: int
    fitted: bool
    serving: bool
    cut: float | None
    error_estimate: float | None
    error_upper_bound: float | None
    region_evidence: float
    explore_probability: float
    entry_floors: int
    calibration_evidence: int = 0
    calibration_overruled: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def clopper_pearson_upper(
    wrong: npt.NDArray[np.float64], n: npt.NDArray[np.float64], confidence: float
) -> npt.NDArray[np.float64]:
    """One-sided upper confidence bounds of error rates from (possibly fractional) counts."""
    _, _, beta = _load_learning()
    wrong = np.clip(wrong, 0.0, n)
    out = np.ones_like(n, dtype=np.float64)
    ok = (n - wrong) > 0
    out[ok] = beta.ppf(confidence, wrong[ok] + 1.0, n[ok] - wrong[ok])
    return np.nan_to_num(out, nan=1.0)


def exceeds(wrong: int, n: int, rate: float, confidence: float) -> bool:
    """Whether ``wrong`` errors in ``n`` rows show, at ``confidence``, an error rate above
    ``rate``: the one-sided binomial test, ``P(X >= wrong | n, rate) < 1 - confidence`` (its
    tail computed through the beta distribution, as Clopper-Pearson's bound is)."""
    if wrong <= 0 or n <= 0:
        return False
    _, _, beta = _load_learning()
    tail = float(beta.cdf(rate, wrong, n - wrong + 1))  # P(X >= wrong) for X ~ Binomial(n, rate)
    return tail < 1.0 - confidence


class AcceptanceState:
    """Evidence and the acceptance rule of one semantic route. Thread-safe.

    Args:
        max_error_rate: the budget: most share of served semantic hits that may be wrong.
        confidence: confidence level of the upper bound.
        monitor_rate: least share of would-be hits still verified once the route is sure.
        window: most evidence rows kept (the oldest go first, so the rule follows drift).
        seed: seed of the exploration draws (None: random).

    Example:
        >>> state = AcceptanceState(max_error_rate=0.05)
        >>> state.decide(np.array([0.99, 0, 0, 0, 1, 1, 1], dtype=np.float32))[0]
        'miss'
    """

    def __init__(
        self,
        *,
        max_error_rate: float,
        confidence: float = 0.95,
        monitor_rate: float = 0.02,
        window: int = 8192,
        seed: int | None = None,
    ) -> None:
        self.max_error_rate = max_error_rate
        self.confidence = confidence
        self.monitor_rate = monitor_rate
        self.window = window
        self.needed = math.log(1.0 / (1.0 - confidence)) / max_error_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._fit_lock = threading.Lock()
        self._x: list[npt.NDArray[np.float32]] = []
        self._y: list[bool] = []
        self._prior: list[bool] = []  # the row came from calibration, not from traffic
        self._contradicted = False
        self._floors: OrderedDict[str, float] = OrderedDict()
        self._wrong = 0
        self._model: Any = None
        self._cut: float | None = None
        self._estimate: float | None = None
        self._bound: float | None = None
        self._region = 0.0
        self._region_prior = 0  # calibration rows in the region
        self._support: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None
        self._since_fit = 0
        self.unsaved = 0  # rows added since the state was last persisted

    # ------------------------------------------------------------------ scoring

    def _score(self, x: npt.NDArray[np.float32]) -> float:
        if self._model is None:
            return float(x[0])  # cosine alone ranks until the model can be fitted
        mean, scale, coef, intercept = self._model
        z = float(np.dot((x - mean) / scale, coef) + intercept)
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0

    @property
    def explore_probability(self) -> float:
        """``max(monitor_rate, min(1, (m / n)^2))`` for ``n`` effective rows in the region: all
        would-be hits are checked until the region holds the ``m`` rows the bound needs, then
        fewer with the square of the surplus, so exploration costs about ``m`` model calls in
        all (plus ``monitor_rate``)."""
        if self._region <= self.needed:
            return 1.0
        return max(self.monitor_rate, (self.needed / self._region) ** 2)

    def decide(
        self, x: npt.NDArray[np.float32], entry: str | None = None
    ) -> tuple[Decision, float, float]:
        """``(decision, score, exploration probability)`` for a candidate with features ``x``.

        ``serve``: answer from the cache. ``explore``: the candidate is inside the region but
        is sent to the model to be judged. ``miss``: outside the region (or below the entry's
        """
        with self._lock:
            score = self._score(x)
            floor = self._floors.get(entry) if entry is not None else None
            if (
                self._cut is None
                or score < self._cut
                or (floor is not None and x[0] <= floor)
                or not self._supported(x)
            ):
                return "miss", score, 1.0
            probability = self.explore_probability
            if self._rng.random() < probability:
                return "explore", score, probability
            return "serve", score, probability

    # ------------------------------------------------------------------ evidence

    def add(
        self,
        x: npt.NDArray[np.float32],
        correct: bool,
        *,
        entry: str | None = None,
        prior: bool = False,
    ) -> None:
        """Record one judged candidate (``entry``: the candidate entry's key, for its floor;
        ``prior``: a calibration row, which traffic can overrule, see :meth:`_learn`).

        The rule is refitted as evidence accumulates (after 16 rows, then every tenth of the
        evidence), outside the lock, so lookups never wait for a fit.
        """
        with self._lock:
            self._x.append(np.asarray(x, dtype=np.float32))
            self._y.append(bool(correct))
            self._prior.append(bool(prior))
            self._wrong += not correct
            if len(self._y) > self.window:
                self._wrong -= not self._y[0]
                del self._x[0], self._y[0], self._prior[0]
            if not correct and entry is not None:
                self._floors[entry] = max(float(x[0]), self._floors.get(entry, -1.0))
                self._floors.move_to_end(entry)
                if len(self._floors) > self.window:
                    self._floors.popitem(last=False)
            self._since_fit += 1
            self.unsaved += 1
            due = self._since_fit >= max(16, len(self._y) // 10)
            if not correct and not prior and self._cut is not None and self._region_prior:
                # A wrong row where calibration helped certify the region may overrule the
                # calibration (:meth:`_learn`): test it now, not after a tenth more evidence.
                due = due or (self._score(x) >= self._cut and self._supported(x))
        if due:
            self.refit()

    def refit(self) -> None:
        """Refit the model and the region now (otherwise done as evidence accumulates)."""
        with self._fit_lock:
            with self._lock:
                self._since_fit = 0
                x = np.stack(self._x) if self._x else np.zeros((0, 1), dtype=np.float32)
                y = np.array(self._y, dtype=bool)
                prior = np.array(self._prior, dtype=bool)
            rule, contradicted = self._learn(x, y, prior)
            region_prior = 0
            if not contradicted and rule[1] is not None and prior.any():
                region_prior = int((self._inside(rule, x) & prior).sum())
            with self._lock:
                (self._model, self._cut, self._estimate, self._bound, self._region,
                 self._support) = rule  # fmt: skip
                self._contradicted = contradicted
                self._region_prior = region_prior

    def _supported(self, x: npt.NDArray[np.float32]) -> bool:
        """Whether the model's region has evidence where ``x`` lies: a cosine no lower, and
        every other feature within the range, of the rows the bound was computed on. Past
        them the model extrapolates (a feature constant in the evidence, such as named
        entities that always matched, carries no weight in it), and the bound says nothing.
        The cosine rule needs no such check: it assumes only that error falls with cosine."""
        if self._support is None:
            return True
        low, high = self._support
        return bool(x[0] >= low[0] and np.all(x[1:] >= low[1:]) and np.all(x[1:] <= high[1:]))

    def _fit(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.bool_]) -> Any:
        """``(mean, scale, coef, intercept)`` of a standardized, L2-regularized logistic
        regression (scikit-learn's defaults)."""
        logistic, scaler_class, _ = _load_learning()
        scaler = scaler_class().fit(x)
        model = logistic(max_iter=200).fit(scaler.transform(x), y)
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        return (
            scaler.mean_.astype(np.float64),
            scale.astype(np.float64),
            model.coef_[0].astype(np.float64),
            float(model.intercept_[0]),
        )

    @staticmethod
    def _predict(fitted: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        mean, scale, coef, intercept = fitted
        z = ((x - mean) / scale) @ coef + intercept
        result: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        return result

    def _learn(
        self, x: npt.NDArray[np.float32], y: npt.NDArray[np.bool_], prior: npt.NDArray[np.bool_]
    ) -> tuple[_Rule, bool]:
        """The rule the evidence supports, and whether traffic overruled the calibration.

        Calibration pairs are chosen by whoever labelled them; the candidates the route is
        asked about are each query's *nearest* entry, the hardest negatives among them. So a
        region certified with calibration rows holds only while the route's own rows inside it
        (judged explorations, feedback, misses) agree: when they show an error rate above the
        budget (the one-sided binomial test at the policy's confidence, :func:`exceeds`), the
        calibration rows are set aside and the rule is drawn from traffic rows alone (cold
        start, with what traffic has taught). The test runs at every refit: no state, no
        constant."""
        rule = self._rule(x, y)
        if not prior.any() or prior.all() or rule[1] is None:
            return rule, False
        traffic_x, traffic_y = x[~prior], y[~prior]
        inside = self._inside(rule, traffic_x)
        wrong = int((~traffic_y[inside]).sum())
        if not exceeds(wrong, int(inside.sum()), self.max_error_rate, self.confidence):
            return rule, False
        return self._rule(traffic_x, traffic_y), True

    def _inside(self, rule: _Rule, x: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
        """Which rows of ``x`` a rule would serve (its cut, and its model's support)."""
        model, cut, support = rule[0], rule[1], rule[5]
        assert cut is not None
        scores = x[:, 0].astype(np.float64) if model is None else self._predict(model, x)
        inside: npt.NDArray[np.bool_] = scores >= cut
        if support is not None:
            low, high = support
            inside &= (x[:, 0] >= low[0]) & np.all(x[:, 1:] >= low[1:], axis=1)
            inside &= np.all(x[:, 1:] <= high[1:], axis=1)
        return inside

    def _rule(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.bool_]) -> _Rule:
        """The rule these rows support: cosine's region, or the model's when it is larger."""
        n = len(y)
        if n == 0:
            return None, None, None, None, 0.0, None
        cosine = x[:, 0].astype(np.float64)
        by_cosine = (None, *self._region_of(cosine, y), None)
        # The model is fitted where the decision lies: rows at or above the median cosine of
        # the rows judged right (below it, easy negatives would dominate the fit).
        folds = np.arange(n) % 2 == 0
        local = cosine >= float(np.median(cosine[y])) if y.any() else np.zeros(n, dtype=bool)
        parts = [local & folds, local & ~folds]
        if not all((y[p] == v).sum() >= 2 for p in parts for v in (True, False)):
            return by_cosine
        scores = np.zeros(n, dtype=np.float64)
        for fold in (folds, ~folds):
            train = local & ~fold
            scores[fold] = self._predict(self._fit(x[train], y[train]), x[fold])
        by_model = self._region_of(scores, y)
        if by_model[0] is not None and (by_cosine[1] is None or by_model[3] > by_cosine[4]):
            inside = x[scores >= by_model[0]]  # the rows the bound was computed on
            support = (inside.min(axis=0), inside.max(axis=0))
            return (self._fit(x[local], y[local]), *by_model, support)
        return by_cosine  # cosine alone certifies at least as large a region

    def _region_of(
        self, scores: npt.NDArray[np.float64], y: npt.NDArray[np.bool_]
    ) -> tuple[float | None, float | None, float | None, float]:
        """``(cut, error estimate, error bound, rows)`` of the region ``score >= cut`` whose
        error bound is within the budget, grown from the most similar rows down until a bound
        first fails.

        Rows count unweighted although rows inside a served region were sampled less (only
        explorations are judged there): that over-represents the rows just below the cut,
        which err more when error falls with the score, so the estimate errs on the safe side.
        """
        order = np.argsort(-scores, kind="stable")
        s, wrong = scores[order], ~y[order]
        rows = np.arange(1, len(s) + 1, dtype=np.float64)
        rate = np.cumsum(wrong) / rows
        # Only cut between distinct scores: a region holds all rows with its least score.
        last_of_score = np.append(s[1:] < s[:-1], True)
        bounds = clopper_pearson_upper(rate * rows, rows, self.confidence)
        ok = bounds <= self.max_error_rate
        passing = np.flatnonzero(last_of_score & ok)
        if len(passing) == 0:
            return None, None, None, 0.0
        # Fixed-sequence testing (as in Learn-then-Test): from the first region that passes,
        # grow it row by row and stop at the first that fails; never jump over a stretch of
        # errors to a larger region that passes again.
        first = int(passing[0])
        failing = np.flatnonzero(~ok[first:] & last_of_score[first:])
        end = first + int(failing[0]) if len(failing) else len(s)
        i = int(passing[passing < end][-1])
        return float(s[i]), float(rate[i]), float(bounds[i]), float(rows[i])

    # ------------------------------------------------------------------ reporting, persistence

    def snapshot(self) -> AcceptanceSnapshot:
        with self._lock:
            return AcceptanceSnapshot(
                evidence=len(self._y),
                evidence_wrong=self._wrong,
                fitted=self._model is not None,
                serving=self._cut is not None,
                cut=self._cut,
                error_estimate=self._estimate,
                error_upper_bound=self._bound,
                region_evidence=round(self._region, 1),
                explore_probability=round(self.explore_probability, 4),
                entry_floors=len(self._floors),
                calibration_evidence=sum(self._prior),
                calibration_overruled=self._contradicted,
            )

    def to_bytes(self) -> bytes:
        """The evidence and per-entry floors (the model is refitted from them on load)."""
        with self._lock:
            dim = len(self._x[0]) if self._x else 0
            buffer = io.BytesIO()
            np.savez_compressed(
                buffer,
                format=np.array([_FORMAT, dim]),
                x=np.stack(self._x).astype(np.float32) if self._x else np.zeros((0, 0)),
                y=np.array(self._y, dtype=np.uint8),
                prior=np.array(self._prior, dtype=np.uint8),  # absent before: all traffic
                floor_keys=np.array(list(self._floors), dtype="S32"),
                floor_values=np.array(list(self._floors.values()), dtype=np.float32),
            )
            self.unsaved = 0
            return buffer.getvalue()

    def load_bytes(self, data: bytes) -> bool:
        """Replace the evidence with a persisted one; False (and nothing changed) when the data
        is unreadable or of another format."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as saved:
                if int(saved["format"][0]) != _FORMAT:
                    return False
                x = saved["x"].astype(np.float32)
                y = saved["y"].astype(bool)
                prior = saved["prior"].astype(bool) if "prior" in saved.files else np.zeros_like(y)
                keys = [k.decode("ascii") for k in saved["floor_keys"]]
                values = saved["floor_values"].astype(np.float64)
        except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError) as exc:
            logger.warning("tokenlean: ignoring unreadable semantic-cache evidence (%s)", exc)
            return False
        if len(x) != len(y) or len(prior) != len(y) or len(keys) != len(values):
            return False
        with self._lock:
            self._x = list(x)
            self._y = [bool(v) for v in y]
            self._prior = [bool(v) for v in prior]
            self._wrong = int((~y).sum())
            self._floors = OrderedDict(zip(keys, (float(v) for v in values), strict=True))
        self.refit()
        with self._lock:
            self.unsaved = 0
        return True
