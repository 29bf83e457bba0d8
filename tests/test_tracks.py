"""Face-track linking, track embeddings and evidence, shot cuts and face quality on synthetic data."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipelines.synthetic import insightface_image, read_bgr
from pipelines.tracks import (
    Track,
    TrackLinker,
    TrackSettings,
    box_iou,
    crop_sharpness,
    face_quality,
    frame_signature,
    is_shot_cut,
    signature_distance,
    track_evidence,
)

DIM = 128
SETTINGS = TrackSettings()
STEP_S = 0.5  # 2 fps sampling


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def identity(rng: np.random.Generator) -> np.ndarray:
    return unit(rng.standard_normal(DIM))


def face_of(ident: np.ndarray, rng: np.random.Generator, noise: float = 0.6) -> np.ndarray:
    """A video face of one identity: cosine to the identity ~0.85 at the default noise."""
    return unit(ident + noise * rng.standard_normal(DIM) / np.sqrt(DIM))


def box_at(cx: float, cy: float = 200.0, size: float = 80.0) -> np.ndarray:
    return np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])


def feed(linker: TrackLinker, t: float, faces: list[tuple[np.ndarray, np.ndarray]], cut: bool = False) -> np.ndarray:
    boxes = np.array([b for b, _ in faces]).reshape(-1, 4)
    vectors = np.array([v for _, v in faces]).reshape(len(faces), DIM)
    return linker.add_frame(t, boxes, vectors, np.full(len(faces), 0.8), cut=cut)


def test_crossing_people_stay_on_their_own_tracks():
    rng = np.random.default_rng(1)
    a, b = identity(rng), identity(rng)
    linker = TrackLinker(SETTINGS, "v1")
    ids_a, ids_b = [], []
    for i in range(12):
        # A walks right, B walks left; at i = 5 their boxes coincide and B is hidden behind A.
        fa, fb = (box_at(120 + 40 * i), face_of(a, rng)), (box_at(520 - 40 * i), face_of(b, rng))
        faces = [fa] if i == 5 else [fa, fb]
        order = rng.permutation(len(faces))  # detector order says nothing about identity
        ids = feed(linker, i * STEP_S, [faces[j] for j in order])
        got = dict(zip(order.tolist(), ids.tolist(), strict=True))
        ids_a.append(got[0])
        if 1 in got:
            ids_b.append(got[1])
    assert len(set(ids_a)) == 1 and len(set(ids_b)) == 1 and ids_a[0] != ids_b[0]
    tracks = linker.finish()
    assert sorted(t.n_faces for t in tracks) == [11, 12]


def test_people_swapping_places_between_samples_follow_their_embeddings():
    rng = np.random.default_rng(2)
    a, b = identity(rng), identity(rng)
    left, right = box_at(200), box_at(300)
    linker = TrackLinker(SETTINGS, "v1")
    first = feed(linker, 0.0, [(left, face_of(a, rng)), (right, face_of(b, rng))])
    feed(linker, 0.5, [(left, face_of(a, rng)), (right, face_of(b, rng))])
    # Box overlap alone would keep the places; the embeddings say the people swapped.
    swapped = feed(linker, 1.0, [(left, face_of(b, rng)), (right, face_of(a, rng))])
    assert swapped.tolist() == first[::-1].tolist()


def test_fast_face_links_through_motion_prediction():
    rng = np.random.default_rng(11)
    basis = np.linalg.qr(rng.standard_normal((DIM, 4)))[0].T
    # Every pair of faces has cosine 0.4: enough with overlap, too little to link without it.
    faces = [np.sqrt(0.4) * basis[0] + np.sqrt(0.6) * e for e in basis[1:]]
    boxes = [box_at(300), box_at(330), box_at(390)]  # accelerating: 30 px, then 60 px per sample
    assert box_iou(boxes[1][None], boxes[2][None])[0, 0] < SETTINGS.min_iou
    assert float(faces[2] @ unit(faces[0] + faces[1])) < SETTINGS.strong_link_similarity
    linker = TrackLinker(SETTINGS, "v1")
    ids = [feed(linker, i * STEP_S, [(box, v)])[0] for i, (box, v) in enumerate(zip(boxes, faces, strict=True))]
    assert len(set(ids)) == 1


def test_shot_cut_splits_a_track_even_when_boxes_overlap():
    rng = np.random.default_rng(3)
    a = identity(rng)
    linker = TrackLinker(SETTINGS, "v1")
    ids = [feed(linker, i * STEP_S, [(box_at(300), face_of(a, rng))], cut=(i == 3))[0] for i in range(6)]
    assert ids[:3] == [ids[0]] * 3 and ids[3:] == [ids[3]] * 3 and ids[0] != ids[3]
    closed = linker.pop_closed()  # the first track was closed by the cut, before finish
    assert [(t.track_id, t.n_faces, t.start_s, t.end_s) for t in closed] == [(ids[0], 3, 0.0, 1.0)]
    assert [(t.track_id, t.start_s) for t in linker.finish()] == [(ids[3], 1.5)]


def test_gap_longer_than_max_gap_splits_but_max_gap_itself_links():
    rng = np.random.default_rng(4)
    a = identity(rng)
    linker = TrackLinker(SETTINGS, "v1")
    ids = [feed(linker, t, [(box_at(300), face_of(a, rng))])[0] for t in (0.0, 0.5, 1.0)]
    feed(linker, 1.5, [])  # frames without faces are fed too
    ids.append(feed(linker, 1.0 + SETTINGS.max_gap_s, [(box_at(300), face_of(a, rng))])[0])
    assert len(set(ids)) == 1
    assert linker.pop_closed() == []
    later = feed(linker, 2.5 + SETTINGS.max_gap_s + 0.5, [(box_at(300), face_of(a, rng))])[0]
    assert later != ids[0]
    closed = linker.pop_closed()
    assert [(t.track_id, t.n_faces) for t in closed] == [(ids[0], 4)]


def _profile_sequence(rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Identity u; frontal faces, then a head turn: each face resembles the previous one more than u."""
    u, e1, e2 = (unit(v) for v in np.linalg.qr(rng.standard_normal((DIM, 3)))[0].T)
    frontal = [face_of(u, rng, noise=0.3) for _ in range(4)]
    turning = unit(0.6 * u + 0.8 * e1)
    profile = unit(0.2 * u + 0.35 * e1 + 0.915 * e2)
    return u, [*frontal, turning, profile]


