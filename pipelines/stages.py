"""The per-batch work of the indexing pipeline, free of Ray: decode, detect+align, embed.

Each stage maps a column batch (dict of numpy arrays) to the next. Besides frame and
face rows, every decoded chunk ends with one ``end`` marker row that carries the
chunk's frame count and error, and flows through every stage, so the writer knows
when a media file is complete or failed without a second pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from pipelines.decode import SampledFrame, WorkItem, load_photo, sample_video
from pipelines.detect import detect_faces
from pipelines.models import load_pack
from pipelines.models.base import ALIGNED_SIZE, filter_detections
from pipelines.tracks import SIGNATURE_DIM, crop_sharpness, frame_signature

log = logging.getLogger(__name__)

KIND_FRAME, KIND_FACE, KIND_END, KIND_BIB = "frame", "face", "end", "bib"
# Columns that travel unchanged from decode to the writer.
PASS_COLUMNS = ("kind", "media_key", "media_type", "timestamp_s", "frame_index", "error", "frames")
# Frames per yielded decode batch: small, so memory stays bounded per task.
DECODE_BATCH = 8
# Per-face columns stacked into 2-D+ arrays, with their dtypes.
STACKED = {
    "bbox": np.float32,
    "landmarks": np.float32,
    "signature": np.float32,
    "crop": np.uint8,
    "bib_box": np.float32,
}
# What a ``bib`` row carries (pipelines/bibs.py); other rows hold empty values.
BIB_COLUMNS = ("bib_number", "bib_confidence", "bib_box")


def _frame_batch(item: WorkItem, frames: list[SampledFrame]) -> dict[str, np.ndarray]:
    n = len(frames)
    return {
        "kind": np.array([KIND_FRAME] * n),
        "media_key": np.array([item.source.media_key] * n),
        "media_type": np.array([item.source.media_type] * n),
        "timestamp_s": np.array([f.timestamp_s for f in frames], np.float64),
        "frame_index": np.array([f.frame_index for f in frames], np.int64),
        "error": np.array([""] * n),
        "frames": np.zeros(n, np.int64),
        "image": np.stack([f.image for f in frames]),
    }


def _end_batch(item: WorkItem, frames: int, error: str) -> dict[str, np.ndarray]:
    return {
        "kind": np.array([KIND_END]),
        "media_key": np.array([item.source.media_key]),
        "media_type": np.array([item.source.media_type]),
        "timestamp_s": np.zeros(1, np.float64),
        "frame_index": np.full(1, item.chunk_index, np.int64),
        "error": np.array([error]),
        "frames": np.array([frames], np.int64),
        "image": np.zeros((1, 2, 2, 3), np.uint8),
    }


def decode_chunk(
    item: WorkItem, sample_fps: float, thread_type: str, storage_options: dict | None
) -> Iterator[dict[str, np.ndarray]]:
    """Frames of one work item (a video chunk or a photo), then its end marker."""
    count, error = 0, ""
    uri = item.source.uri
    if item.source.storage_options is not None:  # a source in an org's own storage
        storage_options = item.source.storage_options
    try:
        if item.source.media_type == "photo":
            yield _frame_batch(item, [SampledFrame(0.0, 0, load_photo(uri, storage_options))])
            count = 1
        else:
            pending = []
            for frame in sample_video(uri, item.probe, item.chunk, sample_fps, thread_type, storage_options):
                pending.append(frame)
                count += 1
                if len(pending) >= DECODE_BATCH:
                    yield _frame_batch(item, pending)
                    pending = []
            if pending:
                yield _frame_batch(item, pending)
    except Exception as exc:  # recorded on the media row; other media go on
        log.warning("decoding %s failed: %s", uri, exc)
        error = f"decode failed: {type(exc).__name__}: {exc}"
    yield _end_batch(item, count, error)


def decode_batches(
    batch: dict[str, np.ndarray],
    work: list[WorkItem],
    sample_fps: float,
    thread_type: str,
    storage_options: dict | None,
) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data entry point: rows name a ``WorkItem`` of ``work`` by position (batch_size=1)."""
    for i in batch["work"]:
        yield from decode_chunk(work[int(i)], sample_fps, thread_type, storage_options)


