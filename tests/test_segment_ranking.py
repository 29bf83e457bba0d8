"""Segment rules and ranking (pipelines/segments.py): which segment of a video wins, where its
window sits, videos that do not start at 0, and every usable segment as reported."""

from __future__ import annotations

import pytest

from pipelines.config import SegmentSettings
from pipelines.segments import RankedSegment, TimedHit, best_window, group_segments, rank_windows, ranked_segments

RULES = SegmentSettings(max_gap_s=2.0, min_hits=2, padding_s=1.0, min_clip_s=3.0, max_clip_s=10.0, edge_s=0.5)


def hits(*pairs: tuple[float, float], confirmed: bool = False) -> list[TimedHit]:
    return [TimedHit(t, s, confirmed) for t, s in pairs]


def test_a_segment_reports_its_support_best_mean_and_confirmed_hits():
    (seg,) = group_segments([TimedHit(1.0, 0.5), TimedHit(2.0, 0.75, True), TimedHit(3.0, 0.25)], max_gap_s=2.0)
    assert (seg.support, seg.best.timestamp_s, seg.mean_similarity, seg.confirmed) == (3, 2.0, 0.5, 1)


def test_a_confirmed_segment_wins_the_video_over_more_support():
    plain = hits((2.0, 0.9), (2.5, 0.9), (3.0, 0.9))
    confirmed = hits((20.0, 0.5), (20.5, 0.5), confirmed=True)
    w = best_window(plain + confirmed, 0.0, 60.0, RULES)
    assert (w.start_s, w.end_s, w.support, w.confirmed) == (18.75, 21.75, 2, 2)


def test_equal_support_ranks_by_mean_then_best_similarity():
    by_mean = best_window(hits((2, 0.5), (2.5, 0.5), (20, 0.75), (20.5, 0.5)), 0.0, 60.0, RULES)
    assert by_mean.poster_s == 20 and by_mean.mean_similarity == 0.625
    by_best = best_window(hits((2, 0.5), (2.5, 0.5), (20, 0.25), (20.5, 0.75)), 0.0, 60.0, RULES)
    assert by_best.poster_s == 20.5 and by_best.best_similarity == 0.75


def test_a_segment_outside_the_video_gives_way_to_the_next_one():
    w = best_window(hits((50, 0.9), (50.5, 0.9), (51, 0.9), (5, 0.5), (5.5, 0.5)), 0.0, 30.0, RULES)
    assert (w.start_s, w.end_s, w.support) == (3.75, 6.75, 2)
    assert best_window(hits((50, 0.9), (50.5, 0.9)), 0.0, 30.0, RULES) is None


def test_a_video_that_does_not_start_at_zero():
    assert best_window(hits((100.5, 0.9), (101.0, 0.9)), 100.0, 102.0, RULES) is None  # 2 s < min_clip_s
    no_pad = RULES.model_copy(update={"padding_s": 0.0})
    w = best_window(hits((100.2, 0.7), (100.4, 0.8)), 100.0, 130.0, no_pad)
    assert (w.start_s, w.end_s) == pytest.approx((100.0, 103.0))  # shifted right onto the video, not shrunk
    w = best_window(hits((128.0, 0.7), (128.5, 0.8)), 100.0, 129.0, RULES)
    assert (w.start_s, w.end_s) == pytest.approx((126.0, 129.0))  # padded 127-129.5, clamped, kept 3 s long


def test_a_long_segment_keeps_its_densest_span_padded_on_both_sides():
    rules = RULES.model_copy(update={"max_gap_s": 20.0, "max_clip_s": 6.0})
    # Three strong hits within 4 s at 10 s, three weaker within 2 s at 30 s: the densest
    # 4 s (max_clip_s less both paddings) is the strong group; a 3 s span would be the weak one.
    found = hits((10.0, 0.9), (13.8, 0.9), (13.9, 0.9), (30.0, 0.5), (31.0, 0.5), (32.0, 0.5))
    w = best_window(found, 0.0, 60.0, rules)
    assert (w.start_s, w.end_s) == pytest.approx((9.0, 15.0))
    assert (w.support, w.poster_s) == (3, 10.0)


def test_a_long_segment_with_paddings_as_long_as_the_clip_starts_at_its_first_hit():
    rules = RULES.model_copy(update={"max_gap_s": 20.0, "max_clip_s": 4.0, "padding_s": 3.0})
    w = best_window(hits((10.0, 0.5), (20.0, 0.9), (20.9, 0.95)), 0.0, 60.0, rules)
    # The span is 0 s long (never negative): the strongest hit alone, padded.
    assert (w.start_s, w.end_s) == pytest.approx((17.9, 21.9))


