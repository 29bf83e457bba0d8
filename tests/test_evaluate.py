"""Segment evaluation: interval arithmetic, coverage, wrong-person segments, the labelled-set loader."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipelines.evaluate import (
    OVERALL,
    LabelledSet,
    Segment,
    format_table,
    format_visibility_table,
    intersect,
    match_video,
    merge,
    overall,
    score_all,
    score_identity,
    subtract,
    total,
    touches,
)

SHARED_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
NANI_VIDEO = "videos/DsignwithSiva_Hybrid-Face-Recognition/test_video.mp4"


# --- interval arithmetic --------------------------------------------------------------------------


def test_merge_joins_touching_and_nested_and_drops_empty():
    assert merge([(3, 4), (0, 1), (1, 2), (0.5, 0.8), (5, 5), (6, 5.5)]) == [(0, 2), (3, 4)]
    assert merge([]) == []


def test_total_counts_overlaps_once():
    assert total([(0, 2), (1, 3), (10, 10)]) == pytest.approx(3.0)


def test_intersect_edge_cases():
    assert intersect([(0, 1)], [(1, 2)]) == []  # touching only: zero length, nothing
    assert intersect([(0, 10)], [(2, 3), (5, 6)]) == [(2, 3), (5, 6)]  # nested
    assert intersect([(2, 3)], [(0, 10)]) == [(2, 3)]
    assert intersect([(0, 5)], []) == []
    assert intersect([], [(0, 5)]) == []
    assert intersect([(0, 4), (6, 9)], [(3, 7), (8, 20)]) == [(3, 4), (6, 7), (8, 9)]


def test_subtract_edge_cases():
    assert subtract([(0, 10)], [(2, 3), (5, 6)]) == [(0, 2), (3, 5), (6, 10)]  # holes
    assert subtract([(0, 1)], [(1, 2)]) == [(0, 1)]  # touching cut removes nothing
    assert subtract([(2, 3)], [(0, 10)]) == []  # nested inside the cut
    assert subtract([(0, 5)], []) == [(0, 5)]
    assert subtract([], [(0, 5)]) == []
    assert subtract([(0, 4), (6, 9)], [(3, 7)]) == [(0, 3), (7, 9)]  # one cut spanning a gap
    assert subtract([(0, 4)], [(0, 4)]) == []


def test_touches_needs_positive_overlap_except_for_instants():
    assert not touches((1, 2), [(0, 1), (2, 3)])  # shares only endpoints
    assert touches((0.5, 1.5), [(1, 2)])
    assert touches((1.0, 1.0), [(0, 1)])  # a single-hit segment on the label's edge
    assert not touches((1.5, 1.5), [(0, 1), (2, 3)])


def test_segment_rejects_reversed_times():
    with pytest.raises(ValueError, match="ends before"):
        Segment("a.mp4", 3.0, 2.0)


# --- match_video ----------------------------------------------------------------------------------

VIDEOS = ["videos/a/clip.mp4", "videos/b/clip.mp4", "videos/b/other.mp4", "top.mp4", "x/top.mp4"]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("videos/b/other.mp4", "videos/b/other.mp4"),  # exact relative path
        ("./videos/b/other.mp4", "videos/b/other.mp4"),
        ("/data/faces/videos/b/other.mp4", "videos/b/other.mp4"),  # absolute path under the root
        ("/data/faces/../faces/videos/a/clip.mp4", "videos/a/clip.mp4"),  # .. normalised away
        ("s3://bucket/event/videos/a/clip.mp4", "videos/a/clip.mp4"),  # URI
        ("C:\\data\\videos\\b\\clip.mp4", "videos/b/clip.mp4"),  # Windows separators
        ("b/clip.mp4", "videos/b/clip.mp4"),  # relative to a sub-folder that was indexed
        ("other.mp4", "videos/b/other.mp4"),  # unique basename
        ("clip.mp4", None),  # basename shared by two videos: ambiguous, no guess
        ("c/clip.mp4", None),  # other folder, and the name is shared by two videos
        ("/elsewhere/cam1/other.mp4", "videos/b/other.mp4"),  # other folder, unique file name
        ("lip.mp4", None),  # a string suffix is not a path suffix
        ("top.mp4", "top.mp4"),  # exact wins over the longer x/top.mp4
        ("/abs/x/top.mp4", "x/top.mp4"),  # the longest matching suffix wins
        ("/abs/y/top.mp4", "top.mp4"),
        ("", None),
    ],
)
def test_match_video(key, expected):
    assert match_video(key, VIDEOS) == expected


# --- scoring on a hand-made set -------------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def tiny(tmp_path: Path) -> LabelledSet:
    """Two labelled videos and one distractor; ann has a don't-care hole inside her truth and one outside."""
    write_csv(
        tmp_path / "labels.csv",
        ["path", "identity", "source_repo", "evidence"],
        [
            ["images/ann1.jpg", "ann", "r", "e"],
            ["images/ann2.jpg", "ann", "r", "e"],
            ["images/bob.jpg", "bob", "r", "e"],
            ["images/cy.jpg", "cy", "r", "photo only, in no video"],
        ],
    )
    write_csv(
        tmp_path / "video_truth.csv",
        ["video_path", "identity", "start_s", "end_s"],
        [
            ["videos/one.mp4", "ann", "0.00", "4.00"],
            ["videos/one.mp4", "ann", "4.00", "10.00"],  # touches the previous: merged to 0-10
            ["videos/one.mp4", "bob", "2.00", "3.00"],
            ["videos/two.mp4", "ann", "20.00", "30.00"],
            ["./videos/two.mp4", "ann", "25.00", "26.00"],  # nested, other spelling of the path
            ["videos/two.mp4", "bob", "0.00", "5.00"],
        ],
    )
    write_csv(
        tmp_path / "video_dontcare.csv",
        ["video_path", "identity", "start_s", "end_s", "reason"],
        [
            ["videos/one.mp4", "ann", "4.00", "6.00", "face hidden"],  # inside her truth
            ["videos/one.mp4", "ann", "12.00", "14.00", "doubtful"],  # outside it
        ],
    )
    write_csv(
        tmp_path / "video_truth_detailed.csv",
        ["video_path", "identity", "start_s", "end_s", "visibility", "shot_note"],
        [
            ["videos/one.mp4", "ann", "0.00", "5.00", "clear", ""],
            ["videos/one.mp4", "ann", "5.00", "10.00", "profile", ""],
            ["videos/two.mp4", "ann", "20.00", "30.00", "clear", ""],
        ],
    )
    write_csv(tmp_path / "videos_meta.csv", ["video_path", "duration_s"], [["videos/crowd.mp4", "4.0"]])
    return LabelledSet.load(tmp_path)


