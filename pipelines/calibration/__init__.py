"""Threshold calibration for the notebooks (notebooks/threshold_tuning.ipynb, explore_event.ipynb).

The notebooks stay thin: everything they compute lives here. Three layers:

- **Edges** (store, models, files): ``load_set``, ``index_set`` / ``open_event`` (an
  ``EventIndex``: media, bounds, faces, tracks), ``read_pairs``, ``embed_photos``,
  ``reference_set``, ``match_all`` (the product's own ``find_person``, once per threshold
  and identity, over a ``CachedStore``), ``read_frames`` / ``video_crops``, ``dropped_faces``,
  ``quiet_ray_logs`` / ``stop_ray``.
- **Pure functions** (numbers in, numbers out; unit-tested in tests/test_calibration.py):
  TAR/FAR and thresholds (``far``, ``tar``, ``threshold_at_far``, ``point_at``,
  ``operating_point``, ``far_upper_bound``, ``roc``), genuine/impostor scores
  (``pair_scores``, ``label_pairs``, ``video_face_scores``, ``score_jitter``), the
  segment-rule sweep (``threshold_grid``, ``rule_grid``, ``resegment``, ``sweep``,
  ``spill_seconds``) and the recommendation rule (``recommend`` -> ``Recommendation``).
- **Figures** (matplotlib, imported lazily: it is only in the ``notebooks`` extra):
  ``figure``, ``save_figure`` (FIGURE_SIZE at FIGURE_DPI), ``plot_histograms``,
  ``plot_roc``, ``plot_rule_heatmap``, ``plot_timelines``, ``contact_sheet``.

Conventions: similarities are cosines; the product accepts a face when its score is ``>=``
the threshold, so FAR(t) is the share of impostor scores ``>= t`` and TAR(t) the share of
genuine scores ``>= t``. Writing a recommendation to an event is the online side's job
(``app.tuning.apply_recommendation``): pipelines never import app.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipelines.config import MatchSettings, SegmentSettings, Settings
from pipelines.eval_runner import DEFAULT_EXCLUDE, EVAL_EVENT, EVAL_ORG, reference_photos
from pipelines.evaluate import (
    Interval,
    LabelledSet,
    Segment,
    inside,
    match_video,
    overall,
    score_all,
    subtract,
    total,
)
from pipelines.match import References, find_person, timed_hits
from pipelines.models import ModelPack, load_pack
from pipelines.segments import RankedSegment, TimedHit, ranked_segments

if TYPE_CHECKING:  # annotations only: pipelines.index imports Ray
    from pipelines.index import IndexReport
    from pipelines.store import FaceStore

FAR_TARGETS = (1e-2, 1e-3, 1e-4)
# Label accuracy of video_truth.csv (../shared/data/faces/README.md): ±0.1 s at shot cuts,
# ±0.3 s where someone leaves the frame by camera motion.
LABEL_TOLERANCE_S = 0.3
KEY_DIGITS = 6  # thresholds are compared rounded to this many decimals (grid keys)


# ================================================================================ labelled sets


def load_set(root: str | os.PathLike[str]) -> LabelledSet:
    """A labelled folder in the shared layout (labels.csv, video_truth.csv, ...)."""
    return LabelledSet.load(Path(root))


@dataclass(frozen=True)
class Pair:
    """Two photos (paths) and whether they show the same person."""

    a: Path
    b: Path
    genuine: bool


def find_pair_images(root: Path, names: Iterable[str]) -> Path:
    """The folder under ``root`` holding every file named in a pair list.

    deepface's pair lists name bare files (img1.jpg); in the shared layout they sit under
    images/serengil_deepface/tests/unit/dataset/, but any folder holding them all will do.
    """
    names = sorted(set(names))
    if not names:
        raise ValueError("the pair list names no files")
    preferred = root / "images" / "serengil_deepface" / "tests" / "unit" / "dataset"
    if all((preferred / n).is_file() for n in names):
        return preferred
    for folder in sorted({p.parent for p in root.rglob(names[0]) if p.is_file()}):
        if all((folder / n).is_file() for n in names):
            return folder
    raise FileNotFoundError(f"no folder under {root} holds all {len(names)} files of the pair list")


def read_pairs(csv_path: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None) -> list[Pair]:
    """Same/different-person pairs from a CSV with file_x, file_y, Decision (Yes/No).

    ``image_dir`` is where the files are; by default the folder under the CSV's folder that
    holds them all (``find_pair_images``). Rows whose decision is neither Yes nor No fail.
    """
    import csv

    csv_path = Path(csv_path)
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower(): f for f in reader.fieldnames or []}
        missing = {"file_x", "file_y", "decision"} - set(fields)
        if missing:
            raise ValueError(f"{csv_path}: missing columns {sorted(missing)}")
        rows = []
        for row in reader:
            x, y = (row[fields["file_x"]] or "").strip(), (row[fields["file_y"]] or "").strip()
            decision = (row[fields["decision"]] or "").strip().lower()
            if not (x or y or decision):
                continue
            if decision not in ("yes", "no"):
                raise ValueError(f"{csv_path}:{reader.line_num}: Decision must be Yes or No, not {decision!r}")
            rows.append((x, y, decision == "yes"))
    folder = (
        Path(image_dir)
        if image_dir is not None
        else find_pair_images(csv_path.parent, [n for r in rows for n in r[:2]])
    )
    return [Pair(folder / x, folder / y, same) for x, y, same in rows]


def label_pairs(labelled: LabelledSet, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[Pair]:
    """Every pair of single-person photos in labels.csv: same identity genuine, different
    identities impostor (for sets without a pair list). Pure."""
    import fnmatch
    from collections import Counter

    people_in = Counter(p for paths in labelled.photos.values() for p in paths)
    photos = sorted(
        (rel, who)
        for who, paths in labelled.photos.items()
        for rel in paths
        if people_in[rel] == 1 and not any(fnmatch.fnmatch(rel, pattern) for pattern in exclude)
    )
    return [
        Pair(labelled.root / a, labelled.root / b, wa == wb) for (a, wa), (b, wb) in itertools.combinations(photos, 2)
    ]


# ================================================================================ scores and rates


@dataclass(frozen=True)
class ScoreSet:
    """Similarity scores of same-person (genuine) and different-person (impostor) comparisons."""

    genuine: np.ndarray
    impostor: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "genuine", np.asarray(self.genuine, np.float64).reshape(-1))
        object.__setattr__(self, "impostor", np.asarray(self.impostor, np.float64).reshape(-1))

    @property
    def n_genuine(self) -> int:
        return int(self.genuine.size)

    @property
    def n_impostor(self) -> int:
        return int(self.impostor.size)


def far(impostor: np.ndarray, threshold: float) -> float:
    """False accept rate: share of impostor scores at or above ``threshold`` (NaN when none)."""
    impostor = np.asarray(impostor, np.float64)
    return float(np.mean(impostor >= threshold)) if impostor.size else math.nan


def tar(genuine: np.ndarray, threshold: float) -> float:
    """True accept rate: share of genuine scores at or above ``threshold`` (NaN when none)."""
    genuine = np.asarray(genuine, np.float64)
    return float(np.mean(genuine >= threshold)) if genuine.size else math.nan


def threshold_at_far(impostor: np.ndarray, target: float) -> float:
    """The lowest threshold whose empirical FAR is at most ``target``.

    With n impostor scores, floor(target * n) of them may pass; the threshold is the smallest
    float above the next-highest impostor score (ties all pass or all fail together). When
    target * n < 1 that means "above the strongest impostor": the sample cannot tell FAR
    ``target`` from any smaller rate (see ``far_upper_bound``). -inf when every score may pass.
    """
    scores = np.sort(np.asarray(impostor, np.float64))[::-1]
    if not scores.size:
        raise ValueError("no impostor scores: FAR is undefined")
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"FAR target must be in [0, 1], not {target}")
    allowed = math.floor(target * scores.size + 1e-9)
    if allowed >= scores.size:
        return -math.inf
    return float(np.nextafter(scores[allowed], math.inf))


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def _binom_cdf(k: int, n: int, p: float) -> float:
    return min(1.0, sum(math.exp(_log_binom_pmf(i, n, p)) for i in range(k + 1)))


def far_upper_bound(false_accepts: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on the true FAR after ``false_accepts`` of ``n``.

    With 0 of n the bound is 1 - (1 - confidence)^(1/n), about 3/n at 95 % (the "rule of
    three"): 262 impostor pairs without a false accept only show FAR < 1.1e-2, and showing
    FAR < 1e-3 needs about 3,000 clean impostor comparisons.
    """
    if n <= 0:
        return 1.0
    if not 0 <= false_accepts <= n:
        raise ValueError(f"false_accepts must be in [0, {n}], not {false_accepts}")
    if false_accepts == n:
        return 1.0
    alpha = 1.0 - confidence
    if false_accepts == 0:
        return 1.0 - alpha ** (1.0 / n)
    lo, hi = false_accepts / n, 1.0
    for _ in range(100):  # P(X <= k | p) falls with p: bisect for alpha
        mid = (lo + hi) / 2
        if _binom_cdf(false_accepts, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class OperatingPoint:
    """TAR and FAR at one threshold, with the counts behind them.

    ``far_target`` is set when the threshold was chosen for a FAR (``operating_point``).
    ``resolvable`` says whether the sample can express that FAR at all (target x impostors
    >= 1); when it cannot, the threshold only sits above the strongest impostor.
    ``far_upper_95`` bounds the true FAR from the observed false accepts.
    """

    threshold: float
    tar: float
    far: float
    true_accepts: int
    n_genuine: int
    false_accepts: int
    n_impostor: int
    far_upper_95: float
    far_target: float | None = None
    resolvable: bool = True

    def describe(self) -> str:
        target = "" if self.far_target is None else f"FAR target {self.far_target:.0e}: "
        note = "" if self.resolvable else f" (not resolvable with {self.n_impostor} impostors)"
        return (
            f"{target}threshold {self.threshold:.4f}, TAR {self.tar:.3f} ({self.true_accepts}/{self.n_genuine}), "
            f"FAR {self.far:.2e} ({self.false_accepts}/{self.n_impostor}, 95 % upper bound {self.far_upper_95:.1e})"
            f"{note}"
        )


def point_at(scores: ScoreSet, threshold: float, far_target: float | None = None) -> OperatingPoint:
    """The operating point of ``scores`` at ``threshold``."""
    true_accepts = int(np.sum(scores.genuine >= threshold))
    false_accepts = int(np.sum(scores.impostor >= threshold))
    return OperatingPoint(
        threshold=float(threshold),
        tar=tar(scores.genuine, threshold),
        far=far(scores.impostor, threshold),
        true_accepts=true_accepts,
        n_genuine=scores.n_genuine,
        false_accepts=false_accepts,
        n_impostor=scores.n_impostor,
        far_upper_95=far_upper_bound(false_accepts, scores.n_impostor),
        far_target=far_target,
        resolvable=far_target is None or far_target * scores.n_impostor >= 1.0 - 1e-9,
    )


def operating_point(scores: ScoreSet, far_target: float) -> OperatingPoint:
    """TAR at the lowest threshold whose empirical FAR is at most ``far_target``."""
    return point_at(scores, threshold_at_far(scores.impostor, far_target), far_target)


def operating_points(scores: ScoreSet, targets: Sequence[float] = FAR_TARGETS) -> list[OperatingPoint]:
    return [operating_point(scores, t) for t in targets]


def roc(scores: ScoreSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FAR, TAR) at every distinct score, highest threshold first."""
    thresholds = np.unique(np.concatenate([scores.genuine, scores.impostor]))[::-1]
    imp, gen = np.sort(scores.impostor), np.sort(scores.genuine)
    far_ = (imp.size - np.searchsorted(imp, thresholds, side="left")) / max(imp.size, 1)
    tar_ = (gen.size - np.searchsorted(gen, thresholds, side="left")) / max(gen.size, 1)
    return thresholds, far_, tar_


# ================================================================================ photos


@dataclass(frozen=True)
class PhotoEmbedding:
    path: Path
    vector: np.ndarray  # (dim,) unit norm
    bbox: tuple[float, float, float, float]  # the embedded face, photo pixels


def read_photo(path: Path) -> np.ndarray:
    """A photo as BGR uint8: the selfie decoder (JPEG/PNG/MPO, as the API accepts), else any
    format Pillow reads (deepface's set holds a WEBP)."""
    from pipelines.decode import load_photo
    from pipelines.selfie import decode_image_bytes

    try:
        return decode_image_bytes(Path(path).read_bytes())
    except ValueError:
        return load_photo(str(path))


def embed_photos(
    pack: ModelPack, paths: Iterable[Path], settings: Settings
) -> tuple[dict[Path, PhotoEmbedding], dict[Path, str]]:
    """The main face of each photo, found and embedded as the API does a selfie.

    Returns (embeddings by path, reason by path for photos without a usable face).
    """
    from pipelines.selfie import embed_selfie

    done: dict[Path, PhotoEmbedding] = {}
    failed: dict[Path, str] = {}
    for path in dict.fromkeys(Path(p) for p in paths):
        try:
            found = embed_selfie(
                pack,
                read_photo(path),
                settings.models.det_score_threshold,
                settings.models.min_face_px,
                settings.selfie,
            )
        except (ValueError, OSError) as exc:  # NoFaceFound is a ValueError
            failed[path] = str(exc)
            continue
        done[path] = PhotoEmbedding(path, np.asarray(found.vector, np.float32), found.bbox)
    return done, failed


def pair_scores(pairs: Sequence[Pair], photos: Mapping[Path, PhotoEmbedding]) -> tuple[ScoreSet, list[Pair]]:
    """Cosine of each pair whose two photos have an embedding; (scores, pairs skipped)."""
    genuine, impostor, skipped = [], [], []
    for pair in pairs:
        a, b = photos.get(pair.a), photos.get(pair.b)
        if a is None or b is None:
            skipped.append(pair)
            continue
        (genuine if pair.genuine else impostor).append(float(np.dot(a.vector, b.vector)))
    return ScoreSet(np.asarray(genuine), np.asarray(impostor)), skipped


def scored_pairs(pairs: Sequence[Pair], photos: Mapping[Path, PhotoEmbedding]) -> list[tuple[Pair, float]]:
    """(pair, cosine) for every pair with both embeddings, in input order."""
    return [
        (p, float(np.dot(photos[p.a].vector, photos[p.b].vector))) for p in pairs if p.a in photos and p.b in photos
    ]


def _image_format(path: Path) -> str | None:
    """The file's image format by its header (Pillow's name), None when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.format
    except (OSError, ValueError):
        return None


@dataclass
class ReferenceSet:
    """Reference photos per identity, chosen like ``facereel eval`` (single-person photos,
    crops cut from the evaluated videos excluded, up to ``max_photos``)."""

    vectors: dict[str, np.ndarray]  # identity -> (P, dim)
    photos: dict[str, list[PhotoEmbedding]]
    failed: dict[str, list[str]]  # identity -> "path: reason"


def reference_set(
    labelled: LabelledSet,
    pack: ModelPack,
    settings: Settings,
    max_photos: int = 3,
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
    cache: Mapping[Path, PhotoEmbedding] | None = None,
) -> ReferenceSet:
    """Embeds each identity's reference photos (``cache``: embeddings already made).

    Uses the API's selfie decoder, so a format the API refuses (WEBP) is no reference here
    either, as in ``facereel eval``.
    """
    from pipelines.selfie import ACCEPTED_FORMATS, decode_image_bytes, embed_selfie

    cache = cache or {}
    out = ReferenceSet({}, {}, {})
    for identity in sorted(labelled.photos):
        for rel in reference_photos(labelled, identity, max_photos, exclude):
            path = labelled.root / rel
            found = cache.get(path)
            if found is None:
                try:
                    image = decode_image_bytes(path.read_bytes())
                    emb = embed_selfie(
                        pack, image, settings.models.det_score_threshold, settings.models.min_face_px, settings.selfie
                    )
                except (ValueError, OSError) as exc:
                    out.failed.setdefault(identity, []).append(f"{rel}: {exc}")
                    continue
                found = PhotoEmbedding(path, np.asarray(emb.vector, np.float32), emb.bbox)
            elif (fmt := _image_format(path)) not in ACCEPTED_FORMATS:
                # Cached from the looser reader (read_photo): keep the API's format rule.
                out.failed.setdefault(identity, []).append(f"{rel}: unsupported image format {fmt!r}")
                continue
            out.photos.setdefault(identity, []).append(found)
        if identity in out.photos:
            out.vectors[identity] = np.stack([p.vector for p in out.photos[identity]])
    return out


# ================================================================================ events


class CachedStore:
    """A FaceStore whose reads are remembered, for many ``find_person`` calls on an event
    that does not change meanwhile (a threshold sweep): the first pass's candidates and the
    competitors do not depend on the threshold, so most reads repeat. Other attributes pass
    through unchanged."""

    CACHED = frozenset({"search", "track_faces", "video_tracks", "face_vectors", "track_vectors", "media_rows"})

    def __init__(self, store: FaceStore) -> None:
        self._store = store
        self._memo: dict[Any, Any] = {}
        self.reads = 0  # reads that reached the store

    @staticmethod
    def _freeze(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return ("ndarray", value.dtype.str, value.shape, value.tobytes())
        if isinstance(value, list | tuple):
            return tuple(CachedStore._freeze(v) for v in value)
        if isinstance(value, dict):
            return tuple(sorted((k, CachedStore._freeze(v)) for k, v in value.items()))
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self.CACHED:
            return attr

        def cached(*args: Any, **kwargs: Any) -> Any:
            key = (name, self._freeze(args), self._freeze(kwargs))
            if key not in self._memo:
                self.reads += 1
                self._memo[key] = attr(*args, **kwargs)
            found = self._memo[key]
            return list(found) if isinstance(found, list) else found  # callers may extend lists

        return cached


@dataclass
class EventIndex:
    """An indexed event and what reading it needs: the settings, the pack, the store."""

    settings: Settings
    org_id: int
    event_id: int
    pack: ModelPack
    store: FaceStore
    report: IndexReport | None = None  # when this session indexed it

    def media(self) -> pa.Table:
        """The event's media rows (the store's media table)."""
        rows = self.store.media_rows(self.org_id, self.event_id)
        from pipelines.store import MEDIA_SCHEMA

        return pa.Table.from_pylist(rows, schema=MEDIA_SCHEMA).sort_by("media_key")

    def bounds(self) -> dict[str, tuple[float, float]]:
        """media_key -> (first frame time, end time), as ``facereel eval`` clamps segments."""
        return {
            row["media_key"]: (row["start_s"] or 0.0, (row["start_s"] or 0.0) + (row["duration_s"] or 0.0))
            for row in self.store.media_rows(self.org_id, self.event_id)
        }

    def sources(self) -> dict[str, str]:
        """media_key -> uri of the event's indexed media."""
        return self.store.indexed_sources(self.org_id, self.event_id)

    def faces(self) -> EventFaces:
        return event_faces(self.store, self.org_id, self.event_id)

    def tracks(self) -> pa.Table:
        """The tracks table of the event (no vectors): start_s/end_s/faces per track per video."""
        from pipelines.store import event_filter

        cols = ["media_key", "track_id", "start_s", "end_s", "faces", "best_face_id", "best_quality"]
        where = event_filter(self.org_id, self.event_id)
        table = self.store.tracks.search().where(where).select(cols).limit(None).to_arrow()
        return table.sort_by([("media_key", "ascending"), ("start_s", "ascending")])


def open_event(settings: Settings, org_id: int, event_id: int, pack: ModelPack | None = None) -> EventIndex:
    """An existing event's store (nothing is indexed; an unknown event simply has no rows)."""
    from pipelines.store import FaceStore

    pack = pack or load_pack(settings.models)
    return EventIndex(settings, org_id, event_id, pack, FaceStore.from_settings(settings, pack.info))


def set_sources(labelled: LabelledSet) -> list[str]:
    """The set's videos as index inputs (paths)."""
    return [str(labelled.root / v) for v in labelled.videos]


def index_set(
    settings: Settings,
    labelled: LabelledSet,
    org_id: int = EVAL_ORG,
    event_id: int = EVAL_EVENT,
    pack: ModelPack | None = None,
) -> EventIndex:
    """Every video of the set indexed into one (throw-away) event, as ``facereel eval`` does.

    Incremental: when every video is already indexed at the same location, nothing runs
    (not even Ray); otherwise ``index_event`` starts a local Ray (``ensure_ray``) and indexes
    what is missing.
    """
    from pipelines.media import list_media

    event = open_event(settings, org_id, event_id, pack)
    idx = settings.index
    wanted = list_media(
        set_sources(labelled), idx.photo_extensions, idx.video_extensions, settings.store.storage_options
    )
    done = event.sources()
    if any(done.get(s.media_key) != s.uri for s in wanted):
        from pipelines.index import index_event

        event.report = index_event(settings, org_id, event_id, set_sources(labelled))
    return event


@dataclass(frozen=True)
class EventFaces:
    """An event's faces as columns (one row per face, media and time order)."""

    face_id: np.ndarray
    media_key: np.ndarray
    media_type: np.ndarray
    timestamp_s: np.ndarray
    bbox: np.ndarray  # (F, 4) x1, y1, x2, y2 source pixels
    det_score: np.ndarray
    face_px: np.ndarray
    track_id: np.ndarray
    quality: np.ndarray
    vectors: np.ndarray  # (F, dim)

    def __len__(self) -> int:
        return int(self.face_id.size)

    def select(self, keep: np.ndarray) -> EventFaces:
        return EventFaces(**{k: v[keep] for k, v in _fields(self).items()})

    def table(self, full_face_px: float = 80.0) -> pa.Table:
        """Columns without vectors, plus ``sharpness``: the quality's sharpness factor,
        quality / (size ramp x det score), in [0, 1] and saturated at 1 from ~100 (variance of
        the Laplacian of the aligned crop): the store keeps only the product."""
        size = np.clip(self.face_px / full_face_px, 0.0, 1.0)
        denom = size * np.clip(self.det_score, 0.0, 1.0)
        sharp = np.where(denom > 0, self.quality / np.maximum(denom, 1e-9), np.nan)
        return pa.table(
            {
                "face_id": self.face_id,
                "media_key": self.media_key,
                "media_type": self.media_type,
                "timestamp_s": self.timestamp_s,
                "x1": self.bbox[:, 0],
                "y1": self.bbox[:, 1],
                "x2": self.bbox[:, 2],
                "y2": self.bbox[:, 3],
                "det_score": self.det_score,
                "face_px": self.face_px,
                "track_id": self.track_id,
                "quality": self.quality,
                "sharpness": np.clip(sharp, 0.0, 1.0),
            }
        )


def _fields(obj: Any) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in obj.__dataclass_fields__}


