"""Synthetic event media built from real face photos that ship in pip packages.

Used by the demo, the tests and the benchmarks; nothing is downloaded. The main
video is a slow camera pan across an upscaled copy of InsightFace's ``t1.jpg`` (six
people), so each person's visible interval is known exactly from the geometry.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from pipelines.models.base import Detections


def insightface_image(name: str) -> Path:
    return Path(str(resources.files("insightface") / "data" / "images" / name))


def read_bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    return image


def ffmpeg(*args: str) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True)


@dataclass(frozen=True)
class PanVideo:
    path: Path
    width: int
    height: int
    fps: float
    duration_s: float
    speed_px_s: float
    scale: float
    y_offset: int
    face_boxes: np.ndarray  # (6, 4) x1, y1, x2, y2 in the upscaled image, left to right

    def visible_interval(self, person: int, fraction: float = 0.5) -> tuple[float, float]:
        """Times during which at least ``fraction`` of the person's face box is in frame.

        The default (half the face) is where the detector starts to find a face cut by
        the frame edge; ``fraction=1`` gives the whole-face interval.
        """
        x1, _, x2, _ = self.face_boxes[person]
        inside = (x2 - x1) * fraction
        start = max(0.0, (x1 + inside - self.width) / self.speed_px_s)
        end = min(self.duration_s, (x2 - inside) / self.speed_px_s)
        return start, end


def make_pan_video(
    path: Path,
    faces_in_t1: Detections,
    width: int = 640,
    height: int = 360,
    fps: float = 10.0,
    duration_s: float = 16.0,
    scale: float = 0.8,
    audio: bool = True,
) -> PanVideo:
    """Pan a width x height window left to right across t1.jpg scaled by ``scale``."""
    image = read_bgr(insightface_image("t1.jpg"))
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    order = np.argsort(faces_in_t1.boxes[:, 0])
    boxes = faces_in_t1.boxes[order] * scale
    top, bottom = boxes[:, 1].min(), boxes[:, 3].max()
    if bottom - top > height:
        raise ValueError("faces do not fit vertically; lower the scale")
    y_offset = int(max(0, min(big.shape[0] - height, (top + bottom) / 2 - height / 2)))
    speed = (big.shape[1] - width) / duration_s
    still = path.with_suffix(".still.png")
    cv2.imwrite(str(still), big)
    audio_in = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={duration_s}"] if audio else []
    audio_out = ["-c:a", "aac", "-b:a", "64k"] if audio else []
    ffmpeg(
        "-loop", "1", "-framerate", str(fps), "-i", str(still), *audio_in,
        "-vf", f"crop={width}:{height}:x='min({speed}*t,{big.shape[1] - width})':y={y_offset}",
        "-t", str(duration_s), "-r", str(fps), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-g", str(int(fps * 2)), *audio_out, "-movflags", "+faststart", str(path),
    )  # fmt: skip
    still.unlink()
    return PanVideo(path, width, height, fps, duration_s, speed, scale, y_offset, boxes.astype(np.float32))


def make_still_video(
    path: Path,
    images: list[np.ndarray],
    width: int = 640,
    height: int = 360,
    fps: float = 10.0,
    duration_s: float = 6.0,
) -> Path:
    """A static shot of the given photos side by side (distractor faces)."""
    canvas = np.full((height, width, 3), 40, np.uint8)
    cell = width // len(images)
    for i, img in enumerate(images):
        f = min(cell / img.shape[1], height / img.shape[0])
        small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        y, x = (height - small.shape[0]) // 2, i * cell + (cell - small.shape[1]) // 2
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    still = path.with_suffix(".still.png")
    cv2.imwrite(str(still), canvas)
    ffmpeg(
        "-loop", "1", "-framerate", str(fps), "-i", str(still), "-t", str(duration_s), "-r", str(fps),
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path),
    )  # fmt: skip
    still.unlink()
    return path


def make_flash_video(
    path: Path,
    face: np.ndarray,
    flash_at_s: float,
    flash_s: float = 0.4,
    width: int = 640,
    height: int = 360,
    fps: float = 10.0,
    duration_s: float = 8.0,
) -> Path:
    """An empty grey shot in which ``face`` appears only briefly (isolated matches)."""
    frames_dir = path.with_suffix(".frames")
    frames_dir.mkdir(exist_ok=True)
    blank = np.full((height, width, 3), 90, np.uint8)
    shown = blank.copy()
    f = min(0.8 * height / face.shape[0], 0.5 * width / face.shape[1])
    small = cv2.resize(face, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    y, x = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    shown[y : y + small.shape[0], x : x + small.shape[1]] = small
    for i in range(round(duration_s * fps)):
        t = i / fps
        cv2.imwrite(str(frames_dir / f"{i:05d}.png"), shown if flash_at_s <= t < flash_at_s + flash_s else blank)
    ffmpeg(
        "-framerate", str(fps), "-i", str(frames_dir / "%05d.png"), "-c:v", "libx264", "-preset", "veryfast",
        "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path),
    )  # fmt: skip
    for png in frames_dir.iterdir():
        png.unlink()
    frames_dir.rmdir()
    return path


def selfie_of(person_box: np.ndarray, margin: float = 0.8, scale: float = 1.5, flip: bool = True) -> np.ndarray:
    """A selfie-like crop of one person from t1.jpg: margin around the face, rescaled, mirrored."""
    image = read_bgr(insightface_image("t1.jpg"))
    x1, y1, x2, y2 = person_box
    mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
    crop = image[
        int(max(0, y1 - mh)) : int(min(image.shape[0], y2 + mh)),
        int(max(0, x1 - mw)) : int(min(image.shape[1], x2 + mw)),
    ]
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return cv2.flip(crop, 1) if flip else crop


def distractor_faces() -> list[np.ndarray]:
    """Faces that are not in t1.jpg: Tom Hanks (InsightFace) and the astronaut (scikit-image, if installed)."""
    faces = [read_bgr(insightface_image("Tom_Hanks_54745.png"))]
    try:
        from skimage import data

        faces.append(np.ascontiguousarray(data.astronaut()[:, :, ::-1]))
    except ImportError:
        pass
    return faces
