"""The threshold x segment-rule sweep: the product's matching once per threshold, then each
rule re-segments the same hits and is scored as ``facereel eval`` scores."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from pipelines.calibration.events import CachedStore, EventIndex
from pipelines.config import MatchSettings, SegmentSettings
from pipelines.evaluate import Interval, LabelledSet, Segment, match_video, overall, score_all, subtract, tallies, total
from pipelines.match import References, find_person, timed_hits
from pipelines.segments import RankedSegment, TimedHit, ranked_segments

KEY_DIGITS = 6  # thresholds are compared rounded to this many decimals (grid keys)


def grid_key(t: float) -> float:
    """A threshold as a grid key (rounded to KEY_DIGITS)."""
    return round(float(t), KEY_DIGITS)


@dataclass(frozen=True, order=True)
class SegmentRule:
    """The two segment rules swept (the rest of SegmentSettings stays as configured)."""

    max_gap_s: float
    min_hits: int

    def apply(self, base: SegmentSettings) -> SegmentSettings:
        return base.model_copy(update={"max_gap_s": float(self.max_gap_s), "min_hits": int(self.min_hits)})

    def as_dict(self) -> dict[str, float | int]:
        return {"max_gap_s": float(self.max_gap_s), "min_hits": int(self.min_hits)}

    @classmethod
    def of(cls, settings: SegmentSettings) -> SegmentRule:
        return cls(float(settings.max_gap_s), int(settings.min_hits))


def threshold_grid(lo: float = 0.25, hi: float = 0.60, step: float = 0.01) -> list[float]:
    """Thresholds lo, lo + step, ..., hi (rounded, so they are exact grid keys)."""
    count = round((hi - lo) / step)
    return [round(lo + i * step, KEY_DIGITS) for i in range(count + 1)]


def rule_grid(
    max_gaps: Sequence[float] = (1.0, 1.5, 2.0, 3.0, 4.0), min_hits: Sequence[int] = (1, 2, 3, 4)
) -> list[SegmentRule]:
    return [SegmentRule(float(g), int(h)) for g in max_gaps for h in min_hits]


# threshold -> identity -> media_key -> timed hits
Hits = dict[float, dict[str, dict[str, list[TimedHit]]]]


def match_all(
    event: EventIndex,
    references: Mapping[str, np.ndarray],
    thresholds: Sequence[float],
    rules: MatchSettings | None = None,
) -> Hits:
    """Timed hits of every identity at every threshold: the product's ``find_person`` (tracks,
    expansion, competitors), once per threshold and identity, over a read cache."""
    rules = rules or event.settings.match
    store = CachedStore(event.store)
    out: Hits = {}
    for t in thresholds:
        key = grid_key(t)
        out[key] = {
            who: timed_hits(find_person(store, event.org_id, event.event_id, References(refs), key, rules))
            for who, refs in sorted(references.items())
        }
    return out


def resegment(
    hits: Mapping[str, Mapping[str, Sequence[TimedHit]]],
    bounds: Mapping[str, tuple[float, float]],
    base: SegmentSettings,
    rule: SegmentRule,
) -> dict[str, list[RankedSegment]]:
    """The reported segments of each identity under ``rule`` (pure: same hits, other rules)."""
    settings = rule.apply(base)
    return {
        who: ranked_segments({k: list(v) for k, v in per_video.items()}, dict(bounds), settings)
        for who, per_video in hits.items()
    }


def as_eval_segments(segments: Mapping[str, Sequence[RankedSegment]]) -> dict[str, list[Segment]]:
    return {who: [Segment(s.media_key, s.start_s, s.end_s) for s in segs] for who, segs in segments.items()}


@dataclass(frozen=True)
class SweepRow:
    """The metric of ``facereel eval`` (all identities together) at one threshold and rule."""

    threshold: float
    max_gap_s: float
    min_hits: int
    labelled_s: float
    covered_s: float
    coverage: float | None
    segments: int
    wrong_segments: int
    dontcare_segments: int
    # Seconds of reported segments where the person is not labelled (nor don't-care): the
    # coverage metric does not charge for it, so a longer max_gap_s can "win" coverage by
    # bridging time the person is not on screen.
    spill_s: float = 0.0

    @property
    def rule(self) -> SegmentRule:
        return SegmentRule(self.max_gap_s, self.min_hits)


def sweep(
    labelled: LabelledSet,
    hits: Hits,
    bounds: Mapping[str, tuple[float, float]],
    base: SegmentSettings,
    rules: Sequence[SegmentRule],
) -> list[SweepRow]:
    """Coverage and wrong-person segments for every threshold x rule. Pure: matching ran
    once per threshold (``match_all``); each rule only re-segments the same hits."""
    rows = []
    for t, per_identity in sorted(hits.items()):
        for rule in rules:
            segments = as_eval_segments(resegment(per_identity, bounds, base, rule))
            whole = overall(score_all(labelled, segments))
            rows.append(
                SweepRow(
                    threshold=t,
                    max_gap_s=rule.max_gap_s,
                    min_hits=rule.min_hits,
                    **tallies(whole),
                    spill_s=spill_seconds(labelled, segments),
                )
            )
    return rows


def spill_seconds(labelled: LabelledSet, segments: Mapping[str, Sequence[Segment]]) -> float:
    """Seconds inside reported segments (union per identity and video) where that identity is
    neither labelled nor don't-care. Pure."""
    spill = 0.0
    for who, segs in segments.items():
        truth, dontcare = labelled.truth_of(who), labelled.dontcare_of(who)
        by_video: dict[str, list[Interval]] = defaultdict(list)
        for seg in segs:
            by_video[match_video(seg.video_path, labelled.videos) or seg.video_path].append((seg.start_s, seg.end_s))
        for vid, spans in by_video.items():
            spill += total(subtract(spans, [*truth.get(vid, ()), *dontcare.get(vid, ())]))
    return spill


def sweep_table(rows: Sequence[SweepRow]) -> pa.Table:
    return pa.Table.from_pylist([asdict(r) for r in rows])
