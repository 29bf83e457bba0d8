"""The HTTP contract's bodies as types: what app/core/contract.py builds and app/http/openapi.py
publishes (OpenAPI 3.1 components come from these same classes, through pydantic).

TypedDicts rather than models: responses stay plain dicts built by pure functions (no
validation cost per request), the type checker holds the builders to these shapes, and the
schema fuzz in the tests holds the running service to the published document.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from pipelines.config import SegmentSettings

Status = Literal["processing", "completed", "no_matches", "no_segments", "clip_failed", "failed"]
ExtraClipStatus = Literal["processing", "completed", "clip_failed", "failed"]
Aspect = Literal["source", "9:16", "1:1"]
Hms = Annotated[str, Field(pattern=r"^\d{2,}:\d{2}:\d{2}$", description="HH:MM:SS")]


# ---- errors -----------------------------------------------------------------------------
class ErrorData(TypedDict):
    code: Annotated[str, Field(description="Stable machine-readable error code, e.g. rate_limited.")]


class ErrorEnvelope(TypedDict):
    responseType: Literal["error"]
    message: str
    data: ErrorData


# ---- Event Details ----------------------------------------------------------------------
class EventDetails(TypedDict):
    org_id: int
    event_id: int
    name: str
    video_search: bool
    video_selfie_search: bool
    face_search: bool
    bib_search: bool
    match_threshold: float
    match_threshold_source: Literal["model_pack", "event"]
    segments: SegmentSettings
    retention_days: NotRequired[int | None]


class EventEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: EventDetails


# ---- video clipping ---------------------------------------------------------------------
class StartData(TypedDict):
    status: Status
    request_id: str


class StartEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: StartData


BestSimilarity = Annotated[
    float,
    Field(
        description=(
            "The best cosine similarity between a face of the person in it and the participant's own "
            "photos (the selfies; the closest one counts), in [-1, 1]. Query expansion (the person's own "
            "video faces as extra references) decides what matches but never raises this value. A face "
            "found only by its BIB number carries the OCR confidence instead. Absent on a clip of chosen "
            "times, which no hits were counted for."
        )
    ),
]
SegmentScore = Annotated[
    float,
    Field(
        description=(
            "Ranking evidence: the sum of the hits' match scores. A hit's score is its best_similarity, or, "
            "when query expansion found it, its similarity to one of the person's own confident video faces "
            "(a face that is itself such a reference scores 1.0), so it may exceed "
            "best_similarity x matched_frames."
        )
    ),
]
PhotoSimilarity = Annotated[
    float,
    Field(
        description=(
            "Face Search: cosine similarity between the photo's best face and the closest selfie. "
            "BIB search: the OCR confidence of the number."
        )
    ),
]


class ClipItem(TypedDict):
    """A cut clip: the contract's five fields first, then what facereel adds."""

    uuid: str
    video_url: str
    source_video_key: str
    start_time: Hms
    end_time: Hms
    poster_url: NotRequired[str]
    start_seconds: NotRequired[float]
    end_seconds: NotRequired[float]
    duration_seconds: NotRequired[float]
    matched_frames: NotRequired[int]
    best_similarity: NotRequired[BestSimilarity]
    aspect: NotRequired[Aspect]
    width: NotRequired[int]
    height: NotRequired[int]
    # smart_cut: only the partial GOPs at the edges were re-encoded, the rest copied from
    # the source; reencoded: every frame was, for the reason given (reframed, codec, ...).
    encoding: NotRequired[Literal["smart_cut", "reencoded"]]
    encoding_reason: NotRequired[str]


class ClipErrorItem(TypedDict):
    video_key: str
    error: str
    status_code: int | None


class SegmentItem(TypedDict):
    segment_id: str
    source_video_key: str
    start_seconds: float
    end_seconds: float
    matched_frames: int
    best_similarity: BestSimilarity
    score: SegmentScore
    confirmed_frames: int
    clipped: bool


