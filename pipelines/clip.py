"""Cutting one clip window out of a source video with ffmpeg (re-encoded, frame-accurate).

Times are presentation times in the source's own timeline (PyAV ``frame.time``), which
often does not start at 0: camera files commonly show the first frame at ~0.85 s while
the container's start_time is set by the audio (e.g. 0.008 s). ffmpeg's input ``-ss`` is
relative to the container start_time by default, so a plain ``-ss start_s`` lands late by
that offset; ``-seek_timestamp 1`` makes ``-ss`` an absolute timestamp instead (verified in
tests/test_clip.py on a file whose video starts at 0.844 s and container at 0.821 s).

A clip holds exactly the source frames on screen during ``[start_s, end_s)``: from the
frame displayed at ``start_s`` through the last frame that starts before ``end_s``. The
start is first snapped (PyAV, one seek plus a short decode) to the exact pts of the frame
displayed at ``start_s``; passing that pts to ffmpeg makes the clip's first frame land at
timestamp 0, with the audio cut at the same instant. Stream copy is not used because it can
only start on a keyframe.

With ``reframe`` (a pipelines/reframe.py ``CropPath``) the clip is cropped to another
aspect ratio along a path that follows a face; the path's times are source times and are
shifted here so that they match the output's ``t``, which starts at 0 on the first frame.
The path is in the upright picture (a phone's rotation flag applied, pipelines/rotation.py),
as decode's face boxes are: ffmpeg turns the picture upright before ``-vf`` filters run.

The pure helpers come first; functions that run ffmpeg or touch files are at the end.
(The contract's HH:MM:SS strings are formatted in app/core/contract.py.)
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import av
import imageio_ffmpeg

from pipelines import clip_verify, smart_cut
from pipelines.config import ClipSettings
from pipelines.ffmpeg import exact_seek, ffmpeg_time, stderr_tail
from pipelines.media import is_remote, open_binary
from pipelines.reframe import CropPath
from pipelines.rotation import display_rotation, upright_size

log = logging.getLogger(__name__)

# Times within this distance of a frame's pts count as on it, so a window edge taken from
# ``frame.time`` (a float) always selects that very frame. Far below any real frame period.
EDGE_TOLERANCE_S = 1e-4
# libx264 with yuv420p needs even dimensions; this crops at most one pixel.
EVEN_CROP = "crop=trunc(iw/2)*2:trunc(ih/2)*2"
# Added to every smart-cut part's timestamps (then removed by the join): B-frames at the
# very start of a video decode before 0, which MPEG-TS cannot carry.
SMART_CUT_TS_OFFSET_S = 10.0


class ClipError(Exception):
    """A clip could not be made. ``status_code`` suggests an HTTP status for callers:
    404 source missing, 422 source unreadable or window outside it, 500 ffmpeg failed,
    504 ffmpeg timed out."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


# How a clip's video was made (ClipInfo.encoding).
SMART_CUT = "smart_cut"  # edges re-encoded, whole GOPs in between stream-copied
REENCODED = "reencoded"  # every frame re-encoded


@dataclass(frozen=True)
class ClipInfo:
    duration_s: float
    width: int
    height: int
    size_bytes: int
    has_audio: bool
    encoding: str = REENCODED
    encoding_reason: str | None = None  # why a smart cut was not used
    # Where the clip's first frame and its last frame's end lie in the source timeline
    # (cut_clip: from the verified file, so end_s - start_s == duration_s).
    start_s: float | None = None
    end_s: float | None = None


# ---------------------------------------------------------------------------------------
# Pure helpers