def event_faces(store: FaceStore, org_id: int, event_id: int, media_type: str | None = None) -> EventFaces:
    from pipelines.store import event_filter, sql_str

    where = event_filter(org_id, event_id)
    if media_type is not None:
        where += f" AND media_type = {sql_str(media_type)}"
    cols = [
        "face_id", "media_key", "media_type", "timestamp_s", "bbox", "det_score", "face_px", "track_id", "quality", "vector",
    ]  # fmt: skip
    table = store.faces.search().where(where).select(cols).limit(None).to_arrow()
    table = table.sort_by([("media_key", "ascending"), ("timestamp_s", "ascending")])
    n = table.num_rows
    return EventFaces(
        face_id=np.asarray(table.column("face_id").to_pylist(), dtype=object),
        media_key=np.asarray(table.column("media_key").to_pylist(), dtype=object),
        media_type=np.asarray(table.column("media_type").to_pylist(), dtype=object),
        timestamp_s=np.asarray(table.column("timestamp_s").to_pylist(), np.float64),
        bbox=np.asarray(table.column("bbox").to_pylist(), np.float32).reshape(n, 4),
        det_score=np.asarray(table.column("det_score").fill_null(0.0).to_pylist(), np.float32),
        face_px=np.asarray(table.column("face_px").fill_null(0.0).to_pylist(), np.float32),
        track_id=np.asarray(table.column("track_id").fill_null(-1).to_pylist(), np.int64),
        quality=np.asarray(table.column("quality").fill_null(0.0).to_pylist(), np.float32),
        vectors=np.asarray(table.column("vector").to_pylist(), np.float32).reshape(n, store.pack.dim),
    )


