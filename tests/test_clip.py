"""Clip cutting with the real ffmpeg binary (imageio-ffmpeg) and PyAV; no mocks."""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import av
import fsspec
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from pipelines.clip import ClipError, ClipInfo, cut_clip, probe_clip
from pipelines.config import ClipSettings

SETTINGS = ClipSettings()


# --- media helpers ---------------------------------------------------------------------


def top_level_atoms(path: Path) -> list[str]:
    """MP4 top-level box types in file order."""
    data = path.read_bytes()
    atoms, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:  # 64-bit size follows
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        elif size == 0:  # box runs to the end of the file
            size = len(data) - pos
        atoms.append(kind.decode("latin-1"))
        pos += size
    return atoms


def decode_frames(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as container:
        return [
            (float(f.time), f.to_ndarray(format="bgr24").astype(np.int16))
            for f in container.decode(container.streams.video[0])
        ]


def nearest_source_time(image: np.ndarray, source: list[tuple[float, np.ndarray]]) -> float:
    """Time of the source frame that looks most like ``image``."""
    diffs = [float(np.abs(frame - image).mean()) for _, frame in source]
    return source[int(np.argmin(diffs))][0]


@dataclass(frozen=True)
class ColourVideo:
    path: Path
    container_start_s: float
    frames: list[tuple[float, np.ndarray]]  # (presentation time, BGR) of every source frame


def colour_frame(i: int, width: int = 160, height: int = 96) -> np.ndarray:
    """A solid colour unique to frame ``i`` (steps of 32+ per channel survive H.264)."""
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (i % 8) * 32 + 16
    img[..., 1] = ((i // 8) % 8) * 32 + 16
    img[..., 2] = ((i // 64) % 4) * 64 + 32
    return img


def make_colour_video(path: Path, frames: int, gop: list[str]) -> ColourVideo:
    """``frames`` uniquely coloured frames at 25 fps (x264 with the ``gop`` options) plus a
    sine track, the timeline shifted to start at 0.844 s like a camera file."""
    raw = b"".join(colour_frame(i).tobytes() for i in range(frames))
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", "160x96", "-r", "25", "-i", "-",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={frames / 25:g}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", *gop,
        "-c:a", "aac", "-shortest", "-output_ts_offset", "0.844", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, input=raw, check=True)
    with av.open(str(path)) as container:
        container_start = container.start_time / av.time_base
    return ColourVideo(path, container_start, decode_frames(path))


@pytest.fixture(scope="module")
def colour_video(tmp_path_factory) -> ColourVideo:
    """100 frames at 25 fps with audio, timeline shifted to start at 0.844 s like a camera
    file. The AAC priming puts the container start_time (~0.821 s) before the first video
    frame, which is what makes a plain ffmpeg ``-ss`` land on the wrong frame."""
    return make_colour_video(tmp_path_factory.mktemp("colour") / "colour.mp4", 100, ["-g", "12"])


def cut(
    tmp_path: Path,
    source: str,
    start_s: float,
    end_s: float,
    poster_s: float | None = None,
    settings: ClipSettings = SETTINGS,
    **kw,
) -> ClipInfo:
    poster = start_s if poster_s is None else poster_s
    return cut_clip(source, start_s, end_s, tmp_path / "clip.mp4", tmp_path / "poster.jpg", poster, settings, **kw)


# --- cutting ---------------------------------------------------------------------------


def test_cut_pan_video_gives_faststart_h264_aac_mp4_and_poster(tmp_path, synthetic_event):
    pan = synthetic_event.pan
    info = cut(tmp_path, str(pan.path), 3.0, 8.0, poster_s=5.0)

    clip, poster = tmp_path / "clip.mp4", tmp_path / "poster.jpg"
    probed = probe_clip(clip)  # the muxer's summary; the duration is the verified, demuxed one
    assert info == replace(
        probed, encoding="smart_cut", duration_s=info.duration_s, start_s=info.start_s, end_s=info.end_s
    )
    assert info.duration_s == pytest.approx(probed.duration_s, abs=0.05)
    assert info.start_s == pytest.approx(3.0, abs=0.05) and info.end_s == pytest.approx(info.start_s + info.duration_s)
    assert info.size_bytes == clip.stat().st_size > 0
    assert (info.width, info.height) == (pan.width, pan.height)
    assert info.has_audio
    assert info.duration_s == pytest.approx(5.0, abs=0.1)
    with av.open(str(clip)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.pix_fmt == "yuv420p"
        assert audio.codec_context.name == "aac"
        assert float(video.duration * video.time_base) == pytest.approx(5.0, abs=0.1)
        assert float(next(container.decode(video)).time) == pytest.approx(0.0, abs=1e-6)
    atoms = top_level_atoms(clip)
    assert atoms.index("moov") < atoms.index("mdat"), atoms  # +faststart
    with Image.open(poster) as img:
        assert img.format == "JPEG"
        assert img.size == (pan.width, pan.height)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "poster.jpg"]  # no temp files left


def test_plain_ss_would_be_off_on_this_source(colour_video):
    """Guards the premise of the next tests: container start and first frame differ."""
    first_frame = colour_video.frames[0][0]
    assert first_frame == pytest.approx(0.844, abs=1e-3)
    assert first_frame - colour_video.container_start_s > 0.01


@pytest.mark.parametrize(
    ("start_offset", "end_offset"),
    [(0.0, 0.0), (0.015, 0.015), (-1e-6, 1e-6), (0.0, 5e-5)],
    ids=["on-frame-edges", "mid-frame", "float-noise", "end-within-tolerance"],
)
def test_cut_is_frame_accurate_on_non_zero_start_source(tmp_path, colour_video, start_offset, end_offset):
    src = colour_video.frames
    t = [time for time, _ in src]
    start_s, end_s = t[25] + start_offset, t[50] + end_offset
    # Expected: the frame on screen at start_s through the last frame starting before end_s.
    first = max(i for i in range(len(t)) if t[i] <= start_s + 1e-4)
    last = max(i for i in range(len(t)) if t[i] < end_s - 1e-4)

    info = cut(tmp_path, str(colour_video.path), start_s, end_s, poster_s=t[30] + 0.01)

    clip = decode_frames(tmp_path / "clip.mp4")
    assert clip[0][0] == pytest.approx(0.0, abs=1e-6)  # timestamps start at 0
    assert nearest_source_time(clip[0][1], src) == t[first]
    assert nearest_source_time(clip[-1][1], src) == t[last]
    assert len(clip) == last - first + 1
    assert info.duration_s == pytest.approx(end_s - start_s, abs=1 / 25 + 1e-3)
    assert info.has_audio
    with Image.open(tmp_path / "poster.jpg") as img:
        poster = np.asarray(img.convert("RGB"))[:, :, ::-1].astype(np.int16)
    assert nearest_source_time(poster, src) == t[30]


def test_window_before_first_frame_starts_at_first_frame(tmp_path, colour_video):
    src = colour_video.frames
    info = cut(tmp_path, str(colour_video.path), 0.0, src[10][0])
    clip = decode_frames(tmp_path / "clip.mp4")
    assert nearest_source_time(clip[0][1], src) == src[0][0]
    assert nearest_source_time(clip[-1][1], src) == src[9][0]
    assert info.duration_s == pytest.approx(0.4, abs=1 / 25)


def test_video_without_audio_gives_clip_without_audio(tmp_path, synthetic_event):
    info = cut(tmp_path, str(synthetic_event.still), 1.0, 3.5)
    assert not info.has_audio
    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert len(container.streams.audio) == 0
        assert container.streams.video[0].codec_context.name == "h264"
    assert info.duration_s == pytest.approx(2.5, abs=0.1)


def test_remote_source_is_copied_locally(tmp_path, colour_video):
    uri = "memory://facereel-test-clip/colour.mp4"
    with fsspec.open(uri, "wb") as fh:
        fh.write(colour_video.path.read_bytes())
    try:
        src = colour_video.frames
        cut(tmp_path, uri, src[5][0], src[15][0])
        clip = decode_frames(tmp_path / "clip.mp4")
        assert nearest_source_time(clip[0][1], src) == src[5][0]
        assert len(clip) == 10
        with pytest.raises(ClipError) as err:
            cut(tmp_path / "missing", "memory://facereel-test-clip/nope.mp4", 0.0, 1.0)
        assert err.value.status_code == 404
    finally:
        fsspec.filesystem("memory").rm("/facereel-test-clip", recursive=True)


# --- smart cut: edges re-encoded, whole GOPs copied ---------------------------------------


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory) -> ColourVideo:
    """10 s of uniquely coloured frames at 25 fps with a fixed 2 s GOP, B-frames and audio,
    starting at 0.844 s like the camera-like source above."""
    gop = ["-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "3"]
    return make_colour_video(tmp_path_factory.mktemp("gop") / "gop.mp4", 250, gop)


def source_indices(clip: list[tuple[float, np.ndarray]], source: list[tuple[float, np.ndarray]]) -> list[int]:
    """For each clip frame, the index of the source frame of the nearest colour (each
    source frame is one solid colour, so its mean identifies it)."""
    means = np.array([frame.reshape(-1, 3).mean(axis=0) for _, frame in source])
    return [int(np.argmin(np.abs(means - frame.reshape(-1, 3).mean(axis=0)).sum(axis=1))) for _, frame in clip]


@pytest.mark.parametrize(
    ("first", "end"),
    [(37, 163), (50, 150), (50, 151), (5, 250)],
    ids=["mid-gop-edges", "keyframe-edges", "one-frame-tail", "to-the-end"],
)
def test_smart_cut_is_frame_accurate(tmp_path, gop_video, first, end):
    """Every frame of the window, once, in order, with the source's timing: the re-encoded
    head and tail join the copied GOPs without a missing, repeated or broken frame."""
    src = gop_video.frames
    t = [time for time, _ in src]
    start_s = t[first] + 0.015  # mid-frame: the frame on screen is taken
    end_s = t[end] + 0.015 if end < len(t) else t[-1] + 1.0
    info = cut(tmp_path, str(gop_video.path), start_s, end_s, poster_s=t[first + 20])

    assert info.encoding == "smart_cut" and info.encoding_reason is None
    clip = decode_frames(tmp_path / "clip.mp4")
    last = min(end, len(t) - 1) if end < len(t) else len(t) - 1
    assert source_indices(clip, src) == list(range(first, last + 1))
    assert [round(c[0] - clip[0][0], 3) for c in clip] == [round(x - t[first], 3) for x in t[first : last + 1]]
    assert clip[0][0] == pytest.approx(0.0, abs=1e-3)
    assert info.has_audio and info.duration_s == pytest.approx(t[last] + 0.04 - t[first], abs=0.05)
    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
        audio = container.streams.audio[0]
        with av.open(str(gop_video.path)) as source:  # the source's audio ends before its video
            a = source.streams.audio[0]
            audio_end = float((a.start_time + a.duration) * a.time_base)
        expected = min(end_s - 1e-4, audio_end) - t[first]
        assert float(audio.duration * audio.time_base) == pytest.approx(expected, abs=0.05)
    assert top_level_atoms(tmp_path / "clip.mp4").index("moov") < top_level_atoms(tmp_path / "clip.mp4").index("mdat")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "poster.jpg"]  # no parts left behind


def test_smart_cut_gives_the_frames_of_a_full_reencode(tmp_path, gop_video):
    src = gop_video.frames
    window = (src[37][0] + 0.015, src[163][0] + 0.015)
    smart = cut(tmp_path / "smart", str(gop_video.path), *window)
    full = cut(
        tmp_path / "full", str(gop_video.path), *window, settings=SETTINGS.model_copy(update={"smart_cut": False})
    )
    assert (smart.encoding, full.encoding, full.encoding_reason) == ("smart_cut", "reencoded", "clip.smart_cut is off")
    frames = {name: decode_frames(tmp_path / name / "clip.mp4") for name in ("smart", "full")}
    assert source_indices(frames["smart"], src) == source_indices(frames["full"], src)
    assert [round(f[0], 3) for f in frames["smart"]] == [round(f[0], 3) for f in frames["full"]]


@pytest.mark.parametrize(
    ("first", "end", "why"),
    [(55, 95, "no keyframe inside the window"), (60, 120, "no whole GOP inside the window")],
)
def test_windows_without_whole_gops_are_reencoded_and_say_why(tmp_path, gop_video, first, end, why):
    src = gop_video.frames
    info = cut(tmp_path, str(gop_video.path), src[first][0], src[end][0])
    assert (info.encoding, info.encoding_reason) == ("reencoded", why)
    assert source_indices(decode_frames(tmp_path / "clip.mp4"), src) == list(range(first, end))


# --- failures --------------------------------------------------------------------------


def assert_no_outputs(directory: Path) -> None:
    assert not directory.exists() or list(directory.iterdir()) == []


def test_missing_source_raises_clip_error(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ClipError) as err:
        cut(out, str(tmp_path / "nope.mp4"), 0.0, 1.0)
    assert err.value.status_code == 404
    assert "not found" in str(err.value)
    assert_no_outputs(out)


def test_corrupt_source_raises_clip_error(tmp_path, synthetic_event):
    out = tmp_path / "out"
    with pytest.raises(ClipError) as err:
        cut(out, str(synthetic_event.corrupt), 0.0, 1.0)
    assert err.value.status_code == 422
    assert "not a readable video" in str(err.value)
    assert_no_outputs(out)


def test_window_after_end_raises_clip_error(tmp_path, colour_video):
    with pytest.raises(ClipError, match="after the end"):
        cut(tmp_path, str(colour_video.path), 60.0, 65.0)
    assert_no_outputs(tmp_path)


def test_ffmpeg_failure_reports_stderr_tail_and_leaves_nothing(tmp_path, colour_video):
    bad = SETTINGS.model_copy(update={"video_codec": "no_such_encoder"})
    with pytest.raises(ClipError) as err:
        cut_clip(str(colour_video.path), 1.0, 2.0, tmp_path / "c.mp4", tmp_path / "p.jpg", 1.5, bad)
    assert err.value.status_code == 500
    assert "no_such_encoder" in err.value.message
    assert len(err.value.message) < 400
    assert_no_outputs(tmp_path)


def test_ffmpeg_timeout_raises_clip_error(tmp_path, colour_video):
    slow = SETTINGS.model_copy(update={"timeout_s": 0.001})
    with pytest.raises(ClipError, match="timed out") as err:
        cut_clip(str(colour_video.path), 1.0, 2.0, tmp_path / "c.mp4", tmp_path / "p.jpg", 1.5, slow)
    assert err.value.status_code == 504
    assert_no_outputs(tmp_path)


@pytest.mark.parametrize(
    ("start_s", "end_s", "poster_s"),
    [(-1.0, 2.0, 1.0), (2.0, 2.0, 2.0), (3.0, 2.0, 2.5), (0.0, float("nan"), 0.0), (0.0, 1.0, -1.0)],
)
def test_invalid_window_raises_value_error(tmp_path, colour_video, start_s, end_s, poster_s):
    with pytest.raises(ValueError):
        cut_clip(str(colour_video.path), start_s, end_s, tmp_path / "c.mp4", tmp_path / "p.jpg", poster_s, SETTINGS)
    assert_no_outputs(tmp_path)


def test_ffmpeg_runs_niced_from_many_threads_at_once():
    """Cuts lower their ffmpeg's priority in the child only, through `nice`, never a
    preexec_fn: four at once from threads once deadlocked a child before exec, and Popen
    waited forever. `nice` without arguments prints the niceness it runs at."""
    import os

    from pipelines.clip import _run_ffmpeg, _run_ffmpeg_concurrently

    at_least = ["sh", "-c", f'test "$(nice)" -ge {os.nice(0) + 5}']
    for _ in range(5):
        _run_ffmpeg_concurrently([(at_least, "check")] * 4, timeout_s=30, nice=5)
    with pytest.raises(ClipError):
        _run_ffmpeg(at_least, "check", 30, nice=0)  # the check can fail: this process is not lowered
