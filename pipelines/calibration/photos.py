"""Photos embedded as the API embeds a selfie: pair scores and each identity's references."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.calibration.pairs import Pair
from pipelines.calibration.rates import ScoreSet
from pipelines.config import Settings
from pipelines.eval_runner import DEFAULT_EXCLUDE, reference_photos
from pipelines.evaluate import LabelledSet
from pipelines.models import ModelPack


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
