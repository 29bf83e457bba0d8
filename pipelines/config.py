"""All configuration in one typed place.

Values come from, highest priority first: environment variables
(``FACEREEL_<SECTION>__<FIELD>``, e.g. ``FACEREEL_DECODE__SAMPLE_FPS=4``), a YAML
file (``--config``, ``$FACEREEL_CONFIG`` or ``./facereel.yaml``), then the defaults
below, which work on a laptop with no GPU and no network. The online side adds its
``api`` section in app/config.py (``AppSettings``); unknown sections are ignored here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "facereel")


class ModelSettings(BaseModel):
    pack: str = "yunet-sface"
    # "auto": CUDA when onnxruntime-gpu sees a device, else CPU.
    providers: Literal["auto", "cpu", "cuda"] = "auto"
    # Threads per onnxruntime session; Ray actors each get their own session, so keep
    # this at the actor's CPU share to avoid oversubscription.
    intra_op_threads: int = Field(default=1, ge=0)
    # Longest side of the detector input; faces smaller than ~10 px at this scale are lost.
    det_size: int = Field(default=640, ge=160)
    # How video frames are searched for faces (pipelines/detect.py): "scaled" (the frame at
    # det_size), "scaled+source" (plus a pass at the frame's own resolution: 24 px faces in
    # 1080p wide shots go from 10 % to 86 % matched, for 4.7x detection time at 720p and
    # 8.3x at 1080p), "source", or "tiles". The dev footage's labelled people gained 2 points
    # of hits from it (bench/small_faces.py), so the default stays "scaled".
    detect_mode: Literal["scaled", "source", "tiles", "scaled+source"] = "scaled"
    det_score_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    det_nms_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    # Faces whose shorter bbox side (source pixels) is below this are not indexed:
    # their embeddings are too noisy to match.
    min_face_px: int = Field(default=20, ge=1)
    # Overrides the pack's own cosine threshold when set.
    match_threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    # Where converted ONNX files are cached (created on first use).
    cache_dir: str = Field(default_factory=_default_cache_dir)
    # InsightFace packs are read from <insightface_root>/<pack>/ and never downloaded.
    insightface_root: str = Field(default_factory=lambda: str(Path.home() / ".insightface" / "models"))


class SelfieSettings(BaseModel):
    """Finding the face in a query photo (pipelines/selfie.py), measured on 115 real photos
    turned four ways and 824 tight crops of 103 photos."""

    # Border (fraction of the image on every side) for a face that fills the photo: 50 %
    # mid-gray found 824 of 824 tight crops, none 223, 25 % missed up to 92.
    pad_frac: float = Field(default=0.5, ge=0.0, le=2.0)
    # Overlap of the tiles tried on large photos with small faces.
    tile_overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    # An upright main face scoring this much ends the search: a clear selfie costs one call.
    confident_score: float = Field(default=0.92, ge=0.0, le=1.0)
    # A turned photo's orientation wins only by this score margin (YuNet "finds" ghost faces
    # on most upside-down photos, so finding something does not settle the orientation).
    rotation_margin: float = Field(default=0.02, ge=0.0, le=1.0)
    # Within an orientation, a later view replaces the first usable one only by this margin.
    view_margin: float = Field(default=0.1, ge=0.0, le=1.0)
    try_rotations: bool = True


class DecodeSettings(BaseModel):
    sample_fps: float = Field(default=2.0, gt=0.0, le=60.0)
    # Long videos are split into chunks of this many seconds, decoded in parallel.
    chunk_s: float = Field(default=60.0, gt=1.0)
    # PyAV codec threading ("AUTO" = frame + slice threads).
    thread_type: Literal["AUTO", "FRAME", "SLICE", "NONE"] = "AUTO"


class PoolSettings(BaseModel):
    """One Ray Data actor pool. ``min_size``/``max_size`` of 0 mean: size from the cluster."""

    num_cpus: float = Field(default=0.5, ge=0.0)
    num_gpus: float = Field(default=0.0, ge=0.0)
    min_size: int = Field(default=1, ge=0)
    max_size: int = Field(default=0, ge=0)
    batch_size: int = Field(default=8, ge=1)


class IndexSettings(BaseModel):
    decode_num_cpus: float = Field(default=1.0, gt=0.0)
    detect: PoolSettings = PoolSettings(batch_size=4)
    embed: PoolSettings = PoolSettings(batch_size=32)
    # Target Ray Data block size (MiB): small, so frames stream through the stages.
    block_mb: int = Field(default=16, ge=1)
    # Ray Data's own progress output (the CLI shows its own bar).
    ray_progress: bool = False
    # Rows buffered by the driver before one LanceDB append.
    write_batch_rows: int = Field(default=2048, ge=1)
    # No batch out of the pipeline for this long is an error naming what the cluster lacks,
    # not a silent wait (a stage no node can schedule, actors that never start). Model
    # loading and a chunk's decode take seconds; a cold GPU node may take minutes to join.
    stall_timeout_s: float = Field(default=300.0, gt=0.0)
    # Photo files by extension; everything else is treated as video.
    photo_extensions: list[str] = [".jpg", ".jpeg", ".png", ".webp", ".bmp"]
    video_extensions: list[str] = [".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mts", ".ts"]


class StoreSettings(BaseModel):
    # Local path or s3://bucket/prefix; empty means <data_dir>/lancedb.
    uri: str = ""
    # Object-store options in LanceDB's names, used for the store, the control tables,
    # s3:// media and output roots alike (for fsspec the s3 ones are translated, see
    # pipelines.media.fsspec_options), e.g. for an S3-compatible server:
    # {aws_endpoint: "http://host:9000", allow_http: "true", aws_access_key_id: ...,
    #  aws_secret_access_key: ..., aws_region: ...}. Left empty, both LanceDB and s3fs
    # read AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and
    # AWS_ENDPOINT_URL from the environment; LanceDB also needs AWS_ALLOW_HTTP=true for
    # an http:// endpoint. (Ray workers must see the same environment.)
    storage_options: dict[str, str] = {}
    # The faces table gets an IVF_PQ index once it has this many rows, and an event with at
    # least this many faces is searched through it (with a refine step); smaller events are
    # searched exactly, their own rows by brute force behind the event_id scalar index,
    # however large the table (bench/search.py).
    ann_min_rows: int = Field(default=300_000, ge=1)
    ann_nprobes: int = Field(default=20, ge=1)
    ann_refine_factor: int = Field(default=10, ge=1)
    # How stale a reader's view of the tables may be (seconds); 0 = always the latest.
    read_consistency_s: float = Field(default=0.0, ge=0.0)
    # Memory (MiB) a long-lived searcher (each SearchMatcher replica) may hold searched
    # events' faces in, for exact search without reading the vectors again (a 100k-face
    # event at 512 dims is ~210 MiB); least recently searched out first, an event over it
    # alone is searched from the table. 0 turns it off. pipelines/event_faces.py.
    search_cache_mb: float = Field(default=1024.0, ge=0.0)


class TrackSettings(BaseModel):
    """How faces of adjacent samples link into tracks (one video at a time)."""

    # A track closes when no face has linked to it for longer than this: 1.5 s is 3 sample
    # periods at 2 fps, so up to 2 missed detections (occlusion, blink of blur) are bridged.
    max_gap_s: float = Field(default=1.5, gt=0.0)
    # Overlap of the face box with the track's motion-predicted box needed for an IoU link.
    min_iou: float = Field(default=0.2, ge=0.0, le=1.0)
    # Cosine to the track (best of its last face and its mean) needed alongside the overlap.
    # Below the 0.40 match threshold: linking is 1:1 between adjacent samples and the box must
    # overlap too, so a profile that resembles its neighbour only moderately still links.
    min_link_similarity: float = Field(default=0.3, ge=-1.0, le=1.0)
    # Without box overlap (fast motion, swapped places, missed samples), a link needs this
    # cosine and a centre within ``max_center_jump`` face sizes (sqrt of box area).
    strong_link_similarity: float = Field(default=0.5, ge=-1.0, le=1.0)
    max_center_jump: float = Field(default=3.0, gt=0.0)
    # Link score = similarity + iou_weight * IoU; the greedy 1:1 assignment takes the best first.
    iou_weight: float = Field(default=1.0, ge=0.0)
    # Hellinger distance between frame signatures above which a sample starts a new shot.
    # Same-shot changes (small pan, +30 brightness) measure <= 0.25, unrelated images >= 0.8.
    cut_threshold: float = Field(default=0.4, gt=0.0, le=1.0)
    # Face quality (size x sharpness x detector score) saturates at these: SFace aligns to
    # 112x112, so ~80 px faces keep the detail it uses; variance of the Laplacian of the
    # aligned crop is several hundred when sharp, ~40 blurred by 1 px, 100 counts as sharp.
    full_quality_face_px: float = Field(default=80.0, gt=0.0)
    full_quality_sharpness: float = Field(default=100.0, gt=0.0)


class MatchSettings(BaseModel):
    """How a person is found among an event's faces (per-event threshold overrides apply)."""

    # "tracks": a track whose best faces pass the threshold lends the match to all of its
    # faces (profiles, small faces); "faces": every face on its own, as a baseline.
    mode: Literal["tracks", "faces"] = "tracks"
    # Faces at least this similar to a reference are fetched as candidates; their tracks are
    # then scored whole. Well below the threshold, above most different-person pairs.
    candidate_floor: float = Field(default=0.25, ge=-1.0, le=1.0)
    # Track evidence = quality-weighted mean of the best k face similarities: more than one
    # face so a single lucky impostor frame does not carry a track, few enough that a mostly
    # profile track with a short frontal moment still matches.
    best_k: int = Field(default=3, ge=1)
    # Query expansion: faces matched this far above the threshold become extra references
    # (at most ``expansion_refs``, best first) for a second pass.
    expansion: bool = True
    expansion_margin: float = Field(default=0.10, ge=0.0, le=1.0)
    expansion_refs: int = Field(default=8, ge=0)
    # A face found only through an expanded reference must still be this similar to one of
    # the person's own photos: stops the expansion drifting to someone else.
    expansion_floor: float = Field(default=0.25, ge=-1.0, le=1.0)
    # Other people of the event as "not me" references: clear tracks (best face quality at
    # least ``competitor_min_quality``, two faces or more) that are clearly someone else (no
    # more than ``competitor_max_similarity`` to the photos). A track that one of them
    # explains better than the photos do is not the person: profiles resemble many people.
    competitors: bool = True
    competitor_min_quality: float = Field(default=0.5, ge=0.0, le=1.0)
    competitor_max_similarity: float = Field(default=0.25, ge=-1.0, le=1.0)


