"""A run superseded by a re-POST of its request_id leaves no clip files behind, even when it
is cancelled mid-cut (app/jobs/dispatch.py: remove_cut_files, collect_garbage)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray

from app.jobs.dispatch import ClipJob, SearchJob, collect_garbage, remove_cut_files, stop_tasks
from app.store.events import SearchRules
from pipelines.segments import ClipWindow

DEADLINE_S = 60


def search_job(settings, root: Path) -> SearchJob:
    rules = SearchRules(threshold=0.5, segments=settings.segments, output_root=str(root))
    return SearchJob("0b5c8a52-0000-4000-8000-000000000001", "job-a", 7, 42, rules, {})


def clip_job(job: SearchJob) -> ClipJob:
    media = {"media_key": "cam.mp4", "uri": "/nowhere/cam.mp4"}
    return ClipJob(
        job.org_id, job.event_id, job.request_id, job.rules.output_root, media, ClipWindow(0.0, 4.0, 3, 0.9, 0.8, 1.0)
    )


@ray.remote(num_cpus=0, max_retries=0)
def cut_the_clip_then_hang(clip: ClipJob, root: str) -> None:
    """A clipping task that has uploaded its clip and not its poster when it is cancelled."""
    path = Path(root) / clip.files()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"mp4")
    for _ in range(12_000):  # the poster's upload, in steps (as ffmpeg's are): the cancel lands between
        time.sleep(0.05)


def wait_for(predicate, what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_run_cancelled_mid_cut_removes_what_its_clipping_tasks_wrote(ray_cluster, settings, tmp_path):
    job = search_job(settings, tmp_path)
    hanging, done = clip_job(job), clip_job(job)
    assert hanging.clip_id != done.clip_id  # each clip's file names are chosen before it is cut
    for key in done.files():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"done")
    ref = cut_the_clip_then_hang.remote(hanging, str(tmp_path))
    wait_for(lambda: (tmp_path / hanging.files()[0]).exists(), "the clip to be written")

    remove_cut_files(settings, job, [(ref, hanging), (ray.put(None), done)])

    assert not list(tmp_path.rglob("*.mp4")) and not list(tmp_path.rglob("*.jpg"))
    # It was stopped before the files went: cancelled, or its worker killed by a forced cancel.
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
        ray.get(ref, timeout=DEADLINE_S)


def test_a_superseded_run_removes_its_half_written_clips_and_the_current_run_keeps_its_own(settings, tmp_path):
    job = search_job(settings, tmp_path)
    finished, failed_half_way = clip_job(job), clip_job(job)
    for key in [*finished.files(), failed_half_way.files()[0]]:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x")
    videos = [{"uuid": finished.clip_id}]
    started = [key for clip in (finished, failed_half_way) for key in clip.files()]

    superseded = search_job(settings, tmp_path)
    collect_garbage(settings, superseded, videos, current=False, started=started)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # the half-written clip too


def test_the_recorded_run_keeps_only_its_own_clips(settings, tmp_path):
    job = search_job(settings, tmp_path)
    own, earlier = clip_job(job), clip_job(job)
    for key in [*own.files(), *earlier.files()]:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x")
    collect_garbage(settings, job, [{"uuid": own.clip_id}], current=True, started=own.files())
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(own.files())


@ray.remote(num_cpus=0, max_retries=0)
def ignore_the_cancel(flag: str) -> None:
    """A task that a plain cancel does not stop (as when Ray loses the cancel)."""
    Path(flag).write_text("running")
    end = time.monotonic() + 300
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:  # a plain ray.cancel: ignored
            continue


def test_a_task_that_outlives_its_cancel_is_forced_to_stop(ray_cluster, tmp_path):
    flag = tmp_path / "running"
    ref = ignore_the_cancel.remote(str(flag))
    wait_for(flag.exists, "the task to start")
    started = time.monotonic()

    assert stop_tasks([ref], wait_s=6.0) == []

    assert time.monotonic() - started < DEADLINE_S
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
        ray.get(ref, timeout=DEADLINE_S)
