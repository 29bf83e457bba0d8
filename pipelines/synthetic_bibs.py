"""Synthetic race photos: BIBs printed on the torsos of real people, with known truth.

Built from InsightFace's ``t1.jpg`` (six people, see pipelines/synthetic.py; the photo
runs down to the table, so every torso has room for a bib): each person gets a bib below
the face, rendered with a bold sans font (Pillow's bundled one, so nothing depends on
system fonts), warped for lean and turn, blurred and partly covered by an "arm". Every
bib's number, box, owner and conditions are known, so OCR recall and misreads can be
measured per condition (tests/test_bibs.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipelines.synthetic import ffmpeg, insightface_image, read_bgr

# Bibs are drawn this many times larger, then warped down: antialiased edges like a camera's.
_SUPERSAMPLE = 4
# Digits that OCR (and people) confuse; a photo's second number of a pair swaps one of them.
_CONFUSABLE = {"0": "8", "1": "7", "2": "7", "3": "8", "4": "9", "5": "6", "6": "8", "7": "1", "8": "3", "9": "4"}
# Extra weight on the font (fraction of its size): Aileron Regular made bold, stems 17 % of
# the digit height like Arial or Helvetica Bold, the usual bib weights. 0.04 (21 %, Arial
# Black) closes the counters of small digits: 45 of 60 readable bibs read instead of 55.
STROKE = 0.02
# Letters above the number, as on real bibs: OCR must not let them into the number.
HEADER_TEXT = "CITY RUN"
_HEADER_COLOURS_BGR = [(160, 70, 20), (40, 40, 190), (60, 140, 40), (20, 120, 220)]


@dataclass(frozen=True)
class BibSpec:
    """How one bib looks in the photo."""

    number: str
    digit_px: float  # height of the digits in image pixels
    angle_deg: float = 0.0  # in-plane rotation (a leaning runner)
    yaw_deg: float = 0.0  # turned away from the camera: foreshortened with perspective
    blur_sigma: float = 0.0  # Gaussian sigma in image pixels (defocus, motion)
    occlusion: float = 0.0  # fraction of the digits' height hidden from below by an arm across
    hidden_digits: int = 0  # trailing digits hidden entirely by an arm hanging in front


# What a person reads without guessing, judged from the glyphs (see is_readable).
MIN_READABLE_DIGIT_PX = 12.0
MAX_READABLE_BLUR = 0.15  # Gaussian sigma as a fraction of the digit height
MAX_READABLE_BLUR_OCCLUDED = 0.08  # the same when an arm covers part of the digits
MAX_READABLE_OCCLUSION = 0.3
MAX_READABLE_ANGLE_DEG = 30.0
MAX_READABLE_YAW_DEG = 50.0


def is_readable(spec: BibSpec) -> bool:
    """Whether a person would read the whole number without guessing.

    Digits at least 12 px tall (each ~7 px wide with 2 px stems); a blur sigma of at most
    15 % of the digit height (the blur's half-width then stays under the counters of 0, 6, 8,
    9 and the gap of 5, ~0.25 of the height); at most 30 % of the digit height covered from
    below, and then only with a blur of at most 8 %: with the bottoms gone, 8 and 9 or 5 and
    6 differ only in their middles, which a stronger blur erases; no digit hidden entirely;
    leaned up to 30 degrees and turned up to 50.
    """
    eps = 1e-9
    max_blur = MAX_READABLE_BLUR_OCCLUDED if spec.occlusion > 0 else MAX_READABLE_BLUR
    return (
        spec.digit_px >= MIN_READABLE_DIGIT_PX
        and spec.blur_sigma <= max_blur * spec.digit_px + eps
        and spec.occlusion <= MAX_READABLE_OCCLUSION
        and spec.hidden_digits == 0
        and abs(spec.angle_deg) <= MAX_READABLE_ANGLE_DEG
        and abs(spec.yaw_deg) <= MAX_READABLE_YAW_DEG
    )


@dataclass(frozen=True)
class BibTruth:
    number: str
    box: tuple[float, float, float, float]  # the digits' axis-aligned box in the image
    bib_box: tuple[float, float, float, float]  # the whole bib's
    face: int  # index into the face boxes the photo was built from
    spec: BibSpec
    readable: bool

    @property
    def size_bucket(self) -> str:
        return f"{round(self.spec.digit_px)}px"

    @property
    def blur_bucket(self) -> str:
        rel = self.spec.blur_sigma / self.spec.digit_px
        if rel == 0:
            return "sharp"
        if rel <= 0.08:
            return "soft<=0.08h"
        return "blurred<=0.15h" if rel <= MAX_READABLE_BLUR else "heavy>0.15h"

    @property
    def angle_bucket(self) -> str:
        tilted, turned = abs(self.spec.angle_deg) >= 5, abs(self.spec.yaw_deg) >= 10
        return {(False, False): "straight", (True, False): "tilted", (False, True): "turned"}.get(
            (tilted, turned), "tilted+turned"
        )

    @property
    def occlusion_bucket(self) -> str:
        if self.spec.hidden_digits:
            return "digit hidden"
        if self.spec.occlusion == 0:
            return "none"
        return "arm<=30%" if self.spec.occlusion <= MAX_READABLE_OCCLUSION else "arm>30%"


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled Aileron (FreeType)


def _digits_layout(number: str, digit_px: float) -> tuple[ImageFont.FreeTypeFont, int, tuple[int, int, int, int]]:
    """Font, stroke and ink box (x1, y1, x2, y2 at the text origin) for digits ``digit_px`` tall."""
    size = 100
    for _ in range(3):  # ink height is not quite proportional to the size (stroke rounding)
        font, stroke = _font(size), max(1, round(size * STROKE))
        _, y1, _, y2 = font.getbbox(number, stroke_width=stroke)
        size = max(6, round(size * digit_px / (y2 - y1)))
    font, stroke = _font(size), max(1, round(size * STROKE))
    return font, stroke, font.getbbox(number, stroke_width=stroke)


def _render_bib(spec: BibSpec, header_bgr: tuple[int, int, int], arm_bgr: tuple[int, int, int]):
    """The bib in its own frame, ``_SUPERSAMPLE`` times larger: BGRA canvas, the canvas
    corners of the bib and of the digits' box. The canvas has room around the bib for the
    arm that covers it."""
    h = spec.digit_px * _SUPERSAMPLE
    font, stroke, (tx1, ty1, tx2, ty2) = _digits_layout(spec.number, h)
    text_w, text_h = tx2 - tx1, ty2 - ty1
    pad = round(0.45 * text_h)
    header = round(0.45 * text_h)
    bib_w, bib_h = text_w + 2 * pad, header + text_h + 2 * pad
    margin = round(0.6 * text_h)
    canvas = Image.new("RGBA", (bib_w + 2 * margin, bib_h + 2 * margin), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    bx, by = margin, margin
    rgb = lambda bgr: (bgr[2], bgr[1], bgr[0], 255)  # noqa: E731
    draw.rectangle((bx, by, bx + bib_w - 1, by + bib_h - 1), fill=(246, 246, 240, 255))
    draw.rectangle((bx, by, bx + bib_w - 1, by + header - 1), fill=rgb(header_bgr))
    label = _font(max(6, round(header * 0.75)))
    draw.text((bx + pad, by + header * 0.12), HEADER_TEXT, font=label, fill=(255, 255, 255, 255))
    border = max(1, round(_SUPERSAMPLE * 0.6))
    draw.rectangle((bx, by, bx + bib_w - 1, by + bib_h - 1), outline=(90, 90, 90, 255), width=border)
    pin = max(2, round(0.05 * text_h))
    for px, py in ((bx + pin * 3, by + header + pin * 3), (bx + bib_w - pin * 3, by + header + pin * 3)):
        draw.ellipse((px - pin, py - pin, px + pin, py + pin), fill=(70, 70, 70, 255))
    ox, oy = bx + pad - tx1, by + header + pad - ty1
    draw.text(
        (ox, oy), spec.number, font=font, fill=(15, 15, 15, 255), stroke_width=stroke, stroke_fill=(15, 15, 15, 255)
    )
    digits = (bx + pad, by + header + pad, bx + pad + text_w, by + header + pad + text_h)
    arm = rgb(arm_bgr)
    if spec.occlusion > 0:
        top = digits[3] - spec.occlusion * text_h
        draw.rectangle((0, top, canvas.width, min(canvas.height, top + 1.2 * text_h)), fill=arm)
    if spec.hidden_digits:
        keep = spec.number[: len(spec.number) - spec.hidden_digits]
        right_of_kept = ox + font.getbbox(keep, stroke_width=stroke)[2] if keep else digits[0]
        left = right_of_kept + 0.08 * text_h
        draw.rectangle((left, 0, min(canvas.width, left + 1.3 * text_h), canvas.height), fill=arm)
    array = np.asarray(canvas)[:, :, [2, 1, 0, 3]].copy()  # RGBA -> BGRA
    bib_corners = np.array([[bx, by], [bx + bib_w, by], [bx + bib_w, by + bib_h], [bx, by + bib_h]], np.float64)
    x1, y1, x2, y2 = digits
    digit_corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)
    return array, bib_corners, digit_corners


def _homography(spec: BibSpec, canvas_wh: tuple[int, int], bib_corners: np.ndarray, centre: tuple[float, float]):
    """Canvas -> image: turn about the vertical axis (pinhole, focal 2.5 bib widths), lean,
    scale down by ``_SUPERSAMPLE``, with the bib's centre landing on ``centre``."""
    w, h = canvas_wh
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    bib_centre = bib_corners.mean(axis=0)
    p = src - bib_centre
    yaw, lean = np.radians(spec.yaw_deg), np.radians(spec.angle_deg)
    focal = 2.5 * (bib_corners[1, 0] - bib_corners[0, 0])
    depth = focal + p[:, 0] * np.sin(yaw)
    turned = np.stack([p[:, 0] * np.cos(yaw), p[:, 1]], axis=1) * (focal / depth)[:, None]
    rot = np.array([[np.cos(lean), -np.sin(lean)], [np.sin(lean), np.cos(lean)]])
    dst = turned @ rot.T / _SUPERSAMPLE + np.asarray(centre)
    return cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))


