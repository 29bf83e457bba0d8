"""Who the search is looking for, in the event's videos: the person's faces matched by
selfie, by BIB number, or both fused. The search job's first step (app/jobs/dispatch.py), so
a POST never waits for it."""

from __future__ import annotations

import logging

import numpy as np

from app.jobs.stored_matches import decode_matches, matches_basis
from app.store.events import Event
from app.store.records import SearchRecord
from pipelines.bib_search import bib_video_matches, fuse
from pipelines.match import FaceMatch, References, find_person

log = logging.getLogger(__name__)


def match_record(store, settings, event: Event, record: SearchRecord) -> dict[str, list[FaceMatch]]:
    """The person's video faces by selfie, by BIB number, or both fused."""
    by_selfie = match_selfie(store, settings, event, record) if record.embedding is not None else {}
    if not record.bib:
        return by_selfie
    return fuse(by_selfie, bib_video_matches(store, event.org_id, event.event_id, record.bib))


def match_selfie(store, settings, event: Event, record: SearchRecord) -> dict[str, list[FaceMatch]]:
    """The person's video faces: the ones Face Search stored for this selfie when they
    still hold (same rules, same index), else matched now."""
    rules = event.search_rules(settings)
    if record.video_matches is not None and record.matches_basis is not None:
        negatives = 0 if record.negatives is None else len(record.negatives)
        faces = store.count_faces(event.org_id, event.event_id)
        if record.matches_basis == matches_basis(settings, rules.threshold, negatives, faces):
            log.info("search %s clips from the matches Face Search stored", record.request_id)
            return decode_matches(record.video_matches)
    dim = record.embedding.shape[1]
    negatives = record.negatives if record.negatives is not None else np.zeros((0, dim), np.float32)
    refs = References(record.embedding, negatives)
    return find_person(store, event.org_id, event.event_id, refs, rules.threshold, settings.match)
