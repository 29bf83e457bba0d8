"""The recommendation rule (pure): a threshold and segment rules for an event from the sweep and
the photo pairs, with the evidence and a reason in words. ``recommend`` runs the named steps
below in order; each step is pure and reads the sweep through a ``SweepView``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pipelines.calibration.rates import OperatingPoint, ScoreSet, far, point_at
from pipelines.calibration.sweeps import KEY_DIGITS, SegmentRule, SweepRow, grid_key
from pipelines.config import SegmentSettings


@dataclass(frozen=True)
class Recommendation:
    """A threshold and segment rules for an event, with the evidence behind them.

    ``segments`` holds the swept rules (``max_gap_s``, ``min_hits``) in SegmentSettings'
    names, ready as event overrides. ``qualified`` is False when no threshold met the rule;
    ``threshold`` and ``segments`` are then the current ones, unchanged, and ``reason``
    says what failed: do not apply such a recommendation.
    """

    threshold: float
    segments: dict
    margin: float
    coverage: float | None
    wrong_segments: int | None
    far_at_threshold: float
    tar_at_threshold: float
    reason: str
    qualified: bool = True
    lowest_qualifying: float | None = None  # the threshold before the margin
    covered_s: float | None = None
    labelled_s: float | None = None
    far_upper_95: float | None = None  # bound on the pairs' true FAR at ``threshold``
    n_genuine: int = 0
    n_impostor: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> Recommendation:
        return cls(**json.loads(text))


def _distance(rule: SegmentRule, base: SegmentRule) -> tuple[float, float, int, float]:
    """How far a rule strays from the configured one: min_hits steps first, then the gap
    (relative), then fewer hits and shorter gaps (deterministic)."""
    return (
        abs(rule.min_hits - base.min_hits),
        abs(math.log(rule.max_gap_s / base.max_gap_s)),
        rule.min_hits,
        rule.max_gap_s,
    )


@dataclass(frozen=True)
class SweepView:
    """The sweep's rows by (grid threshold, rule); ``base`` (the configured rule) has a row at
    every grid threshold."""

    by: dict[tuple[float, SegmentRule], SweepRow]
    grid: list[float]  # ascending
    rules: list[SegmentRule]
    base: SegmentRule

    @classmethod
    def of(cls, rows: Sequence[SweepRow], base: SegmentSettings) -> SweepView:
        if not rows:
            raise ValueError("no sweep rows")
        by = {(grid_key(r.threshold), r.rule): r for r in rows}
        grid = sorted({grid_key(r.threshold) for r in rows})
        base_rule = SegmentRule.of(base)
        missing = [t for t in grid if (t, base_rule) not in by]
        if missing:
            raise ValueError(f"the sweep lacks the configured rules {base_rule} at {missing[:3]}")
        return cls(by, grid, sorted({r.rule for r in rows}), base_rule)

    def row(self, t: float, rule: SegmentRule | None = None) -> SweepRow:
        return self.by[(t, self.base if rule is None else rule)]

    def wrong(self, t: float, rule: SegmentRule | None = None) -> int:
        return self.row(t, rule).wrong_segments


def far_resolution(max_far: float, n_impostor: int) -> str:
    """What ``max_far`` means on this many impostor pairs, in words."""
    if max_far * n_impostor < 1:
        return f"FAR <= {max_far:.0e} on {n_impostor} impostor pairs means no impostor pair accepted"
    allowed = math.floor(max_far * n_impostor + 1e-9)
    return f"FAR <= {max_far:.0e} on {n_impostor} impostor pairs allows {allowed} accepted"


def stable_thresholds(view: SweepView) -> list[float]:
    """Grid thresholds (ascending) from which the configured rule never has a wrong-person
    segment again: at the threshold and at every one above it."""
    stable = []
    clean_above = True
    for t in reversed(view.grid):
        clean_above = clean_above and view.wrong(t) == 0
        if clean_above:
            stable.append(t)
    return stable[::-1]


def far_thresholds(grid: Sequence[float], pairs: ScoreSet, max_far: float) -> list[float]:
    """Grid thresholds (ascending) whose empirical FAR on the pairs is at most ``max_far``
    (none without impostor pairs)."""
    return [t for t in grid if pairs.n_impostor and far(pairs.impostor, t) <= max_far]


def why_none_qualifies(
    view: SweepView, pairs: ScoreSet, stable: Sequence[float], far_ok: Sequence[float], resolution: str
) -> str:
    """Why no grid threshold is both stable and within the FAR, the first failure named."""
    grid = view.grid
    if not pairs.n_impostor:
        return "there are no impostor pairs to measure FAR on"
    if not stable:
        fewest = min(grid, key=lambda t: (view.wrong(t), t))
        return (
            f"every threshold up to {grid[-1]:.2f} still has wrong-person segments with the configured rules, "
            f"or is followed by one that has (top of the grid: {view.wrong(grid[-1])} wrong; fewest: "
            f"{view.wrong(fewest)} at {fewest:.2f})"
        )
    if not far_ok:
        return (
            f"no grid threshold up to {grid[-1]:.2f} reaches {resolution} "
            f"(strongest impostor pair {pairs.impostor.max():.3f})"
        )
    return (
        f"the thresholds without wrong-person segments ({stable[0]:.2f} and up) and those meeting "
        f"{resolution} (from {far_ok[0]:.2f}) do not meet on the grid"
    )


def not_qualified(view: SweepView, pairs: ScoreSet, current_threshold: float, why: str) -> Recommendation:
    """The current threshold and configured rules, unchanged, marked not to be applied."""
    row = view.by.get((grid_key(current_threshold), view.base))
    point = point_at(pairs, current_threshold)
    return Recommendation(
        threshold=float(current_threshold),
        segments=view.base.as_dict(),
        margin=0.0,
        coverage=row.coverage if row else None,
        wrong_segments=row.wrong_segments if row else None,
        far_at_threshold=point.far,
        tar_at_threshold=point.tar,
        reason=f"No threshold qualifies: {why}. Keeping the current threshold {current_threshold:.2f} and "
        f"segment rules; do not apply this.",
        qualified=False,
        covered_s=row.covered_s if row else None,
        labelled_s=row.labelled_s if row else None,
        far_upper_95=point.far_upper_95,
        n_genuine=pairs.n_genuine,
        n_impostor=pairs.n_impostor,
    )


def with_margin(grid: Sequence[float], lowest: float, margin: float) -> float | None:
    """The first grid threshold at least ``margin`` above ``lowest`` (None past the grid)."""
    above = [t for t in grid if t >= lowest + margin - 1e-9]
    return above[0] if above else None


def choose_rule(view: SweepView, lowest: float, chosen: float, tie_s: float) -> SegmentRule:
    """Step 3 of ``recommend``: the highest-coverage safe rule at ``chosen``, ties to the
    configured rule or the one closest to it."""
    band = [t for t in view.grid if lowest <= t <= chosen]
    base_spill = view.row(chosen).spill_s
    safe = [
        r
        for r in view.rules
        if all(view.wrong(t, r) == 0 for t in band) and view.row(chosen, r).spill_s <= base_spill + tie_s
    ]
    best_s = max(view.row(chosen, r).covered_s for r in safe)  # the base rule is always safe
    tied = [r for r in safe if view.row(chosen, r).covered_s >= best_s - tie_s]
    return min(tied, key=lambda r: _distance(r, view.base))


def binding_note(view: SweepView, pairs: ScoreSet, stable: Sequence[float], far_ok: Sequence[float]) -> str:
    """Which side set the lowest qualifying threshold: the video search or the pairs."""
    top_imp = float(pairs.impostor.max())
    first_clean, first_far = stable[0], far_ok[0]
    if first_clean < first_far:
        return (
            f"set by the pairs: strongest impostor pair {top_imp:.3f}; the video search alone has no wrong-person "
            f"segments from {first_clean:.2f}"
        )
    last_wrong = max((t for t in view.grid if t < first_clean and view.wrong(t)), default=None)
    binding = (
        f"set by the video search: {view.wrong(last_wrong)} wrong-person segment(s) at {last_wrong:.2f}"
        if last_wrong is not None
        else "the bottom of the grid"
    )
    return binding + f"; the pairs alone would allow {first_far:.2f}, strongest impostor pair {top_imp:.3f}"


def rule_note(view: SweepView, rule: SegmentRule, chosen: float) -> str:
    """The chosen rule in words, against the configured one's coverage when they differ."""
    base = view.base
    if rule == base:
        return "the configured rules"
    return (
        f"max_gap_s={rule.max_gap_s:g}, min_hits={rule.min_hits} (the configured "
        f"{base.max_gap_s:g}/{base.min_hits} cover {view.row(chosen).covered_s:.2f} s)"
    )


