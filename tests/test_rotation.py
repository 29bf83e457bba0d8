"""Phone-style rotation flags (pipelines/rotation.py): the pure transforms, decode turning
sampled frames upright the way ffmpeg does, and a 9:16 reframed clip of a rotated source as
a participant receives it: portrait, the face inside the crop and upright (the detector,
which misses faces lying on their side, must find it in the decoded output)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.clip import cut_clip
from pipelines.config import ClipSettings
from pipelines.decode import plan_chunks, probe_video, sample_video
from pipelines.reframe import plan_crop_path
from pipelines.rotation import display_rotation, upright_boxes, upright_image, upright_points, upright_size
from pipelines.selfie import embed_selfie
from pipelines.synthetic import ffmpeg, selfie_of

SETTINGS = ClipSettings()
# Stored picture = upright picture turned the other way; the flag turns it back.
STORE_FILTER = {90: "transpose=clock", 180: "hflip,vflip", 270: "transpose=cclock"}


# --- pure -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("degrees", "expected"),
    [(0, 0), (90, 90), (-90, 270), (-180, 180), (180, 180), (270, 270), (359.6, 0), (89.2, 90), (None, 0)],
)
def test_display_rotation_is_a_quarter_turn_counterclockwise(degrees, expected):
    assert display_rotation(degrees) == expected


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_points_and_boxes_follow_the_picture(rotation):
    """A pixel marked in the stored picture is where upright_points says in the turned one."""
    w, h = 64, 36
    rng = np.random.default_rng(rotation)
    for _ in range(20):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        stored = np.zeros((h, w, 3), np.uint8)
        stored[y, x] = 255
        upright = upright_image(stored, rotation)
        assert upright.shape[1::-1] == upright_size((w, h), rotation) and upright.flags["C_CONTIGUOUS"]
        uy, ux = (int(v[0]) for v in np.nonzero(upright[:, :, 0]))
        centre = upright_points(np.array([x + 0.5, y + 0.5]), (w, h), rotation)
        assert tuple(centre - 0.5) == (ux, uy)
        # The pixel's box, as a box of the upright picture, holds exactly that pixel.
        box = upright_boxes(np.array([[x, y, x + 1, y + 1]]), (w, h), rotation)[0]
        assert tuple(box) == (ux, uy, ux + 1, uy + 1)


# --- decode against ffmpeg --------------------------------------------------------------


@pytest.fixture(scope="module")
def marker_video(tmp_path_factory) -> Path:
    """320x240, a red square in the stored picture's top-left corner."""
    root = tmp_path_factory.mktemp("marker")
    still = np.zeros((240, 320, 3), np.uint8)
    still[0:40, 0:60] = (0, 0, 255)
    cv2.imwrite(str(root / "m.png"), still)
    ffmpeg("-loop", "1", "-i", str(root / "m.png"), "-t", "0.5", "-r", "10", "-c:v", "libx264", "-pix_fmt", "yuv444p",
           str(root / "m.mp4"))  # fmt: skip
    return root / "m.mp4"