class SegmentSettings(BaseModel):
    """How matched timestamps of one video become one clip window (per-event overridable)."""

    # Hits further apart than this start a new segment (a few sampling periods).
    max_gap_s: float = Field(default=2.0, gt=0.0)
    # Segments with fewer hits are dropped as noise.
    min_hits: int = Field(default=2, ge=1)
    padding_s: float = Field(default=1.0, ge=0.0)
    min_clip_s: float = Field(default=3.0, gt=0.0)
    max_clip_s: float = Field(default=20.0, gt=0.0)
    # A reported segment reaches this far past its first and last hit: half the sampling
    # period at the default 2 fps, since a sample stands for the time around it.
    edge_s: float = Field(default=0.25, ge=0.0)


class BibSettings(BaseModel):
    """Race numbers (BIBs) read by OCR at index time, for events with BIB search on
    (pipelines/bibs.py). Events without it pay nothing: the stage is not built."""

    # Video frames read per second (photos are always read). OCR is the costly part: on one
    # core ~0.5 s for a 640x360 frame, 1.2 s at 1280x720, 2.1 s at 1920x1080.
    sample_fps: float = Field(default=1.0, gt=0.0, le=30.0)
    # A number is a whole text line of only digits, this many of them. Set both to the
    # event's bib length when it is fixed: an arm hiding a last digit reads as a shorter
    # number ("23" for 234), which only the length rule can refuse.
    min_digits: int = Field(default=2, ge=1, le=12)
    max_digits: int = Field(default=6, ge=1, le=12)
    # The recogniser's confidence for the number: its least confident character's.
    min_confidence: float = Field(default=0.9, ge=0.0, le=1.0)
    # The text detector sees a frame scaled down so its longer side is at most det_max_side,
    # and up so its shorter side is at least det_min_side; numbers are then read again from
    # the full-resolution frame, so these only decide what text is found (measured with
    # tests/test_bibs.py's generated photos, one CPU thread). rapidocr's own 736 upscales
    # 640x360 frames 2x: 0.91 s a frame instead of 0.50, and on 640 px wide photos 25 of 30
    # readable bibs against 26 at their own size. det_max_side 2000 (rapidocr's) keeps 1080p
    # at its own size: 59 of 60 readable bibs on 1920 px photos at 2.1 s a frame; 1280 reads
    # 56 in 1.1 s.
    det_min_side: int = Field(default=360, ge=32)
    det_max_side: int = Field(default=2000, ge=64)
    # The OCR actor pool (CPU share per actor, batch of frames per call).
    pool: PoolSettings = PoolSettings(num_cpus=0.5, batch_size=4)


