"""Selfie decoding and robust face finding, on real photos only.

Faces come from photos that ship in pip packages (InsightFace's t1.jpg; scikit-image's
coffee as a real photo without a face) and, where present, from ../shared/data/faces
(those tests skip when it is absent).
"""

from __future__ import annotations

import csv
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.config import SelfieSettings
from pipelines.models.base import Detections, ModelPack, filter_detections
from pipelines.selfie import NoFaceFound, SelfieEmbedding, decode_image_bytes, embed_selfie, pick_main_face
from pipelines.synthetic import insightface_image, read_bgr, selfie_of
from tests.conftest import shared_faces_or_skip

HAMILTON = "videos/ageitgey_face_recognition/examples/short_hamilton_clip.mp4"
DEV_PHOTOS = {
    "lin_manuel_miranda": "images/ageitgey_face_recognition/examples/lin-manuel-miranda.png",
    "barack_obama": "images/ageitgey_face_recognition/examples/obama.jpg",
}
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def thresholds(settings) -> tuple[float, float]:
    return settings.models.det_score_threshold, settings.models.min_face_px


def embed(pack, image: np.ndarray, thresholds, options: SelfieSettings | None = None) -> SelfieEmbedding:
    return embed_selfie(pack, image, *thresholds, options or SelfieSettings())


def found_without_fallbacks(pack, image: np.ndarray, thresholds) -> Detections:
    """What embed_selfie did before the fallbacks: one detection on the image as it is."""
    return filter_detections(pack.detector.detect(image), *thresholds)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