# ================================================================================ video faces


@dataclass(frozen=True)
class FaceScore:
    """One scored comparison of a video face with an identity's reference photos."""

    identity: str
    face: int  # row in the EventFaces it came from
    media_key: str
    timestamp_s: float
    bbox: tuple[float, float, float, float]
    similarity: float
    genuine: bool


@dataclass(frozen=True)
class VideoFaceScores:
    """Genuine and impostor scores of video faces against reference photos.

    Genuine: per sampled frame in which exactly one labelled person is visible (no other
    labelled person within the label tolerance, nobody's don't-care time), that person's
    best-matching face in the frame against their photos (best over photos). Frames where
    the person's face was not detected have no face row and are not counted; when it was
    missed but someone unlabelled was detected, the "best" face is that stranger: this
    understates TAR, never overstates it. Taking the best of the frame's faces slightly
    flatters TAR where several faces are visible.

    Impostor: per face and identity, the identity's best photo similarity for faces in
    frames where that identity is not labelled (nor don't-care) within the tolerance. Only
    faces of videos in the set count (the labels say who is absent there). Faces of one
    track are strongly correlated, so the effective number of impostor comparisons is
    nearer the number of (identity, track) pairs (``impostor_tracks``) than the face count.
    """

    faces: EventFaces
    genuine_face: np.ndarray  # face rows
    genuine_identity: np.ndarray
    genuine_similarity: np.ndarray
    impostor_face: np.ndarray
    impostor_identity: np.ndarray
    impostor_similarity: np.ndarray
    frames_skipped: int  # frames with a labelled or don't-care person that gave no genuine sample

    @property
    def scores(self) -> ScoreSet:
        return ScoreSet(self.genuine_similarity, self.impostor_similarity)

    @property
    def impostor_tracks(self) -> int:
        tracks = self.faces.track_id[self.impostor_face]
        keys = self.faces.media_key[self.impostor_face]
        faces = self.impostor_face
        return len(
            {
                (who, key, int(tr) if tr >= 0 else f"face{f}")
                for who, key, tr, f in zip(self.impostor_identity, keys, tracks, faces, strict=True)
            }
        )

    def _record(self, identity: str, face: int, similarity: float, genuine: bool) -> FaceScore:
        f = self.faces
        return FaceScore(
            identity,
            int(face),
            str(f.media_key[face]),
            float(f.timestamp_s[face]),
            tuple(float(v) for v in f.bbox[face]),
            float(similarity),
            genuine,
        )

    def weakest_genuine(self, n: int) -> list[FaceScore]:
        order = np.argsort(self.genuine_similarity, kind="stable")[:n]
        return [
            self._record(self.genuine_identity[i], self.genuine_face[i], self.genuine_similarity[i], True)
            for i in order
        ]

    def strongest_impostors(self, n: int) -> list[FaceScore]:
        order = np.argsort(-self.impostor_similarity, kind="stable")[:n]
        return [
            self._record(self.impostor_identity[i], self.impostor_face[i], self.impostor_similarity[i], False)
            for i in order
        ]


