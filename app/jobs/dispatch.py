"""Search jobs as Ray tasks: segment the matches -> one clipping task per source video.

Matching happened once, in the search service (app/features/search/); the job carries its matches
and the event's resolved rules. ``run_search`` owns the request record until it writes a
terminal status; every failure path ends in one (the deadline sweep covers a worker that
dies outright). ``run_extra_clip`` cuts one more clip of a finished search (reselect,
other aspect ratios) and records it the same way.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import ray

from app.config import AppSettings
from app.core.contract import (
    CLIP_FAILED,
    COMPLETED,
    FAILED,
    NO_MATCHES,
    NO_SEGMENTS,
    NO_USABLE_SEGMENT,
    clip_error,
    clip_item,
)
from app.jobs.matching import match_record
from app.obs import log_context
from app.obs.background import background_options, run_below_serving
from app.obs.metrics import clip_cut
from app.obs.stage_times import StageTimes
from app.store.events import Event, SearchRules
from app.store.records import SearchRecord
from app.store.storage_locations import StorageLocation
from pipelines.match import FaceMatch, timed_hits
from pipelines.segments import ClipWindow, RankedSegment, best_window, rank_windows, ranked_segments
from pipelines.tracks import NO_TRACK

log = logging.getLogger(__name__)

SEGMENT_NAMESPACE = uuid.UUID("0b5c8a52-51c4-4f57-9a3e-7d1c2f0e8a61")
# How long a cancelled run waits for its clipping tasks to stop before removing their files
# (a cancel lands between ffmpeg steps; a clip cuts in seconds).
CANCELLED_CLIPS_WAIT_S = 60.0
# A run slower than this logs its steps' times as a warning (the first search after start
# took 8 s against 1.3 s warm, issue 21); faster ones at INFO.
SLOW_RUN_S = 4.0


@dataclass(frozen=True)
class SearchJob:
    """One run of a search, as the worker needs it: rules resolved, and either the person's
    matches or what to match them from (the event and the record's selfie, negatives, BIB)."""

    request_id: str
    job_id: str
    org_id: int
    event_id: int
    rules: SearchRules
    matches: dict[str, list[FaceMatch]] | None = None  # per source video (pipelines.match.find_person)
    event: Event | None = None
    record: SearchRecord | None = None
    owner: str | None = None  # the supervisor incarnation that handed it to Ray (app/jobs/supervisor.py)
    dispatched_at: datetime | None = None  # when it was handed to Ray
    supervisor: Any = None  # the supervisor's actor handle, told when the job begins to run (admission)


@dataclass(frozen=True)
class ClipJob:
    """One clip to cut: where from, which window, in which shape, and under which key."""

    org_id: int
    event_id: int
    request_id: str
    output_root: str
    media: dict  # the media row (uri, size, start, duration)
    window: ClipWindow
    aspect: str = "source"  # "source", "9:16", "1:1"
    faces: tuple[tuple[float, float, float, float, float], ...] = ()  # (t, x1, y1, x2, y2) to follow
    storage: StorageLocation | None = None  # the org's own storage: written there, URLs presigned
    # Chosen before cutting, so that a run knows its files even when cancelled mid-cut.
    clip_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def files(self) -> list[str]:
        """The files this clip is written to (the clip, its poster)."""
        return [clip_key(self, self.clip_id, ext) for ext in ("mp4", "jpg")]

    def output_options(self, settings: AppSettings) -> dict:
        return self.storage.storage_options() if self.storage is not None else dict(settings.store.storage_options)

    def source_options(self, settings: AppSettings) -> dict:
        uri = self.media["uri"]
        if self.storage is not None and self.storage.holds(uri):
            return self.storage.storage_options()
        return dict(settings.store.storage_options)

    def url(self, settings: AppSettings, key: str) -> str:
        return self.storage.url(key) if self.storage is not None else clip_url(settings, key)


def clip_key(job: ClipJob, clip_id: str, ext: str) -> str:
    return f"{job.org_id}/{job.event_id}/clips/{job.request_id}/{clip_id}.{ext}"


def clip_url(settings: AppSettings, key: str) -> str:
    return f"{settings.api.public_base_url.rstrip('/')}/media/{key}"


def cut(settings: AppSettings, job: ClipJob) -> dict:
    """Cut one window; returns {"video": clip item} or {"error": clip error item} (never raises)."""
    started = time.perf_counter()
    result = cut_window(settings, job)
    took = time.perf_counter() - started
    clip_cut(took, "video" in result)
    level = logging.WARNING if took > SLOW_RUN_S / 2 else logging.INFO
    log.log(level, "clip %s of search %s cut in %.2f s", job.clip_id, job.request_id, took)
    return result


def cut_window(settings: AppSettings, job: ClipJob) -> dict:
    from pipelines.clip import ClipError, cut_clip
    from pipelines.reframe import plan_crop_path
    from pipelines.storage import OutputStorage

    key, window = job.media["media_key"], job.window
    clip_id = job.clip_id
    storage = OutputStorage(job.output_root, job.output_options(settings))
    try:
        reframe = None
        if job.aspect != "source":
            size = (int(job.media["width"]), int(job.media["height"]))
            reframe = plan_crop_path(list(job.faces), size, job.aspect, window.start_s, window.end_s)
        with tempfile.TemporaryDirectory(prefix="facereel-clip-") as tmp:
            mp4, jpg = Path(tmp) / f"{clip_id}.mp4", Path(tmp) / f"{clip_id}.jpg"
            info = cut_clip(
                job.media["uri"],
                window.start_s,
                window.end_s,
                mp4,
                jpg,
                window.poster_s,
                settings.clip,
                job.source_options(settings) or None,
                reframe=reframe,
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
            job.url(settings, clip_key(job, clip_id, "mp4")),
            key,
            window.start_s,
            window.end_s,
            poster_url=job.url(settings, clip_key(job, clip_id, "jpg")),
            # From the verified file (pipelines/clip_verify.py), not the window asked for.
            start_seconds=round(window.start_s if info.start_s is None else info.start_s, 3),
            end_seconds=round(window.end_s if info.end_s is None else info.end_s, 3),
            duration_seconds=round(info.duration_s, 3),
            matched_frames=window.support,
            # The selfie's best similarity in the window; a clip of chosen times saw no hits.
            **({"best_similarity": round(window.best_similarity, 4)} if window.support else {}),
            aspect=job.aspect,
            width=info.width,
            height=info.height,
            encoding=info.encoding,
            **({"encoding_reason": info.encoding_reason} if info.encoding_reason else {}),
        )
    }


