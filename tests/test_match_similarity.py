"""Reported similarities are the selfie's (issue 21, item 4): query expansion decides what
matches and how it ranks, never the ``similarity`` / ``best_similarity`` a client reads.

A real LanceDB store of hand-made vectors (no models, no Ray): one confident frontal face
of the person (an expansion reference) and, in another video, faces below the threshold
that only expansion finds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.bib_search import fuse
from pipelines.config import MatchSettings, SegmentSettings
from pipelines.match import FaceMatch, References, find_person, timed_hits
from pipelines.models.base import PackInfo
from pipelines.segments import best_window, ranked_segments
from pipelines.store import FaceStore, faces_schema

DIM, THRESHOLD = 8, 0.4
PACK = PackInfo("test-pack", "1", DIM, THRESHOLD, "n/a")
ORG, EVENT = 1, 2


def vec(*v: float) -> np.ndarray:
    a = np.zeros(DIM, np.float32)
    a[: len(v)] = v
    return a / np.linalg.norm(a)


SELFIE = vec(1.0)
FRONTAL = vec(0.8, 0.6)  # 0.8 to the selfie: matched, and 0.1 above the threshold: an expansion reference
# 0.30 to the selfie (below the threshold, above expansion_floor), 0.78 to FRONTAL: expansion finds it.
PROFILE = vec(0.3, 0.9, float(np.sqrt(0.1)))
PROFILE_2 = vec(0.29, 0.91, float(np.sqrt(1 - 0.29**2 - 0.91**2)))


def face(key: str, t: float, v: np.ndarray) -> dict:
    return {
        "face_id": f"{key}-{t}", "org_id": ORG, "event_id": EVENT, "media_type": "video", "media_key": key,
        "timestamp_s": t, "frame_index": int(t * 30), "bbox": [0, 0, 40, 40], "landmarks": [0.0] * 10,
        "det_score": 0.9, "face_px": 40.0, "track_id": -1, "quality": 0.8, "vector": v.tolist(),
        "model_pack": PACK.name, "model_version": PACK.version,
    }  # fmt: skip


@pytest.fixture()
def store(tmp_path) -> FaceStore:
    s = FaceStore(str(tmp_path / "lancedb"), PACK)
    rows = [face("a.mp4", t, FRONTAL) for t in (1.0, 1.5)]
    rows += [face("b.mp4", 3.0, PROFILE), face("b.mp4", 3.5, PROFILE_2)]
    s.add_faces(pa.Table.from_pylist(rows, schema=faces_schema(PACK)))
    return s


def selfie_cosines(store: FaceStore, key: str) -> dict[float, float]:
    """Recomputed from the table: each face's cosine similarity to the selfie."""
    rows = store.faces.search().where(f"media_key = '{key}'").select(["timestamp_s", "vector"]).to_arrow()
    vectors = np.asarray(rows.column("vector").to_pylist(), np.float32)
    sims = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ SELFIE
    return dict(zip(rows.column("timestamp_s").to_pylist(), sims.tolist(), strict=True))


def test_a_face_found_through_expansion_reports_its_similarity_to_the_selfie(store):
    refs = References(SELFIE[None])
    plain = find_person(store, ORG, EVENT, refs, THRESHOLD, MatchSettings(expansion=False))
    assert "b.mp4" not in plain  # only expansion reaches the second video
    found = find_person(store, ORG, EVENT, refs, THRESHOLD, MatchSettings())
    assert sorted(found) == ["a.mp4", "b.mp4"]
    for key in found:
        truth = selfie_cosines(store, key)
        for m in found[key]:
            assert m.similarity == pytest.approx(truth[m.timestamp_s], abs=1e-5)
    # The evidence that matched them is kept apart: the frontal face scores 1.0 against
    # itself as an expansion reference, the profiles their similarity to it.
    assert all(m.rank_score == pytest.approx(1.0, abs=1e-5) for m in found["a.mp4"])
    assert all(m.rank_score > THRESHOLD > m.similarity for m in found["b.mp4"])

    rules = SegmentSettings(max_gap_s=2.0, min_hits=2)
    hits = timed_hits(found)
    segments = {s.media_key: s for s in ranked_segments(hits, {"a.mp4": (0, 10), "b.mp4": (0, 10)}, rules)}
    for key, seg in segments.items():
        best = max(selfie_cosines(store, key).values())
        assert seg.best_similarity == pytest.approx(best, abs=1e-5) and seg.best_similarity < 1.0
    assert segments["b.mp4"].best_similarity == pytest.approx(0.30, abs=1e-3)
    assert segments["a.mp4"].best_similarity == pytest.approx(0.80, abs=1e-3)
    # Ranking still uses the match's evidence: the sum of the scores, not of the similarities.
    assert segments["a.mp4"].score == pytest.approx(2.0, abs=1e-4)
    window = best_window(hits["b.mp4"], 0.0, 10.0, rules)
    assert window is not None and window.best_similarity == pytest.approx(0.30, abs=1e-3)
    assert window.mean_similarity < THRESHOLD < window.mean_score


def test_fusion_keeps_the_selfie_similarity_of_a_face_both_kinds_found():
    by_selfie = {"v.mp4": [FaceMatch(1.0, 0.45, 3, (0, 0, 4, 4), score=0.6)]}
    by_bib = {"v.mp4": [FaceMatch(1.0, 0.99, 3, (0, 0, 4, 4)), FaceMatch(2.0, 0.97, 3, (1, 1, 5, 5))]}
    fused = fuse(by_selfie, by_bib)["v.mp4"]
    assert [(m.timestamp_s, m.similarity, m.rank_score, m.confirmed) for m in fused] == [
        (1.0, 0.45, 0.99, True),
        (2.0, 0.97, 0.97, True),
    ]


def test_the_openapi_schema_says_what_the_similarity_fields_mean():
    from pydantic import TypeAdapter

    from app.core import schemas

    defs = TypeAdapter(schemas.ResultData).json_schema()["$defs"]
    for model in ("ClipItem", "SegmentItem", "ExtraClipItem"):
        text = defs[model]["properties"]["best_similarity"]["description"]
        assert "selfies" in text and "expansion" in text, (model, text)
    assert "match scores" in defs["SegmentItem"]["properties"]["score"]["description"]
    photo = TypeAdapter(schemas.PhotoItem).json_schema()["properties"]["similarity"]["description"]
    assert "closest selfie" in photo