class ExtraClipItem(TypedDict):
    """A clip asked for after the search: what was asked, its status, the clip once cut."""

    clip_id: str
    status: ExtraClipStatus
    segment_id: str | None
    source_video_key: str
    aspect: Aspect
    start_seconds: float
    end_seconds: float
    error: str | None
    uuid: NotRequired[str]
    video_url: NotRequired[str]
    start_time: NotRequired[Hms]
    end_time: NotRequired[Hms]
    poster_url: NotRequired[str]
    duration_seconds: NotRequired[float]
    matched_frames: NotRequired[int]
    best_similarity: NotRequired[BestSimilarity]
    width: NotRequired[int]
    height: NotRequired[int]


class RunRules(TypedDict, total=False):
    """The rules a run matched and segmented with (empty for records from before rules)."""

    match_threshold: float
    segments: SegmentSettings


class ResultData(TypedDict):
    request_id: str
    status: Status
    videos: list[ClipItem]
    error: str | None
    clip_errors: list[ClipErrorItem]
    segments: list[SegmentItem]
    clips: list[ExtraClipItem]
    rules: RunRules


class ResultEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: ResultData


class ClipStartedData(TypedDict):
    status: Literal["processing"]
    request_id: str
    clip_id: str


class ClipStartedEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: ClipStartedData


# ---- photos (Face Search, BIB search) ---------------------------------------------------
class PhotoItem(TypedDict):
    photo_key: str
    photo_url: str
    thumbnail_url: str
    similarity: PhotoSimilarity
    bbox: list[float]
    taken_at: str | None
    match_count: int


class PhotosData(TypedDict):
    request_id: NotRequired[str]
    bib: NotRequired[str]
    status: Literal["completed", "no_matches"]
    photos: list[PhotoItem]
    page: int
    page_size: int
    total_photos: int
    total_pages: int


class PhotosEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: PhotosData


# ---- consent deletion -------------------------------------------------------------------
class Removed(TypedDict):
    record: int
    selfie_embeddings: int
    negative_embeddings: int
    extra_clips: int
    files: list[str]


class DeletedData(TypedDict):
    request_id: str
    deleted: bool
    removed: Removed


class DeletedEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: DeletedData


# ---- media and index jobs ---------------------------------------------------------------
MediaIndexStatus = Literal["pending", "indexing", "indexed", "failed"]
IndexJobStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]
IndexStage = Literal["probe", "decode", "detect", "embed", "write"]


class MediaMetadata(TypedDict):
    duration_s: float | None
    fps: float | None
    width: int | None
    height: int | None
    codec: str | None
    size_bytes: int | None


class MediaItem(TypedDict):
    media_key: str
    media_type: Literal["video", "photo"]
    origin: Literal["upload", "uri", "index"]
    uri: str
    metadata: MediaMetadata
    index_status: MediaIndexStatus
    index_error: str | None
    faces: int | None


class MediaItemError(TypedDict):
    uri: str
    error: str


class MediaAdded(TypedDict):
    media: list[MediaItem]
    errors: list[MediaItemError]


class MediaAddedEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: MediaAdded


class MediaPage(TypedDict):
    media: list[MediaItem]
    page: int
    page_size: int
    total_media: int
    total_pages: int


class MediaPageEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: MediaPage


class MediaRemovedRows(TypedDict):
    faces: int
    tracks: int
    bibs: int
    media: int
    registration: int
    files: list[str]


class MediaDeleted(TypedDict):
    media_key: str
    deleted: bool
    removed: MediaRemovedRows


class MediaDeletedEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: MediaDeleted


class WebhookAttempt(TypedDict):
    at: str
    status_code: int | None
    error: str | None
    duration_ms: float


class WebhookDelivery(TypedDict):
    delivery_id: str
    event: str
    status: Literal["pending", "delivered", "failed"]
    attempts: list[WebhookAttempt]


class WebhookState(TypedDict):
    url: str
    deliveries: list[WebhookDelivery]


class IndexJobMedia(TypedDict):
    total: int
    done: int
    indexed: int
    failed: int


class IndexJobFrames(TypedDict):
    planned: int
    done: int


class IndexJobError(TypedDict):
    media_key: str
    error: str