def test_rank_windows_puts_confirmed_videos_first_then_support_mean_and_best():
    def window(*found: TimedHit):
        return best_window(list(found), 0.0, 60.0, RULES.model_copy(update={"min_hits": 1}))

    t = TimedHit
    windows = {
        "confirmed": window(t(1, 0.5, True)),
        "support": window(t(1, 0.5), t(1.5, 0.5), t(2, 0.5)),
        "mean": window(t(1, 0.75), t(1.5, 0.75)),
        "best": window(t(1, 0.5), t(1.5, 0.5)),
        "best2": window(t(1, 0.25), t(1.5, 0.75)),
    }
    assert [k for k, _ in rank_windows(windows)] == ["confirmed", "support", "mean", "best2", "best"]


def test_ranked_segments_reports_every_usable_segment_confirmed_first_then_by_score():
    found = {
        "a": hits((1.0, 0.75), (1.5, 0.5), (10.0, 0.9)),  # the lone hit at 10 s is not a segment
        "b": hits((0.1, 0.5), (0.5, 0.5), (0.9, 0.5)),
        "c": hits((5.0, 0.25), (5.5, 0.25), confirmed=True),
    }
    bounds = {"a": (0.0, 1.6), "b": (0.0, 30.0), "c": (4.8, 30.0)}
    assert ranked_segments(found, bounds, RULES) == [
        RankedSegment("c", 4.8, 6.0, 2, 0.25, 0.5, 2),
        RankedSegment("b", 0.0, 1.4, 3, 0.5, 1.5, 0),
        RankedSegment("a", 0.5, 1.6, 2, 0.75, 1.25, 0),
    ]


def test_ranked_segments_ties_go_to_the_best_hit_then_the_earlier_segment():
    found = {"v": hits((20.0, 0.5), (20.5, 0.5), (1.0, 0.5), (1.5, 0.5), (10.0, 0.25), (10.5, 0.75))}
    ranked = ranked_segments(found, {}, RULES)  # no bounds: from 0 s, no end
    assert [(r.start_s, r.end_s) for r in ranked] == [(10.0 - 0.5, 11.0), (0.5, 2.0), (19.5, 21.0)]
    assert ranked_segments({"v": hits((0.2, 0.5), (0.4, 0.5))}, {}, RULES)[0].start_s == 0.0
    assert ranked_segments({"v": hits((0.2, 0.5))}, {}, RULES) == []
    assert ranked_segments({}, {}, RULES) == []


def test_one_confirmed_hit_is_enough_to_rank_first():
    plain = hits((2.0, 0.9), (2.5, 0.9), (3.0, 0.9))
    one = [TimedHit(20.0, 0.5, True), TimedHit(20.5, 0.5)]
    assert best_window(plain + one, 0.0, 60.0, RULES).confirmed == 1
    ranked = ranked_segments({"v": plain + one}, {}, RULES)
    assert [(r.start_s, r.confirmed_frames) for r in ranked] == [(19.5, 1), (1.5, 0)]


def test_a_lone_hit_before_a_segment_does_not_hide_it():
    ranked = ranked_segments({"v": hits((1.0, 0.9), (10.0, 0.5), (10.5, 0.5))}, {}, RULES)
    assert [(r.start_s, r.end_s) for r in ranked] == [(9.5, 11.0)]


def test_a_video_exactly_min_clip_long_holds_a_window():
    w = best_window(hits((1.0, 0.9), (1.5, 0.9)), 0.0, 3.0, RULES)
    assert (w.start_s, w.end_s, w.support) == (0.0, 3.0, 2)


def test_hits_on_the_windows_edges_are_inside_it():
    no_pad = RULES.model_copy(update={"padding_s": 0.0})
    w = best_window(hits((0.0, 0.5), (0.5, 0.9)), 0.0, 30.0, no_pad)
    assert (w.start_s, w.end_s, w.support, w.mean_similarity) == (0.0, 3.0, 2, 0.7)
    w = best_window(hits((9.5, 0.9), (10.0, 0.5)), 0.0, 10.0, no_pad)
    assert (w.start_s, w.end_s, w.support, w.poster_s) == (7.0, 10.0, 2, 9.5)
