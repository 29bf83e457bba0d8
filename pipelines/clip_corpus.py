"""A corpus of short source videos made with ffmpeg, one per kind of source a clip must be cut
from correctly (tests/test_clip_corpus.py and bench/clip_integrity.py cut windows from each).

Every source is 320x240 testsrc2 (moving, so P/B frames carry real changes), a few seconds
long, made by the ffmpeg binary that cuts clips (imageio-ffmpeg's). The kinds:

- ``closed_gop``: x264 closed GOPs with a B-pyramid (negative first DTS, an edit list), 25 fps, audio
- ``open_gop``: x264 ``open-gop=1`` (non-IDR I pictures with leading B frames), 29.97 fps
- ``mixed_idr``: the DASH layout: non-IDR I pictures after a recovery-point SEI, with no
  leading pictures, marked as sync samples beside forced IDRs, 23.976 fps, B frames
- ``dash_fragmented``: ``mixed_idr`` remuxed as a fragmented MP4 of major brand ``dash``
- ``start_offset``: the timeline starts at 0.844 s (a camera file), 50 fps, audio
- ``vfr``: frame steps of 40 and 60 ms (variable frame rate), audio
- ``fps_59_94``: 59.94 fps, audio
- ``rotated``: a phone-style display matrix (rotate 90), audio
- ``hevc``: H.265 (the re-encode path), audio
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

log = logging.getLogger(__name__)

SIZE = "320x240"


@dataclass(frozen=True)
class Kind:
    name: str
    duration_s: float
    audio: bool
    build: Callable[[str, Path, float, bool], None]  # (ffmpeg, out, duration, audio)
    rotation: int = 0  # degrees the player turns the picture


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def _inputs(rate: str, duration_s: float, audio: bool) -> list[str]:
    video = ["-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={rate}:duration={duration_s:g}"]
    sine = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={duration_s:g}"]
    return video + (sine if audio else [])


def _audio(audio: bool) -> list[str]:
    return ["-c:a", "aac", "-b:a", "64k"] if audio else ["-an"]


def _x264(
    rate: str, params: str, extra: list[str] | None = None, pre: list[str] | None = None
) -> Callable[[str, Path, float, bool], None]:
    def build(ffmpeg: str, out: Path, duration_s: float, audio: bool) -> None:
        _run(
            [
                ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *(pre or []), *_inputs(rate, duration_s, audio),
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-profile:v", "main",
                "-x264-params", params, *(extra or []), *_audio(audio), str(out),
            ]
        )  # fmt: skip

    return build


# Non-IDR keyframes every 41 frames (x264 open GOP; with 3 fixed B frames the frame before
# each is a P, so none has leading pictures), IDRs forced between them.
_MIXED = "open-gop=1:keyint=41:scenecut=0:b-adapt=0:bframes=3"
_MIXED_IDRS = ["-forced-idr", "1", "-force_key_frames", "expr:eq(n,30)+eq(n,100)+eq(n,150)"]


def _dash_fragmented(ffmpeg: str, out: Path, duration_s: float, audio: bool) -> None:
    plain = out.with_suffix(".plain.mp4")
    _x264("24000/1001", _MIXED, _MIXED_IDRS)(ffmpeg, plain, duration_s, audio)
    _run(
        [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(plain), "-c", "copy",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-brand", "dash", str(out),
        ]
    )  # fmt: skip
    plain.unlink()


def _vfr(ffmpeg: str, out: Path, duration_s: float, audio: bool) -> None:
    # Steps of 40, 40, 60 ms repeating; the timescale keeps them exact.
    _run(
        [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *_inputs("25", duration_s, audio),
            "-vf", "setpts='(N*0.04+0.02*floor(N/3))/TB'", "-fps_mode", "vfr",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "25", "-bf", "2",
            "-video_track_timescale", "1000", *_audio(audio), "-shortest", str(out),
        ]
    )  # fmt: skip


def _rotated(ffmpeg: str, out: Path, duration_s: float, audio: bool) -> None:
    plain = out.with_suffix(".plain.mp4")
    _x264("30", "keyint=30:scenecut=0")(ffmpeg, plain, duration_s, audio)
    _run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-display_rotation",
            "90",
            "-i",
            str(plain),
            "-c",
            "copy",
            str(out),
        ]
    )
    plain.unlink()


def _hevc(ffmpeg: str, out: Path, duration_s: float, audio: bool) -> None:
    _run(
        [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *_inputs("25", duration_s, audio),
            "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=25:log-level=error",
            "-pix_fmt", "yuv420p", "-tag:v", "hvc1", *_audio(audio), str(out),
        ]
    )  # fmt: skip


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind("closed_gop", 4.0, True, _x264("25", "keyint=24:min-keyint=24:scenecut=0:bframes=3:b-pyramid=normal")),
        Kind("open_gop", 4.0, False, _x264("30000/1001", "open-gop=1:keyint=24:min-keyint=24:scenecut=0:bframes=3")),
        Kind("mixed_idr", 7.0, False, _x264("24000/1001", _MIXED, _MIXED_IDRS)),
        Kind("dash_fragmented", 7.0, False, _dash_fragmented),
        Kind("start_offset", 4.0, True, _x264("50", "keyint=50:scenecut=0", ["-output_ts_offset", "0.844"])),
        Kind("vfr", 4.0, True, _vfr),
        Kind("fps_59_94", 3.0, True, _x264("60000/1001", "keyint=60:scenecut=0")),
        Kind("rotated", 4.0, True, _rotated, rotation=90),
        Kind("hevc", 3.0, True, _hevc),
    ]
}


def build(kind: str, directory: Path) -> Path:
    """Make the source of ``kind`` in ``directory`` (once: an existing file is kept)."""
    spec = KINDS[kind]
    out = directory / f"{kind}.mp4"
    if not out.exists():
        directory.mkdir(parents=True, exist_ok=True)
        spec.build(imageio_ffmpeg.get_ffmpeg_exe(), out, spec.duration_s, spec.audio)
        log.debug("built corpus source %s", out)
    return out


def build_all(directory: Path, kinds: list[str] | None = None, workers: int = 2) -> dict[str, Path]:
    """Every source of ``kinds`` (all when None), ``workers`` ffmpeg builds at a time."""
    names = list(KINDS) if kinds is None else kinds
    directory.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(names, pool.map(lambda kind: build(kind, directory), names), strict=True))


def windows(
    duration_s: float, start_s: float = 0.0, length_s: float = 2.0, count: int = 5
) -> list[tuple[float, float]]:
    """``count`` windows of ``length_s`` at spread, frame-unaligned offsets over the video
    (the last reaches past its end)."""
    span = max(duration_s - length_s * 0.6, 0.1)
    return [(start_s + 0.013 + span * i / count, start_s + 0.013 + span * i / count + length_s) for i in range(count)]