class ClipSettings(BaseModel):
    """ffmpeg encoding of clips: H.264/AAC MP4 with +faststart, plus a JPEG poster."""

    video_codec: str = "libx264"
    preset: str = "veryfast"
    crf: int = Field(default=23, ge=0, le=51)
    audio_codec: str = "aac"
    audio_bitrate: str = "128k"
    poster_quality: int = Field(default=3, ge=1, le=31)  # ffmpeg -q:v for the JPEG
    timeout_s: float = Field(default=300.0, gt=0.0)
    # Ray CPUs reserved per clipping task (ffmpeg itself is multi-threaded).
    num_cpus: float = Field(default=0.5, gt=0.0)
    # OS niceness of ffmpeg: Ray's CPU counts are not isolation, and on a node that also
    # serves HTTP a full-speed encoder starves the proxy and ingress (a 200-client load test
    # on 2 cores: shed answers took 15 s). Cutting yields; serving stays responsive. 0 = off.
    nice: int = Field(default=10, ge=0, le=19)
    # Re-encode only the partial GOPs at a clip's edges and stream-copy the whole GOPs in
    # between (pipelines/smart_cut.py), when the source is H.264 4:2:0 and no reframing is
    # asked; a clip item says which way it was made. Off: every frame is re-encoded.
    smart_cut: bool = True
    # Below this much copyable video the three-part cut gains nothing over one re-encode.
    smart_cut_min_copy_s: float = Field(default=1.0, ge=0.0)