@ray.remote(max_retries=0)
def cut_one_clip(settings: AppSettings, job: ClipJob) -> dict:
    run_below_serving()
    log_context.install()
    log_context.bind(org_id=job.org_id, event_id=job.event_id, request_id=job.request_id)
    if job.request_id == WARM_UP:  # not a participant's clip: not counted
        return cut_window(settings, job)
    return cut(settings, job)


def video_bounds(row: dict) -> tuple[float, float]:
    start = row["start_s"] or 0.0
    return start, start + (row["duration_s"] or 0.0)


def segment_items(job: SearchJob, segments: list[RankedSegment]) -> list[dict]:
    """Ranked segments as recorded: the contract's alternatives plus the tracks they hold
    (for "not me" feedback and reframing)."""
    items = []
    for seg in segments:
        inside = [m.track_id for m in job.matches.get(seg.media_key, []) if seg.start_s <= m.timestamp_s <= seg.end_s]
        items.append(
            {
                "segment_id": str(
                    uuid.uuid5(SEGMENT_NAMESPACE, f"{job.job_id}/{seg.media_key}/{seg.start_s:.3f}/{seg.end_s:.3f}")
                ),
                "source_video_key": seg.media_key,
                "start_seconds": round(seg.start_s, 3),
                "end_seconds": round(seg.end_s, 3),
                "matched_frames": seg.matched_frames,
                "best_similarity": round(seg.best_similarity, 4),
                "score": round(seg.score, 4),
                "confirmed_frames": seg.confirmed_frames,
                "clipped": False,
                "track_ids": sorted(set(inside) - {NO_TRACK}),
            }
        )
    return items


