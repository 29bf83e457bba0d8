"""Every clip cut from every kind of source is verified (issue 21): sources built by ffmpeg
here (pipelines/clip_corpus.py), windows at many offsets, each output demuxed and checked
against a plan made from the source's own packets; plus the videos in ../shared/data/faces.
Real ffmpeg, real PyAV; no mocks."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import av
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from pipelines import clip_corpus, clip_verify, h264, smart_cut
from pipelines.clip import cut_clip
from pipelines.config import ClipSettings
from tests.conftest import SHARED_FACES

SETTINGS = ClipSettings()
TOL = 1e-4
T = TypeVar("T")


# Cuts of one source run this many at a time: ffmpeg is a subprocess and PyAV releases the
# GIL, so two overlap well even on a 2-core machine.
WORKERS = 2


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Every kind of source, built once per session, two at a time."""
    return clip_corpus.build_all(tmp_path_factory.mktemp("corpus"), workers=WORKERS)


def in_parallel(fn: Callable[..., T], calls: list[tuple]) -> list[T]:
    """``fn(*args)`` for each of ``calls``, WORKERS at a time; the first failure is raised."""
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda args: fn(*args), calls))


def source_start(path: Path) -> float:
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        return float(s.start_time * s.time_base) if s.start_time is not None else 0.0


def independent_plan(source: Path, first_pts: float, end_s: float, has_audio: bool) -> clip_verify.Plan:
    """The plan from a demux of the whole source (not the cutter's own window demux)."""
    packets = smart_cut.all_packets(str(source))
    frames = [p for p in packets if first_pts - TOL <= p.pts_s < end_s - TOL]
    audio_end = None
    if has_audio:
        with av.open(str(source)) as container:
            a = container.streams.audio[0]
            audio_end = float((a.start_time + a.duration) * a.time_base)
    return clip_verify.plan_window([p.pts_s for p in frames], [p.duration_s for p in frames], audio_end)


def cut_and_check(source: Path, start_s: float, end_s: float, out: Path, has_audio: bool):
    info = cut_clip(str(source), start_s, end_s, out / "clip.mp4", out / "poster.jpg", start_s, SETTINGS)
    demuxed = clip_verify.demux_clip(out / "clip.mp4")
    assert clip_verify.check(demuxed, independent_plan(source, info.start_s, end_s, has_audio)) == []
    assert info.duration_s == pytest.approx(demuxed.duration_s, abs=1e-6)
    assert info.end_s == pytest.approx(info.start_s + info.duration_s)
    assert info.start_s <= max(start_s, source_start(source)) + TOL
    return info


@pytest.mark.parametrize("kind", list(clip_corpus.KINDS))
def test_every_cut_of_every_source_kind_is_verified(tmp_path, corpus, kind):
    spec = clip_corpus.KINDS[kind]
    source = corpus[kind]
    windows = clip_corpus.windows(spec.duration_s, source_start(source))
    calls = [(source, start_s, end_s, tmp_path / str(n), spec.audio) for n, (start_s, end_s) in enumerate(windows)]
    encodings = []
    for info in in_parallel(cut_and_check, calls):
        assert info.has_audio == spec.audio
        if spec.rotation:  # played upright: the displayed frame is portrait
            assert (info.width, info.height) == (240, 320)
        encodings.append(info.encoding)
    if kind in ("hevc", "open_gop", "rotated"):
        assert "smart_cut" not in encodings  # nothing whole to copy, or it cannot be copied
    if kind in ("closed_gop", "mixed_idr", "dash_fragmented", "start_offset", "vfr"):
        assert "smart_cut" in encodings  # the corpus exercises the copy path too


