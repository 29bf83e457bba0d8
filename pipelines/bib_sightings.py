"""BIB sightings at index time: the writer's side of pipelines/bibs.py.

The OCR stage emits one ``bib`` row per number it read, right after its frame. Rows
wait per video until their decode chunk ends; by then the chunk's faces have their
track ids (pipelines/linking.py), so each number is tied to the face whose torso holds
it, and to that face's track, before it is stored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.bibs import BibRead, assign_faces
from pipelines.tracks import NO_TRACK

KIND_BIB = "bib"


@dataclass(frozen=True)
class Sighting:
    media_key: str
    media_type: str
    timestamp_s: float
    frame_index: int
    read: BibRead


def sightings_of(batch: dict[str, np.ndarray]) -> list[Sighting]:
    """The ``bib`` rows of one pipeline batch."""
    out = []
    for i in np.flatnonzero(batch["kind"] == KIND_BIB):
        box = tuple(float(v) for v in np.asarray(batch["bib_box"][i], np.float32).reshape(4))
        out.append(
            Sighting(
                str(batch["media_key"][i]),
                str(batch["media_type"][i]),
                float(batch["timestamp_s"][i]),
                int(batch["frame_index"][i]),
                BibRead(str(batch["bib_number"][i]), float(batch["bib_confidence"][i]), box),
            )
        )
    return out


def tie_to_faces(sightings: list[Sighting], faces: pa.Table | None) -> list[tuple[str | None, int]]:
    """(face_id, track_id) per sighting: the face of the same frame whose torso holds the
    number, or (None, NO_TRACK)."""
    if faces is None or not faces.num_rows or not sightings:
        return [(None, NO_TRACK)] * len(sightings)
    times = faces.column("timestamp_s").to_numpy()
    boxes = np.asarray(faces.column("bbox").to_pylist(), np.float32).reshape(-1, 4)
    face_ids = faces.column("face_id").to_pylist()
    track_ids = faces.column("track_id").to_pylist()
    out: list[tuple[str | None, int]] = [(None, NO_TRACK)] * len(sightings)
    by_time: dict[float, list[int]] = defaultdict(list)
    for i, s in enumerate(sightings):
        by_time[s.timestamp_s].append(i)
    for t, idx in by_time.items():
        rows = np.flatnonzero(np.abs(times - t) < 1e-6)
        chosen = assign_faces([sightings[i].read for i in idx], boxes[rows])
        for i, j in zip(idx, chosen, strict=True):
            if j is not None:
                row = int(rows[j])
                out[i] = (face_ids[row], int(track_ids[row]) if track_ids[row] is not None else NO_TRACK)
    return out


class BibSightings:
    """Per-video buffers of numbers read, for one indexing run."""

    def __init__(self, org_id: int, event_id: int) -> None:
        self.org_id, self.event_id = org_id, event_id
        self.waiting: dict[str, list[Sighting]] = defaultdict(list)
        self.count = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        for s in sightings_of(batch):
            self.waiting[s.media_key].append(s)

    def end_chunk(self, media_key: str, faces: pa.Table | None) -> pa.Table:
        """The chunk's sightings as rows of the bibs table, tied to ``faces`` (the chunk's
        face rows with their track ids)."""
        from pipelines.store import BIBS_SCHEMA  # lancedb only once Ray is up

        sightings = self.waiting.pop(media_key, [])
        tied = tie_to_faces(sightings, faces)
        self.count += len(sightings)
        return pa.table(
            {
                "org_id": pa.array([self.org_id] * len(sightings), pa.int64()),
                "event_id": pa.array([self.event_id] * len(sightings), pa.int64()),
                "media_key": pa.array([s.media_key for s in sightings], pa.string()),
                "media_type": pa.array([s.media_type for s in sightings], pa.string()),
                "timestamp_s": pa.array([s.timestamp_s for s in sightings], pa.float64()),
                "frame_index": pa.array([s.frame_index for s in sightings], pa.int64()),
                "number": pa.array([s.read.number for s in sightings], pa.string()),
                "confidence": pa.array([s.read.confidence for s in sightings], pa.float32()),
                "bbox": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.asarray([s.read.box for s in sightings], np.float32).reshape(-1)), 4
                ),
                "face_id": pa.array([f for f, _ in tied], pa.string()),
                "track_id": pa.array([t for _, t in tied], pa.int64()),
            },
            schema=BIBS_SCHEMA,
        )