def encode(image_bgr: np.ndarray, fmt: str = "JPEG", **save_kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1])).save(buf, fmt, **save_kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def t1_boxes(pack) -> np.ndarray:
    """The six face boxes of t1.jpg, left to right."""
    boxes = pack.detector.detect(read_bgr(insightface_image("t1.jpg"))).boxes
    assert len(boxes) == 6
    return boxes[np.argsort(boxes[:, 0])]


@pytest.fixture(scope="module")
def upright(t1_boxes) -> np.ndarray:
    """A selfie-like crop of one person of t1.jpg (unmirrored, 1.5x), as a JPEG round trip."""
    return decode_image_bytes(encode(selfie_of(t1_boxes[2], flip=False), quality=95))


@pytest.fixture(scope="module")
def upright_query(pack, upright, thresholds) -> SelfieEmbedding:
    query = embed(pack, upright, thresholds)
    assert query.attempt == "as-is"
    return query


# ------------------------------------------------------------------------------ decoding


def test_decode_accepts_jpeg_png_and_mpo_and_rejects_other_formats(upright):
    small = cv2.resize(upright, (64, 48), interpolation=cv2.INTER_AREA)
    for data in (encode(small, "JPEG", quality=98), encode(small, "PNG")):
        out = decode_image_bytes(data)
        assert out.dtype == np.uint8 and out.shape == (48, 64, 3)
        assert np.abs(out.astype(int) - small).mean() < 3  # BGR order kept (a channel swap is far off)
    mpo = encode(small, "MPO", quality=98, save_all=True, append_images=[Image.new("RGB", (64, 48))])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    assert np.abs(decode_image_bytes(mpo).astype(int) - small).mean() < 5  # the first picture
    for fmt in ("GIF", "BMP", "WEBP"):
        with pytest.raises(ValueError, match="unsupported image format"):
            decode_image_bytes(encode(small, fmt))
    for junk in (b"", b"not an image", encode(small, "JPEG")[:200]):
        with pytest.raises(ValueError):
            decode_image_bytes(junk)


def test_decode_grayscale_palette_and_alpha_pngs(upright):
    small = cv2.resize(upright, (64, 48), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG")  # mode L
    out = decode_image_bytes(buf.getvalue())
    assert (out == gray[:, :, None]).all()

    rgb = Image.fromarray(np.ascontiguousarray(small[:, :, ::-1]))
    buf = io.BytesIO()
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(buf, "PNG")
    assert np.abs(decode_image_bytes(buf.getvalue()).astype(int) - small).mean() < 8

    # Left half transparent: composited on white by default, or on the chosen background.
    rgba = np.dstack([small[:, :, ::-1], np.full(gray.shape, 255, np.uint8)])
    rgba[:, :32, 3] = 0
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    out = decode_image_bytes(buf.getvalue())
    assert (out[:, :32] == 255).all() and np.abs(out[:, 32:].astype(int) - small[:, 32:]).max() <= 1
    assert (decode_image_bytes(buf.getvalue(), background=(128, 128, 128))[:, :32] == 128).all()
    la = np.dstack([gray, np.where(np.arange(64) < 32, 0, 255).astype(np.uint8)[None].repeat(48, 0)])
    buf = io.BytesIO()
    Image.fromarray(la, "LA").save(buf, "PNG")
    out = decode_image_bytes(buf.getvalue())
    assert (out[:, :32] == 255).all() and (out[:, 32:, 0] == gray[:, 32:]).all()


def gray16_png(gray_float: np.ndarray) -> bytes:
    """A true 16-bit grayscale PNG (0-255 float gray mapped onto 0-65535)."""
    buf = io.BytesIO()
    Image.fromarray(np.round(gray_float * 257).clip(0, 65535).astype(np.uint16)).save(buf, "PNG")
    data = buf.getvalue()
    assert data[24] == 16 and data[25] == 0  # IHDR: bit depth 16, colour type grayscale
    return data


def test_16bit_grayscale_png_is_scaled_not_clipped(pack, upright, thresholds):
    ramp = np.tile(np.linspace(0, 255, 256, dtype=np.float32), (8, 1))
    data = gray16_png(ramp)
    # What a plain convert("RGB") does with it: everything above 255/65535 turns white.
    assert (np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, 2:] == 255).all()
    out = decode_image_bytes(data)
    assert out.shape == (8, 256, 3) and (out[..., 0] == out[..., 2]).all()
    assert np.abs(out[..., 0].astype(int) - np.round(ramp)).max() <= 1

    # A face in 16-bit gray embeds like the same face in 8-bit gray.
    gray = cv2.cvtColor(upright.astype(np.float32), cv2.COLOR_BGR2GRAY)
    face16 = decode_image_bytes(gray16_png(gray))
    face8 = decode_image_bytes(encode(np.dstack([np.round(gray).astype(np.uint8)] * 3), "PNG"))
    assert np.abs(face16.astype(int) - face8).max() <= 1
    assert cos(embed(pack, face16, thresholds).vector, embed(pack, face8, thresholds).vector) > 0.95


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_is_applied(pack, upright, upright_query, thresholds, orientation):
    # Stored pixels such that a viewer honouring the tag shows the upright selfie.
    stored = {
        6: cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE),
        8: cv2.rotate(upright, cv2.ROTATE_90_CLOCKWISE),
        3: cv2.rotate(upright, cv2.ROTATE_180),
    }[orientation]
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = encode(stored, quality=95, exif=exif)
    assert Image.open(io.BytesIO(data)).getexif()[EXIF_ORIENTATION] == orientation
    image = decode_image_bytes(data)
    assert image.shape == upright.shape
    assert np.abs(image.astype(int) - upright).mean() < 4
    query = embed(pack, image, thresholds)
    assert query.attempt == "as-is"  # EXIF did the work, not the rotation fallback
    assert cos(query.vector, upright_query.vector) > 0.95


# ----------------------------------------------------------------------- finding faces