def spill_note(view: SweepView, rule: SegmentRule, chosen: float, tie_s: float) -> str:
    """The rules left out because they win coverage only by spilling past the labels ("" when none)."""
    covered_s = view.row(chosen, rule).covered_s
    base_spill = view.row(chosen).spill_s
    longer = [
        r
        for r in view.rules
        if view.row(chosen, r).covered_s > covered_s + tie_s and view.row(chosen, r).spill_s > base_spill + tie_s
    ]
    if not longer:
        return ""
    gain = max(view.row(chosen, r).covered_s for r in longer) - covered_s
    return (
        f" {len(longer)} rule(s) cover up to {gain:.2f} s more only by stretching segments over time where the "
        f"person is not labelled (more than {base_spill + tie_s:.2f} s of it), so they do not count."
    )


def qualified_reason(
    view: SweepView,
    pairs: ScoreSet,
    point: OperatingPoint,
    lowest: float,
    chosen: float,
    rule: SegmentRule,
    resolution: str,
    binding: str,
    tie_s: float,
) -> str:
    """The recommendation's reason: the threshold, its margin, the pairs' FAR and TAR, and the rule."""
    grid, row = view.grid, view.row(chosen, rule)
    cov = "—" if row.coverage is None else f"{100 * row.coverage:.1f} %"
    return (
        f"Lowest threshold on the grid {grid[0]:.2f}–{grid[-1]:.2f} with 0 wrong-person segments (configured "
        f"segment rules, at it and every threshold above) and {resolution}: {lowest:.2f} ({binding}). "
        f"Plus margin {chosen - lowest:.2f} -> {chosen:.2f}: the lowest qualifying threshold sits on one observation, "
        f"the strongest impostor, and new footage draws a new one. Pair FAR at {chosen:.2f}: "
        f"{point.false_accepts}/{pairs.n_impostor} (95 % upper bound {point.far_upper_95:.1e}); TAR {point.tar:.3f} "
        f"({point.true_accepts}/{pairs.n_genuine}). Segment rules: {rule_note(view, rule, chosen)}, the highest "
        f"coverage among rules without wrong segments from {lowest:.2f} to {chosen:.2f} and without extra spill "
        f"(ties within {tie_s:g} s go to the configured rules): coverage {cov} ({row.covered_s:.2f} of "
        f"{row.labelled_s:.2f} labelled s), {row.wrong_segments} wrong-person segments, {row.spill_s:.2f} s of "
        f"segment time outside the labels.{spill_note(view, rule, chosen, tie_s)}"
    )


