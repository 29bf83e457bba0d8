"""What an index run reports: its result, its progress as it goes, and a cancelled run.

The pipeline in pipelines/index.py fills these; the CLI prints them and an index job
(app/jobs/index_job.py) writes them to its record."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.decode import MediaProbe
from pipelines.media import MediaSource


@dataclass
class IndexReport:
    org_id: int
    event_id: int
    found: int = 0
    skipped: int = 0
    indexed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    faces: int = 0  # rows stored by this run
    frames: int = 0
    # The event as stored after the run, media skipped as already indexed included.
    event_faces: int | None = None
    event_media: int | None = None
    seconds: float = 0.0
    tracking_s: float = 0.0  # the writer's share of tracking: linking faces into tracks
    bibs: int = 0  # race numbers read (events with BIB search)


# The stages an index run reports, in order. Decode, detect and embed run as one stream, so
# ``decode`` lasts until the detect actors have finished a frame (frames decoding and models
# loading), ``detect`` until the first embedded batch reaches the writer, ``embed`` while
# results stream into the index, and ``write`` is the last flush, compaction and index build.
STAGES = ("probe", "decode", "detect", "embed", "write")


@dataclass
class IndexProgress:
    """Where an index run is: its stage and counts.

    ``frames_done`` counts sampled frames as they are processed, so it moves within a chunk,
    even for one short video: a frame counts half once the detect actors finished it
    (``frames_detected``, read from their tally while the stream catches up) and whole once
    its rows reached the writer (``frames_out``; when a chunk ends, the frames it planned
    but did not yield, such as decode errors, count too), so it reaches ``frames_planned``
    exactly."""

    stage: str = "probe"
    media_total: int = 0
    media_done: int = 0  # indexed or failed
    frames_planned: int = 0
    frames_done: int = 0
    frames_detected: int = 0
    frames_out: int = 0
    faces: int = 0
    indexed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def count(self) -> None:
        """``frames_done`` from the two counts (never more than planned, never backwards)."""
        detected = min(max(self.frames_detected, self.frames_out), self.frames_planned)
        self.frames_done = max(self.frames_done, (detected + self.frames_out) // 2)

    @property
    def percent(self) -> float:
        if self.frames_planned:
            return round(100.0 * min(1.0, self.frames_done / self.frames_planned), 1)
        return 100.0 if self.media_total and self.media_done >= self.media_total else 0.0


class IndexCancelled(Exception):
    """The run was asked to stop; media it had not finished were left unindexed."""

    def __init__(self, report: IndexReport) -> None:
        super().__init__("indexing cancelled")
        self.report = report


@dataclass
class MediaProgress:
    source: MediaSource
    probe: MediaProbe | None  # None when probing failed
    chunks_total: int
    chunks_done: int = 0
    frames: int = 0
    faces: int = 0  # stored
    seen: int = 0  # out of the pipeline so far (progress)
    errors: list[str] = field(default_factory=list)

    @property
    def live_faces(self) -> int:
        return self.faces if self.chunks_done == self.chunks_total else self.seen
