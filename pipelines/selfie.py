"""Turn a query photo (a selfie) into one embedding.

Uploads are whatever phones and browsers produce: tight face crops, tiny thumbnails,
EXIF-rotated or plainly sideways photos, 16-bit or transparent PNGs. The detector
(YuNet) letterboxes every image to ``det_size`` and misses a face that fills the
frame, so detection retries on a few transformed views of the image before giving up.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from pipelines.config import SelfieSettings
from pipelines.models.base import Detections, ModelPack, filter_detections

ACCEPTED_FORMATS = ("JPEG", "PNG", "MPO")  # MPO: multi-picture JPEG from some phone cameras
PAD_GRAY = 128  # border colour of the padded view (see _padded)


DEFAULT_OPTIONS = SelfieSettings()


class NoFaceFound(ValueError):
    pass


@dataclass(frozen=True)
class SelfieEmbedding:
    vector: np.ndarray  # (dim,) unit norm
    bbox: tuple[float, float, float, float]  # in the decoded image's pixels, whatever view found it
    det_score: float
    faces_found: int
    attempt: str = "as-is"  # which view found the face: as-is, padded, tiled, rotated-90/-270/-180[-padded]


def pick_main_face(dets: Detections) -> int:
    """Index of the face to search with: the largest, weighted by detector confidence."""
    areas = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
    return int(np.argmax(areas * dets.scores))


# ---------------------------------------------------------------------------- decoding


def _to_rgb8(img: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """Any Pillow mode a JPEG/PNG decodes to -> (H, W, 3) RGB uint8."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale PNG (Pillow mode I;16, or I in older Pillow). convert("RGB")
        # clips these to 0-255 (a white image), so scale the full 16-bit range instead.
        arr = np.asarray(img).astype(np.float32)
        gray = np.clip(arr / 257.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("P", "PA"):
        # A palette may carry transparency (tRNS); resolve it to RGBA first.
        img = img.convert("RGBA") if ("transparency" in img.info or mode == "PA") else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(base, rgba)
    return np.asarray(img.convert("RGB"))


def decode_image_bytes(data: bytes, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """JPEG/PNG/MPO bytes -> BGR uint8 with EXIF orientation applied.

    Grayscale (8/16-bit), palette and alpha PNGs are accepted; transparent pixels are
    composited on ``background`` (RGB; white, as image viewers show them). Anything
    else, or a file that does not decode, raises ValueError.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ACCEPTED_FORMATS:
                raise ValueError(f"unsupported image format {img.format!r}; send a JPEG or PNG")
            img.load()
            with contextlib.suppress(Exception):  # a broken EXIF block must not reject a decodable photo
                img = ImageOps.exif_transpose(img)
            rgb = _to_rgb8(img, background)
    except ValueError:
        raise
    except Exception as exc:  # UnidentifiedImageError, truncated data, decompression bomb
        raise ValueError(f"the file is not a readable image ({exc})") from exc
    return np.ascontiguousarray(rgb[:, :, ::-1])


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class _View:
    """A transformed copy of the image, and how its pixels map back to the original."""

    name: str
    image: np.ndarray
    to_source: np.ndarray  # (3, 3) affine: view (x, y, 1) -> source (x, y, 1)


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)


def _map_detections(dets: Detections, m: np.ndarray, source_hw: tuple[int, int]) -> Detections:
    """Detections in a view -> source pixels (boxes stay axis-aligned under 90-degree turns)."""
    if not len(dets):
        return dets
    a, t = m[:2, :2].astype(np.float32), m[:2, 2].astype(np.float32)
    lms = dets.landmarks @ a.T + t
    x1, y1, x2, y2 = dets.boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y2], 1)], 1) @ a.T + t  # (N, 2, 2)
    lo, hi = corners.min(axis=1), corners.max(axis=1)
    h, w = source_hw
    boxes = np.concatenate([lo, hi], axis=1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return Detections(boxes.astype(np.float32), lms.astype(np.float32), dets.scores)


def _padded(image: np.ndarray, pad_frac: float, det_size: int, fill: int = PAD_GRAY) -> _View:
    """The image on a flat border of ``pad_frac`` of its size on every side.

    A face that fills the frame is too large for YuNet's anchors after letterboxing;
    the border shrinks it. Measured on 824 tight crops of 103 real photos (crop side
    0.7-1.0 x the face box, 60 and 160 px): as-is found 223; a 0.5 border found 824
    in mid-gray, 822 in black, 820 replicated; a 0.25 border missed up to 92 (k=0.7).
    Large images are shrunk first so that the padded canvas is about ``det_size``
    (the detector would shrink it anyway; this avoids building a huge canvas).
    """
    h, w = image.shape[:2]
    s = min(1.0, det_size / ((1 + 2 * pad_frac) * max(h, w)))
    if s < 1.0:
        image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    sh, sw = image.shape[:2]
    top, left = round(pad_frac * sh), round(pad_frac * sw)
    canvas = cv2.copyMakeBorder(image, top, top, left, left, cv2.BORDER_CONSTANT, value=(fill, fill, fill))
    # view -> shrunk image: drop the border; shrunk -> source: undo the shrink.
    return _View("padded", canvas, np.diag([w / sw, h / sh, 1.0]) @ _translate(-left, -top))


def _rotated(image: np.ndarray, degrees: int) -> _View:
    """The image turned clockwise by ``degrees`` (90, 180, 270), losslessly."""
    h, w = image.shape[:2]
    code = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}[degrees]
    # Inverse maps, in continuous pixel coordinates (pixel i spans [i, i + 1)).
    inv = {
        90: [[0, 1, 0], [-1, 0, h], [0, 0, 1]],  # view (x', y') = (h - y, x)  ->  source (y', h - x')
        180: [[-1, 0, w], [0, -1, h], [0, 0, 1]],
        270: [[0, -1, w], [1, 0, 0], [0, 0, 1]],  # view (x', y') = (y, w - x)  ->  source (w - y', x')
    }[degrees]
    return _View(f"rotated-{degrees}", cv2.rotate(image, code), np.array(inv, np.float64))


def _tiles(image: np.ndarray, det_size: int, overlap: float) -> list[tuple[int, int, np.ndarray]]:
    """Overlapping crops (up to 3 x 3) of an image larger than ``det_size``, each about
    ``det_size`` long, so small faces get more detector pixels. (x0, y0, crop) each."""
    h, w = image.shape[:2]
    rows, cols = (int(np.clip(math.ceil(side / det_size), 1, 3)) for side in (h, w))
    th, tw = math.ceil(h / (rows - (rows - 1) * overlap)), math.ceil(w / (cols - (cols - 1) * overlap))
    out = []
    for r in range(rows):
        for c in range(cols):
            y0 = 0 if rows == 1 else round(r * (h - th) / (rows - 1))
            x0 = 0 if cols == 1 else round(c * (w - tw) / (cols - 1))
            out.append((x0, y0, image[y0 : y0 + th, x0 : x0 + tw]))
    return out


def _merge(dets: list[Detections], nms_threshold: float) -> Detections:
    """Concatenate detections from overlapping tiles; keep one box per face."""
    dets = [d for d in dets if len(d)]
    if not dets:
        return Detections.empty()
    all_ = Detections(*(np.concatenate(parts) for parts in zip(*dets, strict=True)))
    xywh = np.concatenate([all_.boxes[:, :2], all_.boxes[:, 2:] - all_.boxes[:, :2]], axis=1)
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), all_.scores.tolist(), 0.0, nms_threshold), np.int64).reshape(-1)
    return all_.select(keep)


def _detect_in(pack: ModelPack, view: _View, source_hw: tuple[int, int], min_score: float) -> Detections:
    """Faces of one view, in source pixels, filtered by score only (sizes are judged later)."""
    return filter_detections(_map_detections(pack.detector.detect(view.image), view.to_source, source_hw), min_score, 0)


def _main_score(dets: Detections) -> float:
    return float(dets.scores[pick_main_face(dets)]) if len(dets) else 0.0


def find_faces(
    pack: ModelPack,
    image_bgr: np.ndarray,
    min_score: float,
    min_face_px: float,
    options: SelfieSettings = DEFAULT_OPTIONS,
) -> tuple[Detections, str]:
    """Faces in source pixels and the name of the view they were taken from (NoFaceFound if none).

    Views, cheapest first: as-is; padded (a face that fills the frame); tiled (small faces
    in an image larger than det_size); the image turned 90, 270 and 180 degrees clockwise,
    each as-is and padded. The search stops as soon as an upright view's main face scores
    ``confident_score``: a clear selfie costs one detector call.

    Otherwise the orientation is chosen by the best main-face score of its views, the upright
    one unless a turned one beats it by ``rotation_margin``. YuNet also "finds" most upside-down
    and many sideways faces, with upright-looking but wrong landmarks (a useless embedding),
    so "found something" does not settle the orientation; the score does (measured on 115
    real photos turned 4 ways: right orientation 459 of 460). Scores are compared before the
    ``min_face_px`` filter: a face too small to embed must not let a turned view win.

    Within that orientation the first view with a large enough face is used, unless a later
    one scores ``view_margin`` more (measured on 499 tight 150 px crops: with 0.1, none below
    cosine 0.4 to the full photo's embedding; always taking as-is when it hits, 5).
    """
    hw = image_bgr.shape[:2]
    det_size = int(getattr(pack.detector, "det_size", 640))
    nms = float(getattr(pack.detector, "nms_threshold", 0.3))

    def upright() -> Iterator[tuple[str, Detections]]:
        yield "as-is", _detect_in(pack, _View("as-is", image_bgr, np.eye(3)), hw, min_score)
        yield "padded", _detect_in(pack, _padded(image_bgr, options.pad_frac, det_size), hw, min_score)
        if max(hw) > det_size:  # only then does the detector shrink faces
            tiles = [
                _View("tiled", t, _translate(x, y)) for x, y, t in _tiles(image_bgr, det_size, options.tile_overlap)
            ]
            yield "tiled", _merge([_detect_in(pack, v, hw, min_score) for v in tiles], nms)

    def turned(degrees: int) -> list[tuple[str, Detections]]:
        view = _rotated(image_bgr, degrees)
        pad = _padded(view.image, options.pad_frac, det_size)
        pad = _View(f"{view.name}-padded", pad.image, view.to_source @ pad.to_source)
        return [(v.name, _detect_in(pack, v, hw, min_score)) for v in (view, pad)]

    chosen: list[tuple[str, Detections]] = []
    for name, dets in upright():
        chosen.append((name, dets))
        if _main_score(dets) >= options.confident_score:
            break
    best = max(_main_score(d) for _, d in chosen)
    if options.try_rotations and best < options.confident_score:
        bar = best + options.rotation_margin if best > 0 else 0.0
        for degrees in (90, 270, 180):
            views = turned(degrees)
            score = max(_main_score(d) for _, d in views)
            if score > bar and score > best:
                chosen, best = views, score
    # Within the chosen orientation, views with faces large enough to embed, in order (as-is,
    # padded, tiled). The first wins unless a later one is clearly more confident: a weak
    # as-is hit on a tight crop is often part of the face; near-ties keep the earlier view,
    # so an upright photo that worked before keeps its embedding.
    picked: tuple[str, Detections] | None = None
    for name, dets in chosen:
        sized = filter_detections(dets, min_score, min_face_px)
        if len(sized) and (picked is None or _main_score(sized) > _main_score(picked[1]) + options.view_margin):
            picked = (name, sized)
    if picked is None:
        raise NoFaceFound("no face found in the image")
    return picked[1], picked[0]


def embed_selfie(
    pack: ModelPack,
    image_bgr: np.ndarray,
    min_score: float,
    min_face_px: float,
    options: SelfieSettings = DEFAULT_OPTIONS,
) -> SelfieEmbedding:
    """Embed the main face (largest x most confident) of a query photo.

    Landmarks are mapped back to the original image and the face is aligned there: the
    similarity transform absorbs any 90-degree turn, and the original keeps full resolution.
    """
    dets, attempt = find_faces(pack, image_bgr, min_score, min_face_px, options)
    best = pick_main_face(dets)
    crop = pack.align(image_bgr, dets.landmarks[best])
    vector = pack.embedder.embed(crop[None])[0]
    x1, y1, x2, y2 = (float(v) for v in dets.boxes[best])
    bbox = (x1, y1, x2, y2)
    return SelfieEmbedding(vector, bbox, float(dets.scores[best]), len(dets), attempt)
