"""Phone-style rotation flags: the display matrix that tells a player to turn the stored
picture (a phone held upright stores 1920x1080 with "rotate 90"). Pure numpy.

facereel works in the *upright* frame, the picture as a viewer sees it: decode turns
sampled frames upright (pipelines/decode.py), so face boxes, track geometry and the media
row's width/height are upright; ffmpeg turns the picture upright by itself when it cuts a
clip (autorotate), so a reframing crop planned from those boxes applies as is
(pipelines/clip.py checks the sizes agree). Detectors find few faces lying on their side:
on a rotated copy of the synthetic pan YuNet found 0-1 of the 4 faces per frame in the
stored picture against 3-4 upright.

Angles are PyAV's ``VideoFrame.rotation``: degrees the picture is turned counterclockwise
for display (``av_display_rotation_get``), normalised here to 0, 90, 180 or 270. Flips in a
display matrix are not handled (ffmpeg's own autorotate honours them; phones do not write
them).
"""

from __future__ import annotations

import numpy as np


def display_rotation(degrees: float | None) -> int:
    """A display rotation as 0, 90, 180 or 270 degrees counterclockwise (nearest quarter
    turn; None, NaN or anything near 0 is 0)."""
    if degrees is None or not np.isfinite(degrees):
        return 0
    return round(float(degrees) / 90.0) % 4 * 90


def upright_size(size: tuple[int, int], rotation: int) -> tuple[int, int]:
    """(width, height) of the upright picture of a stored ``size`` picture."""
    w, h = size
    return (h, w) if display_rotation(rotation) in (90, 270) else (w, h)


def upright_image(image: np.ndarray, rotation: int) -> np.ndarray:
    """The stored picture ``image`` (H x W x C) turned upright, contiguous."""
    quarter_turns = display_rotation(rotation) // 90
    if quarter_turns == 0:
        return image
    # np.rot90 turns counterclockwise for k > 0, as the display matrix does.
    return np.ascontiguousarray(np.rot90(image, k=quarter_turns))


def upright_points(xy: np.ndarray, size: tuple[int, int], rotation: int) -> np.ndarray:
    """Points (..., 2) in the stored picture of ``size`` (x right, y down, pixel edges) in
    the upright picture's coordinates."""
    xy = np.asarray(xy, dtype=np.float64)
    w, h = size
    x, y = xy[..., 0], xy[..., 1]
    match display_rotation(rotation):
        case 90:  # counterclockwise: the stored left edge becomes the bottom
            out = (y, w - x)
        case 180:
            out = (w - x, h - y)
        case 270:  # clockwise: the stored top edge becomes the right
            out = (h - y, x)
        case _:
            out = (x, y)
    return np.stack(out, axis=-1)


def upright_boxes(boxes: np.ndarray, size: tuple[int, int], rotation: int) -> np.ndarray:
    """Boxes (N, 4) x1, y1, x2, y2 in the stored picture of ``size`` as upright boxes
    (corners re-ordered so x1 <= x2 and y1 <= y2)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    a = upright_points(boxes[:, 0:2], size, rotation)
    b = upright_points(boxes[:, 2:4], size, rotation)
    return np.concatenate([np.minimum(a, b), np.maximum(a, b)], axis=1)
