from __future__ import annotations

import pytest

from pipelines.config import SegmentSettings
from pipelines.segments import TimedHit, best_window, densest_span, group_segments, rank_windows

RULES = SegmentSettings(max_gap_s=2.0, min_hits=2, padding_s=1.0, min_clip_s=3.0, max_clip_s=10.0)


def hits(*pairs: tuple[float, float]) -> list[TimedHit]:
    return [TimedHit(t, s) for t, s in pairs]


def test_hits_closer_than_max_gap_merge():
    segs = group_segments(hits((6.0, 0.5), (1.0, 0.6), (1.5, 0.7), (3.5, 0.5), (9.0, 0.9)), max_gap_s=2.0)
    assert [(s.start_s, s.end_s, s.support) for s in segs] == [(1.0, 3.5, 3), (6.0, 6.0, 1), (9.0, 9.0, 1)]


def test_gap_exactly_max_gap_stays_together():
    assert len(group_segments(hits((1.0, 0.5), (3.0, 0.5)), max_gap_s=2.0)) == 1


def test_isolated_hit_gives_no_window_with_min_hits_two():
    assert best_window(hits((4.0, 0.9)), 0.0, 10.0, RULES) is None
    assert best_window(hits((4.0, 0.9)), 0.0, 10.0, RULES.model_copy(update={"min_hits": 1})) is not None


def test_window_is_padded_and_ranked_by_support():
    w = best_window(hits((2.0, 0.6), (2.5, 0.6), (3.0, 0.6), (8.0, 0.95), (8.5, 0.95)), 0.0, 20.0, RULES)
    assert (w.start_s, w.end_s) == (1.0, 4.0)  # three hits beat two stronger ones
    assert w.support == 3 and w.best_similarity == 0.6 and w.poster_s == 2.0


def test_short_window_grows_to_min_clip_and_is_clamped_to_the_video():
    w = best_window(hits((0.2, 0.7), (0.4, 0.8)), 0.0, 30.0, RULES.model_copy(update={"padding_s": 0.0}))
    assert (w.start_s, w.end_s) == pytest.approx((0.0, 3.0))  # shifted right, not shrunk
    w = best_window(hits((9.6, 0.7), (9.8, 0.8)), 0.844, 10.0, RULES.model_copy(update={"padding_s": 0.0}))
    assert (w.start_s, w.end_s) == pytest.approx((7.0, 10.0))
    assert w.poster_s == 9.8


def test_long_segment_is_cut_to_its_densest_part():
    many = [TimedHit(float(t), 0.6) for t in range(0, 30, 2)] + [TimedHit(20 + k * 0.5, 0.7) for k in range(1, 8)]
    w = best_window(many, 0.0, 60.0, RULES)
    assert w.duration_s == pytest.approx(10.0)
    assert w.start_s <= 20.5 and w.end_s >= 23.5  # the dense burst at 20.5-23.5 s is inside
    assert densest_span(hits((0, 0.5), (5, 0.5), (5.5, 0.5), (6, 0.5)), 2.0) == (5, 7)


def test_video_shorter_than_min_clip_has_no_window():
    assert best_window(hits((0.5, 0.9), (1.0, 0.9)), 0.0, 2.0, RULES) is None


def test_rank_windows_orders_videos_by_support():
    a = best_window(hits((1, 0.9), (1.5, 0.9)), 0, 10, RULES)
    b = best_window(hits((1, 0.5), (1.5, 0.5), (2, 0.5)), 0, 10, RULES)
    assert [k for k, _ in rank_windows({"a": a, "b": b})] == ["b", "a"]