def faces_to_follow(matches: list[FaceMatch], window: ClipWindow) -> tuple[tuple[float, ...], ...]:
    """The person's face boxes in the window, one per sample (the most similar face)."""
    best: dict[float, FaceMatch] = {}
    for m in matches:
        near = window.start_s - 1.0 <= m.timestamp_s <= window.end_s + 1.0
        if near and (m.timestamp_s not in best or m.similarity > best[m.timestamp_s].similarity):
            best[m.timestamp_s] = m
    return tuple((t, *best[t].bbox) for t in sorted(best))


def execute_search(
    settings: AppSettings, job: SearchJob, cutting: list | None = None, times: StageTimes | None = None
) -> dict:
    """The whole job; returns the terminal outcome as keyword arguments for ``finish``.
    Each clipping task is added to ``cutting`` as (ref, ClipJob) when it starts; each step's
    seconds go to ``times``."""
    from pipelines.models import pack_info
    from pipelines.storage import OutputStorage, StorageError
    from pipelines.store import FaceStore

    times = times or StageTimes()
    with times.stage("open"):
        store = FaceStore.from_settings(settings, pack_info(settings.models.pack))
    if job.matches is None:  # the job's first step: who it is looking for
        with times.stage("match"):
            job = replace(job, matches=match_record(store, settings, job.event, job.record))
    hits = timed_hits(job.matches)
    n_hits = sum(len(v) for v in hits.values())
    if n_hits == 0:
        return {"status": NO_MATCHES}
    with times.stage("media"):
        media = {key: row for key in hits if (row := store.media_row(job.org_id, job.event_id, key)) is not None}
    bounds = {key: video_bounds(row) for key, row in media.items()}
    rules = job.rules.segments
    segments = segment_items(job, ranked_segments({k: v for k, v in hits.items() if k in media}, bounds, rules))
    windows = {key: w for key in media if (w := best_window(hits[key], *bounds[key], rules)) is not None}
    if not windows:
        unusable = sorted(set(hits) - set(windows))
        return {
            "status": NO_SEGMENTS,
            "hits": n_hits,
            "segments": segments,
            "clip_errors": [clip_error(k, NO_USABLE_SEGMENT) for k in unusable],
        }
    try:
        with times.stage("writable"):
            OutputStorage(job.rules.output_root, job.rules.storage_options).check_writable()
    except StorageError as exc:
        return {"status": FAILED, "hits": n_hits, "segments": segments, "error": str(exc)}
    clip_task = cut_one_clip.options(**clip_task_options(settings))
    ranked = rank_windows(windows)
    clip_jobs = [
        ClipJob(
            job.org_id,
            job.event_id,
            job.request_id,
            job.rules.output_root,
            media[key],
            window,
            storage=job.rules.storage,
        )
        for key, window in ranked
    ]
    with times.stage("clips"):
        refs = [clip_task.remote(settings, c) for c in clip_jobs]
        if cutting is not None:
            cutting.extend(zip(refs, clip_jobs, strict=True))
        results = [collect_clip(ref, clip) for ref, clip in zip(refs, clip_jobs, strict=True)]
    for (key, window), result in zip(ranked, results, strict=True):
        for seg in segments:
            overlaps = seg["start_seconds"] < window.end_s and seg["end_seconds"] > window.start_s
            if seg["source_video_key"] == key and overlaps and "video" in result:
                seg["clipped"] = True
    videos = [r["video"] for r in results if "video" in r]
    errors = [r["error"] for r in results if "error" in r]
    status = CLIP_FAILED if errors else COMPLETED
    return {"status": status, "hits": n_hits, "videos": videos, "clip_errors": errors, "segments": segments}


def collect_clip(ref, clip: ClipJob) -> dict:
    """A clipping task's result; a task that died (its worker killed, out of memory) is that
    video's clip error, so the search ends ``clip_failed`` with the clips that worked."""
    try:
        return ray.get(ref)
    except Exception as exc:
        log.error("clipping %s lost its worker: %s", clip.media["media_key"], exc)
        return {"error": clip_error(clip.media["media_key"], f"clipping worker lost: {type(exc).__name__}", None)}


