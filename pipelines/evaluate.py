"""Scoring search hits against labelled intervals (pure functions, for tests and notebooks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HitScore:
    hits: int
    true_hits: int
    labelled_samples: int
    found_samples: int

    @property
    def precision(self) -> float:
        return self.true_hits / self.hits if self.hits else 1.0

    @property
    def recall(self) -> float:
        return self.found_samples / self.labelled_samples if self.labelled_samples else 1.0


def inside(t: float, intervals: Iterable[tuple[float, float]], tolerance: float) -> bool:
    return any(start - tolerance <= t <= end + tolerance for start, end in intervals)


def score_hits(
    hit_times: Sequence[float],
    intervals: Sequence[tuple[float, float]],
    sample_times: Sequence[float],
    tolerance: float = 0.3,
) -> HitScore:
    """Precision of hit timestamps and recall of labelled samples, for one video.

    A hit is true when it falls inside a labelled interval (± tolerance, the labels'
    own accuracy). Recall counts the sampled timestamps strictly inside the labels
    that got at least one hit.
    """
    hits = list(hit_times)
    true_hits = sum(inside(t, intervals, tolerance) for t in hits)
    labelled = [s for s in sample_times if inside(s, intervals, 0.0)]
    found = sum(any(abs(s - t) < 1e-3 for t in hits) for s in labelled)
    return HitScore(len(hits), true_hits, len(labelled), found)
