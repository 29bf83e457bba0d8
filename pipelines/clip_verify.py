"""Checking a clip before it is published: the frames the file really holds, demuxed (never
the muxer's summary), against the frames the window was planned to hold.

A clip passes when
- it holds exactly the planned number of video frames;
- their presentation times strictly increase from 0, with no step over 1.5 frame durations
  (for a variable-frame-rate source: over twice the source's own largest step in the window);
- its duration (last frame's end less the first frame's start) is within one frame of the
  window's;
- when the source has audio, the audio covers the video within 50 ms (as far as the source's
  own audio reaches).

The check is pure (:func:`check`); :func:`demux_clip` reads the file at the edge.
"""

from __future__ import annotations

import itertools
import os
import statistics
from dataclasses import dataclass

import av

AUDIO_SLACK_S = 0.05
START_TOLERANCE_S = 1e-3
# A source whose largest frame step is this much over its median step is variable-rate.
VFR_RATIO = 1.5


@dataclass(frozen=True)
class Plan:
    """What a clip must hold: ``frames`` frames lasting ``duration_s`` in all, no step over
    ``max_step_s``, frames ``frame_s`` long (the duration tolerance); ``audio_s``: how far
    the audio must reach from the clip's start (None: no audio expected)."""

    frames: int
    duration_s: float
    frame_s: float
    max_step_s: float
    audio_s: float | None = None


@dataclass(frozen=True)
class Demuxed:
    """A clip file's video frames (presentation time and duration, seconds, in decode
    order) and its audio span (first start, last end), if any."""

    video: tuple[tuple[float, float], ...]
    audio: tuple[float, float] | None

    @property
    def start_s(self) -> float:
        return min(p for p, _ in self.video) if self.video else 0.0

    @property
    def duration_s(self) -> float:
        """From the first frame's start to the last frame's end."""
        if not self.video:
            return 0.0
        last = max(self.video)
        return last[0] + last[1] - self.start_s


def plan_window(pts_s: list[float], durations_s: list[float], source_audio_end_s: float | None = None) -> Plan:
    """The plan for a clip of the source frames at ``pts_s`` (source times, any order;
    ``durations_s`` the same frames' durations, 0 where unknown). ``source_audio_end_s``:
    where the source's audio ends in source time (None: the source has no audio)."""
    if not pts_s:
        raise ValueError("a clip needs at least one frame")
    order = sorted(range(len(pts_s)), key=pts_s.__getitem__)
    times = [pts_s[i] for i in order]
    steps = [b - a for a, b in itertools.pairwise(times)]
    known = [d for d in durations_s if d > 0]
    nominal = statistics.median(steps) if steps else (statistics.median(known) if known else 1 / 25)
    largest = max(steps, default=nominal)
    max_step = 2 * largest if largest > VFR_RATIO * nominal else VFR_RATIO * nominal
    last = durations_s[order[-1]] or nominal
    duration = times[-1] + last - times[0]
    audio = None if source_audio_end_s is None else min(duration, source_audio_end_s - times[0])
    return Plan(len(times), duration, nominal, max_step, audio)


def check(clip: Demuxed, plan: Plan) -> list[str]:
    """What is wrong with the clip (empty when it is right)."""
    problems: list[str] = []
    if len(clip.video) != plan.frames:
        problems.append(f"{len(clip.video)} video frames, planned {plan.frames}")
    if not clip.video:
        return problems or ["no video frames"]
    times = sorted(p for p, _ in clip.video)
    if abs(times[0]) > START_TOLERANCE_S:
        problems.append(f"the first frame is at {times[0]:.3f} s, not 0")
    repeats = sum(1 for a, b in itertools.pairwise(times) if b <= a)
    if repeats:
        problems.append(f"{repeats} repeated presentation time(s)")
    gaps = [(a, b - a) for a, b in itertools.pairwise(times) if b - a > plan.max_step_s + 1e-6]
    if gaps:
        at, step = max(gaps, key=lambda g: g[1])
        problems.append(
            f"{len(gaps)} timestamp step(s) over {plan.max_step_s:.3f} s, the largest {step:.3f} s at {at:.3f} s"
        )
    if abs(clip.duration_s - plan.duration_s) > plan.frame_s + 1e-3:
        problems.append(f"duration {clip.duration_s:.3f} s, window {plan.duration_s:.3f} s")
    if plan.audio_s is not None and plan.audio_s > AUDIO_SLACK_S:
        if clip.audio is None:
            problems.append("no audio track, the source has one")
        else:
            start, end = clip.audio
            if start > AUDIO_SLACK_S or end < plan.audio_s - AUDIO_SLACK_S:
                problems.append(f"audio covers {start:.3f}-{end:.3f} s of 0-{plan.audio_s:.3f} s")
    return problems


def demux_clip(path: str | os.PathLike[str]) -> Demuxed:
    """The clip's video frames and audio span, from its packets (no decoding). Packets the
    container marks to be discarded (edit lists) are not frames."""
    with av.open(str(path)) as container:
        video: list[tuple[float, float]] = []
        audio_start, audio_end = float("inf"), float("-inf")
        streams = [s for s in (container.streams.video[:1] + container.streams.audio[:1])]
        for packet in container.demux(streams):
            if packet.pts is None or not packet.size or packet.is_discard:
                continue
            tb = float(packet.time_base)
            t, d = float(packet.pts * tb), float((packet.duration or 0) * tb)
            if packet.stream.type == "video":
                video.append((t, d))
            else:
                audio_start, audio_end = min(audio_start, t), max(audio_end, t + d)
        audio = (audio_start, audio_end) if audio_end > audio_start else None
        return Demuxed(tuple(video), audio)