def test_loader_on_tiny_set(tiny: LabelledSet, tmp_path: Path):
    assert tiny.videos == ("videos/crowd.mp4", "videos/one.mp4", "videos/two.mp4")
    assert tiny.identities == ("ann", "bob")
    assert set(tiny.photos) == {"ann", "bob", "cy"}  # photo-only identities kept
    assert tiny.photo_paths("ann") == [tmp_path / "images/ann1.jpg", tmp_path / "images/ann2.jpg"]
    assert tiny.truth[("videos/one.mp4", "ann")] == ((0.0, 10.0),)
    assert tiny.truth[("videos/two.mp4", "ann")] == ((20.0, 30.0),)
    assert tiny.truth_of("bob") == {"videos/one.mp4": ((2.0, 3.0),), "videos/two.mp4": ((0.0, 5.0),)}
    assert tiny.dontcare_of("ann") == {"videos/one.mp4": ((4.0, 6.0), (12.0, 14.0))}
    assert tiny.dontcare_of("bob") == {}
    assert tiny.visibility is not None
    assert tiny.visibility[("videos/one.mp4", "ann", "profile")] == ((5.0, 10.0),)


def test_loader_without_optional_files(tmp_path: Path):
    write_csv(tmp_path / "video_truth.csv", ["video_path", "identity", "start_s", "end_s"], [["v.mp4", "ann", 1, 2]])
    labelled = LabelledSet.load(tmp_path)
    assert labelled.videos == ("v.mp4",)
    assert labelled.dontcare == {}
    assert labelled.visibility is None
    assert labelled.photos == {}
    assert score_identity(labelled, "ann", [Segment("v.mp4", 0, 10)]).per_visibility is None