class IndexJobData(TypedDict):
    job_id: str
    status: IndexJobStatus
    progress_percent: Annotated[float, Field(ge=0, le=100, description="Sampled frames done / planned.")]
    current_stage: IndexStage | None
    media: IndexJobMedia
    frames: IndexJobFrames
    faces: int
    media_keys: list[str]
    errors: list[IndexJobError]
    error: str | None
    cancel_requested: bool
    webhook: WebhookState | None
    created_at: str | None
    updated_at: str | None


class IndexJobEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: IndexJobData


# ---- bring-your-own storage -------------------------------------------------------------
class StorageLocationItem(TypedDict):
    location_id: str
    name: str
    endpoint_url: str | None
    bucket: str
    prefix: str
    region: str | None
    credentials: Literal["keys", "profile", "environment"]
    public_base_url: str | None
    url_ttl_s: int
    root: str


class StorageLocationEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: StorageLocationItem


class StorageLocations(TypedDict):
    locations: list[StorageLocationItem]


class StorageLocationsEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: StorageLocations


class EventStorage(TypedDict):
    org_id: int
    event_id: int
    storage: StorageLocationItem | None


class EventStorageEnvelope(TypedDict):
    responseType: Literal["success"]
    message: str
    data: EventStorage


# ---- request bodies ---------------------------------------------------------------------
Uuid = Annotated[str, Field(json_schema_extra={"format": "uuid"})]
Binary = Annotated[bytes, Field(json_schema_extra={"format": "binary"})]


class SelfieForm(TypedDict, total=False):
    """multipart/form-data of search-by-selfie: selfie files, or a request_id to rerun."""

    file: list[Binary]
    request_id: Uuid
    webhook_url: Annotated[str, Field(description="http(s) URL told of the final result (signed).")]


class BibForm(TypedDict, total=False):
    bib: Annotated[str, Field(description="The race number, digits only.")]
    file: list[Binary]
    request_id: Uuid
    webhook_url: Annotated[str, Field(description="http(s) URL told of the final result (signed).")]


class FaceSearchForm(TypedDict, total=False):
    file: list[Binary]
    request_id: Uuid
    page: Annotated[int, Field(ge=1)]
    page_size: Annotated[int, Field(ge=1)]


class FeedbackBody(TypedDict):
    not_me: Annotated[list[str], Field(min_length=1, description="segment_ids that show someone else")]


@with_config(ConfigDict(extra="forbid"))
class ClipBody(TypedDict, total=False):
    """Either a segment_id of the last run, or a source_video_key with start and end."""

    segment_id: str
    source_video_key: str
    start_seconds: float
    end_seconds: float
    aspect: Aspect
    max_duration_s: Annotated[float, Field(gt=0)]


class MediaUploadForm(TypedDict):
    """multipart/form-data: one or more media files, each a part named ``file``."""

    file: list[Binary]


@with_config(ConfigDict(extra="forbid"))
class MediaUrisBody(TypedDict):
    """Media already in storage: s3:// URIs or local paths under the allowed roots (a folder
    or prefix is walked for known photo and video extensions)."""

    uris: Annotated[list[str], Field(min_length=1)]


@with_config(ConfigDict(extra="forbid"))
class IndexJobBody(TypedDict, total=False):
    media_keys: Annotated[list[str], Field(description="Default: every registered source not yet indexed.")]
    webhook_url: Annotated[str, Field(description="http(s) URL told of the final state (signed).")]


@with_config(ConfigDict(extra="forbid"))
class StorageLocationBody(TypedDict, total=False):
    """An S3-compatible location. Keys (both) or a profile, or neither (the servers' environment)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9 ._-]{1,100}$")]
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: str
    endpoint_url: Annotated[str, Field(description="http(s) URL of the S3 API; omit for AWS.")]
    region: str
    access_key_id: str
    secret_access_key: Annotated[str, Field(description="Stored and used, never returned.")]
    profile: str
    public_base_url: Annotated[str, Field(description="Clips served from here instead of presigned URLs.")]
    url_ttl_s: Annotated[int, Field(ge=60, le=604800, description="Lifetime of presigned clip URLs.")]


@with_config(ConfigDict(extra="forbid"))
class EventStorageBody(TypedDict):
    location_id: str | None


class Health(TypedDict):
    status: Literal["ok"]
