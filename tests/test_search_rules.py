"""Pure rules behind Face Search and BIB search: photo ranking, EXIF times, pages, BIB
sightings to matches, selfie + BIB fusion, and confirmed segments ranking first."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from app.config import AppSettings
from app.core.errors import DomainError
from app.features.search.bib_search import parse_bib
from app.features.search.photos import Page, parse_page
from app.http.errors import status_of
from app.jobs.stored_matches import decode_matches, encode_matches, matches_basis
from pipelines.bib_search import fuse, rank_bib_photos, sighting_matches, valid_bib
from pipelines.config import SegmentSettings
from pipelines.match import FaceMatch, timed_hits
from pipelines.photo_search import rank_photos
from pipelines.photos import parse_exif_time, taken_at, thumbnail_jpeg
from pipelines.segments import TimedHit, best_window, rank_windows, ranked_segments
from pipelines.store import FaceHit
from pipelines.tracks import NO_TRACK


def hit(face: str, key: str, sim: float) -> FaceHit:
    return FaceHit(face, key, "photo", 0.0, 0, (0.0, 0.0, 10.0, 10.0), sim)


def test_photos_rank_by_best_face_and_count_matched_faces():
    hits = [hit("a", "p1.jpg", 0.5), hit("a", "p1.jpg", 0.7), hit("b", "p1.jpg", 0.45), hit("c", "p2.jpg", 0.9)]
    photos = rank_photos(hits)
    assert [p.media_key for p in photos] == ["p2.jpg", "p1.jpg"]
    assert photos[1].similarity == 0.7 and photos[1].match_count == 2  # face a once (its best), and face b
    assert rank_photos([]) == []


@pytest.mark.parametrize(
    ("value", "offset", "expected"),
    [
        ("2024:05:01 10:20:30", None, datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)),
        ("2024:05:01 10:20:30", "+02:00", datetime(2024, 5, 1, 8, 20, 30, tzinfo=UTC)),
        ("    :  :     :  :  ", None, None),
        ("garbage", None, None),
        (None, None, None),
    ],
)
def test_exif_times(value, offset, expected):
    assert parse_exif_time(value, offset) == expected


def test_taken_at_reads_date_time_original_and_thumbnails_keep_the_aspect():
    img = Image.new("RGB", (1200, 800), (10, 200, 30))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2023:09:17 07:45:00"
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    with Image.open(io.BytesIO(buf.getvalue())) as back:
        assert taken_at(back) == datetime(2023, 9, 17, 7, 45, tzinfo=UTC)
    with Image.open(io.BytesIO(buf.getvalue())) as back:
        assert taken_at(Image.new("RGB", (4, 4))) is None
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(buf.getvalue(), 300)))
    assert thumb.size == (300, 200) and thumb.format == "JPEG"


def test_pages():
    settings = AppSettings()
    assert parse_page(None, None, settings) == Page(1, settings.api.page_size)
    assert parse_page("3", "10", settings).slice(list(range(25))) == [20, 21, 22, 23, 24]
    for page, size in (
        ("0", None),
        ("-1", None),
        ("1.5", None),
        (None, "0"),
        (None, str(settings.api.max_page_size + 1)),
    ):
        with pytest.raises(DomainError) as err:
            parse_page(page, size, settings)
        assert status_of(err.value.code) == 400 and err.value.code == "invalid_page"


@pytest.mark.parametrize(
    ("raw", "ok"),
    [("1234", True), (" 0042 ", True), ("12", True), ("1", False), ("1234567", False), ("12a4", False),
     ("12 34", False), ("١٢٣٤", False), ("", False), (None, False)],
)  # fmt: skip
def test_bib_queries(raw, ok):
    settings = AppSettings()
    if ok:
        assert parse_bib(raw, settings) == raw.strip()
    else:
        with pytest.raises(DomainError) as err:
            parse_bib(raw, settings)
        assert status_of(err.value.code) == 400 and err.value.code == "invalid_bib"
    assert valid_bib("1234", 4, 4) and not valid_bib("123", 4, 4)


def sightings(rows: list[tuple]) -> pa.Table:
    keys = ("media_key", "timestamp_s", "confidence", "bbox", "track_id")
    return pa.Table.from_pylist([dict(zip(keys, r, strict=True)) for r in rows])


def test_bib_photos_rank_by_confidence_and_count_reads():
    table = sightings([("a.jpg", 0.0, 0.95, [1, 2, 3, 4], NO_TRACK), ("b.jpg", 0.0, 0.99, [0, 0, 5, 5], NO_TRACK),
                       ("a.jpg", 0.0, 0.97, [9, 9, 12, 12], NO_TRACK)])  # fmt: skip
    photos = rank_bib_photos(table)
    assert [(p.media_key, p.match_count) for p in photos] == [("b.jpg", 1), ("a.jpg", 2)]
    assert photos[1].similarity == pytest.approx(0.97) and photos[1].bbox == (9, 9, 12, 12)


def test_a_sighting_tied_to_a_track_brings_the_whole_track():
    table = sightings([("v.mp4", 2.0, 0.98, [0, 0, 1, 1], 3), ("v.mp4", 9.0, 0.93, [0, 0, 1, 1], NO_TRACK)])
    track = pa.table({"timestamp_s": [1.0, 1.5, 2.0, 2.5], "bbox": [[5, 5, 9, 9]] * 4})
    found = sighting_matches(table, {("v.mp4", 3): track})["v.mp4"]
    assert [m.timestamp_s for m in found] == [1.0, 1.5, 2.0, 2.5, 9.0]
    assert {m.track_id for m in found} == {3, NO_TRACK} and all(m.similarity >= 0.93 for m in found)


def test_fusion_confirms_tracks_seen_by_both_and_they_rank_first():
    box = (0.0, 0.0, 1.0, 1.0)
    selfie = {"v.mp4": [FaceMatch(t, 0.6, 1, box) for t in (10.0, 10.5, 11.0, 11.5, 12.0, 12.5)]
              + [FaceMatch(t, 0.5, 2, box) for t in (30.0, 30.5)]}  # fmt: skip
    bib = {"v.mp4": [FaceMatch(30.0, 0.95, 2, box), FaceMatch(30.5, 0.95, 2, box)]}
    fused = fuse(selfie, bib)["v.mp4"]
    assert [m.confirmed for m in fused if m.track_id == 2] == [True, True]
    assert not any(m.confirmed for m in fused if m.track_id == 1)
    rules = SegmentSettings(max_gap_s=2.0, min_hits=2)
    hits = timed_hits({"v.mp4": fused})
    segments = ranked_segments(hits, {"v.mp4": (0.0, 60.0)}, rules)
    # The confirmed segment ranks first though the selfie-only one has more, stronger hits.
    assert segments[0].start_s < 30.5 < segments[0].end_s and segments[0].confirmed_frames == 2
    window = best_window(hits["v.mp4"], 0.0, 60.0, rules)
    assert window.start_s < 30.0 < window.end_s and window.confirmed == 2
    other = best_window([TimedHit(t, 0.9) for t in (1.0, 1.5, 2.0)], 0.0, 60.0, rules)
    assert [k for k, _ in rank_windows({"confirmed": window, "plain": other})] == ["confirmed", "plain"]


def test_stored_matches_round_trip_and_their_basis_names_what_they_depend_on():
    found = {"v.mp4": [FaceMatch(1.25, 0.61234567, 4, (1.0, 2.0, 3.0, 4.0))]}
    back = decode_matches(encode_matches(found))
    assert back["v.mp4"][0].timestamp_s == 1.25 and back["v.mp4"][0].track_id == 4
    assert back["v.mp4"][0].similarity == pytest.approx(0.612346)
    settings = AppSettings()
    base = matches_basis(settings, 0.4, 0, 100)
    assert base == matches_basis(settings, 0.4, 0, 100)
    other_rules = settings.model_copy(update={"match": settings.match.model_copy(update={"best_k": 5})})
    assert len({base, matches_basis(settings, 0.41, 0, 100), matches_basis(settings, 0.4, 1, 100),
                matches_basis(settings, 0.4, 0, 101), matches_basis(other_rules, 0.4, 0, 100)}) == 5  # fmt: skip


def test_unconfirmed_ranking_is_unchanged():
    rules = SegmentSettings(max_gap_s=2.0, min_hits=2)
    hits = {"v": [TimedHit(t, 0.5) for t in (1.0, 1.5)] + [TimedHit(t, 0.6) for t in (10.0, 10.5, 11.0)]}
    segments = ranked_segments(hits, {"v": (0.0, 20.0)}, rules)
    assert [s.matched_frames for s in segments] == [3, 2] and all(s.confirmed_frames == 0 for s in segments)
    assert np.isclose(segments[0].score, 1.8)


def test_fusion_keeps_videos_only_one_kind_found_and_merges_a_face_both_found():
    box, other = (0.0, 0.0, 1.0, 1.0), (2.0, 2.0, 3.0, 3.0)
    selfie = {"a.mp4": [FaceMatch(1.0, 0.6, 4, box)], "s.mp4": [FaceMatch(5.0, 0.7, NO_TRACK, box)]}
    bib = {
        "a.mp4": [FaceMatch(1.0, 0.9, 4, other), FaceMatch(2.0, 0.8, 4, other), FaceMatch(3.0, 0.5, NO_TRACK, box)],
        "b.mp4": [FaceMatch(7.0, 0.85, 2, box)],
    }
    fused = fuse(selfie, bib)
    assert fused["s.mp4"] == [FaceMatch(5.0, 0.7, NO_TRACK, box)]  # a video only the selfie found
    assert fused["b.mp4"] == [FaceMatch(7.0, 0.85, 2, box)]  # and one only the number found
    assert fused["a.mp4"] == [
        # Both found it: the selfie's face and similarity, ranked by the number's stronger evidence.
        FaceMatch(1.0, 0.6, 4, box, confirmed=True, score=0.9),
        FaceMatch(2.0, 0.8, 4, other, confirmed=True),  # the number's own face on the confirmed track
        FaceMatch(3.0, 0.5, NO_TRACK, box),  # no track: nothing to confirm
    ]
    # Evidence no stronger than the selfie's changes nothing.
    weaker = fuse({"a.mp4": [FaceMatch(1.0, 0.6, 4, box)]}, {"a.mp4": [FaceMatch(1.0, 0.6, 4, other)]})
    assert weaker["a.mp4"] == [FaceMatch(1.0, 0.6, 4, box, confirmed=True)]


def test_sightings_keep_their_boxes_and_each_track_its_best_confidence():
    table = sightings([("w.mp4", 1.0, 0.8, [6, 6, 7, 7], 5), ("v.mp4", 2.0, 0.6, [0, 0, 1, 1], 3),
                       ("v.mp4", 4.0, 0.9, [2, 2, 3, 3], 3), ("v.mp4", 6.0, 0.7, [4, 4, 5, 5], None)])  # fmt: skip
    track = pa.table({"timestamp_s": [3.0], "bbox": [[5.0, 5.0, 9.0, 9.0]]})
    # w.mp4's track has no faces stored (a track the number alone found): its sighting still counts.
    found = sighting_matches(table, {("v.mp4", 3): track})
    assert found["v.mp4"] == [
        FaceMatch(2.0, 0.6, 3, (0, 0, 1, 1)),
        FaceMatch(3.0, 0.9, 3, (5.0, 5.0, 9.0, 9.0)),  # the track's face, at the track's best reading
        FaceMatch(4.0, 0.9, 3, (2, 2, 3, 3)),
        FaceMatch(6.0, 0.7, NO_TRACK, (4, 4, 5, 5)),  # a missing track id is no track
    ]
    assert found["w.mp4"] == [FaceMatch(1.0, 0.8, 5, (6, 6, 7, 7))]
    low = sightings([("v.mp4", 2.0, 0.4, [0, 0, 1, 1], 3)])
    assert [m.similarity for m in sighting_matches(low, {("v.mp4", 3): track})["v.mp4"]] == pytest.approx([0.4, 0.4])


def test_bib_photos_keep_the_first_of_equal_readings():
    table = sightings([("a.jpg", 0.0, 0.9, [1, 1, 2, 2], NO_TRACK), ("a.jpg", 0.0, 0.9, [3, 3, 4, 4], NO_TRACK)])
    (photo,) = rank_bib_photos(table)
    assert photo.bbox == (1, 1, 2, 2) and photo.match_count == 2