def test_loader_rejects_reversed_interval(tmp_path: Path):
    write_csv(tmp_path / "video_truth.csv", ["video_path", "identity", "start_s", "end_s"], [["v.mp4", "ann", 2, 1]])
    with pytest.raises(ValueError, match=r"video_truth.csv:2"):
        LabelledSet.load(tmp_path)


def test_coverage_excludes_dontcare_time(tiny: LabelledSet):
    # ann labelled: one.mp4 0-10 minus 4-6 = 8 s, two.mp4 20-30 = 10 s -> 18 s.
    # The segment 3-7 covers 3-4 (4-6 is don't-care, 6-7 counts) = 2 s; 20-25 covers 5 s.
    score = score_identity(tiny, "ann", [Segment("videos/one.mp4", 3, 7), Segment("two.mp4", 20, 25)])
    assert score.labelled_s == pytest.approx(18.0)
    assert score.covered_s == pytest.approx(7.0)
    assert score.coverage == pytest.approx(7.0 / 18.0)
    assert score.segments == 2 and score.wrong_segments == 0
    assert score.per_video["videos/one.mp4"].coverage == pytest.approx(2.0 / 8.0)
    assert score.per_video["videos/two.mp4"].covered_s == pytest.approx(5.0)


def test_overlapping_segments_count_covered_time_once(tiny: LabelledSet):
    score = score_identity(tiny, "ann", [Segment("videos/two.mp4", 20, 24), Segment("videos/two.mp4", 22, 26)])
    assert score.covered_s == pytest.approx(6.0)


def test_segment_only_in_dontcare_is_neither_right_nor_wrong(tiny: LabelledSet):
    score = score_identity(tiny, "ann", [Segment("videos/one.mp4", 12.5, 13.5), Segment("videos/one.mp4", 4.5, 5.5)])
    assert score.wrong_segments == 0
    assert score.dontcare_segments == 1  # 12.5-13.5; 4.5-5.5 overlaps her truth (0-10), so it is right
    assert score.covered_s == pytest.approx(0.0)  # neither adds coverage: that time is not labelled


def test_segment_outside_truth_and_dontcare_is_wrong(tiny: LabelledSet):
    late = Segment("videos/one.mp4", 10.0, 11.0)  # starts where her truth ends: no positive overlap
    score = score_identity(tiny, "ann", [late, Segment("videos/one.mp4", 9, 10)])
    assert score.wrong_segments == 1
    assert score.wrong == (late,)


def test_segment_in_another_video_is_wrong(tiny: LabelledSet):
    # bob is labelled in one.mp4 and two.mp4; ann is not labelled in crowd.mp4 at all.
    crowd = Segment("/mnt/event/crowd.mp4", 0, 2)
    unknown = Segment("not_in_the_set.mp4", 0, 2)
    score = score_identity(tiny, "ann", [crowd, unknown, Segment("videos/two.mp4", 21, 22)])
    assert score.wrong_segments == 2
    assert set(score.wrong) == {crowd, unknown}
    assert score.per_video["videos/crowd.mp4"].wrong_segments == 1  # resolved to the set's path
    assert score.per_video["not_in_the_set.mp4"].wrong_segments == 1  # unresolved keys keep their key
    # bob's truth in two.mp4 is 0-5; a bob segment at 21-22 there is wrong though ann is visible.
    assert score_identity(tiny, "bob", [Segment("videos/two.mp4", 21, 22)]).wrong_segments == 1


def test_identity_absent_from_the_videos_has_no_coverage(tiny: LabelledSet):
    score = score_identity(tiny, "cy", [Segment("videos/one.mp4", 0, 1)])
    assert score.labelled_s == 0.0 and score.coverage is None
    assert score.wrong_segments == 1
    assert score_identity(tiny, "cy", []).per_video == {}


def test_per_visibility(tiny: LabelledSet):
    score = score_identity(tiny, "ann", [Segment("videos/one.mp4", 0, 10)])
    assert score.per_visibility is not None
    # clear: one.mp4 0-5 minus 4-5 don't-care = 4 s + two.mp4 10 s; profile: 5-10 minus 5-6 = 4 s.
    assert score.per_visibility["clear"].labelled_s == pytest.approx(14.0)
    assert score.per_visibility["clear"].covered_s == pytest.approx(4.0)
    assert score.per_visibility["profile"].coverage == pytest.approx(1.0)


