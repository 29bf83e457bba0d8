"""The recommendation's words, whole (pipelines/calibration/recommendation.py): `facereel calibrate`
prints them to the person who decides whether to apply a threshold, so each is pinned as it reads.
Read and checked by hand against the sweep each case builds (tests/test_calibration.py's helpers)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipelines.calibration.rates import ScoreSet, far_upper_bound
from pipelines.calibration.recommendation import Recommendation, SweepView, far_resolution, recommend, with_margin
from pipelines.calibration.sweeps import SegmentRule
from tests.test_calibration import BASE, DEFAULT, GRID, STRICT, WIDE, pairs_with_top_impostor, rows_for

NOT_MONOTONIC = {DEFAULT: {0.30: 3, 0.31: 2, 0.32: 1, 0.33: 1, 0.36: 1}}


def test_the_reason_when_the_video_search_binds():
    reason = recommend(rows_for(NOT_MONOTONIC, {DEFAULT: 50.0}), pairs_with_top_impostor(0.345), BASE, 0.40).reason
    assert (
        reason
        == "Lowest threshold on the grid 0.30–0.50 with 0 wrong-person segments (configured segment rules, at it and every threshold above) and FAR <= 1e-03 on 300 impostor pairs means no impostor pair accepted: 0.37 (set by the video search: 1 wrong-person segment(s) at 0.36; the pairs alone would allow 0.35, strongest impostor pair 0.345). Plus margin 0.02 -> 0.39: the lowest qualifying threshold sits on one observation, the strongest impostor, and new footage draws a new one. Pair FAR at 0.39: 0/300 (95 % upper bound 9.9e-03); TAR 1.000 (40/40). Segment rules: the configured rules, the highest coverage among rules without wrong segments from 0.37 to 0.39 and without extra spill (ties within 0.5 s go to the configured rules): coverage 83.3 % (50.00 of 60.00 labelled s), 0 wrong-person segments, 2.00 s of segment time outside the labels."
    )


def test_the_reason_when_the_pairs_bind():
    reason = recommend(rows_for(NOT_MONOTONIC, {DEFAULT: 50.0}), pairs_with_top_impostor(0.412), BASE, 0.40).reason
    assert (
        reason
        == "Lowest threshold on the grid 0.30–0.50 with 0 wrong-person segments (configured segment rules, at it and every threshold above) and FAR <= 1e-03 on 300 impostor pairs means no impostor pair accepted: 0.42 (set by the pairs: strongest impostor pair 0.412; the video search alone has no wrong-person segments from 0.37). Plus margin 0.02 -> 0.44: the lowest qualifying threshold sits on one observation, the strongest impostor, and new footage draws a new one. Pair FAR at 0.44: 0/300 (95 % upper bound 9.9e-03); TAR 1.000 (40/40). Segment rules: the configured rules, the highest coverage among rules without wrong segments from 0.42 to 0.44 and without extra spill (ties within 0.5 s go to the configured rules): coverage 80.0 % (48.00 of 60.00 labelled s), 0 wrong-person segments, 2.00 s of segment time outside the labels."
    )


def test_the_reason_when_a_rule_that_spills_is_named_and_left_out():
    reason = recommend(
        rows_for({DEFAULT: {0.30: 1}}, {DEFAULT: 50.0, WIDE: 53.0}, spill={DEFAULT: 2.0, WIDE: 9.0}),
        pairs_with_top_impostor(0.2),
        BASE,
        0.40,
    ).reason
    assert (
        reason
        == "Lowest threshold on the grid 0.30–0.50 with 0 wrong-person segments (configured segment rules, at it and every threshold above) and FAR <= 1e-03 on 300 impostor pairs means no impostor pair accepted: 0.31 (set by the video search: 1 wrong-person segment(s) at 0.30; the pairs alone would allow 0.30, strongest impostor pair 0.200). Plus margin 0.02 -> 0.33: the lowest qualifying threshold sits on one observation, the strongest impostor, and new footage draws a new one. Pair FAR at 0.33: 0/300 (95 % upper bound 9.9e-03); TAR 1.000 (40/40). Segment rules: the configured rules, the highest coverage among rules without wrong segments from 0.31 to 0.33 and without extra spill (ties within 0.5 s go to the configured rules): coverage 83.3 % (50.00 of 60.00 labelled s), 0 wrong-person segments, 2.00 s of segment time outside the labels. 1 rule(s) cover up to 3.00 s more only by stretching segments over time where the person is not labelled (more than 2.50 s of it), so they do not count."
    )


def test_the_reason_when_a_changed_rule_is_compared_with_the_configured_one():
    reason = recommend(
        rows_for({DEFAULT: {0.30: 1}}, {DEFAULT: 50.0, STRICT: 52.0}), pairs_with_top_impostor(0.2), BASE, 0.40
    ).reason
    assert (
        reason
        == "Lowest threshold on the grid 0.30–0.50 with 0 wrong-person segments (configured segment rules, at it and every threshold above) and FAR <= 1e-03 on 300 impostor pairs means no impostor pair accepted: 0.31 (set by the video search: 1 wrong-person segment(s) at 0.30; the pairs alone would allow 0.30, strongest impostor pair 0.200). Plus margin 0.02 -> 0.33: the lowest qualifying threshold sits on one observation, the strongest impostor, and new footage draws a new one. Pair FAR at 0.33: 0/300 (95 % upper bound 9.9e-03); TAR 1.000 (40/40). Segment rules: max_gap_s=2, min_hits=3 (the configured 2/2 cover 50.00 s), the highest coverage among rules without wrong segments from 0.31 to 0.33 and without extra spill (ties within 0.5 s go to the configured rules): coverage 86.7 % (52.00 of 60.00 labelled s), 0 wrong-person segments, 2.00 s of segment time outside the labels."
    )


def test_the_reason_when_no_stable_threshold():
    reason = recommend(
        rows_for({DEFAULT: dict.fromkeys(GRID, 1)}, {DEFAULT: 50.0}), pairs_with_top_impostor(0.2), BASE, 0.40
    ).reason
    assert (
        reason
        == "No threshold qualifies: every threshold up to 0.50 still has wrong-person segments with the configured rules, or is followed by one that has (top of the grid: 1 wrong; fewest: 1 at 0.30). Keeping the current threshold 0.40 and segment rules; do not apply this."
    )


def test_the_reason_when_no_threshold_within_the_far():
    reason = recommend(rows_for({}, {DEFAULT: 50.0}), pairs_with_top_impostor(0.95), BASE, 0.40).reason
    assert (
        reason
        == "No threshold qualifies: no grid threshold up to 0.50 reaches FAR <= 1e-03 on 300 impostor pairs means no impostor pair accepted (strongest impostor pair 0.950). Keeping the current threshold 0.40 and segment rules; do not apply this."
    )


def test_the_reason_when_the_margin_runs_off_the_grid():
    reason = recommend(rows_for({}, {DEFAULT: 50.0}), pairs_with_top_impostor(0.495), BASE, 0.40).reason
    assert (
        reason
        == "No threshold qualifies: 0.50 qualifies but 0.50 + margin 0.02 lies beyond the grid (up to 0.50): extend the grid. Keeping the current threshold 0.40 and segment rules; do not apply this."
    )


def test_the_reason_when_no_impostor_pairs():
    reason = recommend(rows_for({}, {DEFAULT: 50.0}), ScoreSet(np.ones(3), np.array([])), BASE, 0.555).reason
    assert (
        reason
        == "No threshold qualifies: there are no impostor pairs to measure FAR on. Keeping the current threshold 0.56 and segment rules; do not apply this."
    )


def test_far_resolution_in_words():
    assert far_resolution(1e-3, 300) == "FAR <= 1e-03 on 300 impostor pairs means no impostor pair accepted"
    assert far_resolution(1e-2, 300) == "FAR <= 1e-02 on 300 impostor pairs allows 3 accepted"
    assert far_resolution(1e-2, 100) == "FAR <= 1e-02 on 100 impostor pairs allows 1 accepted"  # exactly 1
    assert far_resolution(0.29, 100) == "FAR <= 3e-01 on 100 impostor pairs allows 29 accepted"  # 28.999...


def test_the_margin_is_the_first_grid_step_at_least_that_far_up():
    grid = [0.30, 0.31, 0.32, 0.33]
    assert with_margin(grid, 0.30, 0.02) == 0.32  # 0.30 + 0.02 is 0.32000000000000006 in floats
    assert with_margin(grid, 0.30, 0.015) == 0.32
    assert with_margin(grid, 0.30, 0.0) == 0.30
    assert with_margin(grid, 0.32, 0.02) is None


def test_a_sweep_view_needs_rows_and_the_configured_rule_everywhere():
    with pytest.raises(ValueError, match=r"^no sweep rows$"):
        SweepView.of([], BASE)
    rows = [r for r in rows_for({}, {DEFAULT: 50.0, STRICT: 50.0}) if not (r.rule == DEFAULT and r.threshold > 0.46)]
    with pytest.raises(ValueError, match=r"^the sweep lacks the configured rules .* at \[0\.47, 0\.48, 0\.49\]$"):
        SweepView.of(rows, BASE)
    view = SweepView.of(rows_for({}, {STRICT: 50.0, DEFAULT: 50.0}), BASE)
    assert view.grid == GRID and view.base == DEFAULT and view.rules == sorted([DEFAULT, STRICT])


def test_a_recommendation_as_json_is_sorted_indented_and_keeps_nan():
    rec = recommend(rows_for({}, {DEFAULT: 50.0}), ScoreSet(np.ones(3), np.array([])), BASE, 0.40)
    assert math.isnan(rec.far_at_threshold)
    text = rec.to_json()
    assert text.startswith('{\n  "coverage": ') and '"far_at_threshold": NaN' in text
    keys = list(json.loads(text))
    assert keys == sorted(keys)
    again = Recommendation.from_json(text)
    assert math.isnan(again.far_at_threshold) and again.reason == rec.reason


def test_ties_go_to_the_rule_nearest_the_configured_one():
    near_gap, far_gap = SegmentRule(3.0, 2), SegmentRule(1.0, 2)  # |log 1.5| < |log 0.5|
    rec = recommend(
        rows_for({}, {DEFAULT: 50.0, far_gap: 53.0, near_gap: 53.0}), pairs_with_top_impostor(0.2), BASE, 0.40
    )
    assert rec.segments == near_gap.as_dict()
    assert WIDE.max_gap_s == 4.0


def configured_rules_on_clean_pairs(reason: str, **differs) -> Recommendation:
    """The fields both cases share: the configured rules at 50 of 60 labelled s, and pairs whose
    strongest impostor sits under the threshold (0 of 300 accepted, all 40 genuine pairs)."""
    shared = {
        "segments": {"max_gap_s": 2.0, "min_hits": 2},
        "coverage": 50.0 / 60.0,
        "far_at_threshold": 0.0,
        "tar_at_threshold": 1.0,
        "covered_s": 50.0,
        "labelled_s": 60.0,
        "far_upper_95": far_upper_bound(0, 300),
        "n_genuine": 40,
        "n_impostor": 300,
    }
    return Recommendation(reason=reason, **(shared | differs))


def test_every_field_of_a_recommendation_not_to_apply():
    pairs = pairs_with_top_impostor(0.2)
    rec = recommend(rows_for({DEFAULT: dict.fromkeys(GRID, 1)}, {DEFAULT: 50.0}), pairs, BASE, 0.40)
    assert rec == configured_rules_on_clean_pairs(
        rec.reason, threshold=0.40, margin=0.0, wrong_segments=1, qualified=False, lowest_qualifying=None
    )


def test_every_field_of_a_recommendation_to_apply():
    rec = recommend(rows_for(NOT_MONOTONIC, {DEFAULT: 50.0}), pairs_with_top_impostor(0.345), BASE, 0.40)
    assert rec == configured_rules_on_clean_pairs(
        rec.reason, threshold=0.39, margin=0.02, wrong_segments=0, qualified=True, lowest_qualifying=0.37
    )