def clip_task_options(settings: AppSettings) -> dict:
    """Ray options of a clipping task: the same for the real ones and the warm-up's, so
    that both draw on one worker pool."""
    return {
        "num_cpus": settings.clip.num_cpus,
        "scheduling_strategy": "SPREAD",  # over the nodes
        **background_options(settings.api.search_task_nice),
    }


@ray.remote(max_retries=0)
def warm_clip_worker(hold_s: float) -> int:
    """A clipping task's worker, started before any clip needs one (see warm_search_worker)."""
    import pipelines.clip  # (PyAV, ffmpeg helpers, the verifier, smart cut, reframe)
    import pipelines.storage  # noqa: F401  (fsspec: clip uploads)

    run_below_serving()
    time.sleep(hold_s)  # busy a moment, so that the warm clips each get a worker of their own
    return os.getpid()


@ray.remote(num_cpus=0, max_retries=0)
def warm_search_worker(settings: AppSettings, clips: int, hold_s: float) -> list[int]:
    """Start the workers a search uses before any search needs them, with what they import
    already loaded: process start-up and imports were most of a first search's 13-22 s on
    2 cores (issue 21). This task stands for ``run_search`` and submits ``clips`` tasks
    standing for ``cut_one_clip``, from the same places with the same options, so that Ray's
    worker pools (per job, runtime env and lineage) are the very ones the real tasks draw
    on; Ray keeps the idle workers for them. Then each of those workers cuts a real clip of
    a one-second video: a worker's first ``cut_one_clip`` took 5.3 s against 0.55 s for the
    next (3.8 s of it before the task's body began), and that was most of what was left of a
    first search's extra time. The pids: this worker's, then the clips'."""
    import lancedb  # noqa: F401  (the store, opened by every search)

    run_below_serving()
    clip_task = warm_clip_worker.options(**clip_task_options(settings))
    pids = [os.getpid(), *ray.get([clip_task.remote(hold_s) for _ in range(clips)])]
    with tempfile.TemporaryDirectory(prefix="facereel-warm-") as tmp:
        try:
            jobs = warm_up_clips(Path(tmp), clips)
        except Exception:  # no ffmpeg here: the workers are up all the same
            log.exception("could not make the warm-up video; clip workers not warmed by a cut")
            return pids
        cut = cut_one_clip.options(**clip_task_options(settings))
        for job, result in zip(jobs, ray.get([cut.remote(settings, job) for job in jobs]), strict=True):
            if "error" in result:  # on another node the file is not there: the worker is warm all the same
                log.info("warm-up cut of %s: %s", job.media["uri"], result["error"])
    return pids


WARM_UP = "warm-up"  # the request id of the warm-up's clips: not a search's


def warm_up_clips(tmp: Path, n: int) -> list[ClipJob]:
    """``n`` clips (each its own id and files) of one one-second test video made here
    (ffmpeg's test source, no audio)."""
    import subprocess

    import imageio_ffmpeg

    source = tmp / f"{uuid.uuid4()}.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
         "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(source)],
        check=True, timeout=60,
    )  # fmt: skip
    media = {"media_key": source.name, "uri": str(source), "width": 160, "height": 120}
    window = ClipWindow(0.0, 1.0, 0, 0.0, 0.0, 0.0)
    return [ClipJob(0, 0, WARM_UP, str(tmp / "out"), media, window) for _ in range(n)]


