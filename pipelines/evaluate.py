"""Scoring against labelled intervals (pure functions, for tests, notebooks and the CLI).

Two levels: ``score_hits`` scores single search hits in one video; ``score_identity`` /
``score_all`` score the reported segments of query persons against a labelled set
(``LabelledSet.load``) by coverage of the labelled seconds and wrong-person segments.
"""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HitScore:
    hits: int
    true_hits: int
    labelled_samples: int
    found_samples: int

    @property
    def precision(self) -> float:
        return self.true_hits / self.hits if self.hits else 1.0

    @property
    def recall(self) -> float:
        return self.found_samples / self.labelled_samples if self.labelled_samples else 1.0


def inside(t: float, intervals: Iterable[tuple[float, float]], tolerance: float) -> bool:
    return any(start - tolerance <= t <= end + tolerance for start, end in intervals)


def score_hits(
    hit_times: Sequence[float],
    intervals: Sequence[tuple[float, float]],
    sample_times: Sequence[float],
    tolerance: float = 0.3,
) -> HitScore:
    """Precision of hit timestamps and recall of labelled samples, for one video.

    A hit is true when it falls inside a labelled interval (± tolerance, the labels'
    own accuracy). Recall counts the sampled timestamps strictly inside the labels
    that got at least one hit.
    """
    hits = list(hit_times)
    true_hits = sum(inside(t, intervals, tolerance) for t in hits)
    labelled = [s for s in sample_times if inside(s, intervals, 0.0)]
    found = sum(any(abs(s - t) < 1e-3 for t in hits) for s in labelled)
    return HitScore(len(hits), true_hits, len(labelled), found)


# --- Segment evaluation against a labelled set ------------------------------------------------
#
# Reported segments (video, start_s, end_s) per query person are scored against a labelled set:
# a folder with labels.csv, video_truth.csv and optionally video_dontcare.csv and
# video_truth_detailed.csv (see ../shared/data/faces/README.md). All interval arithmetic is exact
# on float (start, end) pairs in seconds; nothing is sampled.

Interval = tuple[float, float]

