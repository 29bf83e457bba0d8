"""From matched timestamps to segments and clip windows per source video (pure functions).

Per video: sort hits by time, merge hits closer than ``max_gap_s`` into segments,
drop segments with fewer than ``min_hits``, rank by support then similarity, and
turn the best one into a window: padded, at least ``min_clip_s`` and at most
``max_clip_s`` long (the densest part when too long), clamped to the video.
``ranked_segments`` reports every usable segment of every video (the alternatives).

Two numbers per hit: ``similarity`` is the frame's best cosine similarity to the person's
own photos (what clients read as ``best_similarity``); ``score`` is the evidence matching
used, which query expansion may lift above it (pipelines/match.py). Ranking and window
choice use the score; every reported similarity is the selfie's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipelines.config import SegmentSettings


@dataclass(frozen=True)
class TimedHit:
    timestamp_s: float
    similarity: float  # to the selfie (reported)
    confirmed: bool = False  # two kinds of evidence agree here (selfie and BIB): ranks first
    score: float | None = None  # the match's evidence (ranks); None: the similarity

    @property
    def rank_score(self) -> float:
        return self.similarity if self.score is None else self.score


@dataclass(frozen=True)
class Segment:
    start_s: float  # first hit
    end_s: float  # last hit
    hits: tuple[TimedHit, ...]

    @property
    def support(self) -> int:
        return len(self.hits)

    @property
    def best(self) -> TimedHit:
        """The strongest hit by ranking score."""
        return max(self.hits, key=lambda h: h.rank_score)

    @property
    def best_similarity(self) -> float:
        """The best similarity to the selfie of any hit."""
        return max(h.similarity for h in self.hits)

    @property
    def mean_similarity(self) -> float:
        return sum(h.similarity for h in self.hits) / len(self.hits)

    @property
    def mean_score(self) -> float:
        return sum(h.rank_score for h in self.hits) / len(self.hits)

    @property
    def confirmed(self) -> int:
        return sum(h.confirmed for h in self.hits)


@dataclass(frozen=True)
class ClipWindow:
    start_s: float
    end_s: float
    support: int  # hits inside the window
    best_similarity: float  # to the selfie, best hit inside the window (reported)
    mean_similarity: float  # to the selfie
    poster_s: float  # time of the best hit (by score) inside the window
    confirmed: int = 0  # confirmed hits inside the window
    best_score: float | None = None  # ranking evidence (expansion included); None: the similarity
    mean_score: float | None = None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def group_segments(hits: Iterable[TimedHit], max_gap_s: float) -> list[Segment]:
    """Consecutive hits no more than ``max_gap_s`` apart form one segment."""
    ordered = sorted(hits, key=lambda h: h.timestamp_s)
    segments: list[list[TimedHit]] = []
    for hit in ordered:
        if segments and hit.timestamp_s - segments[-1][-1].timestamp_s <= max_gap_s:
            segments[-1].append(hit)
        else:
            segments.append([hit])
    return [Segment(s[0].timestamp_s, s[-1].timestamp_s, tuple(s)) for s in segments]


def rank_key(segment: Segment) -> tuple[bool, int, float, float]:
    return segment.confirmed > 0, segment.support, segment.mean_score, segment.best.rank_score


def densest_span(hits: Sequence[TimedHit], length_s: float) -> tuple[float, float]:
    """The ``length_s`` span (starting at a hit) holding the most hits, then the most score."""
    best: tuple[int, float, float] | None = None
    for i, first in enumerate(hits):
        inside = [h for h in hits[i:] if h.timestamp_s - first.timestamp_s <= length_s]
        score = (len(inside), sum(h.rank_score for h in inside), -first.timestamp_s)
        if best is None or score > best:
            best = score
    assert best is not None
    start = -best[2]
    return start, start + length_s


def window_for(segment: Segment, video_start_s: float, video_end_s: float, rules: SegmentSettings) -> ClipWindow | None:
    """The clip window around ``segment``, or None when the video cannot hold ``min_clip_s``."""
    if video_end_s - video_start_s < min(rules.min_clip_s, rules.max_clip_s):
        return None
    start, end = segment.start_s - rules.padding_s, segment.end_s + rules.padding_s
    if end - start > rules.max_clip_s:
        span_start, _ = densest_span(segment.hits, max(0.0, rules.max_clip_s - 2 * rules.padding_s))
        start = span_start - rules.padding_s
        end = start + rules.max_clip_s
    if end - start < rules.min_clip_s:
        grow = (rules.min_clip_s - (end - start)) / 2
        start, end = start - grow, end + grow
    # Clamp to the video, shifting rather than shrinking when one side runs out.
    length = end - start
    if start < video_start_s:
        start, end = video_start_s, video_start_s + length
    if end > video_end_s:
        start, end = max(video_start_s, video_end_s - length), video_end_s
    inside = [h for h in segment.hits if start <= h.timestamp_s <= end]
    if not inside:
        return None
    best = max(inside, key=lambda h: h.rank_score)
    return ClipWindow(
        start_s=start,
        end_s=end,
        support=len(inside),
        best_similarity=max(h.similarity for h in inside),
        mean_similarity=sum(h.similarity for h in inside) / len(inside),
        poster_s=best.timestamp_s,
        confirmed=sum(h.confirmed for h in inside),
        best_score=best.rank_score,
        mean_score=sum(h.rank_score for h in inside) / len(inside),
    )


def best_window(
    hits: Iterable[TimedHit], video_start_s: float, video_end_s: float, rules: SegmentSettings
) -> ClipWindow | None:
    """One best window for one video, or None when no segment is usable."""
    usable = [s for s in group_segments(hits, rules.max_gap_s) if s.support >= rules.min_hits]
    for segment in sorted(usable, key=rank_key, reverse=True):
        window = window_for(segment, video_start_s, video_end_s, rules)
        if window is not None:
            return window
    return None


def rank_windows(windows: dict[str, ClipWindow]) -> list[tuple[str, ClipWindow]]:
    """Videos ordered by confirmation (any confirmed hit first), support, then mean and best score."""

    def key(w: ClipWindow) -> tuple[bool, int, float, float]:
        mean = w.mean_similarity if w.mean_score is None else w.mean_score
        best = w.best_similarity if w.best_score is None else w.best_score
        return w.confirmed > 0, w.support, mean, best

    return sorted(windows.items(), key=lambda kv: key(kv[1]), reverse=True)


@dataclass(frozen=True)
class RankedSegment:
    """One usable segment as reported: where the person is seen, and how strongly."""

    media_key: str
    start_s: float
    end_s: float
    matched_frames: int
    best_similarity: float  # the best hit's cosine similarity to the selfie
    score: float  # sum of the hits' scores (expansion included): more and stronger evidence ranks higher
    confirmed_frames: int = 0  # hits confirmed by a second kind of evidence: these rank first


def ranked_segments(
    hits: dict[str, list[TimedHit]], bounds: dict[str, tuple[float, float]], rules: SegmentSettings
) -> list[RankedSegment]:
    """Every usable segment of every video, best first.

    A segment reaches ``edge_s`` past its first and last hit (a sample stands for the time
    around it), clamped to the video's ``bounds`` (start, end).
    """
    out = []
    for key, timed in hits.items():
        video_start, video_end = bounds.get(key, (0.0, float("inf")))
        for seg in group_segments(timed, rules.max_gap_s):
            if seg.support < rules.min_hits:
                continue
            out.append(
                RankedSegment(
                    media_key=key,
                    start_s=max(video_start, seg.start_s - rules.edge_s),
                    end_s=min(video_end, seg.end_s + rules.edge_s),
                    matched_frames=seg.support,
                    best_similarity=seg.best_similarity,
                    score=sum(h.rank_score for h in seg.hits),
                    confirmed_frames=seg.confirmed,
                )
            )
    return sorted(out, key=lambda r: (r.confirmed_frames > 0, r.score, r.best_similarity, -r.start_s), reverse=True)