def frames_of(path: Path, count: int | None = None) -> list[np.ndarray]:
    """The first ``count`` (all when None) decoded frames, BGR int16."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            frames.append(frame.to_ndarray(format="bgr24").astype(np.int16))
            if count is not None and len(frames) >= count:
                break
    return frames


def nearest(image: np.ndarray, frames: list[np.ndarray]) -> int:
    return int(np.argmin([np.abs(image - f).mean() for f in frames]))


def test_a_fragmented_source_cut_just_before_a_keyframe_starts_and_posters_on_time(tmp_path, corpus):
    """In a fragmented MP4 a plain input seek to a frame displayed just before a keyframe lands
    in that keyframe's fragment (it is decoded earlier than it is shown) and so starts late:
    clip and poster both seek exactly (pipelines/ffmpeg.py: exact_seek)."""
    source = corpus["dash_fragmented"]
    packets = smart_cut.all_packets(str(source))
    times = sorted(p.pts_s for p in packets)
    keys = sorted(p.pts_s for p in packets if p.key)[1:3]
    for n, key in enumerate(keys):
        before = times[times.index(key) - 1]  # the frame shown just before the keyframe
        out = tmp_path / str(n)
        info = cut_and_check(source, before, before + 1.0, out, False)
        assert info.start_s == pytest.approx(before, abs=TOL)
        first_two = frames_of(out / "clip.mp4", 2)
        with Image.open(out / "poster.jpg") as img:
            poster = np.asarray(img.convert("RGB"))[:, :, ::-1].astype(np.int16)
        assert nearest(poster, first_two) == 0  # the poster shows the clip's first frame


def test_the_dash_layout_mixes_idr_and_non_idr_sync_samples(corpus):
    """mixed_idr reproduces the DASH sources: sync samples that are IDRs and sync samples that
    are non-IDR I pictures after a recovery-point SEI, without leading pictures; only the
    IDRs are cut points."""
    source = corpus["mixed_idr"]
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        size = h264.nal_length_size(stream.codec_context.extradata)
        units = [h264.access_unit(bytes(p), size) for p in container.demux(stream) if p.size and p.is_keyframe]
    assert size == 4
    assert any(u.idr for u in units)
    non_idr = [u for u in units if not u.idr]
    assert non_idr and all(h264.NAL_SLICE in u.nal_types and u.recovery_point for u in non_idr)
    packets = smart_cut.window_packets(str(source), 0.0, 100.0)
    clean = [packets[i] for i in smart_cut.clean_keyframes(packets)]
    assert clean and all(p.idr for p in clean)
    assert len(clean) < sum(p.key for p in packets)  # the non-IDR sync samples are not cut points


def test_a_broken_part_join_is_refused(tmp_path, corpus):
    """Two smart-cut parts joined with a 1 s timestamp hole between them: the muxer writes a
    file without complaint, the verifier refuses it."""
    source = corpus["closed_gop"]
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    packets = smart_cut.all_packets(str(source))
    key = sorted(p.pts_s for p in packets if p.key)[1]  # the second GOP
    codec = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-profile:v", "main"]
    first = smart_cut.Part(0.0, 12, copy=False)
    second = smart_cut.Part(key, 24, copy=True)
    parts = [tmp_path / "a.ts", tmp_path / "b.ts"]
    for part, path, offset in ((first, parts[0], 10.0), (second, parts[1], 10.0 + 12 / 25 + 1.0)):
        subprocess.run(smart_cut.part_command(ffmpeg, str(source), part, path, codec, offset), check=True)
    out = tmp_path / "broken.mp4"
    subprocess.run(smart_cut.join_command(ffmpeg, parts, None, out), check=True)
    plan = clip_verify.plan_window([i / 25 for i in range(36)], [0.04] * 36)
    problems = clip_verify.check(clip_verify.demux_clip(out), plan)
    assert any("timestamp step" in p for p in problems), problems
    assert any("duration" in p for p in problems), problems


def shared_videos() -> list[Path]:
    if not SHARED_FACES.is_dir():
        return []
    return sorted(p for p in (SHARED_FACES / "videos").rglob("*.mp4"))


@pytest.mark.parametrize("video", shared_videos() or [None], ids=lambda p: p.stem if p else "absent")
def test_windows_every_5_s_over_the_shared_videos_are_verified(tmp_path, video):
    if video is None:
        pytest.skip(f"windows over real footage need {SHARED_FACES} (absent here)")
    with av.open(str(video)) as container:
        duration = container.duration / av.time_base
        has_audio = bool(container.streams.audio)
    start = source_start(video)
    offsets = [start + 5.0 * i + 0.013 for i in range(int(duration // 5) + 1) if 5.0 * i < duration - 0.5]
    infos = in_parallel(
        cut_and_check, [(video, t, t + 3.0, tmp_path / str(n), has_audio) for n, t in enumerate(offsets)]
    )
    assert len(infos) == len(offsets) >= 1