def test_profile_face_stays_in_the_track_through_overlap_and_neighbour_similarity():
    rng = np.random.default_rng(5)
    u, faces = _profile_sequence(rng)
    turning, profile = faces[-2], faces[-1]
    # Preconditions that make this a profile case: it would not link to the identity, nor by
    # similarity alone, only through box overlap plus moderate similarity to its neighbour.
    assert float(profile @ u) < SETTINGS.min_link_similarity
    assert SETTINGS.min_link_similarity <= float(profile @ turning) < SETTINGS.strong_link_similarity
    linker = TrackLinker(SETTINGS, "v1")
    ids = [feed(linker, i * STEP_S, [(box_at(300 + 10 * i), v)])[0] for i, v in enumerate(faces)]
    # Turning back to frontal links through the track mean even though the last face was a profile.
    ids.append(feed(linker, len(faces) * STEP_S, [(box_at(300 + 10 * len(faces)), face_of(u, rng, 0.3))])[0])
    assert len(set(ids)) == 1

    # Same faces, but the profile appears far away: no overlap, so it starts its own track.
    linker = TrackLinker(SETTINGS, "v2")
    ids = [feed(linker, i * STEP_S, [(box_at(300 + 10 * i), v)])[0] for i, v in enumerate(faces[:-1])]
    far = feed(linker, len(faces[:-1]) * STEP_S, [(box_at(600), profile)])[0]
    assert len(set(ids)) == 1 and far != ids[0]


def test_dissimilar_face_in_the_same_place_starts_a_new_track():
    rng = np.random.default_rng(6)
    a, b = identity(rng), identity(rng)
    linker = TrackLinker(SETTINGS, "v1")
    first = feed(linker, 0.0, [(box_at(300), face_of(a, rng))])[0]
    second = feed(linker, 0.5, [(box_at(300), face_of(b, rng))])[0]
    assert first != second


def test_frames_out_of_order_raise():
    rng = np.random.default_rng(7)
    linker = TrackLinker(SETTINGS, "v1")
    feed(linker, 1.0, [(box_at(300), identity(rng))])
    with pytest.raises(ValueError, match="time order"):
        feed(linker, 0.5, [(box_at(300), identity(rng))])
    with pytest.raises(ValueError, match="time order"):
        feed(linker, 1.0, [])


def test_mismatched_inputs_raise():
    linker = TrackLinker(SETTINGS, "v1")
    with pytest.raises(ValueError, match="qualities"):
        linker.add_frame(0.0, np.zeros((2, 4)), np.zeros((2, DIM)), np.zeros(1))
    with pytest.raises(ValueError, match="face refs"):
        linker.add_frame(0.5, np.zeros((1, 4)), np.zeros((1, DIM)), np.zeros(1), face_refs=["a", "b"])


def test_track_embedding_is_unit_norm_and_weighted_toward_high_quality_faces():
    rng = np.random.default_rng(8)
    u, e = (unit(v) for v in np.linalg.qr(rng.standard_normal((DIM, 2)))[0].T)
    sharp, blurred = u, unit(0.5 * u + 0.866 * e)  # cosine 0.5 to each other: they link
    linker = TrackLinker(SETTINGS, "clip.mp4")
    boxes = np.stack([box_at(300), box_at(305)])
    linker.add_frame(0.0, boxes[:1], sharp[None], np.array([0.9]), face_refs=["f-sharp"])
    linker.add_frame(0.5, boxes[1:], blurred[None], np.array([0.1]), face_refs=["f-blurred"])
    [track] = linker.finish()
    assert isinstance(track, Track) and track.media_key == "clip.mp4"
    assert track.refs == ("f-sharp", "f-blurred") and track.n_faces == 2
    assert np.linalg.norm(track.embedding) == pytest.approx(1.0, abs=1e-5)
    assert float(track.embedding @ sharp) > float(track.embedding @ blurred)
    np.testing.assert_allclose(track.embedding, unit(0.9 * sharp + 0.1 * blurred), atol=1e-5)
    assert (track.best_ref, track.best_quality) == ("f-sharp", pytest.approx(0.9))
    np.testing.assert_allclose(track.boxes, boxes)
    np.testing.assert_allclose(track.timestamps, [0.0, 0.5])


