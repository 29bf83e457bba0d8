"""Small helpers for building ffmpeg command lines, shared by pipelines/clip.py and
pipelines/smart_cut.py (neither imports the other's privates)."""

from __future__ import annotations

import math
from dataclasses import dataclass

STDERR_TAIL_CHARS = 300


def ffmpeg_time(seconds: float) -> str:
    """Seconds for an ffmpeg option, rounded down to whole microseconds.

    ffmpeg parses times to microseconds and rescales them to the stream time base with
    round-to-nearest; rounding down here keeps a frame whose exact pts we pass from being
    dropped as "just before the start".
    """
    micros = max(0, math.floor(seconds * 1_000_000))
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def stderr_tail(stderr: bytes | str | None, limit: int = STDERR_TAIL_CHARS) -> str:
    """The end of ffmpeg's stderr on one line, for an error message."""
    if not stderr:
        return ""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    text = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= limit else "..." + text[-limit:]


# Re-encoded cuts seek this far before their first frame, then drop frames up to it.
# ffmpeg's input seek is not exact everywhere: in a fragmented (DASH) MP4 it lands on the
# fragment whose first *decode* time is at or before the target, so the frames displayed
# just before that fragment's keyframe (B frames of the previous GOP) are lost, and a cut
# that starts on one of them starts late (tests/test_clip_corpus.py, dash_fragmented).
SEEK_PREROLL_S = 1.0


@dataclass(frozen=True)
class Seek:
    """An exact start at source time ``start_s``: ``input`` goes before ``-i``, ``output``
    after it; filters see ``t`` = source time - ``origin_s``, the output starts at 0."""

    input: list[str]
    output: list[str]
    origin_s: float


def exact_seek(start_s: float, preroll_s: float = SEEK_PREROLL_S) -> Seek:
    """Seek ``preroll_s`` early (``-ss`` as an absolute pts with ``-seek_timestamp``), then
    drop decoded frames before ``start_s`` with an output ``-ss``."""
    origin = max(0.0, start_s - preroll_s)
    origin_text = ffmpeg_time(origin)
    return Seek(
        ["-seek_timestamp", "1", "-ss", origin_text],
        ["-ss", ffmpeg_time(start_s - float(origin_text))],
        float(origin_text),
    )