@ray.remote(num_cpus=0, max_retries=0, scheduling_strategy="SPREAD")
def run_search(settings: AppSettings, job: SearchJob) -> str:
    """Ray task entry point: run the job and record its terminal status."""
    from app.store.control import ControlStore
    from app.store.records import RequestRecords

    if job.supervisor is not None:  # a worker was found: admission need not hold back for it
        job.supervisor.job_running.remote(job.job_id)
    run_below_serving()
    log_context.install()
    log_context.bind(org_id=job.org_id, event_id=job.event_id, request_id=job.request_id, job_id=job.job_id)
    times = StageTimes()
    records = RequestRecords(
        ControlStore(settings.control_uri, settings.store.storage_options), settings.api.request_deadline_s
    )
    if job.record is not None:  # started: the record gets the full deadline (not on the POST's path)
        job.record.dispatched_at = job.record.dispatched_at or job.dispatched_at
        with times.stage("started"):
            started_ok = records.started(job.record, ray.get_runtime_context().get_task_id(), job.owner)
        if not started_ok:
            log.info(
                "search %s: attempt %s had ended or been replaced before it ran; not run", job.request_id, job.job_id
            )
            return "not started"
    cutting: list[tuple[ray.ObjectRef, ClipJob]] = []
    try:
        outcome = execute_search(settings, job, cutting, times)
    except Exception as exc:
        log.error("search %s failed: %s", job.request_id, traceback.format_exc())
        outcome = {"status": FAILED, "error": f"internal error while searching: {type(exc).__name__}: {exc}"}
    except BaseException:  # cancelled: a re-POST superseded this run; what it cut is no one's
        remove_cut_files(settings, job, cutting)
        raise
    with times.stage("finish"):
        current = records.finish(job.request_id, job.job_id, **outcome)
    level = logging.WARNING if times.total() > SLOW_RUN_S else logging.INFO
    log.log(level, "search %s ran in %s: %s", job.request_id, times.summary(), outcome["status"])
    if not current:  # terminal means terminal: a sweep or a watcher ended it, or a new attempt replaced it
        now = records.read(job.request_id)
        log.info(
            "search %s: attempt %s finished %s but was no longer processing (now %s, attempt %s); not recorded",
            job.request_id, job.job_id, outcome["status"], None if now is None else now.status,
            None if now is None else now.job_id,
        )  # fmt: skip
    try:

        def still_current() -> bool:  # a newer run may have started since: its files are not ours
            record = records.read(job.request_id)
            return record is not None and record.job_id == job.job_id

        started = [key for _, clip in cutting for key in clip.files()]
        collect_garbage(settings, job, outcome.get("videos", []), current, still_current, started)
    except Exception:  # the outcome is recorded; stray files are the next run's to remove
        log.exception("removing superseded clips of %s failed", job.request_id)
    if current:
        notify_search(settings, records, job.request_id)
    return outcome["status"]


@ray.remote(num_cpus=0, max_retries=0)
def notify_search_later(settings: AppSettings, request_id: str) -> None:
    """``notify_search`` for a search ended outside its job (a lost worker, the deadline)."""
    from app.store.control import ControlStore
    from app.store.records import RequestRecords

    control = ControlStore(settings.control_uri, settings.store.storage_options)
    notify_search(settings, RequestRecords(control, settings.api.request_deadline_s), request_id)


def notify_search(settings: AppSettings, records, request_id: str) -> None:
    """The search's final result (the data its GET answers) to its webhook, when it has one."""
    from app.core.contract import extra_clip_item, result_payload
    from app.jobs.notify import notify
    from app.store.records import ExtraClips

    record = records.read(request_id)
    if record is None or not record.webhook_url:
        return
    extra = [
        extra_clip_item(c.clip_id, c.status, c.item, c.error)
        for c in ExtraClips(records.control, settings.api.request_deadline_s).of_request(request_id)
    ]
    data = result_payload(
        record.request_id,
        record.status,
        record.videos,
        record.error,
        record.clip_errors,
        record.segments,
        extra,
        record.rules,
    )["data"]
    notify(
        settings,
        records.control,
        record.org_id,
        record.event_id,
        f"search.{record.status}",
        request_id,
        record.webhook_url,
        data,
    )