def score_jitter(scores: VideoFaceScores) -> float:
    """Median change of a video face's score from one sample to the next on the same track
    (impostor and genuine comparisons together; NaN without consecutive pairs). The noise of
    a single score: one frame later the same face scores about this much higher or lower. Pure."""
    f = scores.faces
    steps: list[float] = []
    for faces_, who, sims in (
        (scores.genuine_face, scores.genuine_identity, scores.genuine_similarity),
        (scores.impostor_face, scores.impostor_identity, scores.impostor_similarity),
    ):
        runs: dict[tuple[str, str, int], list[tuple[float, float]]] = defaultdict(list)
        for row, identity, sim in zip(faces_, who, sims, strict=True):
            if f.track_id[row] >= 0:
                runs[(identity, f.media_key[row], int(f.track_id[row]))].append((float(f.timestamp_s[row]), float(sim)))
        for run in runs.values():
            run.sort()
            steps += [abs(b[1] - a[1]) for a, b in itertools.pairwise(run)]
    return float(np.median(steps)) if steps else math.nan


def _shrunk(spans: Iterable[Interval], by: float) -> list[Interval]:
    return [(s + by, e - by) for s, e in spans if e - s > 2 * by]


def video_face_scores(
    faces: EventFaces,
    references: Mapping[str, np.ndarray],
    labelled: LabelledSet,
    tolerance_s: float = LABEL_TOLERANCE_S,
) -> VideoFaceScores:
    """Genuine and impostor video-face scores (the rules: ``VideoFaceScores``). Pure."""
    identities = sorted(references)
    video = np.flatnonzero(faces.media_type == "video") if len(faces) else np.zeros(0, np.int64)
    empty = np.zeros(0, np.int64)
    if not identities or not video.size:
        none = np.zeros(0, np.float64)
        return VideoFaceScores(faces, empty, np.zeros(0, object), none, empty, np.zeros(0, object), none, 0)
    # (F, I): each face's best similarity to each identity's photos.
    sims = np.stack([(faces.vectors @ np.asarray(references[i], np.float32).T).max(axis=1) for i in identities], 1)
    resolved = {key: match_video(key, labelled.videos) for key in set(faces.media_key[video].tolist())}
    frames: dict[tuple[str, float], list[int]] = defaultdict(list)
    for row in video:
        if resolved[faces.media_key[row]] is not None:
            frames[(faces.media_key[row], float(faces.timestamp_s[row]))].append(int(row))
    labelled_by_video: dict[str, list[str]] = defaultdict(list)
    for vid, who in labelled.truth:
        labelled_by_video[vid].append(who)
    dontcare_by_video: dict[str, list[str]] = defaultdict(list)
    for vid, who in labelled.dontcare:
        dontcare_by_video[vid].append(who)

    gen_face, gen_who, gen_sim, imp_face, imp_who, imp_sim = [], [], [], [], [], []
    skipped = 0
    for (key, t), rows in sorted(frames.items()):
        vid = resolved[key]
        near = {w for w in labelled_by_video[vid] if inside(t, labelled.truth[(vid, w)], tolerance_s)}
        clear = {w for w in near if inside(t, _shrunk(labelled.truth[(vid, w)], tolerance_s), 0.0)}
        doubt = {w for w in dontcare_by_video[vid] if inside(t, labelled.dontcare[(vid, w)], tolerance_s)}
        if near or doubt:
            if len(near) == 1 and clear == near and not doubt and next(iter(near)) in references:
                who = next(iter(near))
                col = identities.index(who)
                best = max(rows, key=lambda r: sims[r, col])
                gen_face.append(best)
                gen_who.append(who)
                gen_sim.append(float(sims[best, col]))
            else:
                skipped += 1
        for col, who in enumerate(identities):
            if who in near or who in doubt:
                continue
            for r in rows:
                imp_face.append(r)
                imp_who.append(who)
                imp_sim.append(float(sims[r, col]))
    return VideoFaceScores(
        faces,
        np.asarray(gen_face, np.int64),
        np.asarray(gen_who, object),
        np.asarray(gen_sim, np.float64),
        np.asarray(imp_face, np.int64),
        np.asarray(imp_who, object),
        np.asarray(imp_sim, np.float64),
        skipped,
    )


