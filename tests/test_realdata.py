"""Evaluation on real footage from ../shared/data/faces (skipped when it is absent)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from pipelines.evaluate import score_hits
from pipelines.index import index_event
from pipelines.models import pack_info
from pipelines.selfie import decode_image_bytes, embed_selfie
from pipelines.store import FaceStore
from tests.conftest import shared_faces_or_skip

log = logging.getLogger(__name__)

HAMILTON = "videos/ageitgey_face_recognition/examples/short_hamilton_clip.mp4"
SELFIE_CLIP = "videos/deepinsight_insightface/cpp-package/inspireface/python/test/data/video/810_1684206192.mp4"
STREET = "videos/timesler_facenet-pytorch/examples/video.mp4"
ORG, EVENT = 900, 1


@pytest.fixture(scope="module")
def real_event(ray_cluster, settings):
    root = shared_faces_or_skip()
    report = index_event(settings, ORG, EVENT, [str(root / v) for v in (HAMILTON, SELFIE_CLIP, STREET)])
    assert len(report.indexed) == 3, report.failed
    store = FaceStore.from_settings(settings, pack_info(settings.models.pack))
    truth: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with open(root / "video_truth.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            truth.setdefault((row["video_path"], row["identity"]), []).append(
                (float(row["start_s"]), float(row["end_s"]))
            )
    return root, store, truth


def sample_times(store: FaceStore, media_key: str) -> list[float]:
    """Every sampled timestamp of a video (frames with at least one face are stored)."""
    rows = (
        store.faces.search()
        .where(f"org_id = {ORG} AND event_id = {EVENT} AND media_key = '{media_key}'")
        .select(["timestamp_s"])
        .limit(None)
        .to_arrow()
    )
    return sorted(set(rows.column("timestamp_s").to_pylist()))


@pytest.mark.parametrize(
    ("photo", "identity"),
    [
        ("images/ageitgey_face_recognition/examples/lin-manuel-miranda.png", "lin_manuel_miranda"),
        ("images/ageitgey_face_recognition/examples/obama.jpg", "barack_obama"),
    ],
)
def test_real_selfies_hit_inside_labelled_intervals(real_event, pack, photo, identity):
    root, store, truth = real_event
    query = embed_selfie(pack, decode_image_bytes((root / photo).read_bytes()), 0.7, 20)
    threshold = pack.info.threshold
    hits = store.search(ORG, EVENT, query.vector, min_similarity=threshold, limit=None)
    hamilton = Path(HAMILTON).name
    times = [h.timestamp_s for h in hits if h.media_key == hamilton]
    score = score_hits(times, truth[(HAMILTON, identity)], sample_times(store, hamilton))
    log.info(
        "%s at threshold %.2f: %d hits, precision %.2f, recall %.2f (%d/%d labelled samples)",
        identity,
        threshold,
        score.hits,
        score.precision,
        score.recall,
        score.found_samples,
        score.labelled_samples,
    )
    print(
        f"\n{identity}: threshold {threshold:.2f}, precision {score.precision:.2f}, recall {score.recall:.2f} ({score.found_samples}/{score.labelled_samples})"
    )
    assert score.hits > 0
    assert score.precision >= 0.9
    assert score.recall >= 0.75
    # Nobody in the street video or the selfie-style clip is either person.
    assert not [h for h in hits if h.media_key != hamilton]


def test_street_face_does_not_match_hamilton(real_event, pack):
    _, store, _ = real_event
    street = Path(STREET).name
    rows = (
        store.faces.search()
        .where(f"org_id = {ORG} AND event_id = {EVENT} AND media_key = '{street}'")
        .select(["vector", "face_px"])
        .limit(None)
        .to_arrow()
        .to_pylist()
    )
    assert rows, "no face detected in the street video"
    biggest = max(rows, key=lambda r: r["face_px"])
    hits = store.search(ORG, EVENT, biggest["vector"], min_similarity=pack.info.threshold, limit=None)
    assert hits and all(h.media_key == street for h in hits)


def test_score_hits_counts_precision_and_recall():
    s = score_hits([1.0, 2.0, 9.0], [(0.5, 2.2)], [0.5, 1.0, 1.5, 2.0, 3.0], tolerance=0.3)
    assert (s.hits, s.true_hits, s.labelled_samples, s.found_samples) == (3, 2, 4, 2)
    assert s.precision == pytest.approx(2 / 3) and s.recall == 0.5


def test_shared_folder_is_never_copied_into_the_repo():
    repo = Path(__file__).resolve().parents[1]
    tracked = [
        p
        for p in repo.rglob("*")
        if p.suffix.lower() in {".mp4", ".png", ".jpg"} and ".venv" not in p.parts and "demo-data" not in p.parts
    ]
    assert tracked == []