def collect_garbage(
    settings: AppSettings,
    job: SearchJob,
    videos: list[dict],
    current: bool,
    still_current=lambda: True,
    started: list[str] = (),
) -> None:
    """One run's worth of clip files per request: a run that was superseded meanwhile (the
    same request_id posted again) deletes the files it made or began (``started``: a clip
    that failed half-written too); the run that is recorded deletes every other file under
    the request (earlier runs', and superseded runs' already done)."""
    from pipelines.storage import OutputStorage

    storage = OutputStorage(job.rules.output_root, job.rules.storage_options)
    folder = f"{job.org_id}/{job.event_id}/clips/{job.request_id}"
    own = {f"{folder}/{v['uuid']}.{ext}" for v in videos for ext in ("mp4", "jpg")}
    if current:
        others = [key for key in storage.list_folder(folder) if key not in own]
        if others and still_current():
            storage.remove(others)
    else:
        storage.remove(sorted(own | set(started)))


def stop_tasks(refs: list[ray.ObjectRef], wait_s: float) -> list[ray.ObjectRef]:
    """Cancel tasks and wait until they have ended; those still running after ``wait_s``.

    A task that had already finished is done at once; one mid-cut stops at the cancel. Ray
    can lose a cancel that races the task's start (ray-project/ray#24359, #32954: a CI run
    saw a cancelled clip task still running 120 s later), so a task still running after half
    the wait is cancelled once more, forced (its worker is killed: a clip worker holds
    nothing else). Only once: cancels repeated every 2 s left a concurrent search's job
    waiting forever in the suite (ray-project/ray#63663 fixed a crash of double cancels)."""
    for ref in refs:
        cancel_task(ref, force=False)
    _, running = ray.wait(refs, num_returns=len(refs), timeout=wait_s / 2, fetch_local=False)
    if running:
        log.warning("%d task(s) still running %.0f s after their cancel; forcing it", len(running), wait_s / 2)
        for ref in running:
            cancel_task(ref, force=True)
        _, running = ray.wait(running, num_returns=len(running), timeout=wait_s / 2, fetch_local=False)
    return running


def cancel_task(ref: ray.ObjectRef, force: bool) -> None:
    try:
        ray.cancel(ref, force=force)
    except Exception:  # ended meanwhile, or its owner is gone
        log.debug("cancelling %s", ref, exc_info=True)


def remove_cut_files(settings: AppSettings, job: SearchJob, cutting: list[tuple[ray.ObjectRef, ClipJob]]) -> None:
    """A cancelled run's clean-up: once its clipping tasks have ended (cancelled with it, or
    done), remove every file they were to write. Best effort: the orphan sweep is the backstop."""
    from pipelines.storage import OutputStorage

    if not cutting:
        return
    try:
        stop_tasks([ref for ref, _ in cutting], CANCELLED_CLIPS_WAIT_S)
        storage = OutputStorage(job.rules.output_root, job.rules.storage_options)
        storage.remove(sorted(key for _, clip in cutting for key in clip.files()))
        log.info("search %s: cancelled run %s removed its %d clip(s)", job.request_id, job.job_id, len(cutting))
    except Exception:
        log.exception("a cancelled run of %s could not remove its clips", job.request_id)


@ray.remote(max_retries=0)
def run_extra_clip(settings: AppSettings, clip_id: str, job: ClipJob) -> str:
    """Cut one requested clip and record it (``completed`` or ``clip_failed``, never left processing)."""
    from app.store.control import ControlStore
    from app.store.records import ExtraClips

    run_below_serving()
    log_context.install()
    log_context.bind(org_id=job.org_id, event_id=job.event_id, request_id=job.request_id, clip_id=clip_id)
    clips = ExtraClips(ControlStore(settings.control_uri, settings.store.storage_options), 0)
    try:
        result = cut(settings, job)
    except Exception as exc:  # cut() reports clip errors itself; this is a bug's last stop
        log.error("extra clip %s failed: %s", clip_id, traceback.format_exc())
        result = {"error": clip_error(job.media["media_key"], f"internal error: {type(exc).__name__}: {exc}")}
    if "video" in result:
        clips.finish(clip_id, COMPLETED, video=result["video"])
        return COMPLETED
    clips.finish(clip_id, CLIP_FAILED, error=result["error"]["error"])
    return CLIP_FAILED
