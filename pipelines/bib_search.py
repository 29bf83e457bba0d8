"""Find one runner by race number (BIB), alone or together with a selfie.

Photos: every photo where the number was read, most confident first. Videos: each
sighting is a hit at its time, and when the number was tied to a face (the face whose
torso holds it, pipelines/bib_sightings.py), every face of that face's track counts too:
the runner is seen for the whole shot, not only in the frames where the number was
readable. With a selfie the two kinds of evidence are merged; a track that both shows
the number and matches the selfie is ``confirmed`` and its segments rank first.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.match import FaceMatch
from pipelines.photo_search import PhotoMatch
from pipelines.store import FaceStore
from pipelines.tracks import NO_TRACK


def valid_bib(text: str, min_digits: int, max_digits: int) -> bool:
    """A BIB query: digits only, of a length the index keeps."""
    return text.isascii() and text.isdigit() and min_digits <= len(text) <= max_digits


def rank_bib_photos(sightings: pa.Table) -> list[PhotoMatch]:
    """Photo sightings of one number to photos, most confident first. Pure.

    ``similarity`` is the OCR confidence and ``bbox`` the number's box; ``match_count``
    counts the times it was read in the photo.
    """
    best: dict[str, tuple[float, tuple[float, ...]]] = {}
    counts: dict[str, int] = defaultdict(int)
    for key, conf, box in zip(
        sightings.column("media_key").to_pylist(),
        sightings.column("confidence").to_pylist(),
        sightings.column("bbox").to_pylist(),
        strict=True,
    ):
        counts[key] += 1
        if key not in best or conf > best[key][0]:
            best[key] = (float(conf), tuple(float(v) for v in box))
    photos = [PhotoMatch(k, c, b, counts[k]) for k, (c, b) in best.items()]  # type: ignore[arg-type]
    return sorted(photos, key=lambda p: (-p.similarity, p.media_key))


def sighting_matches(sightings: pa.Table, track_faces: dict[tuple[str, int], pa.Table]) -> dict[str, list[FaceMatch]]:
    """Video sightings (and the faces of their tracks) as matches per video, time order. Pure."""
    per_track: dict[tuple[str, int], float] = {}
    out: dict[str, dict[tuple[float, int], FaceMatch]] = defaultdict(dict)
    for key, t, conf, box, track in zip(
        sightings.column("media_key").to_pylist(),
        sightings.column("timestamp_s").to_pylist(),
        sightings.column("confidence").to_pylist(),
        sightings.column("bbox").to_pylist(),
        sightings.column("track_id").to_pylist(),
        strict=True,
    ):
        track = NO_TRACK if track is None else int(track)
        out[key][(float(t), track)] = FaceMatch(float(t), float(conf), track, tuple(box))
        if track != NO_TRACK:
            per_track[(key, track)] = max(per_track.get((key, track), 0.0), float(conf))
    for (key, track), conf in per_track.items():
        faces = track_faces.get((key, track))
        if faces is None:
            continue
        for t, box in zip(faces.column("timestamp_s").to_pylist(), faces.column("bbox").to_pylist(), strict=True):
            out[key][(float(t), track)] = FaceMatch(float(t), conf, track, tuple(box))
    return {key: sorted(found.values(), key=lambda m: m.timestamp_s) for key, found in out.items() if found}


def bib_video_matches(store: FaceStore, org_id: int, event_id: int, number: str) -> dict[str, list[FaceMatch]]:
    """The number's video sightings and their tracks' faces, read from the store: the edge
    around ``sighting_matches``, run by the BIB suite (tests/test_bib_search.py), not by the
    unit tests mutation testing runs."""
    # pragma: no mutate start
    sightings = store.bib_sightings(org_id, event_id, number, media_type="video")
    tracks: dict[tuple[str, int], pa.Table] = {}
    by_video: dict[str, set[int]] = defaultdict(set)
    for key, track in zip(
        sightings.column("media_key").to_pylist(), sightings.column("track_id").to_pylist(), strict=True
    ):
        if track is not None and track != NO_TRACK:
            by_video[key].add(int(track))
    for key, track_ids in by_video.items():
        faces = store.track_faces(org_id, event_id, key, sorted(track_ids))
        for track in track_ids:
            tracks[(key, track)] = faces.filter(pc.equal(faces.column("track_id"), track))
    return sighting_matches(sightings, tracks)
    # pragma: no mutate end


def fuse(selfie: dict[str, list[FaceMatch]], bib: dict[str, list[FaceMatch]]) -> dict[str, list[FaceMatch]]:
    """Selfie and BIB evidence together. Pure.

    A track in both is confirmed: all of its matches carry ``confirmed``. Otherwise each
    kind's matches count as they are (one face per time and track). A face both kinds found
    keeps the selfie's similarity (what clients are shown) and ranks by the stronger
    evidence of the two; a face only the number found keeps its OCR confidence.
    """
    out = {}
    for key in set(selfie) | set(bib):
        a, b = selfie.get(key, []), bib.get(key, [])
        both = ({m.track_id for m in a} & {m.track_id for m in b}) - {NO_TRACK}
        merged: dict[tuple[float, int], FaceMatch] = {}
        for m in a:
            merged[(m.timestamp_s, m.track_id)] = replace(m, confirmed=m.track_id in both)
        for m in b:
            seen = merged.get((m.timestamp_s, m.track_id))
            if seen is None:
                merged[(m.timestamp_s, m.track_id)] = replace(m, confirmed=m.track_id in both)
            elif m.rank_score > seen.rank_score:
                merged[(m.timestamp_s, m.track_id)] = replace(seen, score=m.rank_score)
        out[key] = sorted(merged.values(), key=lambda m: m.timestamp_s)
    return out
