"""The HTTP contract (seeds/video-clipping-search-api.md) as pure functions.

Envelope ``{"responseType", "message", "data"}``, the six statuses with their
messages, clip items and clip error items, and the error responses.
"""

from __future__ import annotations

import math
from typing import Any

from app.core import schemas

PROCESSING = "processing"
COMPLETED = "completed"
NO_MATCHES = "no_matches"
NO_SEGMENTS = "no_segments"
CLIP_FAILED = "clip_failed"
FAILED = "failed"
STATUSES = (PROCESSING, COMPLETED, NO_MATCHES, NO_SEGMENTS, CLIP_FAILED, FAILED)
TERMINAL = frozenset(STATUSES) - {PROCESSING}

STARTED_MESSAGE = "Video clipping search started. Poll GET /api/v1/ext/{org_id}/event/{event_id}/video-clipping/{request_id} for results."
STATUS_MESSAGES = {
    PROCESSING: "Video clip search is still processing. Poll again shortly.",
    COMPLETED: "Video clipping completed",
    NO_MATCHES: "No frames in the event videos matched the uploaded selfie.",
    NO_SEGMENTS: "Matches were found but no continuous video segment could be extracted.",
    CLIP_FAILED: "Selfie matched but the video clipping service could not produce one or more clips.",
    FAILED: "Video clip search failed before any clips could be generated.",
}
NO_USABLE_SEGMENT = "no usable segment"


def format_hms(seconds: float) -> str:
    """``HH:MM:SS`` of ``seconds``, rounded down; hours grow past two digits when needed."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
    total = math.floor(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def clip_window_hms(start_s: float, end_s: float) -> tuple[str, str]:
    """A window as whole seconds that cover it: start rounded down, end rounded up."""
    if end_s < start_s:
        raise ValueError(f"end_s ({end_s}) is before start_s ({start_s})")
    return format_hms(start_s), format_hms(math.ceil(end_s))


def envelope(message: str, data: Any, response_type: str = "success") -> dict:
    return {"responseType": response_type, "message": message, "data": data}


def error_body(message: str, code: str) -> schemas.ErrorEnvelope:
    """4xx/5xx body: same envelope, ``responseType`` "error", a stable machine-readable code."""
    return envelope(message, {"code": code}, "error")


def clip_item(
    clip_id: str, video_url: str, source_key: str, start_s: float, end_s: float, **extra: Any
) -> schemas.ClipItem:
    start, end = clip_window_hms(start_s, end_s)
    return {
        "uuid": clip_id,
        "video_url": video_url,
        "source_video_key": source_key,
        "start_time": start,
        "end_time": end,
        **extra,
    }


def clip_error(video_key: str, error: str, status_code: int | None = None) -> schemas.ClipErrorItem:
    return {"video_key": video_key, "error": error, "status_code": status_code}


def start_payload(request_id: str, status: str) -> schemas.StartEnvelope:
    """POST response: ``processing``, or a terminal ``no_matches`` decided at once."""
    message = STARTED_MESSAGE if status == PROCESSING else STATUS_MESSAGES[status]
    return envelope(message, {"status": status, "request_id": request_id})


SEGMENT_FIELDS = (
    "segment_id",
    "source_video_key",
    "start_seconds",
    "end_seconds",
    "matched_frames",
    "best_similarity",
    "score",
    "confirmed_frames",
    "clipped",
)


def segment_item(segment: dict) -> schemas.SegmentItem:
    """A ranked segment as clients see it (the record also keeps its track ids)."""
    # Records written before BIB search have no confirmed_frames: none were.
    return {name: segment.get(name, 0) if name == "confirmed_frames" else segment[name] for name in SEGMENT_FIELDS}


def extra_clip_item(clip_id: str, status: str, item: dict, error: str | None) -> schemas.ExtraClipItem:
    """A clip asked for after the search: what was asked, its status, and the clip once cut."""
    return {"clip_id": clip_id, "status": status, **item, "error": error}


def result_payload(
    request_id: str,
    status: str,
    videos: list[dict],
    error: str | None,
    clip_errors: list[dict],
    segments: list[dict] | None = None,
    clips: list[dict] | None = None,
    rules: dict | None = None,
) -> schemas.ResultEnvelope:
    """GET response for any status: the contract's fields, plus every ranked segment, the
    clips asked for after the search, and the rules the run used."""
    return envelope(
        STATUS_MESSAGES[status],
        {
            "request_id": request_id,
            "status": status,
            "videos": videos,
            "error": error,
            "clip_errors": clip_errors,
            "segments": [segment_item(s) for s in segments or []],
            "clips": clips or [],
            "rules": rules or {},
        },
    )


def clip_started_payload(request_id: str, clip_id: str) -> schemas.ClipStartedEnvelope:
    return envelope(
        "Clip started. Poll the search's GET for its status.",
        {"status": PROCESSING, "request_id": request_id, "clip_id": clip_id},
    )


# ---- photos (Face Search, BIB search) ---------------------------------------------------
FACE_SEARCH_MESSAGES = {
    COMPLETED: "Face search completed",
    NO_MATCHES: "No photos of the event matched the uploaded selfie.",
}
BIB_SEARCH_MESSAGES = {
    COMPLETED: "BIB search completed",
    NO_MATCHES: "No photos of the event show this BIB number.",
}


def photo_item(
    photo_key: str,
    photo_url: str,
    thumbnail_url: str,
    similarity: float,
    bbox: list[float],
    taken_at: str | None,
    match_count: int,
) -> schemas.PhotoItem:
    return {
        "photo_key": photo_key,
        "photo_url": photo_url,
        "thumbnail_url": thumbnail_url,
        "similarity": similarity,
        "bbox": bbox,
        "taken_at": taken_at,
        "match_count": match_count,
    }


def photos_payload(
    messages: dict[str, str], photos: list[dict], total: int, page: int, page_size: int, **ids: Any
) -> schemas.PhotosEnvelope:
    """One page of ranked photos; ``ids`` (request_id, bib) lead the data."""
    status = COMPLETED if total else NO_MATCHES
    return envelope(
        messages[status],
        {
            **ids,
            "status": status,
            "photos": photos,
            "page": page,
            "page_size": page_size,
            "total_photos": total,
            "total_pages": math.ceil(total / page_size),
        },
    )
