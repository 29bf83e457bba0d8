"""pipelines.detect: tile planning, coordinate mapping, NMS merge, and the three modes on a real face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipelines.config import load_settings
from pipelines.detect import (
    DETECT_MODES,
    box_iou,
    detect_faces,
    detector_at,
    drop_cut_faces,
    nms_merge,
    offset_detections,
    plan_axis,
    plan_tiles,
)
from pipelines.models import ModelPack, load_pack
from pipelines.models.base import Detections, filter_detections
from pipelines.synthetic import insightface_image, read_bgr


def dets(boxes: list[list[float]], scores: list[float]) -> Detections:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    # Landmarks at the box centre, so mapping can be checked on them too.
    centre = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    return Detections(b, np.repeat(centre[:, None, :], 5, axis=1), np.asarray(scores, np.float32))


# --- tile planning ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(1920, 640, 0.2), (1080, 640, 0.2), (1280, 640, 0.3), (721, 640, 0.2)]
)
def test_plan_axis_covers_the_frame_with_at_least_the_overlap(length, tile, overlap):
    starts = plan_axis(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    gaps = np.diff(starts)
    assert (gaps > 0).all()
    assert (tile - gaps >= overlap * tile - 1).all()  # neighbours share >= overlap (rounding: 1 px)
    # No superfluous tile: one fewer could not keep the overlap.
    if len(starts) > 2:
        assert (length - tile) / (len(starts) - 2) > tile * (1 - overlap)


def test_plan_axis_short_side_is_one_tile_and_bad_arguments_fail():
    assert plan_axis(360, 640, 0.2) == [0]
    assert plan_axis(640, 640, 0.2) == [0]
    with pytest.raises(ValueError):
        plan_axis(1000, 640, 1.0)
    with pytest.raises(ValueError):
        plan_axis(1000, 0, 0.2)


def test_plan_tiles_1080p_grid_and_every_small_face_fits_one_tile():
    tiles = plan_tiles(1920, 1080, 640, 0.2)
    assert len(tiles) == 4 * 2
    assert all(x2 - x1 == 640 and y2 - y1 == 640 for x1, y1, x2, y2 in tiles)
    # Any face up to the overlap width lies wholly inside some tile, wherever it is.
    face = 120
    for x in range(0, 1920 - face, 7):
        for y in range(0, 1080 - face, 11):
            assert any(x1 <= x and x + face <= x2 and y1 <= y and y + face <= y2 for x1, y1, x2, y2 in tiles)


# --- mapping and merging ------------------------------------------------------------------------


def test_offset_detections_moves_boxes_and_landmarks():
    moved = offset_detections(dets([[10, 20, 30, 50]], [0.9]), 100, 200)
    np.testing.assert_allclose(moved.boxes, [[110, 220, 130, 250]])
    np.testing.assert_allclose(moved.landmarks[0], [[120, 235]] * 5)
    assert moved.scores.tolist() == pytest.approx([0.9])
    assert len(offset_detections(Detections.empty(), 5, 5)) == 0


def test_drop_cut_faces_drops_only_faces_on_edges_shared_with_other_tiles():
    tile = (600, 0, 1240, 640)  # left and bottom edges are inside a 1920x1080 frame
    found = dets(
        [
            [600, 100, 640, 140],  # on the inner left edge: cut
            [800, 610, 840, 640],  # on the inner bottom edge: cut
            [800, 0, 840, 40],  # on the top edge, which is the frame's border: a real face
            [900, 300, 940, 340],  # inside
        ],
        [0.9, 0.9, 0.9, 0.9],
    )
    kept = drop_cut_faces(found, tile, 1920, 1080)
    np.testing.assert_allclose(kept.boxes[:, 0], [800, 900])


def test_nms_merge_keeps_the_higher_score_and_distinct_faces():
    scaled = dets([[100, 100, 140, 140], [500, 500, 540, 540]], [0.80, 0.95])
    tile = dets([[102, 101, 141, 142], [900, 900, 920, 920]], [0.90, 0.75])
    merged = nms_merge([scaled, tile], iou_threshold=0.35)
    assert len(merged) == 3
    # The duplicate of the first face comes from the tile (higher score); its box wins.
    first = merged.boxes[np.argmin(merged.boxes[:, 0])]
    np.testing.assert_allclose(first, [102, 101, 141, 142])
    assert sorted(merged.scores.tolist()) == pytest.approx([0.75, 0.90, 0.95])
    assert len(nms_merge([])) == 0 and len(nms_merge([Detections.empty()])) == 0


def test_nms_merge_keeps_overlapping_faces_below_the_iou_threshold():
    a = dets([[0, 0, 40, 40]], [0.9])
    b = dets([[30, 0, 70, 40]], [0.8])  # IoU 10*40 / (2*1600 - 400) = 0.14
    assert len(nms_merge([a, b], iou_threshold=0.35)) == 2
    assert len(nms_merge([a, b], iou_threshold=0.1)) == 1


def test_nms_merge_never_loses_a_face_without_a_stronger_overlapping_one():
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 300, (60, 2))
    size = rng.uniform(10, 60, (60, 1))
    boxes = np.concatenate([xy, xy + size], axis=1)
    scores = rng.uniform(0.5, 1.0, 60)
    parts = [dets(boxes[:30].tolist(), scores[:30].tolist()), dets(boxes[30:].tolist(), scores[30:].tolist())]
    merged = nms_merge(parts, iou_threshold=0.35)
    assert 0 < len(merged) < 60
    for box, score in zip(boxes, scores, strict=True):
        iou = box_iou(box.astype(np.float32), merged.boxes)
        # Either kept, or suppressed by a kept box that overlaps it enough and scores at least as high.
        assert ((iou > 0.35) & (merged.scores >= np.float32(score))).any() or np.isclose(iou, 1).any()
    # Kept boxes never overlap each other above the threshold.
    for i in range(len(merged)):
        others = np.delete(merged.boxes, i, axis=0)
        assert (box_iou(merged.boxes[i], others) <= 0.35).all()


# --- the real detector --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yunet(tmp_path_factory) -> ModelPack:
    cache = tmp_path_factory.mktemp("detect-model-cache")
    return load_pack(load_settings(None, models={"cache_dir": str(cache), "intra_op_threads": 1}).models)


def small_face_frame(face_px: int, ox: int = 1011, oy: int = 517) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 1920x1080 grey frame with a t1.jpg face pasted ``face_px`` wide at (ox, oy); returns its box."""
    image = read_bgr(insightface_image("t1.jpg"))
    # Box of one t1.jpg face (found at full resolution once; stable for this image).
    x1, y1, x2, y2 = 905, 58, 1005, 202
    w = x2 - x1
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    crop = image[max(0, cy - w) : cy + w, cx - w : cx + w]  # the face with some head and background
    scale = face_px / w
    small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((1080, 1920, 3), 110, np.uint8)
    frame[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
    fx1 = ox + round((x1 - (cx - w)) * scale)
    fy1 = oy + round((y1 - max(0, cy - w)) * scale)
    return frame, (fx1, fy1, fx1 + face_px, fy1 + round((y2 - y1) * scale))


def test_t1_reference_box_is_where_the_test_expects_it(yunet):
    found = detector_at(yunet.detector, 1280).detect(read_bgr(insightface_image("t1.jpg")))
    best = found.boxes[np.argmin(np.abs(found.boxes[:, 0] - 905))]
    np.testing.assert_allclose(best, [905, 58, 1005, 202], atol=3)


def test_tiles_and_source_find_a_small_face_that_scaled_misses(yunet):
    # 24 px: above min_face_px (20), so it matters to indexing; 8 px at the 640 px scaled input,
    # below what YuNet finds (~10 px). (A 14-18 px face would be dropped by min_face_px anyway.)
    frame, truth = small_face_frame(24)
    kept = {mode: filter_detections(detect_faces(yunet.detector, frame, mode, 640), 0.7, 20) for mode in DETECT_MODES}
    assert len(kept["scaled"]) == 0
    for mode in ("source", "tiles", "scaled+source"):
        assert len(kept[mode]) == 1, mode
        box = kept[mode].boxes[0]
        assert np.abs(box - np.asarray(truth)).max() < 8, (mode, box, truth)
        lm = kept[mode].landmarks[0]  # landmarks mapped back too: inside the face box
        assert (lm[:, 0] >= box[0] - 2).all() and (lm[:, 0] <= box[2] + 2).all()
        assert (lm[:, 1] >= box[1] - 2).all() and (lm[:, 1] <= box[3] + 2).all()


@pytest.mark.parametrize("mode", ["tiles", "scaled+source"])
def test_merged_modes_keep_a_big_face_once(yunet, mode):
    # A face larger than a tile's overlap is cut by tiles; the scaled pass must still give it, once.
    frame, truth = small_face_frame(300, ox=700, oy=300)  # crosses the tile rows' edges at y 440 and 640
    found = detect_faces(yunet.detector, frame, mode, 640)
    assert len(found) == 1
    assert box_iou(np.asarray(truth, np.float32), found.boxes)[0] > 0.7


def test_small_frames_use_the_scaled_pass_in_every_mode(yunet):
    frame = cv2.resize(read_bgr(insightface_image("t1.jpg")), (600, 415), interpolation=cv2.INTER_AREA)
    scaled = detect_faces(yunet.detector, frame, "scaled", 640)
    assert len(scaled) == 6
    for mode in ("source", "tiles", "scaled+source"):
        other = detect_faces(yunet.detector, frame, mode, 640)
        np.testing.assert_allclose(other.boxes, scaled.boxes)


def test_detector_at_shares_the_session_and_unknown_modes_fail(yunet):
    other = detector_at(yunet.detector, 1920)
    assert other.det_size == 1920 and yunet.detector.det_size == 640
    assert other.session is yunet.detector.session
    with pytest.raises(ValueError):
        detect_faces(yunet.detector, np.zeros((1080, 1920, 3), np.uint8), "huge", 640)
    with pytest.raises(TypeError):
        detector_at(object(), 640)  # type: ignore[arg-type]
