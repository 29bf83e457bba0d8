"""The warm-up a Serve ingress runs before it takes requests (issue 21: the first search
took 6x the warm p50): its clip is a real cut, so a clip worker's first real cut is warm."""

from __future__ import annotations

from pathlib import Path

from app.jobs.dispatch import WARM_UP, cut_window, warm_up_clips
from pipelines.clip import probe_clip


def test_the_warm_up_clip_is_a_real_verified_cut(settings, tmp_path: Path) -> None:
    job, other = warm_up_clips(tmp_path, 2)
    assert other.media == job.media and other.clip_id != job.clip_id  # one source, files of their own
    assert job.request_id == WARM_UP

    result = cut_window(settings, job)

    assert "video" in result, result
    video = result["video"]
    assert abs(video["duration_seconds"] - 1.0) < 0.11
    mp4 = Path(job.output_root) / f"{job.org_id}/{job.event_id}/clips/{WARM_UP}/{job.clip_id}.mp4"
    info = probe_clip(mp4)
    assert (info.width, info.height) == (160, 120) and abs(info.duration_s - 1.0) < 0.11