OVERALL = "(overall)"  # identity name of the row that sums all identities


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted union; intervals that touch or overlap become one, empty ones (end <= start) vanish."""
    out: list[Interval] = []
    for start, end in sorted((float(s), float(e)) for s, e in intervals if e > s):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def total(intervals: Iterable[Interval]) -> float:
    """Seconds covered by the union of the intervals (overlaps counted once)."""
    return sum(end - start for start, end in merge(intervals))


def intersect(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """Union of a ∩ union of b, as merged intervals. Shared endpoints alone give nothing."""
    left, right = merge(a), merge(b)
    out: list[Interval] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start, end = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if end > start:
            out.append((start, end))
        # Advance whichever ends first: it cannot meet anything further along the other list.
        if left[i][1] <= right[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """Union of a minus union of b, as merged intervals."""
    out: list[Interval] = []
    cuts = merge(b)
    for start, end in merge(a):
        cursor = start
        for cut_start, cut_end in cuts:
            if cut_end <= cursor:
                continue
            if cut_start >= end:
                break
            if cut_start > cursor:
                out.append((cursor, cut_start))
            cursor = max(cursor, cut_end)
        if cursor < end:
            out.append((cursor, end))
    return out


def touches(segment: Interval, intervals: Iterable[Interval]) -> bool:
    """Whether a reported span overlaps the intervals.

    A span of positive length needs an overlap of positive length (only sharing an endpoint
    with a label is not enough). A zero-length span (a segment built from a single hit) counts
    when its instant lies inside an interval, endpoints included.
    """
    start, end = segment
    if end > start:
        return bool(intersect([segment], intervals))
    return any(s <= start <= e for s, e in merge(intervals))


@dataclass(frozen=True)
class Segment:
    """One reported moment of a person: ``video_path`` is the media key as the system reports it."""

    video_path: str
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not self.end_s >= self.start_s:  # also rejects NaN
            raise ValueError(f"segment ends before it starts: {self}")


def _parts(path: str) -> list[str]:
    """Path components of a key or label path, whatever its form (URI, Windows, ./, ..)."""
    path = path.strip().replace("\\", "/")
    if "://" in path:
        path = path.split("://", 1)[1]
    return [p for p in posixpath.normpath(path).split("/") if p not in ("", ".")]


def match_video(key: str, videos: Iterable[str]) -> str | None:
    """The set's relative video path that a reported media key refers to, or None.

    Keys come as absolute paths, URIs, paths relative to the set root or to any folder below
    it (what indexing a sub-folder gives), or bare file names. In order: the exact relative
    path; else a path-suffix match (one's components end with the other's; the longest wins);
    else the video with the same file name. A tie at either step (for example a name shared
    by two videos) is ambiguous, so None rather than a guess.
    """
    videos = list(videos)
    if key in videos:
        return key
    key_parts = _parts(key)
    if not key_parts:
        return None
    best: list[str] = []
    best_len = 0
    for video in videos:
        parts = _parts(video)
        n = min(len(parts), len(key_parts))
        if n == 0 or parts[-n:] != key_parts[-n:]:
            continue
        if n > best_len:
            best, best_len = [video], n
        elif n == best_len:
            best.append(video)
    if not best:  # same file name under other folders (e.g. a camera folder of the event)
        best = [video for video in videos if _parts(video)[-1:] == key_parts[-1:]]
    return best[0] if len(best) == 1 else None


# --- Loader -------------------------------------------------------------------------------------


def _rows(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, stripped row) for each non-empty CSV row; missing columns fail loudly."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        rows = []
        for row in reader:
            clean = {k: (v or "").strip() for k, v in row.items() if k is not None}
            if any(clean.values()):
                rows.append((reader.line_num, clean))
        return rows


def _interval(path: Path, line: int, row: dict[str, str]) -> Interval:
    try:
        start, end = float(row["start_s"]), float(row["end_s"])
    except ValueError as exc:
        raise ValueError(f"{path}:{line}: bad start_s/end_s: {exc}") from None
    if not end >= start:
        raise ValueError(f"{path}:{line}: end_s {end} before start_s {start}")
    return start, end


def _video(path: str) -> str:
    """Relative video path in one spelling (forward slashes, no ./), so the CSVs agree."""
    return "/".join(_parts(path))


def _intervals_by_key(path: Path, key_columns: Sequence[str]) -> dict[tuple[str, ...], tuple[Interval, ...]]:
    spans: dict[tuple[str, ...], list[Interval]] = {}
    for line, row in _rows(path, ["video_path", *key_columns[1:], "start_s", "end_s"]):
        key = (_video(row["video_path"]), *(row[c] for c in key_columns[1:]))
        spans.setdefault(key, []).append(_interval(path, line, row))
    return {key: tuple(merge(v)) for key, v in sorted(spans.items())}


@dataclass(frozen=True)
class LabelledSet:
    """A labelled folder: who is visible when in which video, and reference photos per person.

    Interval tuples are merged (sorted, touching/overlapping joined). ``videos`` are the relative
    paths named in video_truth.csv, plus any named only in the other video CSVs, videos_meta.csv
    included (distractor clips with nobody labelled, where every reported segment is wrong).
    """

    root: Path
    videos: tuple[str, ...]
    truth: dict[tuple[str, str], tuple[Interval, ...]]  # (video_path, identity) -> visible
    dontcare: dict[tuple[str, str], tuple[Interval, ...]]  # (video_path, identity) -> neither hit nor miss
    photos: dict[str, tuple[str, ...]]  # identity -> reference photo paths relative to root
    visibility: dict[tuple[str, str, str], tuple[Interval, ...]] | None  # (video, identity, visibility)

    @classmethod
    def load(cls, root: Path) -> LabelledSet:
        root = Path(root)
        truth = _intervals_by_key(root / "video_truth.csv", ["video_path", "identity"])
        dontcare_csv = root / "video_dontcare.csv"
        dontcare = _intervals_by_key(dontcare_csv, ["video_path", "identity"]) if dontcare_csv.is_file() else {}
        detailed_csv = root / "video_truth_detailed.csv"
        visibility = (
            _intervals_by_key(detailed_csv, ["video_path", "identity", "visibility"])
            if detailed_csv.is_file()
            else None
        )
        photos: dict[str, list[str]] = {}
        labels_csv = root / "labels.csv"
        if labels_csv.is_file():
            for _, row in _rows(labels_csv, ["path", "identity"]):
                photos.setdefault(row["identity"], []).append(_video(row["path"]))
        videos = {key[0] for key in (*truth, *dontcare, *(visibility or {}))}
        meta_csv = root / "videos_meta.csv"
        if meta_csv.is_file():
            videos |= {_video(row["video_path"]) for _, row in _rows(meta_csv, ["video_path"])}
        return cls(
            root=root,
            videos=tuple(sorted(videos)),
            truth={(v, i): spans for (v, i), spans in truth.items()},
            dontcare={(v, i): spans for (v, i), spans in dontcare.items()},
            photos={identity: tuple(paths) for identity, paths in sorted(photos.items())},
            visibility={(v, i, vis): spans for (v, i, vis), spans in visibility.items()}
            if visibility is not None
            else None,
        )

    @property
    def identities(self) -> tuple[str, ...]:
        """People labelled in at least one video (photo-only identities are in ``photos``)."""
        return tuple(sorted({identity for _, identity in self.truth}))

    def truth_of(self, identity: str) -> dict[str, tuple[Interval, ...]]:
        return {video: spans for (video, who), spans in self.truth.items() if who == identity}

    def dontcare_of(self, identity: str) -> dict[str, tuple[Interval, ...]]:
        return {video: spans for (video, who), spans in self.dontcare.items() if who == identity}

    def photo_paths(self, identity: str) -> list[Path]:
        return [self.root / p for p in self.photos.get(identity, ())]


# --- Scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    labelled_s: float  # labelled seconds, don't-care time removed
    covered_s: float  # of those, seconds inside reported segments

    @property
    def coverage(self) -> float | None:
        """None when nothing is labelled: a person absent from the videos has no coverage to score."""
        return self.covered_s / self.labelled_s if self.labelled_s > 0 else None

    def __add__(self, other: Coverage) -> Coverage:
        return Coverage(self.labelled_s + other.labelled_s, self.covered_s + other.covered_s)


@dataclass(frozen=True)
class VideoScore(Coverage):
    segments: int = 0
    wrong_segments: int = 0
    dontcare_segments: int = 0  # overlapping only don't-care time: neither right nor wrong

    def __add__(self, other: Coverage) -> VideoScore:
        o = other if isinstance(other, VideoScore) else VideoScore(other.labelled_s, other.covered_s)
        return VideoScore(
            self.labelled_s + o.labelled_s,
            self.covered_s + o.covered_s,
            self.segments + o.segments,
            self.wrong_segments + o.wrong_segments,
            self.dontcare_segments + o.dontcare_segments,
        )


def tallies(score: VideoScore | IdentityScore) -> dict:
    """The fields every scored row repeats: seconds, coverage and segment counts."""
    return {
        "labelled_s": score.labelled_s,
        "covered_s": score.covered_s,
        "coverage": score.coverage,
        "segments": score.segments,
        "wrong_segments": score.wrong_segments,
        "dontcare_segments": score.dontcare_segments,
    }


@dataclass(frozen=True)
class IdentityScore:
    identity: str
    labelled_s: float
    covered_s: float
    coverage: float | None  # covered_s / labelled_s; None when the person is labelled nowhere
    segments: int
    wrong_segments: int
    per_video: dict[str, VideoScore]  # set video path (or the raw key when it matches no video)
    per_visibility: dict[str, Coverage] | None  # None when the set has no video_truth_detailed.csv
    dontcare_segments: int = 0
    wrong: tuple[Segment, ...] = ()  # the wrong-person segments themselves, for inspection


def score_identity(labelled: LabelledSet, identity: str, segments: Sequence[Segment]) -> IdentityScore:
    """Coverage and wrong-person segments of one query person.

    coverage = labelled seconds inside the reported segments ÷ labelled seconds, where the
    labelled seconds are the person's truth intervals minus their don't-care intervals.

    Each segment is right when it overlaps the person's truth in its video, otherwise
    don't-care when it overlaps their don't-care intervals there (doubtful time must not punish
    a system that finds the person in it), otherwise wrong. So a segment in a video where the
    person has no truth, or whose key matches no video of the set, is wrong unless it overlaps
    don't-care. Don't-care segments add no coverage (that time is not labelled).
    """
    truth, dontcare = labelled.truth_of(identity), labelled.dontcare_of(identity)
    resolved = {key: match_video(key, labelled.videos) for key in {s.video_path for s in segments}}
    by_video: dict[str, list[Segment]] = {}
    for seg in segments:
        by_video.setdefault(resolved[seg.video_path] or seg.video_path, []).append(seg)

    per_video: dict[str, VideoScore] = {}
    wrong: list[Segment] = []
    for video in sorted(set(truth) | set(by_video)):
        segs = by_video.get(video, [])
        spans = [(s.start_s, s.end_s) for s in segs]
        labelled_spans = subtract(truth.get(video, ()), dontcare.get(video, ()))
        n_wrong = n_dontcare = 0
        for seg, span in zip(segs, spans, strict=True):
            if touches(span, truth.get(video, ())):
                continue
            if touches(span, dontcare.get(video, ())):
                n_dontcare += 1
            else:
                n_wrong += 1
                wrong.append(seg)
        per_video[video] = VideoScore(
            total(labelled_spans), total(intersect(labelled_spans, spans)), len(segs), n_wrong, n_dontcare
        )

    per_visibility: dict[str, Coverage] | None = None
    if labelled.visibility is not None:
        per_visibility = {}
        for (video, who, vis), vis_spans in labelled.visibility.items():
            if who != identity:
                continue
            vis_labelled = subtract(vis_spans, dontcare.get(video, ()))
            spans = [(s.start_s, s.end_s) for s in by_video.get(video, [])]
            cov = Coverage(total(vis_labelled), total(intersect(vis_labelled, spans)))
            per_visibility[vis] = per_visibility.get(vis, Coverage(0.0, 0.0)) + cov
        per_visibility = dict(sorted(per_visibility.items()))

    whole = sum(per_video.values(), VideoScore(0.0, 0.0))
    return IdentityScore(
        identity=identity,
        **tallies(whole),
        per_video=per_video,
        per_visibility=per_visibility,
        wrong=tuple(wrong),
    )


def score_all(labelled: LabelledSet, segments_by_identity: Mapping[str, Sequence[Segment]]) -> list[IdentityScore]:
    """One row per queried identity, in the mapping's order. Identities that were not queried
    are not scored (their zero coverage would say nothing about the system); query one with no
    segments to count it. ``overall`` sums the rows."""
    return [score_identity(labelled, identity, segs) for identity, segs in segments_by_identity.items()]


def overall(scores: Sequence[IdentityScore]) -> IdentityScore:
    """All identities together: total covered ÷ total labelled seconds, total wrong segments."""
    per_video: dict[str, VideoScore] = {}
    per_visibility: dict[str, Coverage] = {}
    for score in scores:
        for video, vs in score.per_video.items():
            per_video[video] = per_video.get(video, VideoScore(0.0, 0.0)) + vs
        for vis, cov in (score.per_visibility or {}).items():
            per_visibility[vis] = per_visibility.get(vis, Coverage(0.0, 0.0)) + cov
    whole = Coverage(sum(s.labelled_s for s in scores), sum(s.covered_s for s in scores))
    return IdentityScore(
        identity=OVERALL,
        labelled_s=whole.labelled_s,
        covered_s=whole.covered_s,
        coverage=whole.coverage,
        segments=sum(s.segments for s in scores),
        wrong_segments=sum(s.wrong_segments for s in scores),
        per_video=dict(sorted(per_video.items())),
        per_visibility=dict(sorted(per_visibility.items()))
        if any(s.per_visibility is not None for s in scores)
        else None,
        dontcare_segments=sum(s.dontcare_segments for s in scores),
        wrong=tuple(seg for s in scores for seg in s.wrong),
    )


# --- Report -------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _render(header: Sequence[str], rows: Sequence[Sequence[str]], rule_before_last: bool) -> str:
    """Left-aligned first column, right-aligned numbers; a rule above the overall row."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), "  ".join("-" * w for w in widths)]
    body = [line(r) for r in rows]
    if rule_before_last and body:
        body.insert(len(body) - 1, "  ".join("-" * w for w in widths))
    return "\n".join([*out, *body])