def _box(points: np.ndarray) -> tuple[float, float, float, float]:
    return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max()))


def _arm_colour(image: np.ndarray, face: np.ndarray) -> tuple[int, int, int]:
    """Skin colour for the occluding arm: the median of the face's central patch."""
    x1, y1, x2, y2 = face
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    patch = image[int(cy - 0.15 * h) : int(cy + 0.15 * h), int(cx - 0.2 * w) : int(cx + 0.2 * w)].reshape(-1, 3)
    return tuple(int(v) for v in np.median(patch, axis=0)) if len(patch) else (120, 150, 200)


def draw_bibs(
    image_bgr: np.ndarray,
    face_boxes: np.ndarray,
    specs: Sequence[BibSpec | None],
    seed: int = 0,
) -> tuple[np.ndarray, list[BibTruth]]:
    """Print ``specs[i]`` on the torso of the person with face ``face_boxes[i]`` (None: no bib).

    The bib's centre sits one face height below the chin (or lower, so that its top stays
    0.3 face heights clear of the chin), horizontally under the face: where a race bib
    is pinned. The canvas grows downwards (the bottom rows repeated, like clothing) when a
    bib would not fit, so faces are never moved or covered.
    """
    if len(specs) != len(face_boxes):
        raise ValueError("one spec (or None) per face")
    rng = np.random.default_rng(seed)
    out = image_bgr.copy()
    truths: list[BibTruth] = []
    for i, spec in enumerate(specs):
        if spec is None:
            continue
        face = np.asarray(face_boxes[i], np.float64)
        header = _HEADER_COLOURS_BGR[int(rng.integers(len(_HEADER_COLOURS_BGR)))]
        canvas, bib_corners, digit_corners = _render_bib(spec, header, _arm_colour(out, face))
        face_h = face[3] - face[1]
        bib_h = (bib_corners[2, 1] - bib_corners[0, 1]) / _SUPERSAMPLE
        centre = ((face[0] + face[2]) / 2, face[3] + max(1.0 * face_h, 0.3 * face_h + bib_h / 2))
        H = _homography(spec, (canvas.shape[1], canvas.shape[0]), bib_corners, centre)
        warped_corners = cv2.perspectiveTransform(
            np.array(
                [[[0, 0]], [[canvas.shape[1], 0]], [[canvas.shape[1], canvas.shape[0]]], [[0, canvas.shape[0]]]],
                np.float64,
            ),
            H,
        )[:, 0]
        pad = int(np.ceil(4 * spec.blur_sigma)) + 2
        x1, y1, x2, y2 = _box(warped_corners)
        x1, y1 = max(0, int(x1) - pad), max(0, int(y1) - pad)
        x2, y2 = min(out.shape[1], int(np.ceil(x2)) + pad), int(np.ceil(y2)) + pad
        if y2 > out.shape[0]:
            out = cv2.copyMakeBorder(out, 0, y2 - out.shape[0], 0, 0, cv2.BORDER_REPLICATE)
        # Warp at the supersampled scale, then average down: edges antialiased like a lens's.
        ss = _SUPERSAMPLE
        shift = np.array([[ss, 0, -x1 * ss], [0, ss, -y1 * ss], [0, 0, 1]], np.float64)
        big = cv2.warpPerspective(canvas, shift @ H, ((x2 - x1) * ss, (y2 - y1) * ss), flags=cv2.INTER_LINEAR)
        layer = cv2.resize(big, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA).astype(np.float32)
        roi = out[y1:y2, x1:x2].astype(np.float32)
        alpha = layer[:, :, 3:] / 255.0
        composed = layer[:, :, :3] * alpha + roi * (1 - alpha)
        if spec.blur_sigma > 0:
            blurred = cv2.GaussianBlur(composed, (0, 0), spec.blur_sigma)
            reach = cv2.dilate(alpha[:, :, 0], np.ones((2 * pad - 1, 2 * pad - 1), np.uint8))
            feather = cv2.GaussianBlur(reach, (0, 0), spec.blur_sigma)[:, :, None]
            composed = blurred * feather + composed * (1 - feather)
        out[y1:y2, x1:x2] = np.clip(composed + 0.5, 0, 255).astype(np.uint8)
        digits = cv2.perspectiveTransform(digit_corners[:, None], H)[:, 0]
        bib = cv2.perspectiveTransform(bib_corners[:, None], H)[:, 0]
        truths.append(BibTruth(spec.number, _box(digits), _box(bib), i, spec, is_readable(spec)))
    return out, truths