# ================================================================================ the sweep


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
        key = round(float(t), KEY_DIGITS)
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
                    labelled_s=whole.labelled_s,
                    covered_s=whole.covered_s,
                    coverage=whole.coverage,
                    segments=whole.segments,
                    wrong_segments=whole.wrong_segments,
                    dontcare_segments=whole.dontcare_segments,
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


# ================================================================================ the recommendation


@dataclass(frozen=True)
class Recommendation:
    """A threshold and segment rules for an event, with the evidence behind them.

    ``segments`` holds the swept rules (``max_gap_s``, ``min_hits``) in SegmentSettings'
    names, ready as event overrides. ``qualified`` is False when no threshold met the rule;
    ``threshold`` and ``segments`` are then the current ones, unchanged, and ``reason``
    says what failed: do not apply such a recommendation.
    """

    threshold: float
    segments: dict
    margin: float
    coverage: float | None
    wrong_segments: int | None
    far_at_threshold: float
    tar_at_threshold: float
    reason: str
    qualified: bool = True
    lowest_qualifying: float | None = None  # the threshold before the margin
    covered_s: float | None = None
    labelled_s: float | None = None
    far_upper_95: float | None = None  # bound on the pairs' true FAR at ``threshold``
    n_genuine: int = 0
    n_impostor: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> Recommendation:
        return cls(**json.loads(text))


def _key(t: float) -> float:
    return round(float(t), KEY_DIGITS)


def _distance(rule: SegmentRule, base: SegmentRule) -> tuple[float, float, int, float]:
    """How far a rule strays from the configured one: min_hits steps first, then the gap
    (relative), then fewer hits and shorter gaps (deterministic)."""
    return (
        abs(rule.min_hits - base.min_hits),
        abs(math.log(rule.max_gap_s / base.max_gap_s)),
        rule.min_hits,
        rule.max_gap_s,
    )


