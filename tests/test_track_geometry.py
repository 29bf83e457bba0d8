"""Track geometry and face quality in numbers (pipelines/tracks.py): the constant-velocity box
prediction, IoU of degenerate boxes, sharpness of colour and grey crops, quality ramps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipelines.synthetic import insightface_image, read_bgr
from pipelines.tracks import _OpenTrack, box_iou, crop_sharpness, face_quality, track_evidence


def track_with(*members: tuple[float, list[float]]) -> _OpenTrack:
    track = _OpenTrack(0)
    for i, (t, box) in enumerate(members):
        track.add(i, t, np.array(box, dtype=np.float64), 0.8, np.ones(4, dtype=np.float32) / 2)
    return track


def test_one_member_predicts_its_own_box():
    assert track_with((1.0, [10, 20, 30, 40])).predicted_box(5.0).tolist() == [10, 20, 30, 40]


def test_the_box_moves_at_the_centre_velocity_of_the_last_two_members_keeping_the_last_size():
    # Centres (5, 5) at t=1 and (10, 8) at t=3: 2.5 px/s right, 1.5 px/s down.
    track = track_with((0.0, [100, 100, 120, 120]), (1.0, [0, 0, 10, 10]), (3.0, [4, 2, 16, 14]))
    assert track.predicted_box(5.0) == pytest.approx([9, 5, 21, 17])
    assert track.predicted_box(3.0) == pytest.approx([4, 2, 16, 14])


def test_zero_area_boxes_overlap_nothing():
    point = [5.0, 5.0, 5.0, 5.0]
    line = [0.0, 5.0, 10.0, 5.0]
    square = [0.0, 0.0, 10.0, 10.0]
    iou = box_iou(np.array([point, line, square]), np.array([point, line, square]))
    assert iou.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    inverted = [10.0, 10.0, 0.0, 0.0]  # x2 < x1: no area, not a negative one
    assert box_iou(np.array([inverted]), np.array([square])).tolist() == [[0.0]]


def test_iou_of_partly_overlapping_boxes_of_different_sizes():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[5.0, 0.0, 25.0, 20.0], [0.0, 5.0, 10.0, 15.0]])
    assert box_iou(a, b).ravel() == pytest.approx([50.0 / (100 + 400 - 50), 50.0 / 150.0])
    assert box_iou(b, a).shape == (2, 1)


def test_a_colour_crop_is_as_sharp_as_its_grey_version():
    crop = cv2.resize(read_bgr(insightface_image("t1.jpg"))[100:300, 100:300], (112, 112))
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    assert crop_sharpness(crop) == pytest.approx(crop_sharpness(grey)) and crop_sharpness(grey) > 0
    flat = np.full((112, 112), 128, dtype=np.uint8)
    assert crop_sharpness(flat) == 0.0


def test_face_quality_ramps_are_linear_until_they_saturate():
    assert face_quality(40.0, 1.0, 100.0) == pytest.approx(0.5)
    assert face_quality(80.0, 1.0, 25.0) == pytest.approx(0.25)
    assert face_quality(80.0, 0.5, 100.0) == pytest.approx(0.5)
    assert face_quality(40.0, 0.5, 50.0) == pytest.approx(0.125)
    assert face_quality(160.0, 2.0, 400.0) == 1.0
    assert face_quality(-1.0, 1.0, 100.0) == 0.0 and face_quality(80.0, -0.5, 100.0) == 0.0
    assert face_quality(80.0, 1.0, -3.0) == 0.0
    assert face_quality(20.0, 1.0, 10.0, full_face_px=20.0, full_sharpness=10.0) == 1.0


def test_track_evidence_with_k_past_the_track_and_zero_qualities():
    assert track_evidence(np.array([0.2, 0.8]), np.array([0.0, 0.0]), k=5) == pytest.approx(0.5)
    assert track_evidence(np.array([0.2, 0.8, 0.6]), np.array([1.0, 0.5, 0.5]), k=1) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        track_evidence(np.array([0.2]), np.array([1.0]), k=0)
    with pytest.raises(ValueError):
        track_evidence(np.array([]), np.array([]), k=1)
    with pytest.raises(ValueError):
        track_evidence(np.array([0.2, 0.3]), np.array([1.0]), k=1)