def _validate_window(start_s: float, end_s: float, poster_s: float) -> None:
    for name, value in (("start_s", start_s), ("end_s", end_s), ("poster_s", poster_s)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if start_s < 0:
        raise ValueError(f"start_s must be >= 0, got {start_s}")
    if end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
    if poster_s < 0:
        raise ValueError(f"poster_s must be >= 0, got {poster_s}")


def _cut_command(
    ffmpeg_exe: str,
    source: str,
    start_s: float,
    duration_s: float,
    has_audio: bool,
    out: Path,
    s: ClipSettings,
    video_filter: str = EVEN_CROP,
) -> list[str]:
    audio = ["-map", "0:a:0", "-c:a", s.audio_codec, "-b:a", s.audio_bitrate] if has_audio else ["-an"]
    seek = exact_seek(start_s)
    return [
        ffmpeg_exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        # -ss as an absolute pts (not relative to the container start_time), a little early
        # (pipelines/ffmpeg.py: exact_seek); decoded frames before start_s are dropped exactly.
        *seek.input, "-i", source, *seek.output,
        # Output duration: frames at or past start + duration (rounded to the stream's time
        # base) are dropped; the caller subtracts EDGE_TOLERANCE_S to exclude end_s itself.
        "-t", ffmpeg_time(duration_s),
        "-map", "0:v:0", *audio, "-sn", "-dn", "-map_metadata", "-1",
        # Even dimensions for libx264/yuv420p, or a reframing crop (even by construction)
        # whose x/y expressions ffmpeg evaluates per frame with t = 0 at the first frame.
        "-vf", video_filter,
        # Keep source timing (variable frame rate phones) without duplicating frames.
        "-fps_mode", "vfr",
        "-c:v", s.video_codec, "-preset", s.preset, "-crf", str(s.crf), "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", "-f", "mp4", str(out),
    ]  # fmt: skip


def _poster_command(
    ffmpeg_exe: str, source: str, at_s: float, out: Path, s: ClipSettings, video_filter: str | None = None
) -> list[str]:
    vf = ["-vf", video_filter] if video_filter else []
    # The same exact seek as the clip: a plain input -ss can land after the frame in a
    # fragmented MP4 (pipelines/ffmpeg.py), and would then show a later one.
    seek = exact_seek(at_s)
    return [
        ffmpeg_exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        *seek.input, "-i", source, *seek.output,
        "-map", "0:v:0", *vf, "-frames:v", "1", "-q:v", str(s.poster_quality),
        "-update", "1", "-f", "image2", "-c:v", "mjpeg", str(out),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------
# Side effects: PyAV probing, ffmpeg, files


@dataclass(frozen=True)
class _Source:
    has_audio: bool
    audio_end_s: float | None  # end of the audio in the source timeline; None without audio
    end_s: float  # end of the video in the source timeline
    size: tuple[int, int]  # upright width, height: what ffmpeg crops and decode finds faces in
    rotation: int  # the rotation flag (pipelines/rotation.py), 0 for most sources


def _inspect_source(path: str) -> _Source:
    """Stream facts from the container headers (no decoding); ClipError if unusable."""
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ClipError("source has no video stream", 422)
            stream = container.streams.video[0]
            tb = float(stream.time_base) if stream.time_base is not None else 0.0
            first = float(stream.start_time * tb) if stream.start_time is not None else 0.0
            if stream.duration is not None and tb:
                end = first + float(stream.duration * tb)
            elif container.duration is not None:
                end = (container.start_time or 0) / av.time_base + container.duration / av.time_base
            else:
                end = math.inf
            # The rotation flag comes with decoded frames (PyAV 18 has no stream side data).
            first_frame = next(container.decode(stream), None)
            rotation = display_rotation(first_frame.rotation) if first_frame is not None else 0
            size = upright_size((stream.codec_context.width, stream.codec_context.height), rotation)
            audio_end = None
            if container.streams.audio:
                a = container.streams.audio[0]
                if a.duration is not None and a.time_base is not None:
                    audio_end = float(((a.start_time or 0) + a.duration) * a.time_base)
                elif container.duration is not None:
                    audio_end = ((container.start_time or 0) + container.duration) / av.time_base
                else:
                    audio_end = math.inf
            return _Source(bool(container.streams.audio), audio_end, end, size, rotation)
    except ClipError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ClipError(f"source is not a readable video: {exc}", 422) from exc


def _scan_to(container: av.container.InputContainer, t: float) -> tuple[float | None, float | None]:
    """Decode from the current position; (first frame pts, last pts at or before t)."""
    stream = container.streams.video[0]
    first: float | None = None
    best: float | None = None
    for frame in container.decode(stream):
        if frame.time is None:
            continue
        ft = float(frame.time)
        if first is None:
            first = ft
        if ft > t + EDGE_TOLERANCE_S:
            break
        best = ft
    return first, best


def _displayed_frame_pts(path: str, t: float) -> float | None:
    """Exact pts (s) of the frame on screen at ``t``: the last frame starting at or before
    ``t`` (within EDGE_TOLERANCE_S), else the first frame when ``t`` precedes the video.
    None when the video has no decodable frames."""
    # A seek to a keyframe a second early is cheap; decoding from the start is the
    # fallback for when the demuxer lands after t.
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if stream.time_base is not None and t > 1.0:
            container.seek(int((t - 1.0) / float(stream.time_base)), stream=stream, backward=True)
            _, best = _scan_to(container, t)
            if best is not None:
                return best
            log.debug("seek before %.3f s landed after it; decoding %s from the start", t, path)
    with av.open(path) as container:
        container.streams.video[0].thread_type = "AUTO"
        first, best = _scan_to(container, t)
        return best if best is not None else first


@contextmanager
def _local_copy(source_uri: str, storage_options: dict | None) -> Iterator[str]:
    """A local path for the source: itself, or a temporary copy of a remote object
    (ffmpeg cannot read s3:// and friends)."""
    if not is_remote(source_uri):
        path = source_uri.removeprefix("file://")
        if not os.path.isfile(path):
            raise ClipError(f"source not found: {source_uri}", 404)
        yield path
        return
    suffix = Path(source_uri.split("?", 1)[0]).suffix
    with tempfile.TemporaryDirectory(prefix="facereel-clip-") as tmp:
        local = os.path.join(tmp, "source" + suffix)
        started = time.monotonic()
        try:
            with open_binary(source_uri, storage_options) as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, length=8 * 1024 * 1024)
        except FileNotFoundError as exc:
            raise ClipError(f"source not found: {source_uri}", 404) from exc
        except OSError as exc:
            raise ClipError(f"could not read source {source_uri}: {exc}", 422) from exc
        log.debug("copied %s locally in %.2f s", source_uri, time.monotonic() - started)
        yield local


def _run_ffmpeg(cmd: list[str], what: str, timeout_s: float, nice: int = 0) -> None:
    log.debug("ffmpeg %s: %s", what, " ".join(cmd))
    # Lowered by coreutils' `nice`, in the child only: the worker keeps its priority. Never a
    # preexec_fn: these run from several threads at once, and a child forked while another
    # thread holds a lock deadlocks before exec (Popen then waits forever, past any timeout;
    # it hung a CI run).
    if nice > 0 and (nice_exe := shutil.which("nice")):
        cmd = [nice_exe, "-n", str(nice), *cmd]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        tail = stderr_tail(exc.stderr)
        raise ClipError(
            f"ffmpeg timed out after {timeout_s:g} s making the {what}" + (f": {tail}" if tail else ""), 504
        ) from exc
    except subprocess.CalledProcessError as exc:
        tail = stderr_tail(exc.stderr) or f"exit status {exc.returncode}"
        raise ClipError(f"ffmpeg failed making the {what}: {tail}", 500) from exc
    except OSError as exc:  # the binary itself could not be started
        raise ClipError(f"could not run ffmpeg: {exc}", 500) from exc


def _temp_sibling(path: Path) -> Path:
    """An empty file next to ``path`` (same filesystem, so os.replace is atomic), hidden
    and with the same extension."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".part{path.suffix}")
    os.close(fd)
    return Path(name)


def _run_ffmpeg_concurrently(jobs: list[tuple[list[str], str]], timeout_s: float, nice: int = 0) -> None:
    """Run independent ffmpeg commands at once; the first failure (in order) is raised
    once all have ended."""
    if len(jobs) == 1:
        _run_ffmpeg(*jobs[0], timeout_s, nice)
        return
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(_run_ffmpeg, cmd, what, timeout_s, nice) for cmd, what in jobs]
        for future in futures:
            future.result()


def _smart_cut(
    ffmpeg_exe: str,
    source: str,
    packets: list[smart_cut.Packet],
    first_pts: float,
    end_s: float,
    duration_s: float,
    has_audio: bool,
    out: Path,
    s: ClipSettings,
    alongside: list[tuple[list[str], str]],
) -> str | None:
    """Make ``out`` by smart cut (pipelines/smart_cut.py), running the ``alongside`` ffmpeg
    jobs (the poster) with its parts; None when it did, else why not (the caller then
    re-encodes, and runs ``alongside`` itself). ffmpeg failing here is a reason, not an
    error: the full re-encode is the answer to any source the smart path cannot handle."""
    if s.video_codec != "libx264":
        return f"clip.video_codec is {s.video_codec} (smart cut encodes edges with libx264)"
    try:
        fmt = smart_cut.video_format(source)
        if reason := smart_cut.unsupported(fmt):
            return reason
    except av.FFmpegError as exc:
        return f"could not read the source's packets: {exc}"
    plan = smart_cut.plan_smart_cut(packets, first_pts, end_s, s.smart_cut_min_copy_s, EDGE_TOLERANCE_S)
    if isinstance(plan, str):
        return plan
    codec_args = [
        "-c:v", s.video_codec, "-preset", s.preset, "-crf", str(s.crf), "-pix_fmt", "yuv420p",
        "-profile:v", smart_cut.X264_PROFILES[(fmt.profile or "").lower()],
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="facereel-smartcut-", dir=out.parent) as tmp:
        parts = [Path(tmp) / f"part{i}.ts" for i in range(len(plan.parts))]
        audio = Path(tmp) / "audio.m4a" if has_audio else None
        jobs = [
            (
                smart_cut.part_command(
                    ffmpeg_exe, source, part, path, codec_args, SMART_CUT_TS_OFFSET_S + part.start_s - first_pts
                ),
                "smart-cut part",
            )
            for part, path in zip(plan.parts, parts, strict=True)
        ]
        if audio is not None:
            audio_args = ["-c:a", s.audio_codec, "-b:a", s.audio_bitrate]
            jobs.append(
                (smart_cut.audio_command(ffmpeg_exe, source, first_pts, duration_s, audio_args, audio), "audio")
            )
        try:
            _run_ffmpeg_concurrently(jobs + alongside, s.timeout_s, s.nice)
            _run_ffmpeg(smart_cut.join_command(ffmpeg_exe, parts, audio, out), "smart-cut join", s.timeout_s, s.nice)
        except ClipError as exc:
            log.warning("smart cut of %s failed, re-encoding instead: %s", source, exc.message)
            return f"smart cut failed: {exc.message}"
    log.debug("smart cut %s: %d frames copied, %d encoded", source, plan.copied_frames, plan.encoded_frames)
    return None


def _plan(
    path: str, source: _Source, first_pts: float, end_s: float
) -> tuple[list[smart_cut.Packet], clip_verify.Plan]:
    """The source's packets around the window (demuxed, never decoded) and what the clip
    of ``[first_pts, end_s)`` must hold (pipelines/clip_verify.py)."""
    try:
        packets = smart_cut.window_packets(path, first_pts, end_s)
        frames = _window_frames(packets, first_pts, end_s)
        if not frames:  # the seek landed after the window: read the whole file
            packets = smart_cut.all_packets(path)
            frames = _window_frames(packets, first_pts, end_s)
    except av.FFmpegError as exc:
        raise ClipError(f"source is not a readable video: {exc}", 422) from exc
    if not frames:
        raise ClipError(f"no video frames in the window from {first_pts:.3f} s to {end_s:.3f} s", 422)
    audio_end = source.audio_end_s if source.has_audio else None
    plan = clip_verify.plan_window([p.pts_s for p in frames], [p.duration_s for p in frames], audio_end)
    return packets, plan


def _window_frames(packets: list[smart_cut.Packet], first_pts: float, end_s: float) -> list[smart_cut.Packet]:
    """The packets a clip of ``[first_pts, end_s)`` keeps (what ffmpeg's ``-ss``/``-t`` keep)."""
    stop = end_s - EDGE_TOLERANCE_S
    frames = [p for p in packets if first_pts - EDGE_TOLERANCE_S <= p.pts_s < stop]
    if not frames or abs(min(p.pts_s for p in frames) - first_pts) > EDGE_TOLERANCE_S:
        return []
    return frames


def _verify(path: Path, plan: clip_verify.Plan) -> list[str]:
    """What is wrong with the clip at ``path`` against its plan (empty when nothing is)."""
    try:
        return clip_verify.check(clip_verify.demux_clip(path), plan)
    except (av.FFmpegError, OSError) as exc:
        return [f"the clip is not a readable video: {exc}"]


def probe_clip(path: str | os.PathLike[str]) -> ClipInfo:
    """Duration, size and audio presence of an MP4 (or any file PyAV opens)."""
    try:
        size = os.path.getsize(path)
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path}: no video stream", 422)
            stream = container.streams.video[0]
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = 0.0
            return ClipInfo(
                duration_s=duration,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                size_bytes=size,
                has_audio=bool(container.streams.audio),
            )
    except ClipError:
        raise
    except (av.FFmpegError, OSError) as exc:
        raise ClipError(f"{path}: not a readable video: {exc}", 422) from exc


def cut_clip(
    source_uri: str,
    start_s: float,
    end_s: float,
    out_mp4: Path,
    out_poster: Path,
    poster_s: float,
    settings: ClipSettings,
    storage_options: dict | None = None,
    *,
    reframe: CropPath | None = None,
) -> ClipInfo:
    """Cut ``[start_s, end_s)`` (source presentation times) into an H.264/AAC MP4 with
    +faststart, plus a JPEG poster of the frame on screen at ``poster_s``.

    ``reframe`` crops clip and poster along a path planned for this source (its
    ``source_size`` must be the video's upright size; ValueError otherwise); None keeps
    the frame.

    Outputs appear atomically (temporary sibling, then os.replace) and only when both were
    made. A window reaching past the end of the source gives a shorter clip; one starting
    before the first frame starts at the first frame. Raises ValueError for a malformed
    window and ClipError when the source is missing, unreadable or ffmpeg fails.
    """
    _validate_window(start_s, end_s, poster_s)
    out_mp4, out_poster = Path(out_mp4), Path(out_poster)
    if out_mp4.resolve() == out_poster.resolve():
        raise ValueError("out_mp4 and out_poster must differ")
    ffmpeg_exe = imageio_ffmpeg.get_ffmpeg_exe()
    started = time.monotonic()
    with _local_copy(source_uri, storage_options) as local:
        source = _inspect_source(local)
        if reframe is not None and tuple(reframe.source_size) != source.size:
            raise ValueError(
                f"reframe path is for a {reframe.source_size} source, the video is {source.size} upright"
                f" (rotation {source.rotation})"
            )
        if start_s >= source.end_s:
            raise ClipError(f"window starts at {start_s:.3f} s, after the end of the video ({source.end_s:.3f} s)", 422)
        try:
            first_pts = _displayed_frame_pts(local, start_s)
            poster_pts = first_pts if poster_s == start_s else _displayed_frame_pts(local, poster_s)
        except av.FFmpegError as exc:
            raise ClipError(f"source is not a readable video: {exc}", 422) from exc
        if first_pts is None or poster_pts is None:
            raise ClipError("source has no decodable video frames", 422)
        # Frames starting within the tolerance of end_s count as at end_s, so excluded.
        duration = end_s - EDGE_TOLERANCE_S - first_pts
        if duration <= 0:
            raise ClipError(f"window ends at {end_s:.3f} s, before the first video frame ({first_pts:.3f} s)", 422)

        packets, plan = _plan(local, source, first_pts, end_s)

        for out in (out_mp4, out_poster):
            out.parent.mkdir(parents=True, exist_ok=True)
        tmp_mp4, tmp_poster = _temp_sibling(out_mp4), _temp_sibling(out_poster)
        try:
            # Filters see t = 0 at the seek's origin (exact_seek): shift the path.
            origin = exact_seek(first_pts).origin_s
            video_filter = reframe.ffmpeg_filter(offset_s=origin) if reframe is not None else EVEN_CROP
            poster_filter = reframe.static_filter(poster_pts) if reframe is not None else None
            poster = [(_poster_command(ffmpeg_exe, local, poster_pts, tmp_poster, settings, poster_filter), "poster")]
            encoding, reason = REENCODED, "reframed" if reframe is not None else "clip.smart_cut is off"
            if settings.smart_cut and reframe is None:
                reason = _smart_cut(
                    ffmpeg_exe, local, packets, first_pts, end_s, duration, source.has_audio, tmp_mp4, settings, poster
                )
                if reason is None and (problems := _verify(tmp_mp4, plan)):
                    reason = "smart cut failed verification: " + "; ".join(problems)
                    log.warning("smart cut of %s [%.3f, %.3f): %s; re-encoding", source_uri, start_s, end_s, reason)
                encoding = SMART_CUT if reason is None else REENCODED
            if encoding == REENCODED:
                command = _cut_command(
                    ffmpeg_exe, local, first_pts, duration, source.has_audio, tmp_mp4, settings, video_filter
                )
                _run_ffmpeg_concurrently([(command, "clip"), *poster], settings.timeout_s, settings.nice)
                if problems := _verify(tmp_mp4, plan):
                    raise ClipError("clip failed verification: " + "; ".join(problems), 500)
            verified = clip_verify.demux_clip(tmp_mp4)
            info = replace(
                probe_clip(tmp_mp4),
                duration_s=verified.duration_s,
                encoding=encoding,
                encoding_reason=reason,
                start_s=first_pts,
                end_s=first_pts + verified.duration_s,
            )
            if info.duration_s <= 0 or tmp_poster.stat().st_size == 0:
                raise ClipError("ffmpeg produced an empty clip or poster", 500)
            # Poster first: whoever sees the MP4 can rely on its poster being there.
            os.replace(tmp_poster, out_poster)
            os.replace(tmp_mp4, out_mp4)
        finally:
            for tmp in (tmp_mp4, tmp_poster):
                tmp.unlink(missing_ok=True)
    log.info(
        "clip %s [%.3f, %.3f) -> %s: %.2f s, %d bytes, audio=%s, %s%s, in %.2f s",
        source_uri,
        start_s,
        end_s,
        out_mp4,
        info.duration_s,
        info.size_bytes,
        info.has_audio,
        info.encoding,
        f" ({info.encoding_reason})" if info.encoding_reason else "",
        time.monotonic() - started,
    )
    return info
