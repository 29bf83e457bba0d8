"""Search jobs as Ray tasks: segment the hits -> one clipping task per source video.

Matching happened once, in the search service (app/search/); the job carries its hits
and the event's resolved rules. ``run_search`` owns the request record until it writes
a terminal status; every failure path ends in one (the deadline sweep covers a worker
that dies outright).
"""

from __future__ import annotations

import logging
import tempfile
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import ray

from app.config import AppSettings
from app.contract import (
    CLIP_FAILED,
    COMPLETED,
    FAILED,
    NO_MATCHES,
    NO_SEGMENTS,
    NO_USABLE_SEGMENT,
    clip_error,
    clip_item,
)
from app.events import SearchRules
from pipelines.segments import ClipWindow, TimedHit, best_window, rank_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchJob:
    """One run of a search, as the worker needs it: matched already, rules resolved."""

    request_id: str
    job_id: str
    org_id: int
    event_id: int
    rules: SearchRules
    hits: dict[str, list[TimedHit]]  # per source video, from pipelines.match.video_hits


def clip_key(job: SearchJob, clip_id: str, ext: str) -> str:
    return f"{job.org_id}/{job.event_id}/clips/{job.request_id}/{clip_id}.{ext}"


def clip_url(settings: AppSettings, key: str) -> str:
    return f"{settings.api.public_base_url.rstrip('/')}/media/{key}"


@ray.remote(max_retries=0)
def cut_one_clip(settings: AppSettings, job: SearchJob, media: dict, window: ClipWindow) -> dict:
    """Cut one window; returns a clip item or a clip error item (never raises)."""
    from pipelines.clip import ClipError, cut_clip
    from pipelines.storage import OutputStorage

    key = media["media_key"]
    clip_id = str(uuid.uuid4())
    storage = OutputStorage(job.rules.output_root, settings.store.storage_options)
    try:
        with tempfile.TemporaryDirectory(prefix="facereel-clip-") as tmp:
            mp4, jpg = Path(tmp) / f"{clip_id}.mp4", Path(tmp) / f"{clip_id}.jpg"
            info = cut_clip(
                media["uri"],
                window.start_s,
                window.end_s,
                mp4,
                jpg,
                window.poster_s,
                settings.clip,
                settings.store.storage_options or None,
            )
            storage.put(mp4, clip_key(job, clip_id, "mp4"))
            storage.put(jpg, clip_key(job, clip_id, "jpg"))
    except ClipError as exc:
        return {"error": clip_error(key, str(exc), exc.status_code)}
    except Exception as exc:
        log.exception("clipping %s failed", key)
        return {"error": clip_error(key, f"clipping failed: {type(exc).__name__}: {exc}", None)}
    return {
        "video": clip_item(
            clip_id,
            clip_url(settings, clip_key(job, clip_id, "mp4")),
            key,
            window.start_s,
            window.end_s,
            poster_url=clip_url(settings, clip_key(job, clip_id, "jpg")),
            start_seconds=round(window.start_s, 3),
            end_seconds=round(window.end_s, 3),
            duration_seconds=round(info.duration_s, 3),
            matched_frames=window.support,
            best_similarity=round(window.best_similarity, 4),
        )
    }


def plan_windows(settings: AppSettings, job: SearchJob) -> tuple[dict[str, ClipWindow], list[str], dict[str, dict]]:
    """(window per video, videos without a usable window, media rows)."""
    from pipelines.models import pack_info
    from pipelines.store import FaceStore

    store = FaceStore.from_settings(settings, pack_info(settings.models.pack))
    windows: dict[str, ClipWindow] = {}
    unusable: list[str] = []
    media: dict[str, dict] = {}
    for key, timed in job.hits.items():
        row = store.media_row(job.org_id, job.event_id, key)
        if row is None:
            unusable.append(key)
            continue
        media[key] = row
        start = row["start_s"] or 0.0
        window = best_window(timed, start, start + (row["duration_s"] or 0.0), job.rules.segments)
        if window is None:
            unusable.append(key)
        else:
            windows[key] = window
    return windows, unusable, media


def execute_search(settings: AppSettings, job: SearchJob) -> dict:
    """The whole job; returns the terminal outcome as keyword arguments for ``finish``."""
    from pipelines.storage import OutputStorage, StorageError

    n_hits = sum(len(v) for v in job.hits.values())
    windows, unusable, media = plan_windows(settings, job)
    if n_hits == 0:
        return {"status": NO_MATCHES}
    if not windows:
        return {
            "status": NO_SEGMENTS,
            "hits": n_hits,
            "clip_errors": [clip_error(k, NO_USABLE_SEGMENT) for k in sorted(unusable)],
        }
    try:
        OutputStorage(job.rules.output_root, settings.store.storage_options).check_writable()
    except StorageError as exc:
        return {"status": FAILED, "hits": n_hits, "error": str(exc)}
    ranked = rank_windows(windows)
    clip_task = cut_one_clip.options(num_cpus=settings.clip.num_cpus)
    results = ray.get([clip_task.remote(settings, job, media[key], window) for key, window in ranked])
    videos = [r["video"] for r in results if "video" in r]
    errors = [r["error"] for r in results if "error" in r]
    return {"status": CLIP_FAILED if errors else COMPLETED, "hits": n_hits, "videos": videos, "clip_errors": errors}


@ray.remote(num_cpus=0, max_retries=0)
def run_search(settings: AppSettings, job: SearchJob) -> str:
    """Ray task entry point: run the job and record its terminal status."""
    from app.control import ControlStore
    from app.records import RequestRecords

    records = RequestRecords(
        ControlStore(settings.control_uri, settings.store.storage_options), settings.api.request_deadline_s
    )
    try:
        outcome = execute_search(settings, job)
    except Exception as exc:
        log.error("search %s failed: %s", job.request_id, traceback.format_exc())
        outcome = {"status": FAILED, "error": f"internal error while searching: {type(exc).__name__}: {exc}"}
    records.finish(job.request_id, job.job_id, **outcome)
    return outcome["status"]
