"""TAR, FAR, thresholds and the FAR bound (pipelines/calibration/rates.py), each against
values worked out by hand or by exact binomial sums (``math.comb``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.calibration.rates import (
    OperatingPoint,
    ScoreSet,
    _binom_cdf,
    _log_binom_pmf,
    far,
    far_upper_bound,
    operating_point,
    point_at,
    roc,
    tar,
    threshold_at_far,
)


def exact_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def test_a_score_set_holds_flat_float64_arrays():
    scores = ScoreSet(np.array([[0.5, 0.25]], np.float32), [[1, 0]])
    assert scores.genuine.dtype == np.float64 and scores.impostor.dtype == np.float64
    assert scores.genuine.shape == (2,) and scores.impostor.shape == (2,)
    assert scores.genuine.tolist() == [0.5, 0.25] and scores.impostor.tolist() == [1.0, 0.0]
    assert (scores.n_genuine, scores.n_impostor) == (2, 2)
    precise = ScoreSet([0.1], [0.30000000000000004])  # float64 kept, not rounded to float32
    assert precise.impostor[0] == 0.30000000000000004 and precise.genuine[0] == 0.1


def test_rates_count_scores_at_the_threshold_and_are_nan_without_scores():
    assert far([0.25, 0.5, 0.75, 1.0], 0.5) == 0.75 and tar([0.25, 0.5, 0.75, 1.0], 0.75) == 0.5
    assert far([0.25], 0.5) == 0.0 and tar([0.25], 0.25) == 1.0
    assert math.isnan(far([], 0.5)) and math.isnan(tar([], 0.5))


def test_the_threshold_lets_exactly_the_allowed_share_of_impostors_pass():
    impostor = [0.1, 0.4, 0.2, 0.3]
    assert threshold_at_far(impostor, 0.25) == np.nextafter(0.3, math.inf)  # only 0.4 passes
    assert threshold_at_far(impostor, 0.5) == np.nextafter(0.2, math.inf)
    assert threshold_at_far(impostor, 0.0) == np.nextafter(0.4, math.inf)  # above the strongest
    assert threshold_at_far(impostor, 0.2) == np.nextafter(0.4, math.inf)  # 0.8 of a score: none
    assert threshold_at_far(impostor, 1.0) == -math.inf  # every score may pass
    assert far(impostor, threshold_at_far(impostor, 0.5)) == 0.5
    # Ties pass or fail together: allowing one of [0.3, 0.3, 0.1] lets none through.
    assert far([0.3, 0.3, 0.1], threshold_at_far([0.3, 0.3, 0.1], 1 / 3)) == 0.0
    # 0.29 * 100 is 28.999999999999996 in floats: still 29 allowed.
    hundred = np.arange(100) / 100
    assert threshold_at_far(hundred, 0.29) == np.nextafter(hundred[::-1][29], math.inf)


def test_the_threshold_refuses_what_it_cannot_answer():
    with pytest.raises(ValueError):
        threshold_at_far([], 0.1)
    for target in (-0.01, 1.01):
        with pytest.raises(ValueError):
            threshold_at_far([0.5], target)


def test_binomial_probabilities_match_exact_sums():
    for k, n, p in ((0, 5, 0.2), (2, 5, 0.2), (5, 5, 0.2), (3, 10, 0.7)):
        expected = math.comb(n, k) * p**k * (1 - p) ** (n - k)
        assert math.exp(_log_binom_pmf(k, n, p)) == pytest.approx(expected, rel=1e-12)
        assert _binom_cdf(k, n, p) == pytest.approx(exact_cdf(k, n, p), rel=1e-12)
    assert _log_binom_pmf(0, 5, 0.0) == 0.0 and _log_binom_pmf(1, 5, 0.0) == -math.inf
    assert _log_binom_pmf(5, 5, 1.0) == 0.0 and _log_binom_pmf(4, 5, 1.0) == -math.inf
    assert _log_binom_pmf(0, 5, -0.1) == 0.0 and _log_binom_pmf(5, 5, 1.1) == 0.0
    assert _binom_cdf(5, 5, 0.3) <= 1.0 and _binom_cdf(5, 5, 0.3) == pytest.approx(1.0)


def test_the_far_bound_is_clopper_pearsons():
    assert far_upper_bound(0, 0) == 1.0 and far_upper_bound(0, -3) == 1.0
    assert far_upper_bound(7, 7) == 1.0
    assert far_upper_bound(0, 262) == pytest.approx(1 - 0.05 ** (1 / 262), rel=1e-12)  # about 3/n
    assert far_upper_bound(0, 262, confidence=0.9) == pytest.approx(1 - 0.1 ** (1 / 262), rel=1e-12)
    for k, n in ((1, 20), (3, 100), (10, 50)):
        bound = far_upper_bound(k, n)
        assert bound > k / n and exact_cdf(k, n, bound) == pytest.approx(0.05, abs=1e-9)
    assert far_upper_bound(3, 100, confidence=0.99) > far_upper_bound(3, 100)
    for bad in (-1, 101):
        with pytest.raises(ValueError):
            far_upper_bound(bad, 100)


def test_an_operating_point_counts_both_sides_at_its_threshold():
    scores = ScoreSet([0.9, 0.75, 0.5, 0.25], [0.75, 0.5, 0.125, 0.0] * 25)
    point = point_at(scores, 0.5)
    assert (point.true_accepts, point.n_genuine, point.tar) == (3, 4, 0.75)
    assert (point.false_accepts, point.n_impostor, point.far) == (50, 100, 0.5)
    assert point.threshold == 0.5 and point.far_target is None and point.resolvable
    assert point.far_upper_95 == pytest.approx(far_upper_bound(50, 100))
    assert point_at(scores, 0.5, far_target=0.01).resolvable  # 0.01 x 100 impostors = 1: resolvable
    assert not point_at(ScoreSet([0.5], [0.1] * 99), 0.5, far_target=0.01).resolvable
    chosen = operating_point(scores, 0.25)
    assert chosen.far_target == 0.25 and chosen.far == 0.25 and chosen.threshold == np.nextafter(0.5, 1)


def test_an_operating_point_describes_itself():
    point = OperatingPoint(0.51234, 0.75, 0.0025, 3, 4, 1, 400, 0.0138, far_target=0.001, resolvable=False)
    assert point.describe() == (
        "FAR target 1e-03: threshold 0.5123, TAR 0.750 (3/4), FAR 2.50e-03 (1/400, 95 % upper bound 1.4e-02)"
        " (not resolvable with 400 impostors)"
    )
    plain = OperatingPoint(0.5, 1.0, 0.0, 2, 2, 0, 10, 0.259)
    assert plain.describe() == "threshold 0.5000, TAR 1.000 (2/2), FAR 0.00e+00 (0/10, 95 % upper bound 2.6e-01)"


def test_the_roc_has_every_distinct_score_highest_first():
    thresholds, far_, tar_ = roc(ScoreSet([0.75, 0.5, 0.5], [0.5, 0.25]))
    assert thresholds.tolist() == [0.75, 0.5, 0.25]
    assert far_.tolist() == [0.0, 0.5, 1.0]
    assert tar_.tolist() == [1 / 3, 1.0, 1.0]
    thresholds, far_, tar_ = roc(ScoreSet([0.75], []))  # no impostors: FAR 0, not a division by 0
    assert thresholds.tolist() == [0.75] and far_.tolist() == [0.0] and tar_.tolist() == [1.0]


def test_rates_of_nothing_warn_of_nothing():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's mean of an empty array would warn
        assert math.isnan(far([], 0.5)) and math.isnan(tar(np.array([]), 0.5))


def test_refusals_say_why():
    with pytest.raises(ValueError, match=r"^no impostor scores: FAR is undefined$"):
        threshold_at_far([], 0.1)
    with pytest.raises(ValueError, match=r"^FAR target must be in \[0, 1\], not 1.5$"):
        threshold_at_far([0.5], 1.5)
    with pytest.raises(ValueError, match=r"^false_accepts must be in \[0, 10\], not 11$"):
        far_upper_bound(11, 10)


def test_the_bound_after_one_clean_comparison():
    assert far_upper_bound(0, 1) == pytest.approx(0.95)


def test_thresholds_of_float32_scores_are_float64_steps_above_them():
    impostor = np.array([0.3, 0.1], np.float32)
    assert threshold_at_far(impostor, 0.0) == np.nextafter(np.float64(np.float32(0.3)), math.inf)


def test_the_roc_of_one_impostor():
    _, far_, _ = roc(ScoreSet([0.5], [0.25]))
    assert far_.tolist() == [0.0, 1.0]