def _empty_faces() -> dict[str, np.ndarray]:
    return {
        "kind": np.array([], dtype=str),
        "media_key": np.array([], dtype=str),
        "media_type": np.array([], dtype=str),
        "timestamp_s": np.zeros(0, np.float64),
        "frame_index": np.zeros(0, np.int64),
        "error": np.array([], dtype=str),
        "frames": np.zeros(0, np.int64),
        "bbox": np.zeros((0, 4), np.float32),
        "landmarks": np.zeros((0, 10), np.float32),
        "det_score": np.zeros(0, np.float32),
        "face_px": np.zeros(0, np.float32),
        "sharpness": np.zeros(0, np.float32),
        "signature": np.zeros((0, SIGNATURE_DIM), np.float32),
        "crop": np.zeros((0, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8),
        "bib_number": np.array([], dtype=str),
        "bib_confidence": np.zeros(0, np.float32),
        "bib_box": np.zeros((0, 4), np.float32),
    }


class ReadBibs:
    """Actor (only for events with BIB search): frames pass through unchanged, and after
    each frame read for race numbers comes one ``bib`` row per number found. Photos are
    always read; video frames at ``bibs.sample_fps`` (chosen by timestamp alone, so the
    chunks of one video agree)."""

    def __init__(self, bib_cfg, sample_fps: float) -> None:
        from pipelines.bibs import BibReader

        self.reader = BibReader(bib_cfg)
        self.bib_fps = bib_cfg.sample_fps
        self.sample_fps = sample_fps

    def wanted(self, media_type: str, t: float) -> bool:
        from pipelines.bibs import bib_sample_mask

        if media_type == "photo":
            return True
        return bool(bib_sample_mask(np.array([t]), self.sample_fps, self.bib_fps)[0])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list] = {k: [] for k in (*PASS_COLUMNS, "image", *BIB_COLUMNS)}

        def add(i: int, kind: str, image, number: str, confidence: float, box) -> None:
            for col in PASS_COLUMNS:
                rows[col].append(batch[col][i])
            rows["kind"][-1] = kind
            rows["image"].append(image)
            rows["bib_number"].append(number)
            rows["bib_confidence"].append(confidence)
            rows["bib_box"].append(np.asarray(box, np.float32))

        for i in range(len(batch["kind"])):
            image = batch["image"][i]
            add(i, str(batch["kind"][i]), image, "", 0.0, np.zeros(4, np.float32))
            if batch["kind"][i] != KIND_FRAME or not self.wanted(str(batch["media_type"][i]), batch["timestamp_s"][i]):
                continue
            for read in self.reader.read(np.asarray(image)):  # frames are BGR, as the reader wants
                add(i, KIND_BIB, np.zeros((2, 2, 3), np.uint8), read.number, read.confidence, read.box)
        out = {k: v for k, v in rows.items() if k not in ("image", "bib_box")}
        out = {k: np.array(v) for k, v in out.items()}
        out["bib_confidence"] = out["bib_confidence"].astype(np.float32)
        out["bib_box"] = np.stack(rows["bib_box"]).astype(np.float32)
        images = rows["image"]
        if len({np.asarray(im).shape for im in images}) == 1:
            out["image"] = np.stack([np.asarray(im) for im in images])
        else:  # bib rows carry a 2x2 placeholder: ragged, as end markers already are downstream
            out["image"] = np.array([np.asarray(im) for im in images] + [None], dtype=object)[:-1]
        return out


