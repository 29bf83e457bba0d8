"""Run the product on a labelled set and score it: what ``facereel eval`` prints.

Every video of the set is indexed into one event (incrementally: a rerun reuses the
index). Each identity with reference photos is searched with the same matching and
segment code the API runs, once per matching mode, and the reported segments are scored
with pipelines/evaluate.py. Identities with photos but no labelled interval are searched
too: any segment they get is a wrong-person segment.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.config import MatchSettings, Settings
from pipelines.evaluate import IdentityScore, LabelledSet, Segment, score_all
from pipelines.match import References, find_person, timed_hits
from pipelines.models import load_pack
from pipelines.segments import ranked_segments
from pipelines.selfie import NoFaceFound, decode_image_bytes, embed_selfie

log = logging.getLogger(__name__)

EVAL_ORG, EVAL_EVENT = 0, 0
# Crops cut from the evaluated videos themselves are no independent reference.
DEFAULT_EXCLUDE = ("*/identities/*",)


@dataclass
class EvalReport:
    scores: dict[str, list[IdentityScore]]  # mode -> per identity
    photos_used: dict[str, list[str]]
    photos_failed: dict[str, list[str]]  # identity -> photos without a usable face
    index_seconds: float


def reference_photos(labelled: LabelledSet, identity: str, max_photos: int, exclude: tuple[str, ...]) -> list[str]:
    """Single-person photos of ``identity`` (a group photo does not say which face is whose)."""
    people_in = Counter(p for paths in labelled.photos.values() for p in paths)
    usable = [
        p
        for p in labelled.photos.get(identity, ())
        if people_in[p] == 1 and not any(fnmatch.fnmatch(p, pattern) for pattern in exclude)
    ]
    return sorted(usable)[:max_photos]


def compare_modes(settings: Settings) -> dict[str, MatchSettings]:
    """Per-face matching (the baseline) and the configured matching (tracks + expansion)."""
    return {"faces": settings.match.model_copy(update={"mode": "faces"}), "tracks": settings.match}


def run_evaluation(
    settings: Settings,
    root: Path,
    variants: dict[str, MatchSettings] | None = None,
    max_photos: int = 3,
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
) -> EvalReport:
    """Scores per variant of the matching rules (default: ``compare_modes``)."""
    variants = variants or compare_modes(settings)
    from pipelines.index import index_event
    from pipelines.store import FaceStore

    labelled = LabelledSet.load(root)
    report = index_event(settings, EVAL_ORG, EVAL_EVENT, [str(root / v) for v in labelled.videos])
    if report.failed:
        log.warning("not indexed: %s", report.failed)
    pack = load_pack(settings.models)
    store = FaceStore.from_settings(settings, pack.info)
    threshold = settings.models.match_threshold or pack.info.threshold
    bounds = {
        row["media_key"]: (row["start_s"] or 0.0, (row["start_s"] or 0.0) + (row["duration_s"] or 0.0))
        for row in store.media_rows(EVAL_ORG, EVAL_EVENT)
    }
    used: dict[str, list[str]] = {}
    failed: dict[str, list[str]] = {}
    refs: dict[str, np.ndarray] = {}
    for identity in sorted(labelled.photos):
        vectors = []
        for photo in reference_photos(labelled, identity, max_photos, exclude):
            try:
                image = decode_image_bytes((root / photo).read_bytes())
                vectors.append(
                    embed_selfie(
                        pack, image, settings.models.det_score_threshold, settings.models.min_face_px, settings.selfie
                    ).vector
                )
                used.setdefault(identity, []).append(photo)
            except (NoFaceFound, ValueError, OSError) as exc:  # no face, or not a JPEG/PNG
                log.info("reference %s unusable: %s", photo, exc)
                failed.setdefault(identity, []).append(photo)
        if vectors:
            refs[identity] = np.stack(vectors)
    scores = {}
    for name, rules in variants.items():
        segments = {}
        for identity, positives in refs.items():
            found = find_person(store, EVAL_ORG, EVAL_EVENT, References(positives), threshold, rules)
            ranked = ranked_segments(timed_hits(found), bounds, settings.segments)
            segments[identity] = [Segment(s.media_key, s.start_s, s.end_s) for s in ranked]
        scores[name] = score_all(labelled, segments)
    return EvalReport(scores, used, failed, report.seconds)
