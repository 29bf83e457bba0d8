"""pipelines/calibration.py: rates and thresholds, genuine/impostor rules, the segment-rule sweep and
the recommendation rule, on synthetic inputs with known answers (no models, no Ray)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines import calibration as cal
from pipelines.config import MatchSettings, SegmentSettings, Settings
from pipelines.evaluate import LabelledSet, overall, score_all
from pipelines.evaluate import Segment as EvalSegment
from pipelines.match import References, find_person, timed_hits
from pipelines.models.base import PackInfo
from pipelines.segments import TimedHit, ranked_segments

BASE = SegmentSettings()  # max_gap_s 2.0, min_hits 2


# --- rates and thresholds ------------------------------------------------------------------------


def test_far_and_tar_count_scores_at_or_above_the_threshold():
    assert cal.far(np.array([0.1, 0.4, 0.5, 0.9]), 0.4) == 0.75
    assert cal.tar(np.array([0.39, 0.4]), 0.4) == 0.5
    assert math.isnan(cal.far(np.array([]), 0.4))


def test_threshold_at_far_lets_exactly_the_allowed_impostors_pass():
    impostor = np.arange(1000) / 1000.0  # 0.000 ... 0.999
    t = cal.threshold_at_far(impostor, 1e-2)  # 10 may pass: 0.990 ... 0.999
    assert 0.989 < t <= np.nextafter(0.989, 1.0)
    assert cal.far(impostor, t) == 0.01
    assert cal.far(impostor, np.nextafter(t, 0.0)) > 0.01  # the lowest such threshold
    t3 = cal.threshold_at_far(impostor, 1e-3)
    assert cal.far(impostor, t3) == 0.001 and t3 > 0.998
    assert cal.threshold_at_far(impostor, 1.0) == -math.inf
    with pytest.raises(ValueError):
        cal.threshold_at_far(np.array([]), 1e-2)


def test_ties_pass_or_fail_together():
    impostor = np.array([0.5, 0.5, 0.5] + [0.1] * 97)  # 1 of 100 may pass, but three tie
    t = cal.threshold_at_far(impostor, 1e-2)
    assert t > 0.5 and cal.far(impostor, t) == 0.0


def test_a_far_below_one_over_n_is_not_resolvable():
    rng = np.random.default_rng(0)
    scores = cal.ScoreSet(rng.normal(0.7, 0.05, 38), rng.normal(0.1, 0.08, 262))
    p3, p4 = cal.operating_point(scores, 1e-3), cal.operating_point(scores, 1e-4)
    assert not p3.resolvable and not p4.resolvable
    assert p3.threshold == p4.threshold == np.nextafter(scores.impostor.max(), 1.0)  # just above the strongest
    assert p3.false_accepts == 0 and p3.far_upper_95 == pytest.approx(1 - 0.05 ** (1 / 262))
    assert p3.far_upper_95 > 1e-2  # 262 clean impostors cannot even show FAR 1e-2
    p2 = cal.operating_point(scores, 1e-2)
    assert p2.resolvable and p2.false_accepts == 2 and p2.far_target == 1e-2


def test_operating_point_counts():
    scores = cal.ScoreSet(np.array([0.2, 0.5, 0.6, 0.9]), np.array([0.1, 0.3, 0.45, 0.55]))
    p = cal.point_at(scores, 0.5)
    assert (p.true_accepts, p.n_genuine, p.false_accepts, p.n_impostor) == (3, 4, 1, 4)
    assert (p.tar, p.far) == (0.75, 0.25)
    assert "TAR 0.750 (3/4)" in p.describe()


def test_far_upper_bound_matches_clopper_pearson():
    assert cal.far_upper_bound(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert cal.far_upper_bound(5, 5) == 1.0
    assert cal.far_upper_bound(0, 0) == 1.0
    bounds = [cal.far_upper_bound(k, 200) for k in range(6)]
    assert bounds == sorted(bounds) and all(b > k / 200 for k, b in enumerate(bounds))
    try:
        from scipy.stats import beta
    except ImportError:
        return
    for k, n in [(1, 50), (3, 262), (7, 7149), (71, 7149)]:
        assert cal.far_upper_bound(k, n) == pytest.approx(beta.ppf(0.95, k + 1, n - k), rel=1e-6)


def test_roc_agrees_with_far_and_tar_at_every_threshold():
    rng = np.random.default_rng(1)
    scores = cal.ScoreSet(rng.normal(0.6, 0.1, 50), rng.normal(0.2, 0.1, 300))
    thresholds, far_, tar_ = cal.roc(scores)
    assert np.all(np.diff(thresholds) < 0)
    for t, f, g in list(zip(thresholds, far_, tar_, strict=True))[::7]:
        assert f == cal.far(scores.impostor, t) and g == cal.tar(scores.genuine, t)


# --- pairs -------------------------------------------------------------------------------------


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


def test_read_pairs_finds_the_image_folder_and_reads_decisions(tmp_path):
    images = tmp_path / "images" / "somewhere" / "dataset"
    images.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (images / name).write_bytes(b"x")
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("file_x,file_y,Decision\na.jpg,b.jpg,Yes\na.jpg,c.jpg, No\r\n\n")
    pairs = cal.read_pairs(csv_path)
    assert pairs == [
        cal.Pair(images / "a.jpg", images / "b.jpg", True),
        cal.Pair(images / "a.jpg", images / "c.jpg", False),
    ]
    (tmp_path / "bad.csv").write_text("file_x,file_y,Decision\na.jpg,b.jpg,Maybe\n")
    with pytest.raises(ValueError, match="Yes or No"):
        cal.read_pairs(tmp_path / "bad.csv")
    (tmp_path / "missing.csv").write_text("file_x,file_y,Decision\na.jpg,zzz.jpg,Yes\n")
    with pytest.raises(FileNotFoundError):
        cal.read_pairs(tmp_path / "missing.csv")


def test_pair_scores_split_genuine_and_impostor_and_skip_missing_faces():
    a, b, c = Path("a"), Path("b"), Path("c")
    photos = {
        a: cal.PhotoEmbedding(a, unit(1, 0), (0, 0, 1, 1)),
        b: cal.PhotoEmbedding(b, unit(1, 1), (0, 0, 1, 1)),
    }
    pairs = [cal.Pair(a, b, True), cal.Pair(a, b, False), cal.Pair(a, c, True)]
    scores, skipped = cal.pair_scores(pairs, photos)
    assert scores.genuine == pytest.approx([math.sqrt(0.5)]) and scores.impostor == pytest.approx([math.sqrt(0.5)])
    assert skipped == [cal.Pair(a, c, True)]
    assert [s for _, s in cal.scored_pairs(pairs, photos)] == pytest.approx([math.sqrt(0.5)] * 2)


# --- video faces ---------------------------------------------------------------------------------


def labelled_set(truth, dontcare=None, videos=("v.mp4", "other.mp4")) -> LabelledSet:
    return LabelledSet(
        root=Path("/set"),
        videos=tuple(videos),
        truth={k: tuple(v) for k, v in truth.items()},
        dontcare={k: tuple(v) for k, v in (dontcare or {}).items()},
        photos={},
        visibility=None,
    )


def event_faces(rows: list[tuple[str, float, np.ndarray, int]]) -> cal.EventFaces:
    """rows: (media_key, time, vector, track_id)."""
    n = len(rows)
    return cal.EventFaces(
        face_id=np.asarray([f"f{i}" for i in range(n)], object),
        media_key=np.asarray([r[0] for r in rows], object),
        media_type=np.asarray(["video"] * n, object),
        timestamp_s=np.asarray([r[1] for r in rows], np.float64),
        bbox=np.tile(np.asarray([[10, 10, 50, 50]], np.float32), (n, 1)),
        det_score=np.full(n, 0.9, np.float32),
        face_px=np.full(n, 40.0, np.float32),
        track_id=np.asarray([r[3] for r in rows], np.int64),
        quality=np.full(n, 0.3, np.float32),
        vectors=np.stack([r[2] for r in rows]).astype(np.float32),
    )


A, B, STRANGER = unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)


def test_video_genuine_needs_exactly_one_clearly_labelled_person_and_takes_the_best_face():
    labelled = labelled_set({("v.mp4", "anna"): [(0.0, 5.0)], ("v.mp4", "ben"): [(4.0, 8.0)]})
    faces = event_faces(
        [
            ("v.mp4", 1.0, unit(1, 0, 1), 1),  # anna alone: genuine (the best of the two faces)
            ("v.mp4", 1.0, STRANGER, 2),
            ("v.mp4", 4.5, A, 1),  # both visible: no genuine sample
            ("v.mp4", 5.2, B, 3),  # anna within the label tolerance: not clear
            ("v.mp4", 7.0, B, 3),  # ben alone: genuine
            ("v.mp4", 7.2, B, 3),  # ben alone, but 0.8 s ... still clear (ends 8.0)
            ("/elsewhere/v.mp4", 9.0, A, 9),  # the same set video by another key spelling: nobody labelled
            ("unknown.mp4", 1.0, A, 1),  # not in the set: who is absent is unknown, so no score
        ]
    )
    refs = {"anna": A[None], "ben": B[None]}
    vs = cal.video_face_scores(faces, refs, labelled)
    genuine = sorted(zip(vs.genuine_identity, vs.genuine_face.tolist(), vs.genuine_similarity, strict=True))
    assert [(w, f) for w, f, _ in genuine] == [("anna", 0), ("ben", 4), ("ben", 5)]
    assert genuine[0][2] == pytest.approx(math.sqrt(0.5))
    assert vs.frames_skipped == 2  # 4.5 (two people) and 5.2 (anna at her label's edge)
    impostor = sorted(zip(vs.impostor_identity, vs.impostor_face.tolist(), strict=True))
    # anna is absent at 7.0, 7.2 and 9.0; ben at 1.0 (two faces) and 9.0; 5.2 is near anna's end.
    assert impostor == [("anna", 4), ("anna", 5), ("anna", 6), ("ben", 0), ("ben", 1), ("ben", 6)]
    assert vs.scores.n_genuine == 3 and vs.scores.n_impostor == 6
    assert vs.strongest_impostors(1)[0].similarity == pytest.approx(max(vs.impostor_similarity))
    assert vs.weakest_genuine(1)[0].identity == "anna"
    assert vs.impostor_tracks == 5  # anna x track 3 (2 faces), anna x 9, ben x 1, ben x 2, ben x 9


def test_video_dontcare_time_is_neither_genuine_nor_impostor_and_unreferenced_people_give_no_genuine():
    labelled = labelled_set(
        {("v.mp4", "anna"): [(0.0, 3.0)], ("v.mp4", "carl"): [(5.0, 9.0)]}, {("v.mp4", "anna"): [(3.0, 4.0)]}
    )
    faces = event_faces([("v.mp4", 3.5, A, 1), ("v.mp4", 7.0, STRANGER, 2)])
    vs = cal.video_face_scores(faces, {"anna": A[None]}, labelled)  # carl has no photos
    assert vs.scores.n_genuine == 0
    assert vs.impostor_identity.tolist() == ["anna"] and vs.impostor_face.tolist() == [1]
    assert vs.frames_skipped == 2


def test_score_jitter_is_the_median_step_along_a_track():
    labelled = labelled_set({})
    faces = event_faces([("v.mp4", t, unit(1, s, 0), 1) for t, s in [(0.0, 0.0), (0.5, 0.2), (1.0, 0.0)]])
    vs = cal.video_face_scores(faces, {"anna": A[None]}, labelled)
    sims = vs.impostor_similarity
    assert cal.score_jitter(vs) == pytest.approx(abs(sims[1] - sims[0]))
    assert math.isnan(cal.score_jitter(cal.video_face_scores(faces.select(np.array([0])), {"anna": A[None]}, labelled)))


# --- the sweep -------------------------------------------------------------------------------------


def random_hits(seed: int) -> dict[str, dict[str, list[TimedHit]]]:
    rng = random.Random(seed)
    out = {}
    for who in ("anna", "ben"):
        per = {}
        for key in ("v.mp4", "other.mp4"):
            times = sorted({round(rng.uniform(0, 20) * 2) / 2 for _ in range(rng.randint(0, 25))})
            per[key] = [TimedHit(t, rng.uniform(0.4, 0.8)) for t in times]
        out[who] = per
    return out


def test_resegment_equals_running_ranked_segments_directly():
    bounds = {"v.mp4": (0.0, 20.0), "other.mp4": (0.5, 19.0)}
    for seed in range(5):
        hits = random_hits(seed)
        for rule in cal.rule_grid():
            settings = BASE.model_copy(update={"max_gap_s": rule.max_gap_s, "min_hits": rule.min_hits})
            got = cal.resegment(hits, bounds, BASE, rule)
            assert got == {who: ranked_segments(per, bounds, settings) for who, per in hits.items()}


def test_sweep_rows_equal_scoring_each_rule_directly():
    labelled = labelled_set({("v.mp4", "anna"): [(2.0, 9.0)], ("other.mp4", "ben"): [(0.0, 4.0), (10.0, 15.0)]})
    bounds = {"v.mp4": (0.0, 20.0), "other.mp4": (0.0, 20.0)}
    hits = {0.4: random_hits(7), 0.5: random_hits(8)}
    rules = [cal.SegmentRule(1.0, 1), cal.SegmentRule(2.0, 2), cal.SegmentRule(4.0, 3)]
    rows = cal.sweep(labelled, hits, bounds, BASE, rules)
    assert [(r.threshold, r.rule) for r in rows] == [(t, rule) for t in (0.4, 0.5) for rule in rules]
    for row in rows:
        settings = row.rule.apply(BASE)
        segs = {
            who: [EvalSegment(s.media_key, s.start_s, s.end_s) for s in ranked_segments(per, bounds, settings)]
            for who, per in hits[row.threshold].items()
        }
        whole = overall(score_all(labelled, segs))
        assert (row.covered_s, row.labelled_s, row.segments, row.wrong_segments) == (
            whole.covered_s,
            whole.labelled_s,
            whole.segments,
            whole.wrong_segments,
        )
        assert row.spill_s == pytest.approx(cal.spill_seconds(labelled, segs))


def test_spill_counts_segment_time_outside_the_persons_labels_once():
    labelled = labelled_set({("v.mp4", "anna"): [(2.0, 4.0)]}, {("v.mp4", "anna"): [(6.0, 7.0)]})
    segs = {
        "anna": [
            EvalSegment("v.mp4", 1.0, 5.0),  # 1 s before, 1 s after the label
            EvalSegment("v.mp4", 4.5, 6.5),  # overlaps the first by 0.5 s; 6.0-6.5 is don't-care
            EvalSegment("other.mp4", 0.0, 3.0),  # nobody labelled there
        ],
        "ben": [EvalSegment("v.mp4", 2.0, 3.0)],
    }
    assert cal.spill_seconds(labelled, segs) == pytest.approx(1.0 + 2.0 + 3.0 + 1.0)


def test_grids_hold_exact_keys_and_the_defaults():
    grid = cal.threshold_grid(0.25, 0.60, 0.01)
    assert len(grid) == 36 and grid[0] == 0.25 and grid[-1] == 0.6 and 0.4 in grid and 0.38 in grid
    assert cal.SegmentRule.of(BASE) in cal.rule_grid()
    assert cal.SegmentRule(3.0, 4).as_dict() == {"max_gap_s": 3.0, "min_hits": 4}


# --- the recommendation ---------------------------------------------------------------------------

GRID = cal.threshold_grid(0.30, 0.50, 0.01)
DEFAULT = cal.SegmentRule(2.0, 2)
WIDE = cal.SegmentRule(4.0, 2)
STRICT = cal.SegmentRule(2.0, 3)
LOOSE = cal.SegmentRule(2.0, 1)


def rows_for(
    wrong: dict[cal.SegmentRule, dict[float, int]],
    covered: dict[cal.SegmentRule, float],
    spill: dict[cal.SegmentRule, float] | None = None,
    grid=GRID,
) -> list[cal.SweepRow]:
    """Coverage falls 0.5 s per grid step above 0.40, the same for every rule otherwise."""
    out = []
    for t in grid:
        for rule, cov in covered.items():
            c = cov - 0.5 * max(0, round((t - 0.40) * 100))
            out.append(
                cal.SweepRow(
                    threshold=t,
                    max_gap_s=rule.max_gap_s,
                    min_hits=rule.min_hits,
                    labelled_s=60.0,
                    covered_s=c,
                    coverage=c / 60.0,
                    segments=10,
                    wrong_segments=wrong.get(rule, {}).get(t, 0),
                    dontcare_segments=0,
                    spill_s=(spill or {}).get(rule, 2.0),
                )
            )
    return out


def pairs_with_top_impostor(top: float) -> cal.ScoreSet:
    return cal.ScoreSet(np.linspace(0.5, 0.9, 40), np.concatenate([np.linspace(-0.1, top - 0.05, 299), [top]]))


def test_lowest_threshold_with_no_wrong_segments_from_there_up_and_no_impostor_pair_plus_margin():
    # Wrong segments at 0.30-0.33 and again at 0.36 (not monotonic): the stable zone starts at 0.37.
    wrong = {DEFAULT: {0.30: 3, 0.31: 2, 0.32: 1, 0.33: 1, 0.36: 1}}
    rows = rows_for(wrong, {DEFAULT: 50.0})
    rec = cal.recommend(rows, pairs_with_top_impostor(0.345), BASE, current_threshold=0.40)
    assert rec.qualified and rec.lowest_qualifying == 0.37 and rec.threshold == 0.39 and rec.margin == 0.02
    assert rec.segments == {"max_gap_s": 2.0, "min_hits": 2}
    assert rec.wrong_segments == 0 and rec.covered_s == 50.0 and rec.coverage == pytest.approx(50 / 60)
    assert rec.far_at_threshold == 0.0 and rec.tar_at_threshold == 1.0 and rec.n_impostor == 300
    assert "set by the video search: 1 wrong-person segment(s) at 0.36" in rec.reason
    # The pairs bind when their strongest impostor is higher: FAR <= 1e-3 of 300 means none passes.
    rec = cal.recommend(rows, pairs_with_top_impostor(0.412), BASE, current_threshold=0.40)
    assert rec.lowest_qualifying == 0.42 and rec.threshold == 0.44 and "set by the pairs" in rec.reason


def test_margin_rounds_up_to_the_grid_and_a_larger_far_allows_impostors():
    rows = rows_for({}, {DEFAULT: 50.0})
    rec = cal.recommend(rows, pairs_with_top_impostor(0.345), BASE, 0.40, margin=0.015)
    assert rec.lowest_qualifying == 0.35 and rec.threshold == 0.37 and rec.margin == 0.02
    # FAR <= 1e-2 of 300 lets 3 impostors pass: the 4th strongest decides.
    pairs = cal.ScoreSet(np.ones(5), np.array([0.45, 0.44, 0.43, 0.42] + [0.0] * 296))
    assert cal.recommend(rows, pairs, BASE, 0.40, max_far=1e-2).lowest_qualifying == 0.43
    assert cal.recommend(rows, pairs, BASE, 0.40, max_far=1e-3).lowest_qualifying == 0.46


def test_segment_rules_maximise_coverage_without_wrong_segments_or_extra_spill_ties_to_the_defaults():
    pairs = pairs_with_top_impostor(0.2)
    wrong = {DEFAULT: {0.30: 1}}
    # A tie within half a second keeps the defaults.
    rec = cal.recommend(rows_for(wrong, {DEFAULT: 50.0, STRICT: 50.4}), pairs, BASE, 0.40)
    assert rec.threshold == 0.33 and rec.segments == DEFAULT.as_dict()
    # A real gain wins ...
    rec = cal.recommend(rows_for(wrong, {DEFAULT: 50.0, STRICT: 52.0}), pairs, BASE, 0.40)
    assert rec.segments == STRICT.as_dict() and rec.covered_s == 52.0 and "max_gap_s=2, min_hits=3" in rec.reason
    # ... unless it is bought with segment time where the person is not labelled ...
    rec = cal.recommend(
        rows_for(wrong, {DEFAULT: 50.0, WIDE: 53.0}, spill={DEFAULT: 2.0, WIDE: 9.0}), pairs, BASE, 0.40
    )
    assert rec.segments == DEFAULT.as_dict() and "1 rule(s) cover up to 3.00 s more only by stretching" in rec.reason
    # ... or the rule has a wrong segment anywhere from the lowest qualifying threshold to the recommended one.
    wrong_loose = {DEFAULT: {0.30: 1}, LOOSE: {0.31: 1}}
    rec = cal.recommend(rows_for(wrong_loose, {DEFAULT: 50.0, LOOSE: 55.0}), pairs, BASE, 0.40)
    assert rec.lowest_qualifying == 0.31 and rec.segments == DEFAULT.as_dict()
    # Among rules tied above the defaults, the one closest to them.
    rec = cal.recommend(
        rows_for(wrong, {DEFAULT: 50.0, cal.SegmentRule(2.0, 4): 53.0, STRICT: 53.0, cal.SegmentRule(3.0, 3): 53.2}),
        pairs,
        BASE,
        0.40,
    )
    assert rec.segments == STRICT.as_dict()


def test_no_qualifying_threshold_keeps_the_current_settings_and_says_why():
    pairs = pairs_with_top_impostor(0.2)
    everywhere = {DEFAULT: dict.fromkeys(GRID, 1)}
    rec = cal.recommend(rows_for(everywhere, {DEFAULT: 50.0}), pairs, BASE, current_threshold=0.40)
    assert not rec.qualified and rec.threshold == 0.40 and rec.segments == DEFAULT.as_dict()
    assert rec.reason.startswith("No threshold qualifies") and "do not apply" in rec.reason
    assert rec.wrong_segments == 1 and rec.margin == 0.0
    # The top of the grid is clean but something above a wrong one is not: still "from here up".
    rec = cal.recommend(rows_for({DEFAULT: {0.50: 2}}, {DEFAULT: 50.0}), pairs, BASE, 0.40)
    assert not rec.qualified and "top of the grid: 2 wrong" in rec.reason
    # The pairs never get clean on the grid.
    rec = cal.recommend(rows_for({}, {DEFAULT: 50.0}), pairs_with_top_impostor(0.95), BASE, 0.40)
    assert not rec.qualified and "strongest impostor pair 0.950" in rec.reason
    # Qualifying, but the margin runs off the grid.
    rec = cal.recommend(rows_for({}, {DEFAULT: 50.0}), pairs_with_top_impostor(0.495), BASE, 0.40)
    assert not rec.qualified and "extend the grid" in rec.reason
    # No impostor pairs at all; a current threshold off the grid has no sweep numbers.
    rec = cal.recommend(rows_for({}, {DEFAULT: 50.0}), cal.ScoreSet(np.ones(3), np.array([])), BASE, 0.555)
    assert not rec.qualified and "no impostor pairs" in rec.reason and rec.coverage is None
    with pytest.raises(ValueError, match="lacks the configured rules"):
        cal.recommend(rows_for({}, {STRICT: 50.0}), pairs, BASE, 0.40)


def test_recommendation_json_round_trip():
    rows = rows_for({}, {DEFAULT: 50.0})
    rec = cal.recommend(rows, pairs_with_top_impostor(0.3), BASE, 0.40)
    again = cal.Recommendation.from_json(rec.to_json())
    assert again == rec
    assert SegmentSettings(**{**BASE.model_dump(), **again.segments}).max_gap_s == 2.0


# --- the read cache and match_all on a small real store ------------------------------------------

PACK = PackInfo("test-pack", "1", 4, 0.4, "n/a")


@pytest.fixture()
def small_store(tmp_path):
    from pipelines.store import FaceStore, faces_schema, tracks_schema

    store = FaceStore(str(tmp_path / "lancedb"), PACK)
    rng = np.random.default_rng(3)
    person, other = unit(1, 0.2, 0, 0), unit(0, 0, 1, 0.3)
    faces, tracks = [], []
    for key, who, track, times in [
        ("v.mp4", person, 1, [0.0, 0.5, 1.0, 1.5, 2.0]),
        ("v.mp4", other, 2, [0.0, 0.5, 1.0]),
        ("w.mp4", person, 1, [4.0, 4.5]),
        ("w.mp4", other, 2, [6.0, 6.5, 7.0]),
    ]:
        vecs = []
        for t in times:
            v = who + rng.normal(0, 0.35, 4).astype(np.float32)
            v /= np.linalg.norm(v)
            vecs.append(v)
            faces.append(
                {
                    "face_id": f"{key}-{track}-{t}", "org_id": 1, "event_id": 2, "media_type": "video",
                    "media_key": key, "timestamp_s": t, "frame_index": int(t * 30), "bbox": [0, 0, 40, 40],
                    "landmarks": [0.0] * 10, "det_score": 0.9, "face_px": 40.0, "track_id": track,
                    "quality": float(rng.uniform(0.3, 1.0)), "vector": v.tolist(), "model_pack": PACK.name,
                    "model_version": PACK.version,
                }
            )  # fmt: skip
        mean = np.mean(vecs, axis=0)
        tracks.append(
            {
                "org_id": 1, "event_id": 2, "media_key": key, "track_id": track, "start_s": times[0],
                "end_s": times[-1], "faces": len(times), "best_face_id": f"{key}-{track}-{times[0]}",
                "best_quality": 0.8, "vector": (mean / np.linalg.norm(mean)).tolist(),
            }
        )  # fmt: skip
    store.add_faces(pa.Table.from_pylist(faces, schema=faces_schema(PACK)))
    store.add_tracks(pa.Table.from_pylist(tracks, schema=tracks_schema(PACK)))
    return store, person


def test_cached_store_gives_find_person_the_same_answers_with_fewer_reads(small_store):
    store, person = small_store
    refs = References(np.stack([person, unit(1, 0, 0, 0)]))
    cached = cal.CachedStore(store)
    rules = MatchSettings()
    for t in cal.threshold_grid(0.25, 0.60, 0.05):
        assert find_person(cached, 1, 2, refs, t, rules) == find_person(store, 1, 2, refs, t, rules)
    first = cached.reads
    for t in cal.threshold_grid(0.25, 0.60, 0.05):
        find_person(cached, 1, 2, refs, t, rules)
    assert cached.reads == first  # everything came from the cache the second time
    assert cached.count_faces(1, 2) == 13  # other methods pass through


def test_match_all_is_find_person_per_threshold_and_identity(small_store):
    store, person = small_store
    event = cal.EventIndex(Settings(), 1, 2, pack=None, store=store)  # the pack is not needed to match
    refs = {"anna": person[None], "ben": unit(0, 0, 1, 0.3)[None]}
    hits = cal.match_all(event, refs, [0.3, 0.45])
    assert sorted(hits) == [0.3, 0.45] and sorted(hits[0.3]) == ["anna", "ben"]
    for t in (0.3, 0.45):
        for who, r in refs.items():
            assert hits[t][who] == timed_hits(find_person(store, 1, 2, References(r), t, MatchSettings()))
    assert hits[0.3]["anna"]["v.mp4"] and "w.mp4" in hits[0.3]["ben"]
    assert event.bounds() == {}  # no media rows
    assert len(event.faces()) == 13 and event.tracks().num_rows == 4


# --- crops, sampling, timelines, figures ---------------------------------------------------------


def test_crop_face_is_square_padded_and_grey_outside_the_image():
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 90:110] = 255
    crop = cal.crop_face(image, (90, 40, 110, 60), pad=0.5, size=40)
    assert crop.shape == (40, 40, 3)
    assert crop[20, 20].tolist() == [255, 255, 255] and crop[2, 2].tolist() == [0, 0, 0]
    edge = cal.crop_face(image, (0, 0, 20, 20), pad=0.5, size=40)
    assert edge[0, 0].tolist() == [128, 128, 128]


def test_sample_times_are_spread_inside_the_span():
    assert cal.sample_times(0.0, 10.0, 4) == [1.25, 3.75, 6.25, 8.75]
    assert cal.sample_times(1.0, 1.0, 3) == [] and cal.sample_times(0.0, 5.0, 0) == []


def test_timeline_rows_cover_labelled_and_found_videos():
    labelled = labelled_set({("v.mp4", "anna"): [(1.0, 3.0)]}, {("v.mp4", "anna"): [(4.0, 5.0)]})
    hits = {"anna": {"other.mp4": [TimedHit(2.0, 0.5)]}, "ben": {}}
    segments = {"anna": ranked_segments(hits["anna"], {}, BASE.model_copy(update={"min_hits": 1})), "ben": []}
    rows = cal.timeline_rows(labelled, hits, segments, {"v.mp4": (0.0, 10.0)})
    assert [(r.identity, r.video, r.media_key) for r in rows] == [
        ("anna", "other.mp4", "other.mp4"),
        ("anna", "v.mp4", "v.mp4"),
    ]
    assert rows[1].truth == ((1.0, 3.0),) and rows[1].dontcare == ((4.0, 5.0),) and rows[1].bounds == (0.0, 10.0)
    assert len(rows[0].hits) == 1 and len(rows[0].segments) == 1


def test_save_figure_writes_a_fixed_size_png_only_when_asked(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from PIL import Image

    fig, ax = cal.figure()
    ax.plot([0, 1], [0, 1])
    monkeypatch.delenv("FACEREEL_NB_FIGURES", raising=False)
    assert cal.save_figure(fig, "roc", "threshold_tuning") is None
    monkeypatch.setenv("FACEREEL_NB_FIGURES", str(tmp_path / "figs"))
    path = cal.save_figure(fig, "roc", "threshold_tuning")
    assert path == tmp_path / "figs" / "threshold_tuning-roc.png"
    with Image.open(path) as img:
        assert img.size == (1200, 700)
    with pytest.raises(ValueError):
        cal.save_figure(fig, "../escape", "nb")


def test_label_pairs_pair_every_single_person_photo():
    labelled = LabelledSet(
        root=Path("/set"),
        videos=(),
        truth={},
        dontcare={},
        photos={"anna": ("a1.jpg", "a2.jpg", "group.jpg", "x/identities/a3.jpg"), "ben": ("b1.jpg", "group.jpg")},
        visibility=None,
    )
    pairs = cal.label_pairs(labelled)
    assert {(p.a.name, p.b.name, p.genuine) for p in pairs} == {
        ("a1.jpg", "a2.jpg", True),
        ("a1.jpg", "b1.jpg", False),
        ("a2.jpg", "b1.jpg", False),
    }