class DetectAlign:
    """Actor: frames in, small aligned face crops out (whole frames stop here; a frame
    without a face leaves one ``frame`` marker row, so the writer can count it).

    What tracking needs from the whole frame is computed here too: each face row carries
    its crop's sharpness and its frame's colour signature (for shot cuts).
    """

    def __init__(self, models_cfg, tally=None) -> None:
        self.pack = load_pack(models_cfg)
        self.tally = tally  # a FrameTally actor (pipelines/index.py): frames detected, for progress
        self.min_score = models_cfg.det_score_threshold
        self.min_face_px = models_cfg.min_face_px
        self.mode, self.det_size = models_cfg.detect_mode, models_cfg.det_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list] = {k: [] for k in _empty_faces()}
        for i in range(len(batch["kind"])):
            if batch["kind"][i] != KIND_FRAME:
                self._append(rows, batch, i, None, None, None, None, None)
                continue
            image = np.asarray(batch["image"][i])
            found = detect_faces(self.pack.detector, image, self.mode, self.det_size)
            dets = filter_detections(found, self.min_score, self.min_face_px)
            if not len(dets):  # a marker row: the writer counts the frame as done (progress)
                self._append(rows, batch, i, None, None, None, None, None)
                continue
            crops = self.pack.align_all(image, dets)
            signature = frame_signature(image)
            for j in range(len(dets)):
                self._append(rows, batch, i, dets.boxes[j], dets.landmarks[j], dets.scores[j], crops[j], signature)
        if self.tally is not None:
            frames = int(np.count_nonzero(batch["kind"] == KIND_FRAME))
            if frames:
                self.tally.add.remote(frames)  # fire and forget: progress is no reason to wait
        if not rows["kind"]:
            return _empty_faces()
        out = {k: np.array(v) for k, v in rows.items() if k not in STACKED}
        for col, dtype in STACKED.items():
            out[col] = np.stack(rows[col]).astype(dtype)
        for col in ("det_score", "face_px", "sharpness", "bib_confidence"):
            out[col] = out[col].astype(np.float32)
        return out

    @staticmethod
    def _append(rows: dict[str, list], batch, i: int, box, landmarks, score, crop, signature) -> None:
        for col in PASS_COLUMNS:
            rows[col].append(batch[col][i])
        has_bib = box is None and "bib_number" in batch
        rows["bib_number"].append(str(batch["bib_number"][i]) if has_bib else "")
        rows["bib_confidence"].append(float(batch["bib_confidence"][i]) if has_bib else 0.0)
        rows["bib_box"].append(np.asarray(batch["bib_box"][i], np.float32) if has_bib else np.zeros(4, np.float32))
        if box is None:  # marker row (chunk end, bib)
            rows["bbox"].append(np.zeros(4, np.float32))
            rows["landmarks"].append(np.zeros(10, np.float32))
            rows["det_score"].append(0.0)
            rows["face_px"].append(0.0)
            rows["sharpness"].append(0.0)
            rows["signature"].append(np.zeros(SIGNATURE_DIM, np.float32))
            rows["crop"].append(np.zeros((ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8))
            return
        rows["kind"][-1] = KIND_FACE
        rows["bbox"].append(box)
        rows["landmarks"].append(landmarks.reshape(10))
        rows["det_score"].append(float(score))
        rows["face_px"].append(float(min(box[2] - box[0], box[3] - box[1])))
        rows["sharpness"].append(crop_sharpness(crop))
        rows["signature"].append(signature)
        rows["crop"].append(crop)


class Embed:
    """Actor: aligned crops in, unit-norm embeddings out (crops dropped)."""

    def __init__(self, models_cfg) -> None:
        self.pack = load_pack(models_cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        crops = batch.pop("crop")
        n = len(batch["kind"])
        vectors = np.zeros((n, self.pack.info.dim), np.float32)
        is_face = batch["kind"] == KIND_FACE
        if is_face.any():
            vectors[is_face] = self.pack.embedder.embed(np.asarray(crops)[is_face])
        batch["vector"] = vectors
        return batch