def tight_crop(image: np.ndarray, box: np.ndarray, side: int = 150) -> tuple[np.ndarray, float]:
    """A square crop, as wide as the face box's shorter side, centred on it, resized to ``side``.

    Returns the crop and the fraction of the crop's area covered by the face box.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    size = round(min(x2 - x1, y2 - y1))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - size / 2), round(cy - size / 2)
    assert left >= 0 and top >= 0 and left + size <= image.shape[1] and top + size <= image.shape[0]
    covered = (min(x2, left + size) - max(x1, left)) * (min(y2, top + size) - max(y1, top))
    crop = cv2.resize(image[top : top + size, left : left + size], (side, side), interpolation=cv2.INTER_AREA)
    return crop, covered / size**2


@pytest.fixture(scope="module")
def hamilton_faces(pack, thresholds) -> list[tuple[float, np.ndarray]]:
    """(presentation time, face embeddings) for every 6th frame of the Hamilton clip."""
    av = pytest.importorskip("av")
    root = shared_faces_or_skip()
    out = []
    with av.open(str(root / HAMILTON)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 6:
                continue
            image = frame.to_ndarray(format="bgr24")
            dets = filter_detections(pack.detector.detect(image), *thresholds)
            out.append((float(frame.time), pack.embedder.embed(pack.align_all(image, dets))))
    assert len(out) > 40
    return out


def labelled_intervals(root, identity: str) -> list[tuple[float, float]]:
    with open(root / "video_truth.csv", newline="") as fh:
        return [
            (float(r["start_s"]), float(r["end_s"]))
            for r in csv.DictReader(fh)
            if r["video_path"] == HAMILTON and r["identity"] == identity
        ]


@pytest.mark.parametrize("identity", sorted(DEV_PHOTOS))
def test_tight_face_crop_is_found_and_matches_the_video(pack, thresholds, hamilton_faces, identity):
    root = shared_faces_or_skip()
    photo = decode_image_bytes((root / DEV_PHOTOS[identity]).read_bytes())
    dets = found_without_fallbacks(pack, photo, thresholds)
    assert len(dets) == 1
    crop, fill = tight_crop(photo, dets.boxes[0], side=150)
    assert crop.shape == (150, 150, 3) and fill >= 0.9

    assert not len(found_without_fallbacks(pack, crop, thresholds))  # the old behaviour: "no face"
    query = embed(pack, crop, thresholds)
    assert query.attempt == "padded"
    x1, y1, x2, y2 = query.bbox
    assert 0 <= x1 < x2 <= 150 and 0 <= y1 < y2 <= 150 and (x2 - x1) > 100  # in the crop's own pixels

    intervals = labelled_intervals(root, identity)
    inside = [t for t, _ in hamilton_faces if any(a <= t <= b for a, b in intervals)]
    best_inside = max(
        float((v @ query.vector).max()) for t, v in hamilton_faces if len(v) and any(a <= t <= b for a, b in intervals)
    )
    # Frames well away from the person's intervals (0.5 s margin for cuts and camera motion).
    best_outside = max(
        float((v @ query.vector).max())
        for t, v in hamilton_faces
        if len(v) and all(t < a - 0.5 or t > b + 0.5 for a, b in intervals)
    )
    print(
        f"\n{identity}: fill {fill:.2f}, {len(inside)} labelled frames, best {best_inside:.3f}, else {best_outside:.3f}"
    )
    assert best_inside >= pack.info.threshold
    assert best_outside < pack.info.threshold


def without_rotations(pack, image: np.ndarray, thresholds) -> np.ndarray | None:
    """The embedding found without the rotation fallback (None: no face)."""
    try:
        return embed(pack, image, thresholds, SelfieSettings(try_rotations=False)).vector
    except NoFaceFound:
        return None


@pytest.mark.parametrize(
    ("turn", "fix"),
    [(cv2.ROTATE_90_CLOCKWISE, 270), (cv2.ROTATE_90_COUNTERCLOCKWISE, 90), (cv2.ROTATE_180, 180)],
)
def test_turned_photo_without_exif_is_turned_upright(pack, upright, upright_query, thresholds, turn, fix):
    turned = cv2.rotate(upright, turn)
    # Without the rotation fallback: no face, or a "face" whose embedding is someone else's.
    naive = without_rotations(pack, turned, thresholds)
    assert naive is None or cos(naive, upright_query.vector) < pack.info.threshold
    query = embed(pack, turned, thresholds)
    assert query.attempt.startswith(f"rotated-{fix}")
    assert cos(query.vector, upright_query.vector) > 0.95
    # The box is in the turned image's pixels: the upright box turned the same way.
    h, w = upright.shape[:2]
    ux1, uy1, ux2, uy2 = upright_query.bbox
    expect = {
        cv2.ROTATE_90_CLOCKWISE: (h - uy2, ux1, h - uy1, ux2),
        cv2.ROTATE_90_COUNTERCLOCKWISE: (uy1, w - ux2, uy2, w - ux1),
        cv2.ROTATE_180: (w - ux2, h - uy2, w - ux1, h - uy1),
    }[turn]
    assert np.abs(np.subtract(query.bbox, expect)).max() < 0.1 * (ux2 - ux1)


def test_upside_down_real_photo_is_not_embedded_upside_down(pack, thresholds):
    """YuNet "finds" an upside-down face with upright-looking landmarks (a useless embedding)."""
    root = shared_faces_or_skip()
    photo = decode_image_bytes((root / DEV_PHOTOS["barack_obama"]).read_bytes())
    ref = embed(pack, photo, thresholds)
    flipped = cv2.rotate(photo, cv2.ROTATE_180)
    naive = without_rotations(pack, flipped, thresholds)
    assert naive is not None and cos(naive, ref.vector) < pack.info.threshold  # a ghost, not Obama
    query = embed(pack, flipped, thresholds)
    assert query.attempt.startswith("rotated-180")
    assert cos(query.vector, ref.vector) > 0.95


def test_small_images_are_found(pack, t1_boxes, upright, upright_query, thresholds):
    # A whole selfie 60 px tall, the face about 35 px: the detector upscales it itself.
    closer = selfie_of(t1_boxes[2], margin=0.3, flip=False)
    ref = embed(pack, closer, thresholds)
    small = cv2.resize(closer, (round(60 * closer.shape[1] / closer.shape[0]), 60), interpolation=cv2.INTER_AREA)
    query = embed(pack, small, thresholds)
    assert query.bbox[3] - query.bbox[1] >= thresholds[1]
    assert cos(query.vector, ref.vector) > 0.6
    # A 60 px image that the face fills: found only with the padded view.
    crop, fill = tight_crop(upright, np.asarray(upright_query.bbox), side=60)
    assert fill >= 0.9
    assert not len(found_without_fallbacks(pack, crop, thresholds))
    query = embed(pack, crop, thresholds)
    assert query.attempt == "padded" and cos(query.vector, upright_query.vector) > 0.5


@pytest.mark.parametrize("person", range(6))
def test_a_face_too_small_is_not_replaced_by_a_turned_ghost(pack, t1_boxes, thresholds, person):
    """48 px tall selfies: the face (about 15 px) is below min_face_px, and turned views of such
    images often hold a "face" above it; the answer must be no face, or the right one."""
    selfie = selfie_of(t1_boxes[person], flip=False)
    ref = embed(pack, selfie, thresholds)
    tiny = cv2.resize(selfie, (round(48 * selfie.shape[1] / selfie.shape[0]), 48), interpolation=cv2.INTER_AREA)
    try:
        query = embed(pack, tiny, thresholds)
    except NoFaceFound:
        return
    assert cos(query.vector, ref.vector) > 0.5, query.attempt


def test_small_face_in_a_large_photo_is_found_by_tiles(pack, upright, upright_query, thresholds):
    ux1, uy1, ux2, uy2 = upright_query.bbox
    scale = 45 / (ux2 - ux1)  # a 45 px face in a 4000 x 3000 photo: 7 px at det_size 640
    face = cv2.resize(upright, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((3000, 4000, 3), 100, np.uint8)
    y0, x0 = 1900, 2900
    canvas[y0 : y0 + face.shape[0], x0 : x0 + face.shape[1]] = face
    assert not len(found_without_fallbacks(pack, canvas, thresholds))
    query = embed(pack, canvas, thresholds)
    assert query.attempt == "tiled"
    expect = np.array([x0 + ux1 * scale, y0 + uy1 * scale, x0 + ux2 * scale, y0 + uy2 * scale])
    assert np.abs(np.asarray(query.bbox) - expect).max() < 8
    assert cos(query.vector, upright_query.vector) > 0.6


def test_group_photo_keeps_the_largest_confident_face(pack, thresholds):
    image = read_bgr(insightface_image("t1.jpg"))
    dets = found_without_fallbacks(pack, image, thresholds)
    query = embed(pack, image, thresholds)
    assert query.faces_found == len(dets) == 6
    assert np.allclose(query.bbox, dets.boxes[pick_main_face(dets)])


class CountingDetector:
    """The pack's real detector, counting calls (to check the common case does no extra work)."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0
        self.det_size = inner.det_size

    def detect(self, image_bgr: np.ndarray) -> Detections:
        self.calls += 1
        return self.inner.detect(image_bgr)


def test_a_clear_selfie_costs_one_detection(pack, upright, upright_query, thresholds):
    counting = CountingDetector(pack.detector)
    query = embed(ModelPack(pack.info, counting, pack.embedder), upright, thresholds)
    assert counting.calls == 1 and query.attempt == "as-is"
    assert cos(query.vector, upright_query.vector) > 0.9999


@pytest.mark.parametrize("kind", ["gray", "noise", "coffee"])
def test_images_without_a_face_raise(pack, thresholds, kind):
    if kind == "gray":
        image = np.full((480, 640, 3), 128, np.uint8)
    elif kind == "noise":
        image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    else:
        data = pytest.importorskip("skimage.data")
        image = np.ascontiguousarray(data.coffee()[:, :, ::-1])  # a real photo without a face
    with pytest.raises(NoFaceFound):
        embed(pack, image, thresholds)
