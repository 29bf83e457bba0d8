"""Small helpers for building ffmpeg command lines, shared by pipelines/clip.py and
pipelines/smart_cut.py (neither imports the other's privates)."""

from __future__ import annotations

import math

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