def format_table(scores: Sequence[IdentityScore], before: Sequence[IdentityScore] | None = None) -> str:
    """Plain-text table, one row per identity plus the overall row.

    With ``before`` (an earlier run's scores) the coverage and segment columns read
    ``before → after``; an identity missing from ``before`` shows ``—`` on the left.
    """
    rows_scores = [*scores, overall(scores)]
    if before is None:
        header = ["identity", "labelled s", "covered s", "coverage", "segments", "wrong", "dontcare"]
        rows = [
            [
                s.identity,
                f"{s.labelled_s:.2f}",
                f"{s.covered_s:.2f}",
                _pct(s.coverage),
                str(s.segments),
                str(s.wrong_segments),
                str(s.dontcare_segments),
            ]
            for s in rows_scores
        ]
        return _render(header, rows, rule_before_last=True)

    earlier = {s.identity: s for s in before}
    earlier[OVERALL] = overall(before)
    header = ["identity", "labelled s", "coverage before → after", "segments before → after", "wrong before → after"]
    rows = []
    for s in rows_scores:
        b = earlier.get(s.identity)
        rows.append(
            [
                s.identity,
                f"{s.labelled_s:.2f}",
                f"{_pct(b.coverage) if b else '—'} → {_pct(s.coverage)}",
                f"{b.segments if b else '—'} → {s.segments}",
                f"{b.wrong_segments if b else '—'} → {s.wrong_segments}",
            ]
        )
    return _render(header, rows, rule_before_last=True)


def format_visibility_table(scores: Sequence[IdentityScore]) -> str:
    """Coverage per identity and visibility class (clear/small/profile/partial), plus overall."""
    header = ["identity", "visibility", "labelled s", "covered s", "coverage"]
    rows = [
        [s.identity, vis, f"{c.labelled_s:.2f}", f"{c.covered_s:.2f}", _pct(c.coverage)]
        for s in [*scores, overall(scores)]
        for vis, c in (s.per_visibility or {}).items()
    ]
    return _render(header, rows, rule_before_last=False)