def number_set(rng: np.random.Generator, count: int, length: int) -> list[str]:
    """``count`` distinct numbers in pairs that differ in one digit by a look-alike (1234 and
    1284), so a misread digit yields another person's number rather than nonsense."""
    numbers: list[str] = []
    while len(numbers) < count:
        base = str(rng.integers(1, 10)) + "".join(str(d) for d in rng.integers(0, 10, length - 1))
        pos = int(rng.integers(1, length)) if length > 1 else 0
        twin = base[:pos] + _CONFUSABLE[base[pos]] + base[pos + 1 :]
        if base not in numbers and twin not in numbers and base != twin:
            numbers.extend([base, twin])
    return numbers[:count]


# The photo set's conditions: every size x blur x angle with no occlusion or a light one,
# plus harder occlusions at mid sizes. Blur is relative to the digit height. 8 px digits,
# blur 0.2 and the hard occlusions are unreadable on purpose: they probe wrong numbers.
PHOTO_SIZES_PX = (8, 12, 16, 24, 36)
PHOTO_BLURS = (0.0, 0.06, 0.12, 0.2)
PHOTO_ANGLES = ((0.0, 0.0), (15.0, 0.0), (-8.0, 40.0))  # (lean, turn) degrees
PHOTO_OCCLUSIONS = ((0.0, 0), (0.25, 0))  # (fraction from below, hidden trailing digits)
HARD_OCCLUSIONS = ((0.55, 0), (0.0, 1))


