"""Smart cut: a frame-accurate clip that re-encodes only the partial GOPs at its edges and
stream-copies the whole GOPs in between (pipelines/clip.py falls back to a full re-encode
when this does not apply).

    source  |K....|K....|K....|K....|K....|        K: keyframe (a closed GOP starts)
    window     [first_pts .................. end)
    clip       [head)[copy .............)[tail)
               x264   stream copy         x264

The three parts are written as MPEG-TS (H.264 in Annex B, each GOP carrying its own SPS and
PPS in band, so the re-encoded and the copied parts each decode with their own parameter
sets), joined byte for byte (ffmpeg's concat protocol: MPEG-TS is made to be appended; a
part of a frame or two is too short for ffmpeg to open alone), and remuxed into the MP4
with the audio, which is re-encoded from the same instant exactly as in a full re-encode.
The parts, the audio and the poster are made by concurrent ffmpeg processes: on a clip of
a 2 s-GOP source each is short, and process start-up, not encoding, would otherwise add up. Each
part is cut with the same ``-seek_timestamp -ss`` as a full re-encode, which is frame-exact
(``-copyts`` is not: it shifts the seek by the stream's start), and its timestamps are then
offset to where it starts in the clip, so the joined frames keep the source's timing.

A copied GOP must be closed: a keyframe is used only when no packet after it in decode
order (up to the next keyframe) is displayed before it. Frame counts come from one demux
pass over the window's packets (no decoding), so every part is cut by count, not by a
rounded duration.

Pure planning first; the demux and ffmpeg commands at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av

from pipelines.ffmpeg import SEEK_PREROLL_S, exact_seek, ffmpeg_time
from pipelines.h264 import access_unit, nal_length_size

# Codecs whose copied GOPs can be joined with x264-encoded edges into one H.264 stream.
SMART_CODECS = {"h264"}
SMART_PIX_FMTS = {"yuv420p", "yuvj420p"}
# libx264 profile names for the source's profile (the edges are encoded with the same one).
# Times from PyAV's frame.time and packet.pts * time_base may differ in the last bits.
PTS_TOLERANCE_S = 1e-6
X264_PROFILES = {"baseline": "baseline", "constrained baseline": "baseline", "main": "main", "high": "high"}


@dataclass(frozen=True)
class Packet:
    """A video packet in decode order: its presentation time, whether the container marks it
    a keyframe (sync sample), whether its own bytes show a clean random-access point (an
    IDR picture: see pipelines/h264.py), and its duration (0 when unknown)."""

    pts_s: float
    key: bool
    idr: bool = True
    duration_s: float = 0.0


@dataclass(frozen=True)
class Part:
    """``frames`` frames from ``start_s`` (a frame's exact pts); ``copy`` means stream copy."""

    start_s: float
    frames: int
    copy: bool


@dataclass(frozen=True)
class SmartCutPlan:
    parts: tuple[Part, ...]

    @property
    def copied_frames(self) -> int:
        return sum(p.frames for p in self.parts if p.copy)

    @property
    def encoded_frames(self) -> int:
        return sum(p.frames for p in self.parts if not p.copy)


def clean_keyframes(packets: list[Packet]) -> list[int]:
    """Indices of keyframes where a copy may start or end: an IDR picture that starts a
    closed GOP (no later packet before the next keyframe is displayed before it).

    A non-IDR sync sample (an I picture after a recovery-point SEI, as DASH-made MP4s mark
    them) is never one, even without leading pictures: a picture after it may still
    reference the GOP before it, and smart cuts whose parts joined at such frames held
    1.5-6.6 s timestamp holes (docs: /work/shared/MEASURED.md). The cut re-encodes through it.
    """
    keys = [i for i, p in enumerate(packets) if p.key]
    clean = []
    for n, i in enumerate(keys):
        if not packets[i].idr:
            continue
        stop = keys[n + 1] if n + 1 < len(keys) else len(packets)
        if all(packets[j].pts_s >= packets[i].pts_s for j in range(i + 1, stop)):
            clean.append(i)
    return clean


def plan_smart_cut(
    packets: list[Packet], first_pts: float, end_s: float, min_copy_s: float, tolerance_s: float
) -> SmartCutPlan | str:
    """The parts of the clip of frames ``first_pts <= pts < end_s - tolerance_s`` (what the
    full re-encode keeps), or why a smart cut does not apply.

    ``packets`` must run in decode order from a keyframe at or before ``first_pts`` to a
    keyframe after the window (or the end of the video)."""
    stop = end_s - tolerance_s
    in_window = sorted(p.pts_s for p in packets if first_pts - tolerance_s <= p.pts_s < stop)
    if not in_window or abs(in_window[0] - first_pts) > tolerance_s:
        return "the window's first frame was not found among the source's packets"
    # The first frame past the window; none when the video ends inside it.
    after = min((p.pts_s for p in packets if p.pts_s >= stop), default=math.inf)
    keys = clean_keyframes(packets)
    starts = [i for i in keys if first_pts - tolerance_s <= packets[i].pts_s < stop]
    if not starts:
        return "no keyframe inside the window"
    a = starts[0]
    # Copy up to the last clean keyframe at or before the first frame past the window
    # (through the end of the video when it ends inside the window).
    ends = [i for i in keys if packets[a].pts_s < packets[i].pts_s <= after + tolerance_s]
    if after == math.inf:
        b, copy_end = len(packets), math.inf
    elif ends:
        b, copy_end = ends[-1], min(packets[ends[-1]].pts_s, after)
    else:
        return "no whole GOP inside the window"
    if min(copy_end, in_window[-1]) - packets[a].pts_s < min_copy_s:
        return f"whole GOPs cover less than {min_copy_s:g} s of the window"
    copied = packets[a:b]
    if any(not (packets[a].pts_s - tolerance_s <= p.pts_s < copy_end - tolerance_s) for p in copied):
        return "copied GOPs would include frames outside the window"
    head = [t for t in in_window if t < packets[a].pts_s - tolerance_s]
    tail = [t for t in in_window if t >= copy_end - tolerance_s]
    if len(head) + len(copied) + len(tail) != len(in_window):
        return "the source's packets do not cover the window frame by frame"
    parts = []
    if head:
        parts.append(Part(head[0], len(head), copy=False))
    parts.append(Part(packets[a].pts_s, len(copied), copy=True))
    if tail:
        parts.append(Part(tail[0], len(tail), copy=False))
    return SmartCutPlan(tuple(parts))


# ---------------------------------------------------------------------------------------
# Side effects: demuxing the window's packets, ffmpeg commands


@dataclass(frozen=True)
class VideoFormat:
    codec: str
    pix_fmt: str | None
    width: int
    height: int
    profile: str | None
    rotation: int = 0  # degrees a player turns the picture (the display matrix)


def video_format(path: str) -> VideoFormat:
    with av.open(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        frame = next(container.decode(stream), None)  # the display matrix comes with frames
        rotation = int(frame.rotation) if frame is not None else 0
        return VideoFormat(ctx.name, ctx.pix_fmt, ctx.width, ctx.height, ctx.profile, rotation)


def unsupported(fmt: VideoFormat) -> str | None:
    """Why the source's video cannot be joined with x264 edges, or None."""
    if fmt.codec not in SMART_CODECS:
        return f"source codec {fmt.codec} (smart cut joins H.264 only)"
    if fmt.pix_fmt not in SMART_PIX_FMTS:
        return f"source pixel format {fmt.pix_fmt}"
    if fmt.width % 2 or fmt.height % 2:
        return f"odd source size {fmt.width}x{fmt.height}"
    if (fmt.profile or "").lower() not in X264_PROFILES:
        return f"source H.264 profile {fmt.profile}"
    if fmt.rotation % 360:
        # ffmpeg turns re-encoded edges upright but copies GOPs as stored: the parts would
        # not even share one frame size.
        return f"rotated source ({fmt.rotation} degrees)"
    return None


def window_packets(path: str, first_pts: float, end_s: float) -> list[Packet]:
    """Video packets in decode order, from the keyframe at or before ``first_pts`` through
    the first GOP that starts at or after ``end_s`` (demuxed only, never decoded). H.264
    packets are read for their NAL unit types (``Packet.idr``); other codecs' keyframes
    count as IDR. Packets an edit list discards are not frames and are left out. Empty
    when the seek lands after ``first_pts``."""
    out: list[Packet] = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        h264 = stream.codec_context.name == "h264"
        length_size = nal_length_size(stream.codec_context.extradata) if h264 else None
        container.seek(max(0, round(first_pts / tb)), stream=stream, backward=True, any_frame=False)
        started = False
        past_end = 0
        for packet in container.demux(stream):
            if packet.pts is None or not packet.size or packet.is_discard:
                continue
            t = float(packet.pts * tb)
            if not started:
                if not packet.is_keyframe:
                    continue
                if t > first_pts + PTS_TOLERANCE_S:  # the seek landed after the window's start
                    return []
                started = True
            if packet.is_keyframe and t >= end_s:
                past_end += 1
                if past_end > 1:  # the GOP after the window is all we need to see
                    break
            key = bool(packet.is_keyframe)
            idr = key and (not h264 or access_unit(bytes(packet), length_size).idr)
            out.append(Packet(t, key, idr, float((packet.duration or 0) * tb)))
    return out


def all_packets(path: str) -> list[Packet]:
    """Every video packet of the file, in decode order (the fallback when a seek lands late)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        return [
            Packet(float(p.pts * tb), bool(p.is_keyframe), bool(p.is_keyframe), float((p.duration or 0) * tb))
            for p in container.demux(stream)
            if p.pts is not None and p.size and not p.is_discard
        ]


def part_command(
    ffmpeg_exe: str, source: str, part: Part, out: Path, codec_args: list[str], ts_offset_s: float
) -> list[str]:
    """One part as MPEG-TS, its first frame at ``ts_offset_s``: where it belongs in the
    clip, plus a constant that keeps B-frames' decode times non-negative (MPEG-TS needs it)."""
    video = ["-c:v", "copy", "-bsf:v", "h264_mp4toannexb"] if part.copy else codec_args
    # A copy starts on an IDR picture, where the input seek lands; an encoded part seeks
    # early and drops frames up to its first (exact_seek).
    seek = exact_seek(part.start_s, preroll_s=0.0 if part.copy else SEEK_PREROLL_S)
    return [
        ffmpeg_exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        *seek.input, "-i", source, *(seek.output if not part.copy else []),
        "-map", "0:v:0", "-frames:v", str(part.frames), *video,
        "-an", "-sn", "-dn", "-map_metadata", "-1", "-fps_mode", "passthrough",
        "-output_ts_offset", f"{ts_offset_s:.6f}", "-muxdelay", "0", "-muxpreload", "0",
        "-f", "mpegts", str(out),
    ]  # fmt: skip


def audio_command(
    ffmpeg_exe: str, source: str, first_pts: float, duration_s: float, audio_args: list[str], out: Path
) -> list[str]:
    """The window's audio, re-encoded from the clip's first frame exactly as a full
    re-encode cuts it (MP4, so the encoder's priming survives the remux)."""
    seek = exact_seek(first_pts)
    return [
        ffmpeg_exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        *seek.input, "-i", source, *seek.output, "-t", ffmpeg_time(duration_s),
        "-map", "0:a:0", "-vn", "-sn", "-dn", *audio_args, "-map_metadata", "-1", "-f", "mp4", str(out),
    ]  # fmt: skip


def join_command(ffmpeg_exe: str, parts: list[Path], audio: Path | None, out: Path) -> list[str]:
    """The parts' video and the audio, both copied, into a +faststart MP4 whose first frame
    is at 0 (ffmpeg starts each input at its first timestamp)."""
    audio_in = ["-i", str(audio)] if audio is not None else []
    audio_map = ["-map", "1:a:0"] if audio is not None else ["-an"]
    return [
        ffmpeg_exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-i", "concat:" + "|".join(str(p) for p in parts), *audio_in,
        "-map", "0:v:0", *audio_map, "-c", "copy", "-sn", "-dn", "-map_metadata", "-1",
        "-movflags", "+faststart", "-f", "mp4", str(out),
    ]  # fmt: skip
