"""Reframed clips: the pure crop path (pipelines/reframe.py), its ffmpeg expression checked
against what ffmpeg actually crops, and 9:16 / 1:1 clips of the synthetic pan that must keep
the matched person's face near the middle (checked by running the detector on the output)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from pipelines.clip import cut_clip, probe_clip
from pipelines.config import ClipSettings
from pipelines.reframe import CropPath, crop_size, piecewise_linear_expr, plan_crop_path
from pipelines.selfie import embed_selfie
from pipelines.synthetic import PanVideo, selfie_of

SETTINGS = ClipSettings()


def face_rows(
    times: np.ndarray, cx: np.ndarray | float, cy: np.ndarray | float = 180.0, size: float = 40.0
) -> np.ndarray:
    """(t, x1, y1, x2, y2) rows of a ``size`` px face centred at (cx, cy)."""
    cx, cy = np.broadcast_to(cx, np.shape(times)), np.broadcast_to(cy, np.shape(times))
    return np.stack([times, cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], axis=1)


def crop_centre_x(path: CropPath, t: np.ndarray) -> np.ndarray:
    return path.at(t)[0] + path.width / 2


# --- crop size --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "aspect", "expected"),
    [
        ((640, 360), "9:16", (202, 360)),
        ((640, 360), "1:1", (360, 360)),
        ((640, 360), "source", (640, 360)),
        ((1920, 1080), "9:16", (606, 1080)),
        ((360, 640), "9:16", (360, 640)),  # already 9:16: the whole frame
        ((360, 640), "1:1", (360, 360)),
        ((1080, 1440), "9:16", (810, 1440)),  # 3:4 portrait: still full height
        ((720, 1600), "9:16", (720, 1280)),  # taller than 9:16: full width
        ((1081, 607), "1:1", (606, 606)),  # odd sizes round down to even
        ((1081, 607), "source", (1080, 606)),
    ],
)
def test_crop_size_is_the_largest_even_crop_of_the_aspect(source, aspect, expected):
    w, h = crop_size(*source, aspect)
    assert (w, h) == expected
    assert w % 2 == 0 and h % 2 == 0 and w <= source[0] and h <= source[1]


def test_unknown_aspect_is_rejected():
    with pytest.raises(ValueError, match="aspect"):
        crop_size(640, 360, "4:5")


# --- path planning ----------------------------------------------------------------------


def test_crop_follows_a_moving_face_and_smooths_its_jitter():
    rng = np.random.default_rng(0)
    times = np.arange(0.0, 10.01, 0.5)
    true_cx = 150 + 30 * times  # 30 px/s, well inside the frame
    noisy = true_cx + rng.normal(0, 6, len(times))
    path = plan_crop_path(face_rows(times, noisy), (640, 360), "9:16", 0.0, 10.0)

    t = np.arange(0.0, 10.0, 0.1)
    centre = crop_centre_x(path, t)
    assert np.abs(centre - (150 + 30 * t)).max() < 12  # follows (dead zone 10 px, plus noise)
    # Smooth: the camera's velocity barely changes between frames, unlike the raw samples'.
    raw_accel = np.abs(np.diff(noisy, 2)).mean() / 0.5**2
    cam_accel = np.abs(np.diff(np.interp(times, t, centre), 2)).mean() / 0.5**2
    assert cam_accel < raw_accel / 5, (cam_accel, raw_accel)
    assert len(path.times) <= 10.0 / 0.5 + 1  # at most one breakpoint per 0.5 s


def test_small_head_motion_inside_the_dead_zone_does_not_move_the_crop():
    rng = np.random.default_rng(1)
    times = np.arange(0.0, 8.01, 0.5)
    path = plan_crop_path(face_rows(times, 320 + rng.uniform(-6, 6, len(times))), (640, 360), "9:16", 0.0, 8.0)
    x, y = path.at(np.arange(0.0, 8.0, 0.04))
    assert np.ptp(x) < 3 and np.ptp(y) == 0
    assert abs(x.mean() + path.width / 2 - 320) < 8


def test_crop_is_clamped_inside_the_frame():
    times = np.arange(0.0, 6.01, 0.5)
    cx = np.where(times < 3, 5.0, 635.0)  # at the very left, then the very right edge
    path = plan_crop_path(face_rows(times, cx), (640, 360), "9:16", 0.0, 6.0)
    x, _ = path.at(np.arange(0.0, 6.0, 0.02))
    assert x.min() >= 0 and x.max() <= 640 - path.width
    assert path.at(0.0)[0] == pytest.approx(0, abs=0.5)  # pinned left, not centred off-frame
    assert path.at(6.0)[0] == pytest.approx(640 - path.width, abs=0.5)


def test_crop_holds_at_the_ends_where_samples_are_missing():
    times = np.arange(3.0, 6.01, 0.5)  # samples only in the middle of [0, 10]
    path = plan_crop_path(face_rows(times, 200 + 40 * (times - 3)), (640, 360), "9:16", 0.0, 10.0)
    x, _ = path.at(np.array([0.0, 1.0, 2.0, 8.0, 9.0, 10.0]))
    assert x[0] == pytest.approx(x[1], abs=0.5) and x[1] == pytest.approx(x[2], abs=1.0)
    assert x[3] == pytest.approx(x[4], abs=0.5) and x[4] == pytest.approx(x[5], abs=0.5)
    assert x[0] + path.width / 2 == pytest.approx(200, abs=12)  # held at the first face
    assert x[-1] + path.width / 2 == pytest.approx(320, abs=12)  # and at the last


def test_gaps_between_samples_are_bridged():
    times = np.array([0.0, 0.5, 1.0, 4.0, 4.5, 5.0])  # 3 s without a face
    path = plan_crop_path(face_rows(times, 150 + 40 * times), (640, 360), "9:16", 0.0, 5.0)
    assert crop_centre_x(path, np.array([2.5]))[0] == pytest.approx(250, abs=12)


def test_portrait_source_square_crop_moves_vertically():
    times = np.arange(0.0, 8.01, 0.5)
    cy = 150 + 40 * times  # 150 -> 470 px down a 640 px tall frame
    path = plan_crop_path(face_rows(times, 180.0, cy), (360, 640), "1:1", 0.0, 8.0)
    assert (path.width, path.height) == (360, 360)
    t = np.arange(0.0, 8.0, 0.1)
    x, y = path.at(t)
    assert np.all(x == 0)  # no room sideways
    assert np.abs(y + 180 - np.clip(150 + 40 * t, 180, 460)).max() < 0.05 * 360 + 3  # dead zone + 3 px
    assert "y='0'" not in path.ffmpeg_filter()


def test_no_faces_gives_a_still_centred_crop():
    path = plan_crop_path([], (640, 360), "1:1", 2.0, 5.0)
    assert len(path.times) == 1
    assert path.ffmpeg_filter() == "crop=360:360:x='140':y='0'"


def test_bad_rows_are_ignored_and_bad_windows_rejected():
    rows = np.array([[1.0, 100, 100, 140, 140], [np.nan, 0, 0, 1, 1]])
    path = plan_crop_path(rows, (640, 360), "9:16", 0.0, 2.0)
    assert crop_centre_x(path, np.array([1.0]))[0] == pytest.approx(120, abs=1)
    with pytest.raises(ValueError):
        plan_crop_path(rows, (640, 360), "9:16", 2.0, 2.0)


def test_expression_is_piecewise_linear_with_shifted_times():
    expr = piecewise_linear_expr(np.array([1.0, 2.0, 4.0]), np.array([10.0, 30.0, 30.0]))
    assert expr == "10+20*clip(t-1,0,1)"  # the still segment adds no term
    assert piecewise_linear_expr(np.array([-0.5, 1.5]), np.array([5.0, 1.0])) == "5-2*clip(t+0.5,0,2)"


# --- the expression as ffmpeg evaluates it ----------------------------------------------


def crop_offsets_seen_by_ffmpeg(path: CropPath, offset_s: float, duration_s: float, rate: float) -> np.ndarray:
    """Crop x per output frame of a horizontal ramp (pixel value encodes its column)."""
    w, h = path.source_size
    # Gray, so the crop may sit on odd columns too; 32 px tall keeps geq fast.
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", f"nullsrc=s={w}x{h}:r={rate}:d={duration_s},format=gray,geq=lum='X*255/{w - 1}'",
        "-vf", path.ffmpeg_filter(offset_s), "-f", "rawvideo", "-pix_fmt", "gray", "-",
    ]  # fmt: skip
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, path.height, path.width)
    return frames[:, :, 0].mean(axis=1) * (w - 1) / 255


@pytest.mark.parametrize("duration_s", [60.0, 600.0])
def test_ffmpeg_crops_where_the_path_says_even_for_long_clips(duration_s):
    # A face swinging across the frame every few seconds: a breakpoint every 0.5 s.
    rng = np.random.default_rng(2)
    times = np.arange(0.0, duration_s + 0.01, 0.5)
    cx = 320 + 250 * np.sin(times * 1.3) + rng.normal(0, 3, len(times))
    path = plan_crop_path(face_rows(times, cx, 16.0, 8.0), (640, 32), "9:16", 0.0, duration_s)
    assert path.width == 18
    assert len(path.times) > duration_s  # dense: the worst case for the expression
    # ~3.1 kB for 60 s, ~32 kB for 10 min; one Linux argv item may hold 128 kB.
    assert len(path.ffmpeg_filter()) < 30 * len(path.times)
    rate = 5.0 if duration_s <= 60 else 0.5
    seen = crop_offsets_seen_by_ffmpeg(path, 0.0, duration_s, rate)
    expected, _ = path.at(np.arange(len(seen)) / rate)
    assert len(seen) == round(duration_s * rate)
    assert np.abs(seen - expected).max() < 3.5  # ramp quantisation is 2.5 px


def test_ffmpeg_time_is_shifted_by_the_offset():
    path = CropPath((640, 32), 18, 32, np.array([10.0, 12.0]), np.array([100.0, 300.0]), np.array([0.0, 0.0]))
    seen = crop_offsets_seen_by_ffmpeg(path, 10.0, 3.0, 5.0)
    assert np.abs(seen - np.interp(np.arange(15) / 5, [0.0, 2.0], [100.0, 300.0])).max() < 3.5


# --- clips of the synthetic pan ---------------------------------------------------------


def pan_face_rows(pan: PanVideo, person: int, start_s: float, end_s: float, rng: np.random.Generator) -> np.ndarray:
    """The person's face boxes in frame at ~2 fps from the pan geometry (the crop window
    moves right at speed_px_s, so the face moves left), with detector-like jitter and a gap."""
    times = np.arange(start_s + 0.2, end_s, 0.5)
    times = times[(times < start_s + 3.0) | (times > start_s + 4.5)]  # 1.5 s missed by the detector
    shift = pan.speed_px_s * np.minimum(times, pan.duration_s)  # make_pan_video's crop x
    x1, y1, x2, y2 = pan.face_boxes[person]
    dy = np.full_like(times, -pan.y_offset)
    rows = np.stack([times, x1 - shift, y1 + dy, x2 - shift, y2 + dy], axis=1)
    rows[:, 1:] += rng.normal(0, 3, (len(times), 4))
    return rows


def face_centres_in_clip(pack, clip: Path, selfie_vector: np.ndarray, every: int = 5) -> list[float | None]:
    """Per sampled frame, the x of the face most like the selfie (None: no such face)."""
    centres: list[float | None] = []
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            if i % every:
                continue
            img = frame.to_ndarray(format="bgr24")
            dets = pack.detector.detect(img)
            if not len(dets):
                centres.append(None)
                continue
            sims = pack.embedder.embed(pack.align_all(img, dets)) @ selfie_vector
            best = int(np.argmax(sims))
            centres.append(float(dets.boxes[best, [0, 2]].mean()) if sims[best] > 0.3 else None)
    return centres


def fraction_centred(centres: list[float | None], width: int) -> float:
    """Share of frames whose face centre lies in the middle 60 % of the width."""
    inside = [c is not None and 0.2 * width <= c <= 0.8 * width for c in centres]
    return sum(inside) / len(inside)


@pytest.fixture(scope="module")
def person2(pack, synthetic_event) -> np.ndarray:
    pan = synthetic_event.pan
    return embed_selfie(pack, selfie_of(pan.face_boxes[2] / pan.scale), 0.7, 20).vector


@pytest.mark.parametrize(
    ("aspect", "size", "window"),
    [("9:16", (202, 360), (2.0, 11.0)), ("1:1", (360, 360), (2.0, 8.0))],
)
def test_reframed_clip_keeps_the_person_near_the_middle(tmp_path, pack, synthetic_event, person2, aspect, size, window):
    pan = synthetic_event.pan
    start, end = window
    rows = pan_face_rows(pan, 2, start, end, np.random.default_rng(3))
    path = plan_crop_path(rows, (pan.width, pan.height), aspect, start, end)
    clip, poster = tmp_path / "clip.mp4", tmp_path / "poster.jpg"
    info = cut_clip(str(pan.path), start, end, clip, poster, start + 1.0, SETTINGS, reframe=path)

    assert (info.width, info.height) == size and info.width % 2 == 0 and info.height % 2 == 0
    # 9:16 to the nearest even width (360 * 9 / 16 = 202.5); exact 9:16 in even pixels would
    # need a height divisible by 32 and so cost rows.
    assert abs(info.width - info.height * (9 / 16 if aspect == "9:16" else 1)) <= 1
    assert info.duration_s == pytest.approx(end - start, abs=0.1)
    probed = replace(probe_clip(clip), encoding_reason="reframed", start_s=info.start_s, end_s=info.end_s)
    assert info == replace(probed, duration_s=info.duration_s) and info.has_audio  # never smart-cut
    with Image.open(poster) as img:
        assert img.size == size

    centres = face_centres_in_clip(pack, clip, person2)
    assert len(centres) >= (end - start) * pan.fps / 5 - 1
    assert fraction_centred(centres, info.width) >= 0.9, centres


def test_a_centre_crop_would_lose_the_person(tmp_path, pack, synthetic_event, person2):
    """The check above can fail: a still centre crop of the same window does."""
    pan = synthetic_event.pan
    path = plan_crop_path([], (pan.width, pan.height), "9:16", 2.0, 11.0)
    clip = tmp_path / "clip.mp4"
    info = cut_clip(str(pan.path), 2.0, 11.0, clip, tmp_path / "poster.jpg", 2.0, SETTINGS, reframe=path)
    assert fraction_centred(face_centres_in_clip(pack, clip, person2), info.width) < 0.75  # measured 0.56


def test_reframe_for_another_source_size_is_rejected(tmp_path, synthetic_event):
    path = plan_crop_path([], (1280, 720), "9:16", 2.0, 4.0)
    with pytest.raises(ValueError, match="source"):
        cut_clip(
            str(synthetic_event.pan.path), 2.0, 4.0, tmp_path / "c.mp4", tmp_path / "p.jpg", 2.0, SETTINGS, reframe=path
        )
    assert not (tmp_path / "c.mp4").exists()