class RaySettings(BaseModel):
    # Empty: start a private local cluster; "auto" joins a running one, ray://... a remote one.
    address: str = ""
    num_cpus: int | None = None
    # Local paths every node of a multi-node cluster mounts (NFS, a CSI volume): roots under
    # them are accepted there, after a probe file written on each node is read on another.
    # Any other local root is refused on more than one node; s3:// roots are always probed.
    shared_paths: list[str] = []
    # Workers' stdout/stderr (and Ray's "(raylet)" lines) printed by the driver. The CLI
    # turns it off unless -v: what a user sees is facereel's progress, not Ray's.
    log_to_driver: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEREEL_", env_nested_delimiter="__", extra="ignore")

    data_dir: str = ".facereel"
    models: ModelSettings = ModelSettings()
    selfie: SelfieSettings = SelfieSettings()
    decode: DecodeSettings = DecodeSettings()
    index: IndexSettings = IndexSettings()
    store: StoreSettings = StoreSettings()
    tracks: TrackSettings = TrackSettings()
    match: MatchSettings = MatchSettings()
    segments: SegmentSettings = SegmentSettings()
    bibs: BibSettings = BibSettings()
    clip: ClipSettings = ClipSettings()
    ray: RaySettings = RaySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML file (passed in as init kwargs).
        return env_settings, init_settings

    @property
    def store_uri(self) -> str:
        return self.store.uri or str(Path(self.data_dir) / "lancedb")


S = TypeVar("S", bound=Settings)


def load_settings(path: str | os.PathLike[str] | None = None, settings_cls: type[S] = Settings, **overrides: Any) -> S:
    """Settings from ``path`` (or $FACEREEL_CONFIG, or ./facereel.yaml when present).

    Call this once per process tree (CLI, Serve application builder) and pass the object
    on: it pickles as it is, so Ray workers keep the driver's values even when their own
    ``FACEREEL_*`` environment differs.
    """
    chosen = path or os.environ.get("FACEREEL_CONFIG")
    if chosen is None and Path("facereel.yaml").is_file():
        chosen = "facereel.yaml"
    data: dict[str, Any] = {}
    if chosen is not None:
        with open(chosen, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{chosen}: expected a mapping at the top level")
    data.update(overrides)
    return settings_cls(**data)