def recommend(
    rows: Sequence[SweepRow],
    pairs: ScoreSet,
    base: SegmentSettings,
    current_threshold: float,
    margin: float = 0.02,
    max_far: float = 1e-3,
    tie_s: float = 0.5,
) -> Recommendation:
    """The recommendation rule (pure).

    1. Qualifying thresholds (on the sweep's grid): with the configured segment rules
       (``base``), 0 wrong-person segments at that threshold AND at every grid threshold
       above it (a stable zone, not a lucky point: matching is not monotonic in the threshold
       because expansion and competitors move with it), and an empirical FAR on the pairs of
       at most ``max_far``.
    2. The lowest qualifying threshold, plus ``margin`` (rounded up to the grid). It sits
       exactly on the strongest impostor seen, one observation; the next event's strongest
       impostor is a fresh draw, so the margin keeps a distance from it.
    3. Segment rules at that threshold: among rules with 0 wrong segments at every grid
       threshold from the lowest qualifying one up to the recommended one (so the rules do
       not lean on the margin) and no more than ``tie_s`` seconds more spill than ``base``
       (segment time where the person is not labelled: coverage alone rewards a long
       ``max_gap_s`` that bridges time the person is off screen), the highest coverage.
       Rules within ``tie_s`` covered seconds of it (one sample period at 2 fps by default:
       finer differences are sampling noise) tie, and ties go to ``base``, else to the rule
       closest to it (fewest ``min_hits`` steps, then the nearest gap): a change from the
       configured rules has to buy coverage, and the dev footage's long talking-head
       appearances say little about brief ones (a runner passing a camera), which a higher
       ``min_hits`` would drop.

    When nothing qualifies, the current threshold and rules are returned with
    ``qualified=False`` and a ``reason`` saying why.
    """
    view = SweepView.of(rows, base)
    resolution = far_resolution(max_far, pairs.n_impostor)
    stable = stable_thresholds(view)
    far_ok = far_thresholds(view.grid, pairs, max_far)
    qualifying = sorted(set(stable) & set(far_ok))
    if not qualifying:
        return not_qualified(
            view, pairs, current_threshold, why_none_qualifies(view, pairs, stable, far_ok, resolution)
        )
    lowest = qualifying[0]
    chosen = with_margin(view.grid, lowest, margin)
    if chosen is None:
        why = (
            f"{lowest:.2f} qualifies but {lowest:.2f} + margin {margin:.2f} lies beyond the grid (up to "
            f"{view.grid[-1]:.2f}): extend the grid"
        )
        return not_qualified(view, pairs, current_threshold, why)
    rule = choose_rule(view, lowest, chosen, tie_s)
    row = view.row(chosen, rule)
    point = point_at(pairs, chosen)
    binding = binding_note(view, pairs, stable, far_ok)
    return Recommendation(
        threshold=chosen,
        segments=rule.as_dict(),
        margin=round(chosen - lowest, KEY_DIGITS),
        coverage=row.coverage,
        wrong_segments=row.wrong_segments,
        far_at_threshold=point.far,
        tar_at_threshold=point.tar,
        reason=qualified_reason(view, pairs, point, lowest, chosen, rule, resolution, binding, tie_s),
        qualified=True,
        lowest_qualifying=lowest,
        covered_s=row.covered_s,
        labelled_s=row.labelled_s,
        far_upper_95=point.far_upper_95,
        n_genuine=pairs.n_genuine,
        n_impostor=pairs.n_impostor,
    )
