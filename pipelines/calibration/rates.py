"""TAR, FAR and thresholds of genuine/impostor scores, with the bound a sample can show (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FAR_TARGETS = (1e-2, 1e-3, 1e-4)


@dataclass(frozen=True)
class ScoreSet:
    """Similarity scores of same-person (genuine) and different-person (impostor) comparisons."""

    genuine: np.ndarray
    impostor: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "genuine", np.asarray(self.genuine, np.float64).reshape(-1))
        object.__setattr__(self, "impostor", np.asarray(self.impostor, np.float64).reshape(-1))

    @property
    def n_genuine(self) -> int:
        return int(self.genuine.size)

    @property
    def n_impostor(self) -> int:
        return int(self.impostor.size)


def far(impostor: np.ndarray, threshold: float) -> float:
    """False accept rate: share of impostor scores at or above ``threshold`` (NaN when none)."""
    impostor = np.asarray(impostor, np.float64)
    return float(np.mean(impostor >= threshold)) if impostor.size else math.nan


def tar(genuine: np.ndarray, threshold: float) -> float:
    """True accept rate: share of genuine scores at or above ``threshold`` (NaN when none)."""
    genuine = np.asarray(genuine, np.float64)
    return float(np.mean(genuine >= threshold)) if genuine.size else math.nan


def threshold_at_far(impostor: np.ndarray, target: float) -> float:
    """The lowest threshold whose empirical FAR is at most ``target``.

    With n impostor scores, floor(target * n) of them may pass; the threshold is the smallest
    float above the next-highest impostor score (ties all pass or all fail together). When
    target * n < 1 that means "above the strongest impostor": the sample cannot tell FAR
    ``target`` from any smaller rate (see ``far_upper_bound``). -inf when every score may pass.
    """
    scores = np.sort(np.asarray(impostor, np.float64))[::-1]
    if not scores.size:
        raise ValueError("no impostor scores: FAR is undefined")
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"FAR target must be in [0, 1], not {target}")
    allowed = math.floor(target * scores.size + 1e-9)
    if allowed >= scores.size:
        return -math.inf
    return float(np.nextafter(scores[allowed], math.inf))


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def _binom_cdf(k: int, n: int, p: float) -> float:
    return min(1.0, sum(math.exp(_log_binom_pmf(i, n, p)) for i in range(k + 1)))


def far_upper_bound(false_accepts: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on the true FAR after ``false_accepts`` of ``n``.

    With 0 of n the bound is 1 - (1 - confidence)^(1/n), about 3/n at 95 % (the "rule of
    three"): 262 impostor pairs without a false accept only show FAR < 1.1e-2, and showing
    FAR < 1e-3 needs about 3,000 clean impostor comparisons.
    """
    if n <= 0:
        return 1.0
    if not 0 <= false_accepts <= n:
        raise ValueError(f"false_accepts must be in [0, {n}], not {false_accepts}")
    if false_accepts == n:
        return 1.0
    alpha = 1.0 - confidence
    if false_accepts == 0:
        return 1.0 - alpha ** (1.0 / n)
    lo, hi = false_accepts / n, 1.0
    for _ in range(100):  # P(X <= k | p) falls with p: bisect for alpha
        mid = (lo + hi) / 2
        if _binom_cdf(false_accepts, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class OperatingPoint:
    """TAR and FAR at one threshold, with the counts behind them.

    ``far_target`` is set when the threshold was chosen for a FAR (``operating_point``).
    ``resolvable`` says whether the sample can express that FAR at all (target x impostors
    >= 1); when it cannot, the threshold only sits above the strongest impostor.
    ``far_upper_95`` bounds the true FAR from the observed false accepts.
    """

    threshold: float
    tar: float
    far: float
    true_accepts: int
    n_genuine: int
    false_accepts: int
    n_impostor: int
    far_upper_95: float
    far_target: float | None = None
    resolvable: bool = True

    def describe(self) -> str:
        target = "" if self.far_target is None else f"FAR target {self.far_target:.0e}: "
        note = "" if self.resolvable else f" (not resolvable with {self.n_impostor} impostors)"
        return (
            f"{target}threshold {self.threshold:.4f}, TAR {self.tar:.3f} ({self.true_accepts}/{self.n_genuine}), "
            f"FAR {self.far:.2e} ({self.false_accepts}/{self.n_impostor}, 95 % upper bound {self.far_upper_95:.1e})"
            f"{note}"
        )


def point_at(scores: ScoreSet, threshold: float, far_target: float | None = None) -> OperatingPoint:
    """The operating point of ``scores`` at ``threshold``."""
    true_accepts = int(np.sum(scores.genuine >= threshold))
    false_accepts = int(np.sum(scores.impostor >= threshold))
    return OperatingPoint(
        threshold=float(threshold),
        tar=tar(scores.genuine, threshold),
        far=far(scores.impostor, threshold),
        true_accepts=true_accepts,
        n_genuine=scores.n_genuine,
        false_accepts=false_accepts,
        n_impostor=scores.n_impostor,
        far_upper_95=far_upper_bound(false_accepts, scores.n_impostor),
        far_target=far_target,
        resolvable=far_target is None or far_target * scores.n_impostor >= 1.0 - 1e-9,
    )


def operating_point(scores: ScoreSet, far_target: float) -> OperatingPoint:
    """TAR at the lowest threshold whose empirical FAR is at most ``far_target``."""
    return point_at(scores, threshold_at_far(scores.impostor, far_target), far_target)


def operating_points(scores: ScoreSet, targets: Sequence[float] = FAR_TARGETS) -> list[OperatingPoint]:
    return [operating_point(scores, t) for t in targets]


def roc(scores: ScoreSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FAR, TAR) at every distinct score, highest threshold first."""
    thresholds = np.unique(np.concatenate([scores.genuine, scores.impostor]))[::-1]
    imp, gen = np.sort(scores.impostor), np.sort(scores.genuine)
    far_ = (imp.size - np.searchsorted(imp, thresholds, side="left")) / max(imp.size, 1)
    tar_ = (gen.size - np.searchsorted(gen, thresholds, side="left")) / max(gen.size, 1)
    return thresholds, far_, tar_
