"""Event photos as served to people: when they were taken (EXIF) and small thumbnails."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from PIL import Image, ImageOps

# EXIF tags: DateTimeOriginal and DateTimeDigitized live in the Exif IFD, DateTime in IFD0.
EXIF_IFD = 0x8769
DATETIME_ORIGINAL, DATETIME_DIGITIZED, DATETIME = 0x9003, 0x9004, 0x0132
OFFSET_TIME_ORIGINAL = 0x9011
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp"}


def parse_exif_time(value: object, offset: object = None) -> datetime | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (plus an optional "+HH:MM" offset) as a UTC datetime.

    Without an offset the camera's clock is taken as UTC: EXIF has no zone otherwise, and
    a fixed rule keeps photos of one camera in order.
    """
    if not isinstance(value, str):
        return None
    try:
        taken = datetime.strptime(value.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:  # blank ("    :  :  ") or malformed dates are common
        return None
    if isinstance(offset, str) and len(offset.strip()) >= 6:
        try:
            return datetime.strptime(
                f"{taken:%Y-%m-%d %H:%M:%S}{offset.strip()[:6]}", "%Y-%m-%d %H:%M:%S%z"
            ).astimezone(UTC)
        except ValueError:
            pass
    return taken.replace(tzinfo=UTC)


def taken_at(img: Image.Image) -> datetime | None:
    """When the photo was taken, from its EXIF (original, digitized, then file time)."""
    try:
        exif = img.getexif()
    except Exception:  # broken EXIF blocks must not fail the photo
        return None
    sub = exif.get_ifd(EXIF_IFD)
    for tag, source in ((DATETIME_ORIGINAL, sub), (DATETIME_DIGITIZED, sub), (DATETIME, exif)):
        when = parse_exif_time(source.get(tag), sub.get(OFFSET_TIME_ORIGINAL))
        if when is not None:
            return when
    return None


def thumbnail_jpeg(data: io.BufferedIOBase | bytes, max_px: int, quality: int = 85) -> bytes:
    """A JPEG no larger than ``max_px`` on its longer side, upright (EXIF orientation applied)."""
    fh = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(fh) as img:
        img = ImageOps.exif_transpose(img)
        img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.convert("RGB").save(out, "JPEG", quality=quality, optimize=True)
        return out.getvalue()


def content_type(codec: str | None) -> str:
    """The HTTP content type of a photo by its probed format."""
    return CONTENT_TYPES.get((codec or "").lower(), "application/octet-stream")