def recommend(
    rows: Sequence[SweepRow],
    pairs: ScoreSet,
    base: SegmentSettings,
    current_threshold: float,
    margin: float = 0.02,
    max_far: float = 1e-3,
    tie_s: float = 0.5,
) -> Recommendation:
    """The recommendation rule (pure).

    1. Qualifying thresholds (on the sweep's grid): with the configured segment rules
       (``base``), 0 wrong-person segments at that threshold AND at every grid threshold
       above it (a stable zone, not a lucky point: matching is not monotonic in the threshold
       because expansion and competitors move with it), and an empirical FAR on the pairs of
       at most ``max_far``.
    2. The lowest qualifying threshold, plus ``margin`` (rounded up to the grid). It sits
       exactly on the strongest impostor seen, one observation; the next event's strongest
       impostor is a fresh draw, so the margin keeps a distance from it.
    3. Segment rules at that threshold: among rules with 0 wrong segments at every grid
       threshold from the lowest qualifying one up to the recommended one (so the rules do
       not lean on the margin) and no more than ``tie_s`` seconds more spill than ``base``
       (segment time where the person is not labelled: coverage alone rewards a long
       ``max_gap_s`` that bridges time the person is off screen), the highest coverage.
       Rules within ``tie_s`` covered seconds of it (one sample period at 2 fps by default:
       finer differences are sampling noise) tie, and ties go to ``base``, else to the rule
       closest to it (fewest ``min_hits`` steps, then the nearest gap): a change from the
       configured rules has to buy coverage, and the dev footage's long talking-head
       appearances say little about brief ones (a runner passing a camera), which a higher
       ``min_hits`` would drop.

    When nothing qualifies, the current threshold and rules are returned with
    ``qualified=False`` and a ``reason`` saying why.
    """
    if not rows:
        raise ValueError("no sweep rows")
    by = {(_key(r.threshold), r.rule): r for r in rows}
    grid = sorted({_key(r.threshold) for r in rows})
    base_rule = SegmentRule.of(base)
    missing = [t for t in grid if (t, base_rule) not in by]
    if missing:
        raise ValueError(f"the sweep lacks the configured rules {base_rule} at {missing[:3]}")
    rules = sorted({r.rule for r in rows})
    n_imp = pairs.n_impostor
    resolution = (
        f"FAR <= {max_far:.0e} on {n_imp} impostor pairs means no impostor pair accepted"
        if max_far * n_imp < 1
        else f"FAR <= {max_far:.0e} on {n_imp} impostor pairs allows {math.floor(max_far * n_imp + 1e-9)} accepted"
    )

    def pair_point(t: float) -> OperatingPoint:
        return point_at(pairs, t)

    def wrong(t: float, rule: SegmentRule) -> int:
        return by[(t, rule)].wrong_segments

    stable = []  # grid thresholds from which the base rule never has a wrong segment again
    clean_above = True
    for t in reversed(grid):
        clean_above = clean_above and wrong(t, base_rule) == 0
        if clean_above:
            stable.append(t)
    far_ok = [t for t in grid if n_imp and far(pairs.impostor, t) <= max_far]
    qualifying = sorted(set(stable) & set(far_ok))

    def fallback(why: str) -> Recommendation:
        t = _key(current_threshold)
        row = by.get((t, base_rule))
        point = pair_point(current_threshold)
        return Recommendation(
            threshold=float(current_threshold),
            segments=base_rule.as_dict(),
            margin=0.0,
            coverage=row.coverage if row else None,
            wrong_segments=row.wrong_segments if row else None,
            far_at_threshold=point.far,
            tar_at_threshold=point.tar,
            reason=f"No threshold qualifies: {why}. Keeping the current threshold {current_threshold:.2f} and "
            f"segment rules; do not apply this.",
            qualified=False,
            covered_s=row.covered_s if row else None,
            labelled_s=row.labelled_s if row else None,
            far_upper_95=point.far_upper_95,
            n_genuine=pairs.n_genuine,
            n_impostor=n_imp,
        )

    if not qualifying:
        if not n_imp:
            return fallback("there are no impostor pairs to measure FAR on")
        if not stable:
            fewest = min(grid, key=lambda t: (wrong(t, base_rule), t))
            return fallback(
                f"every threshold up to {grid[-1]:.2f} still has wrong-person segments with the configured rules, "
                f"or is followed by one that has (top of the grid: {wrong(grid[-1], base_rule)} wrong; fewest: "
                f"{wrong(fewest, base_rule)} at {fewest:.2f})"
            )
        if not far_ok:
            return fallback(
                f"no grid threshold up to {grid[-1]:.2f} reaches {resolution} "
                f"(strongest impostor pair {pairs.impostor.max():.3f})"
            )
        return fallback(
            f"the thresholds without wrong-person segments ({stable[-1]:.2f} and up) and those meeting "
            f"{resolution} (from {far_ok[0]:.2f}) do not meet on the grid"
        )

    lowest = qualifying[0]
    above = [t for t in grid if t >= lowest + margin - 1e-9]
    if not above:
        return fallback(
            f"{lowest:.2f} qualifies but {lowest:.2f} + margin {margin:.2f} lies beyond the grid (up to "
            f"{grid[-1]:.2f}): extend the grid"
        )
    chosen = above[0]
    band = [t for t in grid if lowest <= t <= chosen]
    base_spill = by[(chosen, base_rule)].spill_s
    safe = [r for r in rules if all(wrong(t, r) == 0 for t in band) and by[(chosen, r)].spill_s <= base_spill + tie_s]
    best_s = max(by[(chosen, r)].covered_s for r in safe)  # base_rule is always safe
    tied = [r for r in safe if by[(chosen, r)].covered_s >= best_s - tie_s]
    rule = min(tied, key=lambda r: _distance(r, base_rule))
    row = by[(chosen, rule)]
    point = pair_point(chosen)
    top_imp = float(pairs.impostor.max())
    first_clean, first_far = min(stable), far_ok[0]
    if first_clean >= first_far:
        last_wrong = max((t for t in grid if t < first_clean and wrong(t, base_rule)), default=None)
        binding = (
            f"set by the video search: {wrong(last_wrong, base_rule)} wrong-person segment(s) at {last_wrong:.2f}"
            if last_wrong is not None
            else "the bottom of the grid"
        )
        binding += f"; the pairs alone would allow {first_far:.2f}, strongest impostor pair {top_imp:.3f}"
    else:
        binding = (
            f"set by the pairs: strongest impostor pair {top_imp:.3f}; the video search alone has no wrong-person "
            f"segments from {first_clean:.2f}"
        )
    why_rule = (
        "the configured rules"
        if rule == base_rule
        else f"max_gap_s={rule.max_gap_s:g}, min_hits={rule.min_hits} (the configured "
        f"{base_rule.max_gap_s:g}/{base_rule.min_hits} cover {by[(chosen, base_rule)].covered_s:.2f} s)"
    )
    longer = [
        r
        for r in rules
        if by[(chosen, r)].covered_s > row.covered_s + tie_s and by[(chosen, r)].spill_s > base_spill + tie_s
    ]
    spill_note = ""
    if longer:
        gain = max(by[(chosen, r)].covered_s for r in longer) - row.covered_s
        spill_note = (
            f" {len(longer)} rule(s) cover up to {gain:.2f} s more only by stretching segments over time where the "
            f"person is not labelled (more than {base_spill + tie_s:.2f} s of it), so they do not count."
        )
    cov = "—" if row.coverage is None else f"{100 * row.coverage:.1f} %"
    reason = (
        f"Lowest threshold on the grid {grid[0]:.2f}–{grid[-1]:.2f} with 0 wrong-person segments (configured "
        f"segment rules, at it and every threshold above) and {resolution}: {lowest:.2f} ({binding}). "
        f"Plus margin {chosen - lowest:.2f} -> {chosen:.2f}: the lowest qualifying threshold sits on one observation, "
        f"the strongest impostor, and new footage draws a new one. Pair FAR at {chosen:.2f}: "
        f"{point.false_accepts}/{n_imp} (95 % upper bound {point.far_upper_95:.1e}); TAR {point.tar:.3f} "
        f"({point.true_accepts}/{pairs.n_genuine}). Segment rules: {why_rule}, the highest coverage among rules "
        f"without wrong segments from {lowest:.2f} to {chosen:.2f} and without extra spill (ties within {tie_s:g} s "
        f"go to the configured rules): coverage {cov} ({row.covered_s:.2f} of {row.labelled_s:.2f} labelled s), "
        f"{row.wrong_segments} wrong-person segments, {row.spill_s:.2f} s of segment time outside the labels."
        f"{spill_note}"
    )
    return Recommendation(
        threshold=chosen,
        segments=rule.as_dict(),
        margin=round(chosen - lowest, KEY_DIGITS),
        coverage=row.coverage,
        wrong_segments=row.wrong_segments,
        far_at_threshold=point.far,
        tar_at_threshold=point.tar,
        reason=reason,
        qualified=True,
        lowest_qualifying=lowest,
        covered_s=row.covered_s,
        labelled_s=row.labelled_s,
        far_upper_95=point.far_upper_95,
        n_genuine=pairs.n_genuine,
        n_impostor=n_imp,
    )


# ================================================================================ frames and crops


def read_frames(uri: str, times: Iterable[float], storage_options: dict | None = None) -> dict[float, np.ndarray]:
    """BGR frames of a video at the given presentation times (the frame nearest each time,
    within half a frame; times of indexed faces are exact frame times). One sequential
    decode from a seek before the first time."""
    import av

    from pipelines.media import open_binary

    wanted = sorted(set(float(t) for t in times))
    out: dict[float, np.ndarray] = {}
    if not wanted:
        return out
    with open_binary(uri, storage_options) as fh, av.open(fh) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        half = 0.5 / fps
        if stream.time_base is not None and wanted[0] > 1.0:
            container.seek(int((wanted[0] - 1.0) / float(stream.time_base)), stream=stream, backward=True)
        i = 0
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            t = float(frame.time)
            while i < len(wanted) and t > wanted[i] + half:
                i += 1  # passed without a frame close enough
            if i >= len(wanted):
                break
            if abs(t - wanted[i]) <= half:
                image = frame.to_ndarray(format="bgr24")
                while i < len(wanted) and abs(t - wanted[i]) <= half:
                    out[wanted[i]] = image
                    i += 1
    return out


