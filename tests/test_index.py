"""The indexing pipeline end to end: real Ray (2 CPUs), real LanceDB, real models."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.decode import Chunk, MediaProbe, WorkItem, plan_work, probe_video
from pipelines.index import frames_out, index_event
from pipelines.index_report import IndexProgress
from pipelines.media import MediaSource
from pipelines.models import pack_info
from pipelines.models.base import PackInfo
from pipelines.selfie import embed_selfie
from pipelines.stages import KIND_END, KIND_FACE, KIND_FRAME, DetectAlign, Embed, decode_chunk
from pipelines.store import FaceStore, PackMismatch
from pipelines.synthetic import selfie_of
from tests.conftest import EVENT_ID, EVENT_ORG

SAMPLE = 0.5  # seconds between samples at the default 2 fps


@pytest.fixture(scope="module")
def store(indexed_event, settings) -> FaceStore:
    return FaceStore.from_settings(settings, pack_info(settings.models.pack))


def selfie_vector(pack, synthetic_event, person: int) -> np.ndarray:
    pan = synthetic_event.pan
    image = selfie_of(pan.face_boxes[person] / pan.scale)  # scaled 1.5x and mirrored
    return embed_selfie(pack, image, 0.7, 20).vector


def test_report_counts_media_and_failures(indexed_event, synthetic_event):
    r = indexed_event
    assert r.found == 4
    assert sorted(r.indexed) == sorted(
        p.name for p in (synthetic_event.pan.path, synthetic_event.still, synthetic_event.photo)
    )
    assert list(r.failed) == [synthetic_event.corrupt.name]
    assert "probe failed" in r.failed[synthetic_event.corrupt.name]
    assert r.frames == 32 + 12 + 1  # pan 16 s, distractors 6 s at 2 fps, one photo


@pytest.mark.parametrize("person", [0, 2, 4, 5])
def test_selfie_finds_its_person_inside_the_geometric_interval(store, pack, synthetic_event, settings, person):
    pan = synthetic_event.pan
    vector = selfie_vector(pack, synthetic_event, person)
    hits = store.search(EVENT_ORG, EVENT_ID, vector, min_similarity=pack.info.threshold, limit=None)
    video_hits = [h for h in hits if h.media_key == pan.path.name]
    start, end = pan.visible_interval(person)
    times = sorted(h.timestamp_s for h in video_hits)
    assert times, "the person was not found at all"
    assert times[0] >= start - SAMPLE and times[-1] <= end + SAMPLE
    # Recall: every sample while the whole face is in frame is found.
    full_start, full_end = pan.visible_interval(person, fraction=1.0)
    expected = [t for t in np.arange(0, pan.duration_s, SAMPLE) if full_start <= t <= full_end]
    assert all(any(abs(t - e) < 0.05 for t in times) for e in expected)
    # Precision: no hit belongs to another person; same-frame faces are at other x positions.
    for h in video_hits:
        x_in_image = (h.bbox[0] + h.bbox[2]) / 2 + pan.speed_px_s * min(h.timestamp_s, pan.duration_s)
        centres = (pan.face_boxes[:, 0] + pan.face_boxes[:, 2]) / 2
        assert np.abs(centres - x_in_image).argmin() == person
    # The distractor video (faces not in t1.jpg) never matches.
    assert not [h for h in hits if h.media_key == synthetic_event.still.name]


def test_top_hits_are_not_the_other_five(store, pack, synthetic_event):
    vector = selfie_vector(pack, synthetic_event, 3)
    top = store.search(EVENT_ORG, EVENT_ID, vector, limit=10)
    assert len(top) == 10
    pan = synthetic_event.pan
    for h in top:
        if h.media_type == "photo":
            centre = (h.bbox[0] + h.bbox[2]) / 2 * pan.scale
        else:
            centre = (h.bbox[0] + h.bbox[2]) / 2 + pan.speed_px_s * h.timestamp_s
        centres = (pan.face_boxes[:, 0] + pan.face_boxes[:, 2]) / 2
        assert np.abs(centres - centre).argmin() == 3
    assert top[0].similarity > 0.6


def test_photo_faces_are_indexed_and_searchable(store, pack, synthetic_event):
    rows = [r for r in store.media_rows(EVENT_ORG, EVENT_ID) if r["media_type"] == "photo"]
    assert len(rows) == 1 and rows[0]["status"] == "indexed" and rows[0]["face_count"] == 6
    hits = store.search(
        EVENT_ORG, EVENT_ID, selfie_vector(pack, synthetic_event, 1), min_similarity=pack.info.threshold, limit=None
    )
    photo_hits = [h for h in hits if h.media_type == "photo"]
    assert len(photo_hits) == 1 and photo_hits[0].timestamp_s == 0.0


def test_media_table_records_sources(store, synthetic_event):
    rows = {r["media_key"]: r for r in store.media_rows(EVENT_ORG, EVENT_ID)}
    pan = rows[synthetic_event.pan.path.name]
    assert pan["status"] == "indexed" and pan["codec"] == "h264"
    assert (pan["width"], pan["height"]) == (640, 360)
    assert pan["duration_s"] == pytest.approx(16.0, abs=0.2) and pan["start_s"] == 0.0
    assert pan["uri"] == str(synthetic_event.pan.path.resolve())
    assert pan["face_count"] == store.faces.count_rows(
        f"event_id = {EVENT_ID} AND org_id = {EVENT_ORG} AND media_key = '{pan['media_key']}'"
    )
    bad = rows[synthetic_event.corrupt.name]
    assert bad["status"] == "failed" and "Invalid data" in bad["error"]


def test_reindexing_adds_no_duplicates_and_only_new_media(store, settings, synthetic_event, tmp_path):
    before = store.count_faces(EVENT_ORG, EVENT_ID)
    again = index_event(settings, EVENT_ORG, EVENT_ID, [str(synthetic_event.root)])
    assert again.skipped == 3 and not again.indexed and list(again.failed) == [synthetic_event.corrupt.name]
    assert store.count_faces(EVENT_ORG, EVENT_ID) == before
    # The same media in another event is indexed there, independently.
    other = index_event(settings, EVENT_ORG, EVENT_ID + 1, [str(synthetic_event.photo)])
    assert other.indexed == [synthetic_event.photo.name] and other.faces == 6
    assert store.count_faces(EVENT_ORG, EVENT_ID) == before
    assert store.count_faces(EVENT_ORG, EVENT_ID + 1) == 6
    ids = store.faces.search().select(["face_id"]).limit(None).to_arrow().column("face_id").to_pylist()
    assert len(ids) == len(set(ids))


def test_search_is_scoped_to_the_event(store, pack, synthetic_event):
    vector = selfie_vector(pack, synthetic_event, 2)
    assert store.search(EVENT_ORG, 999, vector, limit=10) == []
    assert store.search(EVENT_ORG + 1, EVENT_ID, vector, limit=10) == []


def test_a_store_refuses_another_model_pack(indexed_event, settings):
    other = PackInfo("buffalo_l", "insightface/x", 512, 0.35, "n/a")
    with pytest.raises(PackMismatch, match="yunet-sface"):
        FaceStore.from_settings(settings, other)


def test_stages_turn_a_video_chunk_into_embedded_faces(settings, synthetic_event):
    path = synthetic_event.pan.path
    probe = probe_video(str(path))
    source = MediaSource(str(path), "k", "video", path.stat().st_size)
    (item, *_) = plan_work([(source, probe)], sample_fps=2.0, chunk_s=2.0)
    assert item.chunk == Chunk(0.0, 2.0, 0, 4) and item.probe == probe
    batches = list(decode_chunk(item, 2.0, "AUTO", None))
    assert batches[-1]["kind"].tolist() == [KIND_END] and batches[-1]["frames"][0] == 4
    frames = batches[0]
    assert frames["image"].shape == (4, 360, 640, 3)
    faces = Embed(settings.models)(DetectAlign(settings.models)(frames | {}))
    assert KIND_FACE in set(faces["kind"]) and set(faces["kind"]) <= {KIND_FACE, KIND_FRAME}
    # Every frame comes out: as its faces, or as one marker row when it has none (progress).
    assert set(faces["timestamp_s"].tolist()) == set(frames["timestamp_s"].tolist())
    assert faces["vector"].shape[1] == 128 and np.allclose(np.linalg.norm(faces["vector"], axis=1), 1, atol=1e-5)
    assert "crop" not in faces and "image" not in faces


def test_frames_out_counts_each_frame_once_per_chunk_in_row_order():
    def batch(*rows: tuple[str, str, float]) -> dict[str, np.ndarray]:
        kinds, keys, times = zip(*rows, strict=True)
        return {"kind": np.array(kinds), "media_key": np.array(keys), "timestamp_s": np.array(times)}

    last: dict[str, float] = {}
    chunk_of = {"a": 0, "b": 3}
    # Two faces of one frame, a faceless frame, then a's chunk ends and its next one starts.
    first = batch(
        (KIND_FACE, "a", 0.0), (KIND_FACE, "a", 0.0), (KIND_FRAME, "a", 0.5), (KIND_FACE, "b", 90.0),
        (KIND_END, "a", 0.0), (KIND_FACE, "a", 1.0),
    )  # fmt: skip
    assert frames_out(first, chunk_of, last) == {("a", 0): 2, ("b", 3): 1, ("a", 1): 1}
    # A frame whose faces were split across two batches counts once.
    chunk_of["a"] = 1
    assert frames_out(batch((KIND_FACE, "a", 1.0), (KIND_FACE, "a", 1.5)), chunk_of, last) == {("a", 1): 1}


def test_a_frame_counts_half_when_detected_and_whole_when_its_rows_are_out():
    status = IndexProgress(frames_planned=40)
    status.frames_detected = 20
    status.count()
    assert (status.frames_done, status.percent) == (10, 25.0)
    status.frames_out = 8
    status.count()
    assert status.frames_done == 14
    status.frames_detected = 60  # more than planned (never): capped
    status.count()
    assert status.frames_done == 24
    status.frames_out = 40
    status.count()
    assert (status.frames_done, status.percent) == (40, 100.0)


def test_decode_errors_become_an_end_marker(tmp_path):
    source = MediaSource(str(tmp_path / "missing.mp4"), "gone", "video", 0)
    item = WorkItem(source, MediaProbe(1.0, 25.0, 64, 64, "h264", 0.0), 0, Chunk(0.0, 1.0, 0, 2))
    (end,) = list(decode_chunk(item, 2.0, "AUTO", None))
    assert end["kind"][0] == KIND_END and end["frames"][0] == 0
    assert "decode failed" in end["error"][0] and "missing.mp4" in end["error"][0]


def test_pan_faces_link_into_one_track_per_person(store, pack, synthetic_event):
    """Each person crosses the pan once: their matched faces share one track, and the
    tracks table accounts for every face of the video."""
    key = synthetic_event.pan.path.name
    where = f"org_id = {EVENT_ORG} AND event_id = {EVENT_ID} AND media_key = '{key}'"
    faces = store.faces.search().where(where).select(["track_id"]).limit(None).to_arrow()
    tracks = store.tracks.search().where(where).limit(None).to_arrow()
    face_tracks = faces.column("track_id").to_pylist()
    assert min(face_tracks) >= 0  # every video face is on a track
    assert sorted(set(face_tracks)) == sorted(tracks.column("track_id").to_pylist())
    assert sum(tracks.column("faces").to_pylist()) == faces.num_rows
    for person in range(6):
        hits = store.search(EVENT_ORG, EVENT_ID, selfie_vector(pack, synthetic_event, person), 0.4, None, "video")
        assert len({h.track_id for h in hits if h.media_key == key}) == 1, person
    photo = store.faces.search().where(f"media_key = '{synthetic_event.photo.name}'").limit(None).to_arrow()
    assert set(photo.column("track_id").to_pylist()) == {-1}  # photos are not tracked
