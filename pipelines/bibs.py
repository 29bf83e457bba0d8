"""Race numbers (BIBs): read them with OCR, keep the ones that are numbers, find their wearer.

The engine is RapidOCR (PP-OCR detector and recogniser, ONNX, CPU). Used as one call it
misses small and blurred bibs and returns confident wrong numbers, so ``BibReader`` wraps
it (measured on the generated photos of pipelines/synthetic_bibs.py, two sets of 24 photos,
120 readable bibs; tests/test_bibs.py runs one):

* Zoom. The detector draws loose boxes around small text (digits under ~30 px get a box ~3
  digit heights tall: the whole bib with its header), and the recogniser squeezes each box
  to 48 px, so the digits end up a third of its height. Every box whose first reading holds
  a digit is cut out with a margin, scaled so the box is ``ZOOM_BOX_PX`` tall, and detected
  and read again; that box fits the digit line. Without it: 106 instead of 114 read, and 2
  wrong numbers.
* Sharpened detector input. Digits blurred by ~12 % of their height are invisible to the
  detector; an unsharp mask on its input (never the recogniser's) finds 20 of 24 instead of
  13. Without it: 111 read.
* The least confident character as the score. The recogniser's own score is the mean, so
  one wrong digit among confident ones still scores > 0.9 (7796 for 7795: 0.93). With the
  mean: 116 read, and 2 wrong numbers.
* Flattened lines and unstable reads are dropped (``MIN_DIGIT_ASPECT``, ``_stable``): each
  removed one wrong number at no loss.
* Crops are recognised one at a time (a batch pads them to the widest, which moved a crop's
  score from 0.99 to 0.76), shrunk to the recogniser's height by averaging, not by its own
  bilinear resize (which aliases), and without the 180-degree classifier (bibs are upright;
  a 6 turned over is a 9).

The pure parts (``bib_numbers``, ``assign_faces``, ``bib_sample_mask``) carry the rules;
``BibReader`` holds the engine. Images are BGR, like every frame in pipelines/.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.config import BibSettings

log = logging.getLogger(__name__)

# A box whose first reading holds a digit is read again from a crop scaled so that the box
# is this tall: digits then land at 50-100 px, where the detector's boxes fit the line.
ZOOM_BOX_PX = 160.0
# Margin around that box (fraction of its height): room for the digit line's own box.
ZOOM_MARGIN = 0.25
# The zoomed crop's longer side is capped: a long line of text (a banner with a date) must
# not become a 5000 px image.
ZOOM_MAX_SIDE_PX = 1280
# The recogniser's input height (rapidocr's Rec.rec_img_shape).
REC_HEIGHT_PX = 48
# Unsharp mask on the detector's input: sigma (px) and amount. Restores the edges of text
# blurred by a few pixels, which the detector otherwise does not see at all.
SHARPEN_SIGMA_PX = 2.0
SHARPEN_AMOUNT = 1.5

# Where a bib sits on its wearer, in face-box units (the box runs from brow to chin, ~20 cm):
# its centre is between just under the chin (0.3: a bib pinned high, a hunched runner) and
# the hips (4.0: race belts; chest to navel is 1.2-2.5), within 1.5 face widths of the face's
# centre line (shoulders are ~3 face widths wide), and its text box is at most 1.5 face
# heights tall (digits are 6-10 cm: a bib far larger than the face belongs to someone nearer
# the camera). Among faces that fit, the one whose expected bib spot (1.5 face heights below
# the chin) is nearest wins.
BIB_BELOW_MIN = 0.3
BIB_BELOW_MAX = 4.0
BIB_BELOW_EXPECTED = 1.5
BIB_SIDEWAYS_MAX = 1.5
BIB_MAX_HEIGHT = 1.5

# A number whose text line is shorter than this (px; the line's box is 1.4-1.6x the digit
# height) is not kept: its digits are ~7 px or less, where 3/8/0 and 1/7 are a pixel apart
# and the recogniser, upsampling the line 5x, guesses (a 6 px bib half behind an arm read
# 180 for 189 at 0.93). Whole 8 px digits had lines of 11.7 px and more.
MIN_TEXT_PX = 10.0
# Digits are taller than they are wide in every bib typeface (1.3 to 2 with the box's
# padding); a digit line flatter than this, height over the width per character, is cut
# along its length (an arm across the bib), and the tops of 8 and 0, or of 9 and 0, are the
# same: half-covered bibs read 100 for 180 and 707 for 787 (0.83 and 0.88 here, readable
# ones with a quarter covered >= 1.13).
MIN_DIGIT_ASPECT = 1.0
# A number on a line under STABLE_CHECK_PX tall is read again from two slightly worse copies
# of its line and kept only if both read the same: at STABLE_SCALE of the image's resolution,
# and blurred by STABLE_BLUR_PX. A read from enough pixels survives both; a guess at the edge
# of resolution does not (8 px bibs read 7305 for 7395 at 0.93 and 2638 for 2636 at 0.99;
# their copies read 7905 and 2636). Copies disagreed only on lines of 14.4 px and less (five
# sets of 24 photos), so taller lines skip the two extra recognitions.
STABLE_CHECK_PX = 24.0
STABLE_SCALE = 0.75
STABLE_BLUR_PX = 0.8
# A number whose box comes this close to the image border (fraction of its height) may be
# cut by it: a bib leaving the frame reads 234 for 1234. It is read whole in other frames.
EDGE_MARGIN = 0.25


@dataclass(frozen=True)
class BibRead:
    number: str
    confidence: float  # the least confident character's probability
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the image's pixels


# --- pure rules ---------------------------------------------------------------------------------


def bib_numbers(
    boxes: Sequence[np.ndarray] | np.ndarray,
    texts: Sequence[str],
    scores: Sequence[float],
    rules: BibSettings,
    image_size: tuple[int, int] | None = None,
) -> list[BibRead]:
    """The texts that are race numbers: only digits once spaces are removed, ``min_digits`` to
    ``max_digits`` of them, scored at least ``min_confidence``, on a line at least
    ``MIN_TEXT_PX`` tall and ``MIN_DIGIT_ASPECT`` times as tall as its width per character
    and, when ``image_size`` (width, height) is given, clear of the image's border by
    ``EDGE_MARGIN`` of the line's height.

    A text with any other character is dropped, not stripped: "A123" or "12:05" is not a bib
    (and a digit read next to a letter is often part of a word). ``boxes`` are quads (4, 2) or
    boxes (4,); they become axis-aligned x1, y1, x2, y2. A number read more than once in the
    image (two text boxes over one bib) is kept once, at its best score. Sorted by score.
    """
    best: dict[str, BibRead] = {}
    for box, text, score in zip(boxes, texts, scores, strict=True):
        number = _digits(text)
        if not number:
            continue
        if not rules.min_digits <= len(number) <= rules.max_digits or score < rules.min_confidence:
            continue
        pts = np.asarray(box, np.float64).reshape(-1, 2)
        x1, y1 = pts.min(axis=0)
        x2, y2 = pts.max(axis=0)
        line_px, line_len = _line_size(pts)
        if line_px < MIN_TEXT_PX or line_px < MIN_DIGIT_ASPECT * line_len / len(number):
            continue
        if image_size is not None:
            margin = EDGE_MARGIN * line_px
            width, height = image_size
            if x1 < margin or y1 < margin or x2 > width - margin or y2 > height - margin:
                continue
        read = BibRead(number, float(score), (float(x1), float(y1), float(x2), float(y2)))
        if number not in best or read.confidence > best[number].confidence:
            best[number] = read
    return sorted(best.values(), key=lambda r: -r.confidence)


def _line_size(pts: np.ndarray) -> tuple[float, float]:
    """A text box's height and length: its shorter and longer side as drawn (a leaning line's
    quad is not made taller by the lean, as its axis-aligned box would be)."""
    sides = pts[1] - pts[0] if len(pts) == 2 else (np.linalg.norm(pts[1] - pts[0]), np.linalg.norm(pts[3] - pts[0]))
    return float(min(sides)), float(max(sides))


def assign_faces(reads: Sequence[BibRead], face_boxes: np.ndarray) -> list[int | None]:
    """For each read, the index of the face whose torso holds it, or None.

    A face fits when the bib's centre lies ``BIB_BELOW_MIN``..``BIB_BELOW_MAX`` face heights
    below the face's bottom edge, within ``BIB_SIDEWAYS_MAX`` face widths of its centre line,
    and the bib's box is at most ``BIB_MAX_HEIGHT`` face heights tall (see the constants).
    Among fitting faces the nearest to where a bib is usually pinned wins, in each face's own
    units, so a small face far behind loses to the runner in front. Reads are assigned
    independently: two bibs may name the same face.
    """
    faces = np.asarray(face_boxes, np.float64).reshape(-1, 4)
    if not len(faces):
        return [None] * len(reads)
    fw = np.maximum(faces[:, 2] - faces[:, 0], 1e-6)
    fh = np.maximum(faces[:, 3] - faces[:, 1], 1e-6)
    fcx = (faces[:, 0] + faces[:, 2]) / 2
    owners: list[int | None] = []
    for read in reads:
        x1, y1, x2, y2 = read.box
        below = ((y1 + y2) / 2 - faces[:, 3]) / fh
        sideways = ((x1 + x2) / 2 - fcx) / fw
        fits = (
            (below >= BIB_BELOW_MIN)
            & (below <= BIB_BELOW_MAX)
            & (np.abs(sideways) <= BIB_SIDEWAYS_MAX)
            & ((y2 - y1) / fh <= BIB_MAX_HEIGHT)
        )
        if not fits.any():
            owners.append(None)
            continue
        distance = np.hypot(sideways, below - BIB_BELOW_EXPECTED)
        owners.append(int(np.argmin(np.where(fits, distance, np.inf))))
    return owners


def bib_sample_mask(timestamps: np.ndarray, sample_fps: float, bib_fps: float, origin_s: float = 0.0) -> np.ndarray:
    """Which of a video's sampled frames are read for BIBs: about ``bib_fps`` per second.

    Frames are sampled for faces on the grid ``origin_s + k / sample_fps`` (pipelines/decode.py)
    and arrive in chunks handled by different workers, so the choice depends on each frame's
    own time only: a frame is read when it is the first grid sample at or after a point of the
    ``1 / bib_fps`` grid, i.e. when floor(k * bib_fps / sample_fps) steps up at its grid index k.
    The index is the timestamp rounded to the face grid (frame times sit within half a video
    frame of their grid point), so jitter cannot read one second twice or skip one. With
    ``bib_fps >= sample_fps`` every frame is read.
    """
    if sample_fps <= 0 or bib_fps <= 0:
        raise ValueError("sample_fps and bib_fps must be positive")
    k = np.round((np.asarray(timestamps, np.float64) - origin_s) * sample_fps)
    ratio = bib_fps / sample_fps
    eps = 1e-9  # k * ratio is exact on grid points only up to rounding
    return np.floor(k * ratio + eps) != np.floor((k - 1) * ratio + eps)


# --- the reader ---------------------------------------------------------------------------------


def _sharpen(image: np.ndarray, sigma: float) -> np.ndarray:
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    return cv2.addWeighted(image, 1 + SHARPEN_AMOUNT, blurred, -SHARPEN_AMOUNT, 0)


class BibReader:
    """One RapidOCR engine (PP-OCR detector and recogniser, CPU) that reads race numbers.

    Not thread-safe; one per actor. ``threads`` is onnxruntime's intra-op thread count:
    keep it at the actor's CPU share.
    """

    def __init__(self, rules: BibSettings, threads: int = 1) -> None:
        from rapidocr import RapidOCR  # heavy import, only where bibs are read

        self.rules = rules
        params = {
            "Global.log_level": "error",
            "Global.use_cls": False,
            "Rec.rec_batch_num": 1,
            "EngineConfig.onnxruntime.intra_op_num_threads": max(1, threads),
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "Det.limit_type": "min",
            "Det.limit_side_len": rules.det_min_side,
            "Global.max_side_len": rules.det_max_side,
        }
        self._engine = RapidOCR(params=params)
        # The zoomed crops are detected at their own size (limit "max" far above the cap):
        # a second engine, whose recogniser is never loaded.
        self._zoom = RapidOCR(
            params={
                **params,
                "Det.limit_type": "max",
                "Det.limit_side_len": 4 * ZOOM_MAX_SIDE_PX,
                "Global.max_side_len": max(rules.det_max_side, ZOOM_MAX_SIDE_PX),
            }
        )

    def read(self, image_bgr: np.ndarray) -> list[BibRead]:
        """The race numbers in one BGR uint8 image (a video frame or a photo)."""
        start = time.perf_counter()
        quads, texts, scores = [], [], []
        for quad in self._detect(self._engine, _sharpen(image_bgr, SHARPEN_SIGMA_PX)):
            text, _ = self._recognise(_crop_quad(image_bgr, quad))
            if not any(ch.isdigit() for ch in text):
                continue
            for zquad, ztext, zscore in self._zoom_read(image_bgr, quad):
                quads.append(zquad)
                texts.append(ztext)
                scores.append(zscore)
        height, width = image_bgr.shape[:2]
        reads = bib_numbers(quads, texts, scores, self.rules, image_size=(width, height))
        log.debug("read %d bibs from %d candidates in %.2f s", len(reads), len(texts), time.perf_counter() - start)
        return reads

    def _zoom_read(self, image: np.ndarray, quad: np.ndarray) -> list[tuple[np.ndarray, str, float]]:
        """Detect and read again inside ``quad``'s surroundings, scaled to ``ZOOM_BOX_PX``."""
        height, width = image.shape[:2]
        (x1, y1), (x2, y2) = quad.min(axis=0), quad.max(axis=0)
        box_h = max(y2 - y1, 1.0)
        margin = ZOOM_MARGIN * box_h
        cx1, cy1 = int(max(0, x1 - margin)), int(max(0, y1 - margin))
        cx2, cy2 = int(min(width, np.ceil(x2 + margin))), int(min(height, np.ceil(y2 + margin)))
        if cx2 - cx1 < 2 or cy2 - cy1 < 2:
            return []
        scale = min(ZOOM_BOX_PX / box_h, ZOOM_MAX_SIDE_PX / max(cx2 - cx1, cy2 - cy1))
        region = cv2.resize(
            image[cy1:cy2, cx1:cx2],
            None,
            fx=scale,
            fy=scale,
            interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA,
        )
        found = []
        for zquad in self._detect(self._zoom, _sharpen(region, SHARPEN_SIGMA_PX * max(scale, 1.0))):
            text, score = self._recognise(_crop_quad(region, zquad))
            if not text:
                continue
            quad_in_image = zquad / scale + np.array([cx1, cy1], np.float32)
            small = _line_size(quad_in_image)[0] < STABLE_CHECK_PX
            if (
                score >= self.rules.min_confidence
                and _digits(text)
                and small
                and not self._stable(image, quad_in_image, text)
            ):
                score = 0.0
            found.append((quad_in_image, text, score))
        return found

    def _stable(self, image: np.ndarray, quad: np.ndarray, text: str) -> bool:
        """Whether the line reads the same at ``STABLE_SCALE`` of the image's resolution and
        blurred by ``STABLE_BLUR_PX``."""
        crop = _crop_quad(image, quad)
        copies = (
            cv2.resize(crop, None, fx=STABLE_SCALE, fy=STABLE_SCALE, interpolation=cv2.INTER_AREA),
            cv2.GaussianBlur(crop, (0, 0), STABLE_BLUR_PX),
        )
        return all(_digits(self._recognise(copy)[0]) == _digits(text) for copy in copies)

    @staticmethod
    def _detect(engine, image: np.ndarray) -> list[np.ndarray]:
        out = engine(image, use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(out, "boxes", None)
        return [] if boxes is None else [np.asarray(b, np.float32) for b in boxes]

    def _recognise(self, crop: np.ndarray) -> tuple[str, float]:
        """The crop's text and its least confident character's probability.

        The recogniser resizes every crop to ``REC_HEIGHT_PX`` bilinearly, which aliases when
        it shrinks: a 150 px crop of 1234 scored 0.71 where the same line at 48 px scored 1.0.
        Taller crops are shrunk here first, averaging pixels.
        """
        if crop.shape[0] > REC_HEIGHT_PX:
            crop = cv2.resize(
                crop,
                None,
                fx=REC_HEIGHT_PX / crop.shape[0],
                fy=REC_HEIGHT_PX / crop.shape[0],
                interpolation=cv2.INTER_AREA,
            )
        out = self._engine(crop, use_det=False, use_cls=False, use_rec=True, return_word_box=True)
        txts = getattr(out, "txts", None)
        if not txts:
            return "", 0.0
        words = getattr(out, "word_results", None)
        confs = getattr(words[0], "confs", None) if words else None
        score = float(min(confs)) if confs else float(out.scores[0])
        return str(txts[0]), score


def _digits(text: str) -> str:
    """The text without spaces when that is all digits, else ""."""
    joined = "".join(text.split())
    return joined if joined.isdigit() and joined.isascii() else ""


def _crop_quad(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The quad's contents, rectified to an upright rectangle (rapidocr's own crop)."""
    from rapidocr.utils.process_img import get_rotate_crop_image

    return get_rotate_crop_image(image, np.asarray(quad, np.float32).copy())