def crop_face(image: np.ndarray, bbox: Sequence[float], pad: float = 0.25, size: int = 112) -> np.ndarray:
    """A square crop around the box (``pad`` of its longer side on each side), ``size`` px,
    grey where it leaves the image. Pure."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in bbox)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * pad)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    n = max(1, round(side))
    canvas = np.full((n, n, 3), 128, np.uint8)
    h, w = image.shape[:2]
    sx1, sy1, sx2, sy2 = max(0, left), max(0, top), min(w, left + n), min(h, top + n)
    if sx2 > sx1 and sy2 > sy1:
        canvas[sy1 - top : sy2 - top, sx1 - left : sx2 - left] = image[sy1:sy2, sx1:sx2]
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if n > size else cv2.INTER_LINEAR)


def video_crops(
    event: EventIndex, records: Sequence[FaceScore], pad: float = 0.25, size: int = 112
) -> list[np.ndarray | None]:
    """A crop per scored video face, cut from the frame decoded at its time (None when the
    media is gone)."""
    sources = event.sources()
    by_key: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_key[r.media_key].append(r.timestamp_s)
    frames = {
        key: read_frames(sources[key], times, event.settings.store.storage_options or None)
        for key, times in by_key.items()
        if key in sources
    }
    out: list[np.ndarray | None] = []
    for r in records:
        image = frames.get(r.media_key, {}).get(r.timestamp_s)
        out.append(None if image is None else crop_face(image, r.bbox, pad, size))
    return out


def photo_crop(photo: PhotoEmbedding, pad: float = 0.25, size: int = 112) -> np.ndarray:
    return crop_face(read_photo(photo.path), photo.bbox, pad, size)


# ================================================================================ dropped faces


@dataclass(frozen=True)
class DroppedFace:
    """A face the detector finds with relaxed filters that indexing drops."""

    media_key: str
    timestamp_s: float
    bbox: tuple[float, float, float, float]
    det_score: float
    face_px: float
    reason: str  # "small", "low score" or "small, low score"
    crop: np.ndarray


def sample_times(start_s: float, end_s: float, count: int) -> list[float]:
    """``count`` times spread evenly inside [start, end) (not at the very end). Pure."""
    if count <= 0 or end_s <= start_s:
        return []
    step = (end_s - start_s) / count
    return [start_s + (i + 0.5) * step for i in range(count)]


def dropped_faces(
    event: EventIndex,
    frames_per_video: int = 4,
    relaxed_score: float = 0.3,
    pad: float = 0.25,
    size: int = 112,
) -> tuple[list[DroppedFace], int]:
    """Re-runs the detector on a few sampled frames per video with the filters relaxed
    (score down to ``relaxed_score``, no minimum size) and returns what the pack's filters
    (``models.det_score_threshold``, ``models.min_face_px``) drop, with crops; plus the number
    of faces kept on those frames. Detection runs as indexing does (``models.detect_mode``)."""
    from pipelines.detect import detect_faces
    from pipelines.models.base import filter_detections

    models = event.settings.models
    relaxed = load_pack(models.model_copy(update={"det_score_threshold": relaxed_score}))
    out: list[DroppedFace] = []
    kept = 0
    bounds = event.bounds()
    for key, uri in sorted(event.sources().items()):
        media = event.store.media_row(event.org_id, event.event_id, key)
        if not media or media["media_type"] != "video":
            continue
        start, end = bounds.get(key, (0.0, 0.0))
        for t, image in sorted(read_frames(uri, sample_times(start, end, frames_per_video)).items()):
            found = detect_faces(relaxed.detector, image, models.detect_mode, models.det_size)
            keep = filter_detections(found, models.det_score_threshold, models.min_face_px)
            kept += len(keep)
            for box, score in zip(found.boxes, found.scores, strict=True):
                side = float(min(box[2] - box[0], box[3] - box[1]))
                why = [n for n, bad in (("small", side < models.min_face_px), ("low score", score < models.det_score_threshold)) if bad]  # fmt: skip
                if why:
                    bbox = tuple(float(v) for v in box)
                    out.append(
                        DroppedFace(key, t, bbox, float(score), side, ", ".join(why), crop_face(image, bbox, pad, size))
                    )
    return out, kept


# ================================================================================ figures

FIGURE_SIZE = (12.0, 7.0)  # inches; every saved figure has this size ...
FIGURE_DPI = 100  # ... and resolution: 1200 x 700 px
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def figure(nrows: int = 1, ncols: int = 1, **kwargs: Any):
    """A matplotlib figure at the saved size (constrained layout), and its axes."""
    import matplotlib.pyplot as plt

    kwargs.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=FIGURE_SIZE, **kwargs)


def save_figure(
    fig, name: str, notebook: str | None = None, folder: str | os.PathLike[str] | None = None
) -> Path | None:
    """Also save ``fig`` as ``<folder>/<notebook>-<name>.png`` at FIGURE_SIZE and FIGURE_DPI.

    ``folder`` defaults to $FACEREEL_NB_FIGURES; when neither is set nothing is written (None).
    """
    folder = folder if folder is not None else os.environ.get("FACEREEL_NB_FIGURES") or None
    if folder is None:
        return None
    stem = f"{notebook}-{name}" if notebook else name
    if not _NAME.match(stem):
        raise ValueError(f"figure name {stem!r}: use letters, digits, '_', '-', '.'")
    path = Path(folder) / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.set_size_inches(*FIGURE_SIZE)
    fig.savefig(path, dpi=FIGURE_DPI)
    return path


def plot_histograms(ax, scores: ScoreSet, title: str, marks: Mapping[str, float] | None = None, bins: int = 40) -> None:
    """Genuine and impostor score histograms (each normalised to its own count), with
    vertical lines at ``marks`` (label -> threshold)."""
    edges = np.linspace(-0.2, 1.0, bins + 1)
    ax.hist(
        scores.impostor, edges, density=True, alpha=0.55, color="tab:red", label=f"impostor (n={scores.n_impostor})"
    )
    ax.hist(scores.genuine, edges, density=True, alpha=0.55, color="tab:green", label=f"genuine (n={scores.n_genuine})")
    for i, (label, t) in enumerate((marks or {}).items()):
        ax.axvline(t, color=f"C{i}", ls="--", lw=1.2, label=f"{label} {t:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot_roc(
    ax,
    curves: Mapping[str, ScoreSet],
    marks: Mapping[str, float] | None = None,
    targets: Sequence[float] = FAR_TARGETS,
    det: bool = False,
) -> None:
    """ROC (TAR over FAR) or DET (FRR over FAR), log FAR axis, per named score set; the FAR
    targets' operating points (hollow when the sample cannot resolve the target) and the
    ``marks`` thresholds are marked on each curve."""
    symbols = "osD^v<>"
    for c, (name, scores) in enumerate(curves.items()):
        color = f"C{c}"
        _, f, t = roc(scores)
        floor = 0.5 / max(scores.n_impostor, 1)  # FAR 0 drawn at half a count
        y = 1 - t if det else t
        ax.step(np.maximum(f, floor), y, where="post", color=color, label=name)
        if scores.n_impostor:
            ax.axvline(1 / scores.n_impostor, color=color, ls=":", lw=0.8, label=f"1/n impostors ({name})")
        for target in targets:
            p = operating_point(scores, target)
            yv = 1 - p.tar if det else p.tar
            ax.plot(max(p.far, floor), yv, "o", ms=7, color=color, mfc=color if p.resolvable else "none")
            ax.annotate(
                f"{target:.0e}", (max(p.far, floor), yv), textcoords="offset points", xytext=(4, -10), fontsize=7
            )
        for i, (label, thr) in enumerate((marks or {}).items()):
            p = point_at(scores, thr)
            ax.plot(
                max(p.far, floor),
                1 - p.tar if det else p.tar,
                symbols[(i + 1) % len(symbols)],
                ms=9,
                color=color,
                mec="black",
                label=f"{label} {thr:.3f} ({name})",
            )
    ax.set_xscale("log")
    if det:
        ax.set_yscale("log")
        ax.set_ylabel("FRR (1 - TAR)")
    else:
        ax.set_ylabel("TAR")
    ax.set_xlabel("FAR (0 drawn at half a count; below 1/n the sample resolves nothing)")
    ax.set_title("DET" if det else "ROC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def plot_rule_heatmap(
    ax, rows: Sequence[SweepRow], threshold: float, value: str = "coverage", chosen: SegmentRule | None = None
) -> None:
    """``value`` ("coverage" in %, or "spill_s": segment seconds where the person is not
    labelled) over max_gap_s x min_hits at one threshold. Cells with wrong-person segments
    are hatched red and say how many; ``chosen`` gets a frame."""
    t = _key(threshold)
    cells = [r for r in rows if _key(r.threshold) == t]
    gaps = sorted({r.max_gap_s for r in cells})
    hits = sorted({r.min_hits for r in cells})

    def val(r: SweepRow) -> float:
        return 100 * (r.coverage or 0.0) if value == "coverage" else float(getattr(r, value))

    grid = np.full((len(hits), len(gaps)), np.nan)
    for r in cells:
        grid[hits.index(r.min_hits), gaps.index(r.max_gap_s)] = val(r)
    cmap = "viridis" if value == "coverage" else "magma_r"
    im = ax.imshow(grid, cmap=cmap, origin="lower", aspect="auto")
    lo, hi = np.nanmin(grid), np.nanmax(grid)
    for r in cells:
        y, x = hits.index(r.min_hits), gaps.index(r.max_gap_s)
        v = val(r)
        text = (f"{v:.1f} %" if value == "coverage" else f"{v:.2f} s") + (
            f"\n{r.wrong_segments} wrong" if r.wrong_segments else ""
        )
        bright = hi > lo and (v - lo) / (hi - lo) > 0.6
        bright = bright if value == "coverage" else not bright
        color = "red" if r.wrong_segments else ("black" if bright else "white")
        ax.text(x, y, text, ha="center", va="center", fontsize=8, color=color)
        if r.wrong_segments:
            ax.add_patch(_hatch(x, y))
        if chosen is not None and r.rule == chosen:
            from matplotlib.patches import Rectangle

            ax.add_patch(Rectangle((x - 0.48, y - 0.48), 0.96, 0.96, fill=False, edgecolor="tab:red", lw=2.5))
    ax.set_xticks(range(len(gaps)), [f"{g:g}" for g in gaps])
    ax.set_yticks(range(len(hits)), [str(h) for h in hits])
    ax.set_xlabel("max_gap_s")
    ax.set_ylabel("min_hits")
    label = "coverage %" if value == "coverage" else "segment seconds outside the labels"
    ax.set_title(f"{label} at threshold {t:.2f}")
    ax.figure.colorbar(im, ax=ax, label=label)


def _hatch(x: float, y: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="//", edgecolor="red", lw=0)


@dataclass(frozen=True)
class TimelineRow:
    identity: str
    video: str  # the set's video path
    media_key: str | None
    truth: tuple[Interval, ...]
    dontcare: tuple[Interval, ...]
    hits: tuple[TimedHit, ...]
    segments: tuple[RankedSegment, ...]
    bounds: tuple[float, float]


def timeline_rows(
    labelled: LabelledSet,
    hits: Mapping[str, Mapping[str, Sequence[TimedHit]]],
    segments: Mapping[str, Sequence[RankedSegment]],
    bounds: Mapping[str, tuple[float, float]],
) -> list[TimelineRow]:
    """One row per identity and video where it is labelled or was found. Pure."""
    keys = set(bounds) | {k for per in hits.values() for k in per}
    video_of = {k: match_video(k, labelled.videos) or k for k in keys}
    key_of = {v: k for k, v in video_of.items()}
    out = []
    for who in sorted(set(hits) | set(segments)):
        videos = set(labelled.truth_of(who)) | {video_of[k] for k in hits.get(who, {})}
        videos |= {video_of.get(s.media_key, s.media_key) for s in segments.get(who, [])}
        for vid in sorted(videos):
            key = key_of.get(vid)
            out.append(
                TimelineRow(
                    who,
                    vid,
                    key,
                    labelled.truth_of(who).get(vid, ()),
                    labelled.dontcare_of(who).get(vid, ()),
                    tuple(hits.get(who, {}).get(key, ())) if key else (),
                    tuple(s for s in segments.get(who, []) if s.media_key == key),
                    bounds.get(key, (0.0, 0.0)) if key else (0.0, 0.0),
                )
            )
    return out


def plot_timelines(rows: Sequence[TimelineRow], title: str = ""):
    """Per identity and video: labelled intervals (green), don't-care (grey), segments (blue;
    red when they touch no labelled time), hits (dots, height = similarity)."""
    import matplotlib.pyplot as plt

    from pipelines.evaluate import touches

    fig, axes = plt.subplots(max(1, len(rows)), 1, figsize=FIGURE_SIZE, layout="constrained", squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=False):
        for s, e in row.truth:
            ax.axvspan(s, e, ymin=0.0, ymax=0.3, color="tab:green", alpha=0.6)
        for s, e in row.dontcare:
            ax.axvspan(s, e, ymin=0.0, ymax=0.3, color="grey", alpha=0.5)
        for seg in row.segments:
            good = touches((seg.start_s, seg.end_s), row.truth) or touches((seg.start_s, seg.end_s), row.dontcare)
            ax.axvspan(seg.start_s, max(seg.end_s, seg.start_s + 0.05), ymin=0.35, ymax=0.6, color="tab:blue" if good else "tab:red", alpha=0.7)  # fmt: skip
        if row.hits:
            ax.plot(
                [h.timestamp_s for h in row.hits],
                [0.65 + 0.3 * h.similarity for h in row.hits],
                ".",
                ms=3,
                color="black",
            )
        lo, hi = row.bounds
        if hi <= lo:
            spans = [*row.truth, *((s.start_s, s.end_s) for s in row.segments)]
            lo, hi = (min(s for s, _ in spans), max(e for _, e in spans)) if spans else (0.0, 1.0)
        ax.set_xlim(lo, hi)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_ylabel(f"{row.identity}\n{Path(row.video).name}", rotation=0, ha="right", va="center", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    if title:
        fig.suptitle(title)
    return fig


def contact_sheet(columns: Mapping[str, Sequence[tuple[np.ndarray | None, str]]], per_row: int = 6):
    """Named columns of (crop, caption) tiles side by side; a crop is BGR uint8 (None: blank)."""
    import matplotlib.pyplot as plt

    n_rows = max((math.ceil(len(t) / per_row) for t in columns.values()), default=1) or 1
    fig = plt.figure(figsize=FIGURE_SIZE, layout="constrained")
    subfigs = fig.subfigures(1, max(1, len(columns)), squeeze=False)[0]
    for sub, (name, tiles) in zip(subfigs, columns.items(), strict=True):
        sub.suptitle(name, fontsize=10)
        axes = sub.subplots(n_rows, per_row, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < len(tiles):
                crop, caption = tiles[i]
                if crop is not None:
                    ax.imshow(crop[:, :, ::-1])
                ax.set_title(caption, fontsize=6)
    return fig


def local_cpus() -> int:
    """CPUs this process may use (its affinity where the OS tells it, e.g. a container's
    share), for ``settings.ray.num_cpus`` of a notebook's local Ray."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def quiet_ray_logs() -> None:
    """Fewer Ray lines in notebook outputs (call before indexing starts Ray): Ray's info
    notes (missing ipywidgets, token auth on, progress bars off, "dataset finished") and
    tqdm's IProgress warning are silenced; warnings and errors still show. Lines that Ray
    workers and its C++ core print themselves cannot be caught here."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="IProgress not found")
    for name, level in {
        "ray.widgets.util": logging.WARNING,
        "ray._private.authentication.authentication_token_setup": logging.ERROR,
        "ray.data._internal.progress": logging.ERROR,
        "ray.data._internal.execution.streaming_executor": logging.WARNING,
    }.items():
        logging.getLogger(name).setLevel(level)


def stop_ray() -> bool:
    """Shut down the process's Ray (the local cluster indexing started), so no Ray
    processes outlive a notebook; imports nothing when Ray was never used. True if it ran."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    ray.shutdown()
    return True