def red_centre(image: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero((image[:, :, 2] > 128) & (image[:, :, 0] < 100))
    return float(xs.mean()), float(ys.mean())


@pytest.mark.parametrize("flag", [90, -90, 180])
def test_decode_turns_frames_upright_as_ffmpeg_does(tmp_path, marker_video, flag):
    rotated = tmp_path / "r.mp4"
    ffmpeg("-display_rotation", str(flag), "-i", str(marker_video), "-c", "copy", str(rotated))
    ffmpeg("-i", str(rotated), "-frames:v", "1", str(tmp_path / "ffmpeg.png"))  # autorotated
    by_ffmpeg = cv2.imread(str(tmp_path / "ffmpeg.png"))

    probe = probe_video(str(rotated))
    assert probe.rotation == display_rotation(flag)
    assert (probe.width, probe.height) == by_ffmpeg.shape[1::-1] == upright_size((320, 240), flag)
    frame = next(sample_video(str(rotated), probe, plan_chunks(probe.start_s, probe.duration_s, 2.0, 60)[0], 2.0))
    assert frame.image.shape == by_ffmpeg.shape
    assert red_centre(frame.image) == pytest.approx(red_centre(by_ffmpeg), abs=1.0)
    assert red_centre(frame.image) != pytest.approx((30, 20), abs=5)  # it did move


# --- a rotated source with a real face ---------------------------------------------------


@pytest.fixture(scope="module")
def person2(pack, synthetic_event) -> np.ndarray:
    pan = synthetic_event.pan
    return embed_selfie(pack, selfie_of(pan.face_boxes[2] / pan.scale), 0.7, 20).vector


def rotated_copy(source: Path, out: Path, rotation: int) -> Path:
    """``source`` stored turned by -``rotation`` with a flag that turns it back."""
    stored = out.with_suffix(".stored.mp4")
    ffmpeg("-i", str(source), "-vf", STORE_FILTER[rotation], "-c:v", "libx264", "-preset", "veryfast",
           "-c:a", "copy", str(stored))  # fmt: skip
    ffmpeg("-display_rotation", str(rotation), "-i", str(stored), "-c", "copy", str(out))
    stored.unlink()
    return out


def person_rows(pack, uri: str, person: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """What the index stores for the person: decode's sampled frames at 2 fps, the detector,
    the face most like the selfie (t, x1, y1, x2, y2)."""
    probe = probe_video(uri)
    rows = []
    for chunk in plan_chunks(probe.start_s, probe.duration_s, 2.0, 60):
        for frame in sample_video(uri, probe, chunk, 2.0):
            if not start_s <= frame.timestamp_s <= end_s:
                continue
            dets = pack.detector.detect(frame.image)
            if not len(dets):
                continue
            sims = pack.embedder.embed(pack.align_all(frame.image, dets)) @ person
            best = int(np.argmax(sims))
            if sims[best] > 0.3:
                rows.append([frame.timestamp_s, *dets.boxes[best][:4]])
    return np.asarray(rows, np.float64).reshape(-1, 5)


@pytest.mark.parametrize("rotation", [90, 270])
def test_reframed_clip_of_a_rotated_source_is_portrait_with_the_face_upright(
    tmp_path, pack, synthetic_event, person2, rotation
):
    pan = synthetic_event.pan
    start, end = 2.0, 9.0
    source = rotated_copy(pan.path, tmp_path / "phone.mp4", rotation)
    probe = probe_video(str(source))
    assert (probe.width, probe.height) == (pan.width, pan.height)  # upright: landscape
    with av.open(str(source)) as container:  # stored on its side
        ctx = container.streams.video[0].codec_context
        assert (ctx.width, ctx.height) == (pan.height, pan.width)

    # The product's path (app/jobs/dispatch.py cut_window): the index's rows, the media row's size.
    rows = person_rows(pack, str(source), person2, start, end)
    assert len(rows) >= 10  # decode turned the frames upright, so the detector found the face
    path = plan_crop_path(rows, (probe.width, probe.height), "9:16", start, end)
    clip, poster = tmp_path / "clip.mp4", tmp_path / "poster.jpg"
    info = cut_clip(str(source), start, end, clip, poster, start + 1.0, SETTINGS, reframe=path)

    assert (info.width, info.height) == (202, 360)  # 9:16 portrait
    with Image.open(poster) as img:
        assert img.size == (202, 360)
    found, sideways = [], []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (202, 360)
        for i, frame in enumerate(container.decode(stream)):
            assert display_rotation(frame.rotation) == 0  # no flag left for a player to apply
            if i % 5:
                continue
            img = frame.to_ndarray(format="bgr24")
            centre = face_x(pack, img, person2)
            found.append(centre is not None and 0.2 * 202 <= centre <= 0.8 * 202)
            sideways.append(face_x(pack, np.rot90(img).copy(), person2) is not None)
    assert len(found) >= (end - start) * pan.fps / 5 - 1
    assert sum(found) / len(found) >= 0.9, found
    # The check can fail: the same frames turned on their side lose the face.
    assert sum(sideways) / len(sideways) <= 0.5, sideways


def face_x(pack, image: np.ndarray, person: np.ndarray) -> float | None:
    """The x centre of the face most like the person, None when no face is like them."""
    dets = pack.detector.detect(image)
    if not len(dets):
        return None
    sims = pack.embedder.embed(pack.align_all(image, dets)) @ person
    best = int(np.argmax(sims))
    return float(dets.boxes[best, [0, 2]].mean()) if sims[best] > 0.3 else None


def test_a_path_planned_on_the_stored_size_is_refused(tmp_path, synthetic_event):
    """Rows in the stored picture's coordinates (an index made before decode turned frames
    upright) would crop the wrong place: refused, not cut."""
    source = rotated_copy(synthetic_event.pan.path, tmp_path / "phone.mp4", 90)
    stored_size = (synthetic_event.pan.height, synthetic_event.pan.width)
    path = plan_crop_path([], stored_size, "9:16", 2.0, 4.0)
    with pytest.raises(ValueError, match="upright"):
        cut_clip(str(source), 2.0, 4.0, tmp_path / "c.mp4", tmp_path / "p.jpg", 2.0, SETTINGS, reframe=path)
    assert not (tmp_path / "c.mp4").exists()