def test_score_all_and_overall(tiny: LabelledSet):
    scores = score_all(
        tiny,
        {
            "ann": [Segment("one.mp4", 0, 10), Segment("crowd.mp4", 0, 1)],
            "bob": [Segment("two.mp4", 0, 2.5)],
            "cy": [],
        },
    )
    assert [s.identity for s in scores] == ["ann", "bob", "cy"]
    whole = overall(scores)
    assert whole.identity == OVERALL
    assert whole.labelled_s == pytest.approx(18.0 + 6.0)
    assert whole.covered_s == pytest.approx(8.0 + 2.5)
    assert whole.coverage == pytest.approx(10.5 / 24.0)
    assert whole.wrong_segments == 1 and whole.segments == 3
    assert whole.per_video["videos/one.mp4"].labelled_s == pytest.approx(8.0 + 1.0)


def test_format_table(tiny: LabelledSet):
    before = score_all(tiny, {"ann": [Segment("one.mp4", 0, 10), Segment("crowd.mp4", 0, 1)]})
    after = score_all(tiny, {"ann": [Segment("one.mp4", 0, 10), Segment("two.mp4", 20, 30)], "bob": []})
    plain = format_table(after).splitlines()
    assert plain[0].split()[:2] == ["identity", "labelled"]
    ann = next(line for line in plain if line.startswith("ann"))
    assert "18.00" in ann and "100.0%" in ann
    assert plain[-1].startswith(OVERALL)
    compared = format_table(after, before=before)
    ann = next(line for line in compared.splitlines() if line.startswith("ann"))
    assert "44.4% → 100.0%" in ann and "1 → 0" in ann  # coverage 8/18 then 18/18; wrong 1 then 0
    bob = next(line for line in compared.splitlines() if line.startswith("bob"))
    assert "— → 0.0%" in bob  # not queried before
    vis = format_visibility_table(after)
    assert any(line.startswith("ann") and "profile" in line for line in vis.splitlines())


# --- the real shared set --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared() -> LabelledSet:
    if not SHARED_FACES.is_dir():
        pytest.skip(f"real labelled set {SHARED_FACES} is absent here")
    return LabelledSet.load(SHARED_FACES)


@pytest.mark.realdata
def test_loader_on_shared_set(shared: LabelledSet):
    with (SHARED_FACES / "video_truth.csv").open(newline="") as fh:
        truth_rows = list(csv.DictReader(fh))
    with (SHARED_FACES / "labels.csv").open(newline="") as fh:
        label_rows = list(csv.DictReader(fh))
    assert set(shared.identities) == {r["identity"] for r in truth_rows}
    assert set(shared.photos) == {r["identity"] for r in label_rows}
    assert sum(len(p) for p in shared.photos.values()) == len(label_rows)
    assert {"nani", "barack_obama", "lin_manuel_miranda"} <= set(shared.identities)
    assert "prabhas" in shared.photos and "prabhas" not in shared.identities  # the no-match query
    truth_videos = {r["video_path"] for r in truth_rows}
    assert truth_videos <= set(shared.videos)
    for video in shared.videos:
        assert (SHARED_FACES / video).is_file(), video
    assert shared.visibility is not None


@pytest.mark.realdata
def test_shared_set_nani_dontcare(shared: LabelledSet):
    dontcare = shared.dontcare_of("nani")
    assert dontcare == {NANI_VIDEO: ((17.70, 18.20), (27.00, 28.70))}
    # Reporting exactly nani's truth covers it all; a segment in the rain scene is not wrong.
    truth = shared.truth_of("nani")[NANI_VIDEO]
    segments = [Segment("test_video.mp4", s, e) for s, e in truth] + [Segment("test_video.mp4", 27.5, 28.0)]
    score = score_identity(shared, "nani", segments)
    assert score.coverage == pytest.approx(1.0)
    assert score.wrong_segments == 0 and score.dontcare_segments == 1
    assert score.per_visibility is not None and set(score.per_visibility) <= {"clear", "small", "profile", "partial"}