def photo_conditions() -> list[tuple[float, float, tuple[float, float], tuple[float, int]]]:
    """(digit px, relative blur, (lean, turn), (occlusion, hidden digits)) of every bib in the
    set: 120 + 24 = 144, six per photo."""
    grid = itertools.product(PHOTO_SIZES_PX, PHOTO_BLURS, PHOTO_ANGLES, PHOTO_OCCLUSIONS)
    hard = itertools.product((16, 24, 36), (0.0, 0.06), ((0.0, 0.0), (15.0, 0.0)), HARD_OCCLUSIONS)
    return [*grid, *hard]


def make_bib_photos(
    out_dir: Path,
    face_boxes: np.ndarray,
    image_bgr: np.ndarray | None = None,
    seed: int = 0,
    jpeg_quality: int = 90,
) -> list[tuple[Path, list[BibTruth]]]:
    """JPEG photos of ``image_bgr`` (default t1.jpg, whose faces ``face_boxes`` are) with one bib
    per person, covering ``photo_conditions()`` once in an order shuffled by ``seed``: 24
    photos for t1's six people. Each photo's numbers are look-alike pairs (``number_set``,
    1234 and 1284 on two people), 3 to 5 digits long; ground truth per bib in ``BibTruth``."""
    image = read_bgr(insightface_image("t1.jpg")) if image_bgr is None else image_bgr
    rng = np.random.default_rng(seed)
    conditions = photo_conditions()
    order = rng.permutation(len(conditions))
    per_photo = len(face_boxes)
    out_dir.mkdir(parents=True, exist_ok=True)
    photos = []
    for p in range(int(np.ceil(len(conditions) / per_photo))):
        picked = [conditions[j] for j in order[p * per_photo : (p + 1) * per_photo]]
        numbers = number_set(rng, len(picked), length=3 + p % 3)
        specs = [
            BibSpec(num, size, lean, turn, blur * size, occl, hidden)
            for num, (size, blur, (lean, turn), (occl, hidden)) in zip(numbers, picked, strict=True)
        ]
        specs += [None] * (per_photo - len(specs))
        photo, truths = draw_bibs(image, face_boxes, specs, seed=seed + p)
        path = out_dir / f"bibs_{p:02d}.jpg"
        cv2.imwrite(str(path), photo, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        photos.append((path, truths))
    return photos


@dataclass(frozen=True)
class BibPanVideo:
    """A pan across the six people lined up, each with a bib; geometry in scene pixels."""

    path: Path
    width: int
    height: int
    fps: float
    duration_s: float
    speed_px_s: float
    numbers: list[str]  # per person, left to right
    face_boxes: np.ndarray  # (6, 4) in the scene
    bib_boxes: np.ndarray  # (6, 4) the digits' boxes in the scene

    def visible_interval(self, person: int, fraction: float = 1.0) -> tuple[float, float]:
        """Times during which at least ``fraction`` of the person's number is in frame."""
        x1, _, x2, _ = self.bib_boxes[person]
        inside = (x2 - x1) * fraction
        start = max(0.0, (x1 + inside - self.width) / self.speed_px_s)
        end = min(self.duration_s, (x2 - inside) / self.speed_px_s)
        return start, end

    def in_frame(self, boxes: np.ndarray, t: float) -> np.ndarray:
        """Scene boxes moved into the frame shown at time ``t``."""
        return np.asarray(boxes, np.float32) - np.array([self.speed_px_s * t, 0, self.speed_px_s * t, 0], np.float32)


def make_bib_pan_video(
    path: Path,
    face_boxes: np.ndarray,
    numbers: Sequence[str] = ("1234", "1284", "507", "567", "3961", "3991"),
    digit_face_ratio: float = 0.3,
    width: int = 640,
    height: int = 360,
    fps: float = 10.0,
    duration_s: float = 14.0,
) -> BibPanVideo:
    """Pan a ``width`` x ``height`` window left to right across the people of t1.jpg (faces
    ``face_boxes``), cut out and lined up side by side, each wearing a bib whose digits are
    ``digit_face_ratio`` face heights tall (8 cm digits under a 25 cm head). Each cut-out
    runs from just above the face to below the bib, scaled to the frame's height: at
    640x360, faces ~105 px and digits ~30 px. The line-up starts and ends a window's width
    off-screen, so every bib enters and leaves the frame and the first and last second show
    none. ``numbers`` go left to right; the defaults pair look-alikes (1234/1284, 3961/3991)."""
    image = read_bgr(insightface_image("t1.jpg"))
    faces = np.asarray(face_boxes, np.float64)[np.argsort(np.asarray(face_boxes)[:, 0])]
    specs = [BibSpec(n, digit_face_ratio * (f[3] - f[1])) for n, f in zip(numbers, faces, strict=True)]
    dressed, truths = draw_bibs(image, faces, specs, seed=7)
    # One cut-out per person: 1.05 face widths either side of the face (t1's neighbours stay
    # out), from a quarter face above it to below the bib; all as tall as the tallest.
    tops = faces[:, 1] - 0.25 * (faces[:, 3] - faces[:, 1])
    cut_h = max(t.bib_box[3] + 0.3 * (f[3] - f[1]) - top for t, f, top in zip(truths, faces, tops, strict=True))
    scale = height / cut_h
    background = 70
    pieces: list[np.ndarray] = [np.full((height, width, 3), background, np.uint8)]
    scene_faces, scene_bibs, x = [], [], width
    for f, t, top in zip(faces, truths, tops, strict=True):
        half = 1.05 * (f[2] - f[0])
        cx1, cx2 = int(max(0, (f[0] + f[2]) / 2 - half)), int(min(dressed.shape[1], (f[0] + f[2]) / 2 + half))
        cy1 = int(max(0, top))
        cut = cv2.resize(
            dressed[cy1 : cy1 + int(cut_h), cx1:cx2], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA
        )
        piece = np.full((height, cut.shape[1], 3), background, np.uint8)
        piece[: min(height, cut.shape[0])] = cut[:height]
        offset = np.array([cx1, cy1, cx1, cy1], np.float64)
        scene_faces.append((f - offset) * scale + [x, 0, x, 0])
        scene_bibs.append((np.asarray(t.box) - offset) * scale + [x, 0, x, 0])
        spacing = round(0.3 * piece.shape[1])
        pieces += [piece, np.full((height, spacing, 3), background, np.uint8)]
        x += piece.shape[1] + spacing
    pieces[-1] = np.full((height, width, 3), background, np.uint8)
    scene = np.concatenate(pieces, axis=1)
    speed = (scene.shape[1] - width) / duration_s
    still = path.with_suffix(".still.png")
    cv2.imwrite(str(still), scene)
    ffmpeg(
        "-loop", "1", "-framerate", str(fps), "-i", str(still),
        "-vf", f"crop={width}:{height}:x='min({speed}*t,{scene.shape[1] - width})':y=0",
        "-t", str(duration_s), "-r", str(fps), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-g", str(int(fps * 2)), "-movflags", "+faststart", str(path),
    )  # fmt: skip
    still.unlink()
    return BibPanVideo(
        path, width, height, fps, duration_s, speed, [t.number for t in truths],
        np.array(scene_faces, np.float32), np.array(scene_bibs, np.float32),
    )  # fmt: skip
