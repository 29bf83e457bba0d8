"""The matching rule itself (pipelines/match_rules.py), on hand-made unit vectors whose cosine
similarities are known exactly: every boundary of ``score_faces``, which faces become query
expansions, and how matched faces become one hit per frame. No store, no model."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import match_rules as rule
from pipelines.config import MatchSettings

SELFIE = np.array([[1.0, 0.0, 0.0]], np.float32)
NONE = np.zeros((0, 3), np.float32)


def at(similarity: float, other: float = 0.0) -> np.ndarray:
    """A unit vector whose cosine similarity to SELFIE is ``similarity``; ``other`` tilts the
    rest between the second and third axes (to give faces distinct directions)."""
    rest = np.sqrt(max(0.0, 1.0 - similarity**2))
    return np.array([similarity, rest * np.cos(other), rest * np.sin(other)], np.float32)


def faces(sims: list[float], tracks: list[int] | None = None, qualities: list[float] | None = None) -> rule.Candidates:
    n = len(sims)
    return rule.Candidates(
        "v.mp4",
        np.arange(n, dtype=np.float64) * 0.5,
        np.asarray(tracks if tracks is not None else [rule.NO_TRACK] * n, np.int64),
        np.asarray(qualities if qualities is not None else [1.0] * n, np.float32),
        np.stack([at(s, other=i * 0.3) for i, s in enumerate(sims)]),
        np.arange(n * 4, dtype=np.float32).reshape(n, 4),
    )


FACES_ONLY = MatchSettings(mode="faces", expansion_floor=0.25)  # binary-exact values: boundaries hold exactly
TRACKS = MatchSettings(mode="tracks", best_k=2, expansion_floor=0.25)


def test_max_sim_is_the_best_reference_and_nothing_to_compare_is_minus_infinity():
    vectors = np.stack([at(0.5), at(0.2)])
    refs = np.stack([at(0.5), SELFIE[0]])
    assert rule.max_sim(vectors, refs) == pytest.approx([1.0, max(0.2, float(at(0.2) @ at(0.5)))], abs=1e-6)
    assert np.all(rule.max_sim(vectors, NONE) == -np.inf)
    assert np.all(rule.max_sim(vectors, np.zeros((1, 5), np.float32)) == -np.inf)  # another model's vectors


def test_references_need_a_positive_and_default_to_no_negatives():
    with pytest.raises(ValueError):
        rule.References(np.zeros((0, 3), np.float32))
    assert len(rule.References(SELFIE).negatives) == 0


def test_a_face_at_the_threshold_matches_and_one_below_does_not():
    matched, score = rule.score_faces(faces([0.5, 0.499]), SELFIE, NONE, NONE, 0.5, FACES_ONLY)  # 0.5: exact
    assert matched.tolist() == [True, False]
    assert score == pytest.approx([0.5, 0.499], abs=1e-6)


def test_a_face_no_closer_to_the_person_than_to_a_not_me_face_is_not_matched():
    candidates = faces([0.8, 0.7])
    candidates.vectors[1] = at(0.7, other=np.pi)  # far from the first face (similarity 0.13)
    not_me = candidates.vectors[1:2]  # the second face itself: similarity 1.0 to it
    matched, _ = rule.score_faces(candidates, SELFIE, NONE, not_me, 0.6, FACES_ONLY)
    assert matched.tolist() == [True, False]
    tie = faces([0.7])  # as close to the negative as to the selfie: the negative wins ties
    matched, _ = rule.score_faces(tie, SELFIE, NONE, SELFIE, 0.6, FACES_ONLY)
    assert matched.tolist() == [False]


def test_expansions_lift_only_faces_that_resemble_the_photos_at_least_the_floor():
    candidates = faces([0.25, 0.24, 0.5])
    expansion = candidates.vectors  # each face is its own expansion: lifted to 1.0 if allowed
    matched, score = rule.score_faces(candidates, SELFIE, expansion, NONE, 0.6, FACES_ONLY)
    assert score == pytest.approx([1.0, 0.24, 1.0], abs=1e-6)  # at the floor lifts; under it does not
    assert matched.tolist() == [True, False, True]
    _, plain = rule.score_faces(candidates, SELFIE, NONE, NONE, 0.6, FACES_ONLY)
    assert plain == pytest.approx([0.25, 0.24, 0.5], abs=1e-6)  # no expansion: the photos alone


def test_a_track_whose_best_faces_pass_lends_the_match_to_all_of_its_faces():
    # Track 1: best two 0.75 and 0.25 -> evidence 0.5 (equal quality; exact in binary): exactly
    # the threshold. Its third face (0.125) matches through the track. Track 2: 0.375 and 0.5
    # -> 0.4375, under it. The loose face (0.625) is judged on its own.
    candidates = faces([0.75, 0.25, 0.125, 0.375, 0.5, 0.625], tracks=[1, 1, 1, 2, 2, rule.NO_TRACK])
    matched, _ = rule.score_faces(candidates, SELFIE, NONE, NONE, 0.5, TRACKS)
    assert matched.tolist() == [True, True, True, False, True, True]


def test_track_evidence_weighs_the_best_k_faces_by_quality():
    # Best two of track 1: 0.9 (quality 1.0) and 0.3 (quality 0.0): evidence ~0.9, all matched.
    sharp = faces([0.9, 0.3, 0.2], tracks=[1, 1, 1], qualities=[1.0, 0.0, 1.0])
    assert rule.score_faces(sharp, SELFIE, NONE, NONE, 0.6, TRACKS)[0].tolist() == [True, True, True]
    # The same similarities with the sharp face blurred: evidence ~0.3; the 0.9 face alone matches.
    blurred = faces([0.9, 0.3, 0.2], tracks=[1, 1, 1], qualities=[0.0, 1.0, 1.0])
    assert rule.score_faces(blurred, SELFIE, NONE, NONE, 0.6, TRACKS)[0].tolist() == [True, False, False]
    # k = 1: only the best face decides.
    one = MatchSettings(mode="tracks", best_k=1, expansion_floor=0.3)
    assert rule.score_faces(faces([0.61, 0.1], tracks=[1, 1]), SELFIE, NONE, NONE, 0.6, one)[0].tolist() == [True, True]


def test_a_track_closer_to_a_not_me_face_goes_whole_even_where_a_face_passed_alone():
    candidates = faces([0.65, 0.2, 0.2], tracks=[3, 3, 3])
    not_me = candidates.vectors[1:3]  # the track's other faces are someone else's
    matched, _ = rule.score_faces(candidates, SELFIE, NONE, not_me, 0.6, TRACKS)
    assert matched.tolist() == [False, False, False]


def test_a_track_as_close_to_a_not_me_face_as_to_the_person_goes():
    candidates = faces([0.7, 0.7], tracks=[4, 4])
    matched, _ = rule.score_faces(candidates, SELFIE, NONE, SELFIE, 0.6, TRACKS)  # evidence == against
    assert matched.tolist() == [False, False]


def test_without_negatives_a_track_under_the_threshold_keeps_its_faces_own_matches():
    candidates = faces([0.65, 0.1, 0.1], tracks=[5, 5, 5])  # evidence 0.375: not lent
    matched, _ = rule.score_faces(candidates, SELFIE, NONE, NONE, 0.6, TRACKS)
    assert matched.tolist() == [True, False, False]


def test_expansions_are_matched_faces_over_the_floor_one_per_track_best_first():
    candidates = faces(
        [0.625, 0.875, 0.75, 0.5, 0.9375, 0.8125, 0.375], tracks=[1, 1, 2, 3, rule.NO_TRACK, rule.NO_TRACK, 6]
    )
    matched = np.array([True, True, True, True, False, True, True])
    own = rule.max_sim(candidates.vectors, SELFIE)
    picked = rule.pick_expansions(candidates, matched, own, 0.5, 10)
    # 0.9375 is not matched; track 1 gives its best (0.875) only; 0.5 is exactly the floor;
    # 0.375 is under it.
    expected = candidates.vectors[[1, 5, 2, 3]]
    assert picked.shape == expected.shape and picked == pytest.approx(expected)
    assert rule.pick_expansions(candidates, matched, own, 0.5, 2) == pytest.approx(expected[:2])
    assert rule.pick_expansions(candidates, matched, own, 0.5, 1).shape == (1, 3)
    assert len(rule.pick_expansions(candidates, matched, own, 0.95, 10)) == 0
    loose = faces([0.75, 0.875], tracks=[rule.NO_TRACK, rule.NO_TRACK])  # faces on no track are each their own
    assert len(rule.pick_expansions(loose, np.array([True, True]), np.array([0.75, 0.875]), 0.5, 10)) == 2


def test_one_hit_per_frame_with_its_best_similarity_and_best_score():
    found = {
        "v.mp4": [
            rule.FaceMatch(2.0, 0.7, 1, (0, 0, 1, 1), score=0.72),
            rule.FaceMatch(1.0, 0.6, 1, (0, 0, 1, 1)),
            rule.FaceMatch(1.0, 0.65, 2, (2, 2, 3, 3), score=0.9),  # a mirror in the same frame
            rule.FaceMatch(1.0, 0.5, 3, (4, 4, 5, 5), confirmed=True),
        ]
    }
    hits = rule.timed_hits(found)["v.mp4"]
    assert [h.timestamp_s for h in hits] == [1.0, 2.0]  # time order
    first, second = hits
    assert first.similarity == pytest.approx(0.65) and first.score == pytest.approx(0.9)
    assert first.confirmed and not second.confirmed
    assert second.similarity == pytest.approx(0.7) and second.score == pytest.approx(0.72)
    negative = rule.timed_hits({"w.mp4": [rule.FaceMatch(0.0, -0.5, 1, (0, 0, 1, 1))]})["w.mp4"][0]
    assert negative.similarity == pytest.approx(-0.5) and negative.score == pytest.approx(-0.5)
    assert rule.timed_hits({}) == {}


def test_merged_candidates_keep_each_face_once():
    a = faces([0.7, 0.6])
    b = faces([0.7, 0.6, 0.5])  # the first two are a's faces (same times and boxes)
    merged = rule.merge_candidates(a, b)
    assert merged.timestamps.tolist() == [0.0, 0.5, 1.0] and len(merged.vectors) == 3
    assert rule.merge_candidates(None, b) is b


def test_competitors_are_clear_tracks_of_other_people():
    rules = MatchSettings(competitor_min_quality=0.5, competitor_max_similarity=0.25)
    vectors = np.stack([at(0.25), at(0.125), at(0.125, 1.0), at(0.125, 2.0), at(0.5)])
    best_quality = np.array([0.5, 0.5, 0.49, 0.9, 0.9], np.float32)
    faces_per_track = np.array([2, 3, 5, 1, 4])
    picked = rule.pick_competitors(vectors, best_quality, faces_per_track, SELFIE, rules)
    # 0.25 to the photos is still "other" (at most); a blurred track, a one-face track and one
    # like the photos are not competitors.
    assert picked.shape == (2, 3) and picked == pytest.approx(vectors[[0, 1]])


def test_references_say_what_is_missing():
    with pytest.raises(ValueError, match=r"^at least one positive reference is needed$"):
        rule.References(np.zeros((0, 3), np.float32))


def test_a_selection_and_a_merge_keep_the_video():
    candidates = faces([0.75, 0.5])
    assert candidates.select(np.array([False, True])).media_key == "v.mp4"
    assert rule.merge_candidates(candidates, faces([0.25, 0.125, 0.0625])).media_key == "v.mp4"


def test_merging_nothing_new_keeps_what_was_there():
    a = faces([0.75, 0.5])
    empty = a.select(np.zeros(2, bool))
    merged = rule.merge_candidates(a, empty)
    assert merged.timestamps.tolist() == [0.0, 0.5] and merged.vectors.shape == (2, 3)


def test_a_malformed_candidate_set_is_refused_not_cut_short():
    a, b = faces([0.75, 0.5]), faces([0.75, 0.5, 0.25])
    short_a = rule.Candidates(a.media_key, a.timestamps, a.track_ids, a.qualities, a.vectors, a.boxes[:1])
    short_b = rule.Candidates(b.media_key, b.timestamps, b.track_ids, b.qualities, b.vectors, b.boxes[:2])
    with pytest.raises(ValueError):
        rule.merge_candidates(short_a, b)
    with pytest.raises(ValueError):
        rule.merge_candidates(a, short_b)


def test_equally_good_expansions_keep_their_order_however_many():
    n = 40  # past the size where numpy's default sort stops being stable
    own = np.array([0.75, 0.875] * (n // 2))
    candidates = faces(own.tolist(), tracks=list(range(n)))
    picked = rule.pick_expansions(candidates, np.ones(n, bool), own, 0.5, n)
    best_first = [*range(1, n, 2), *range(0, n, 2)]  # the 0.875s, then the 0.75s, each in time order
    assert picked == pytest.approx(candidates.vectors[best_first])


def test_the_faces_mode_never_lends_a_tracks_match():
    candidates = faces([0.75, 0.75, 0.125], tracks=[1, 1, 1])  # track evidence 0.54 (best 3)
    assert rule.score_faces(candidates, SELFIE, NONE, NONE, 0.5, FACES_ONLY)[0].tolist() == [True, True, False]
    lent = MatchSettings(mode="tracks", best_k=3, expansion_floor=0.25)
    assert rule.score_faces(candidates, SELFIE, NONE, NONE, 0.5, lent)[0].tolist() == [True, True, True]


def test_a_track_tied_with_a_not_me_face_goes_even_where_a_face_passed_alone():
    # Against the selfie (first axis) 0.75 and 0.25: evidence 0.5, under the threshold 0.6.
    # Against the "not me" face (second axis) both 0.5: as strong. The first face alone passes
    # (0.75 >= 0.6, and 0.75 > 0.5), but the tie sends the whole track.
    a = np.array([0.75, 0.5, np.sqrt(1 - 0.75**2 - 0.25)], np.float32)
    b = np.array([0.25, 0.5, np.sqrt(1 - 0.25**2 - 0.25)], np.float32)
    candidates = faces([0.75, 0.25], tracks=[7, 7])
    candidates.vectors[:] = np.stack([a, b])
    not_me = np.array([[0.0, 1.0, 0.0]], np.float32)
    assert rule.score_faces(candidates, SELFIE, NONE, not_me, 0.6, TRACKS)[0].tolist() == [False, False]