def test_default_face_refs_are_running_face_indices():
    rng = np.random.default_rng(9)
    a, b = identity(rng), identity(rng)
    linker = TrackLinker(SETTINGS, "v1")
    feed(linker, 0.0, [(box_at(100), face_of(a, rng)), (box_at(400), face_of(b, rng))])
    feed(linker, 0.5, [(box_at(400), face_of(b, rng))])
    tracks = {t.track_id: t for t in linker.finish()}
    assert [tracks[i].refs for i in sorted(tracks)] == [(0,), (1, 2)]


def test_track_evidence_is_the_quality_weighted_mean_of_the_best_k():
    sims = np.array([0.9, 0.1, 0.8, 0.2, 0.05])
    assert track_evidence(sims, np.ones(5), k=2) == pytest.approx(0.85)
    quals = np.array([1.0, 1.0, 0.25, 1.0, 1.0])
    assert track_evidence(sims, quals, k=2) == pytest.approx((0.9 + 0.25 * 0.8) / 1.25)
    assert track_evidence(sims, np.ones(5), k=1) == pytest.approx(0.9)
    assert track_evidence(sims[:2], np.ones(2), k=3) == pytest.approx(0.5)  # fewer faces than k: all
    with pytest.raises(ValueError):
        track_evidence(np.array([]), np.array([]), k=3)


def test_track_evidence_method_scores_member_vectors():
    rng = np.random.default_rng(10)
    a = identity(rng)
    linker = TrackLinker(SETTINGS, "v1")
    for i in range(5):
        feed(linker, i * STEP_S, [(box_at(300), face_of(a, rng))])
    [track] = linker.finish()
    expected = track_evidence(track.vectors @ a.astype(np.float32), track.qualities, 3)
    assert track.evidence(a, 3) == pytest.approx(expected)
    assert track.evidence(a, 3) > track.evidence(identity(rng), 3) + 0.5


def test_frame_signature_separates_different_images_but_not_small_changes():
    t1 = cv2.resize(read_bgr(insightface_image("t1.jpg")), (640, 360), interpolation=cv2.INTER_AREA)
    other = cv2.resize(read_bgr(insightface_image("Tom_Hanks_54745.png")), (640, 360))
    shifted = cv2.warpAffine(t1, np.float32([[1, 0, 12], [0, 1, 6]]), (640, 360), borderMode=cv2.BORDER_REFLECT)
    changed = cv2.convertScaleAbs(shifted, alpha=1.05, beta=20)  # shifted and brightened
    sig = frame_signature(t1)
    assert sig.dtype == np.float32 and sig.ndim == 1 and sig.size < 100
    assert np.linalg.norm(sig) == pytest.approx(1.0, abs=1e-5)
    threshold = SETTINGS.cut_threshold
    assert is_shot_cut(sig, frame_signature(other), threshold)
    assert not is_shot_cut(sig, frame_signature(changed), threshold)
    assert not is_shot_cut(None, frame_signature(other), threshold)  # the first frame is no cut
    assert signature_distance(sig, sig) == pytest.approx(0.0, abs=1e-3)
    # Resolution does not matter: the same frame at 1280x720 has nearly the same signature.
    assert signature_distance(sig, frame_signature(cv2.resize(t1, (1280, 720)))) < 0.1


def test_face_quality_is_monotone_and_bounded():
    sizes = [10, 20, 40, 60, 80, 200]
    by_size = [face_quality(px, 0.9, 150.0) for px in sizes]
    assert by_size == sorted(by_size) and by_size[0] < by_size[3] < by_size[4]
    assert by_size[-1] == by_size[-2]  # saturated
    by_det = [face_quality(100, s, 150.0) for s in (0.5, 0.7, 0.9, 1.0)]
    assert by_det == sorted(by_det) and by_det[0] < by_det[-1]
    by_sharp = [face_quality(100, 0.9, s) for s in (0.0, 10.0, 50.0, 100.0, 1000.0)]
    assert by_sharp == sorted(by_sharp) and by_sharp[1] < by_sharp[3]
    assert all(0.0 <= q <= 1.0 for q in by_size + by_det + by_sharp)
    assert face_quality(500, 1.0, 1e6) == 1.0


def test_crop_sharpness_drops_with_blur():
    crop = cv2.resize(read_bgr(insightface_image("Tom_Hanks_54745.png")), (112, 112))
    sharp = crop_sharpness(crop)
    blurred = crop_sharpness(cv2.GaussianBlur(crop, (0, 0), 2.0))
    assert sharp > 4 * blurred
    assert face_quality(100, 0.9, sharp) > face_quality(100, 0.9, blurred)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])
