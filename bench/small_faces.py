"""Small-face benchmark: what detecting at source resolution or on tiles recovers, and what it costs.

    .venv/bin/python bench/small_faces.py [--max-samples N] [--videos SUBSTR ...] [--wide-cases N]

Every video of ../shared/data/faces (videos_meta.csv) is sampled at 2 fps exactly as indexing
does (pipelines.decode). Each sampled frame goes through pipelines.detect.detect_faces in every
mode ("scaled" = today, "source", "tiles", "scaled+source"), in a rotating order so machine load
hits all modes alike; faces are kept by filter_detections (models.det_score_threshold /
min_face_px), aligned and embedded with the pack. Scored against video_truth*.csv:

  faces          kept faces, all frames; and in frames inside labelled intervals per visibility class
  with face      labelled (identity, sample) pairs whose frame has >= 1 kept face
  found          pairs of identities with a reference photo (one per identity from labels.csv)
                 whose best face in the frame has cosine >= the pack threshold (0.40)
  new / lost     faces with no scaled face at IoU >= 0.3 in the same frame / scaled faces the mode lacks
  false match    a face >= threshold to the reference of someone NOT labelled near that time
                 (+-0.3 s, don't-care intervals count as labelled); "best": that absent person is
                 also the face's best reference; "new": the face is new vs scaled
  ms/frame       detect_faces only (no decode, align, embed), median per resolution, one onnxruntime
                 thread (models.intra_op_threads=1); thread CPU time, which load from other processes
                 on a shared machine moves less than wall time (both reported)

No labelled person is small in a >= 720p dev video, so a second part builds synthetic 1080p wide
shots: up to --wide-cases labelled faces that the scaled pass matches, their whole frame shrunk
onto a flat 1920x1080 canvas until the face is --wide-targets px, scored the same way.

The whole set (~190 samples + 30 wide shots) takes 2 CPU-minutes (~4 min wall on a loaded 2-core
machine); --max-samples caps the samples per video (evenly spread), --videos picks videos by path
substring, --wide-cases 0 skips the synthetic part. The table goes to stdout, the details (every
new/lost face, false match and changed hit) to --out (bench-out/ is gitignored).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from pipelines.config import load_settings  # noqa: E402
from pipelines.decode import load_photo, plan_chunks, probe_video, sample_video  # noqa: E402
from pipelines.detect import DETECT_MODES, box_iou, detect_faces  # noqa: E402
from pipelines.models import ModelPack, load_pack  # noqa: E402
from pipelines.models.base import filter_detections  # noqa: E402
from pipelines.selfie import NoFaceFound, embed_selfie  # noqa: E402

log = logging.getLogger("small_faces")

DEFAULT_ROOT = REPO.parent / "shared" / "data" / "faces"
SAMPLE_FPS = 2.0
SAME_FACE_IOU = 0.3
PRESENT_TOLERANCE_S = 0.3
CLASSES = ("clear", "small", "profile", "partial")
WIDE_CANVAS = (1920, 1080)
# The README's reference photos for the people in the videos; other identities take their
# first single-person photo (they only serve as false-match bait).
PREFERRED_REFERENCE = {
    "nani": "images/DsignwithSiva_Hybrid-Face-Recognition/nani.jpg",
    "prabhas": "images/DsignwithSiva_Hybrid-Face-Recognition/prabha.jpg",
    "elon_musk": "images/Jordan-1911_simple_facial_recognition/images/musk.jpg",
    "barack_obama": "images/ageitgey_face_recognition/examples/obama.jpg",
    "joe_biden": "images/ageitgey_face_recognition/examples/biden.jpg",
    "lin_manuel_miranda": "images/ageitgey_face_recognition/examples/lin-manuel-miranda.png",
    "alex_lacamoire": "images/ageitgey_face_recognition/examples/alex-lacamoire.png",
}
Span = tuple[float, float]


# --- labels -------------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)]


@dataclass
class Labels:
    truth: dict[str, dict[str, list[Span]]] = field(default_factory=dict)  # video -> identity -> spans
    detailed: dict[str, list[tuple[str, Span, str]]] = field(default_factory=dict)  # video -> (who, span, class)
    dontcare: dict[str, dict[str, list[Span]]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path) -> Labels:
        labels = cls()
        for row in read_csv(root / "video_truth.csv"):
            span = (float(row["start_s"]), float(row["end_s"]))
            labels.truth.setdefault(row["video_path"], {}).setdefault(row["identity"], []).append(span)
        for row in read_csv(root / "video_truth_detailed.csv"):
            span = (float(row["start_s"]), float(row["end_s"]))
            labels.detailed.setdefault(row["video_path"], []).append((row["identity"], span, row["visibility"]))
        for row in read_csv(root / "video_dontcare.csv"):
            span = (float(row["start_s"]), float(row["end_s"]))
            labels.dontcare.setdefault(row["video_path"], {}).setdefault(row["identity"], []).append(span)
        return labels

    def labelled_at(self, video: str, t: float) -> dict[str, str]:
        """identity -> visibility class of everyone labelled at t (don't-care time excluded)."""
        out: dict[str, str] = {}
        for who, spans in self.truth.get(video, {}).items():
            if not any(s <= t <= e for s, e in spans):
                continue
            if any(s <= t <= e for s, e in self.dontcare.get(video, {}).get(who, [])):
                continue
            classes = [vis for w, (s, e), vis in self.detailed.get(video, []) if w == who and s <= t <= e]
            out[who] = classes[0] if classes else "unclassified"
        return out

    def present_near(self, video: str, t: float, tol: float = PRESENT_TOLERANCE_S) -> set[str]:
        """Everyone who may be visible at t: labels widened by their own stated tolerance, don't-care included."""
        found = set()
        for source in (self.truth, self.dontcare):
            for who, spans in source.get(video, {}).items():
                if any(s - tol <= t <= e + tol for s, e in spans):
                    found.add(who)
        return found


def load_references(pack: ModelPack, root: Path, min_score: float, min_face_px: float) -> dict[str, np.ndarray]:
    """One reference embedding per identity of labels.csv."""
    rows = read_csv(root / "labels.csv")
    people_in: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        people_in[row["path"]].add(row["identity"])
    chosen: dict[str, str] = dict(PREFERRED_REFERENCE)
    for row in rows:
        path = row["path"]
        # Crops under hieubkvn123 identities/ are cut from the benchmark's own videos.
        if len(people_in[path]) == 1 and "/identities/" not in path:
            chosen.setdefault(row["identity"], path)
    refs: dict[str, np.ndarray] = {}
    for who, path in sorted(chosen.items()):
        try:
            refs[who] = embed_selfie(pack, load_photo(str(root / path)), min_score, min_face_px).vector
        except (NoFaceFound, OSError) as exc:
            log.warning("no reference for %s (%s): %s", who, path, exc)
    return refs


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class FrameResult:
    boxes: np.ndarray  # (N, 4) kept faces
    sims: np.ndarray  # (N, R) cosine to each reference
    wall_ms: float
    cpu_ms: float


def evenly(items: list[Any], cap: int) -> list[Any]:
    if cap <= 0 or len(items) <= cap:
        return items
    idx = np.linspace(0, len(items) - 1, cap).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


@dataclass
class Measurer:
    """Runs every detect mode on one frame, keeps faces as indexing would, embeds and times them."""

    pack: ModelPack
    ref_matrix: np.ndarray
    det_size: int
    overlap: float
    min_score: float
    min_face_px: float
    calls: int = 0

    def __call__(self, image: np.ndarray) -> dict[str, FrameResult]:
        per_mode: dict[str, FrameResult] = {}
        # Rotate the order so caches and machine load favour no mode.
        k = self.calls % len(DETECT_MODES)
        self.calls += 1
        for mode in DETECT_MODES[k:] + DETECT_MODES[:k]:
            wall, cpu = time.perf_counter(), time.thread_time()
            dets = detect_faces(self.pack.detector, image, mode, self.det_size, self.overlap)
            cpu_ms, wall_ms = (time.thread_time() - cpu) * 1e3, (time.perf_counter() - wall) * 1e3
            kept = filter_detections(dets, self.min_score, self.min_face_px)
            vectors = self.pack.embedder.embed(self.pack.align_all(image, kept))
            per_mode[mode] = FrameResult(kept.boxes, vectors @ self.ref_matrix.T, wall_ms, cpu_ms)
        return per_mode


def run_video(measure: Measurer, path: Path, max_samples: int, keep_image: Callable[[float], bool]) -> VideoRun:
    """Per-mode results for each 2 fps sample, and the images of the samples ``keep_image`` wants."""
    probe = probe_video(str(path))
    (chunk,) = plan_chunks(probe.start_s, probe.duration_s, SAMPLE_FPS, 1e9, probe.fps)
    frames = evenly(list(sample_video(str(path), probe, chunk, SAMPLE_FPS)), max_samples)
    results = [(frame.timestamp_s, measure(frame.image)) for frame in frames]
    images = {f.timestamp_s: f.image for f in frames if keep_image(f.timestamp_s)}
    info = {"width": probe.width, "height": probe.height, "samples": len(frames), "duration_s": probe.duration_s}
    return info, results, images


def shrink_into_canvas(
    image: np.ndarray, scale: float, size: tuple[int, int] = WIDE_CANVAS
) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` scaled by ``scale`` and centred on a flat canvas of ``size`` (w, h); returns the offset."""
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    w, h = size
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)  # flat: adds no face-like texture
    ox, oy = (w - small.shape[1]) // 2, (h - small.shape[0]) // 2
    canvas[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
    return canvas, (ox, oy)


def run_wide_shots(
    measure: Measurer,
    labels: Labels,
    videos: dict[str, VideoRun],
    ref_names: list[str],
    threshold: float,
    targets: tuple[int, ...],
    max_cases: int,
) -> dict[str, Any]:
    """Synthetic wide shots: labelled faces that scaled finds and matches, shrunk to ``targets`` px in 1080p.

    The dev videos have no labelled person who is small in a >= 720p frame, so this measures
    what the feature is for: the same real frame shrunk into a 1920x1080 canvas until the
    person's face (the scaled pass's best match) is ``target`` px on its shorter side.
    """
    ref_index = {name: i for i, name in enumerate(ref_names)}
    cases = []
    for video, (_, frames, images) in videos.items():
        for t, per_mode in frames:
            if t not in images:
                continue
            base = per_mode["scaled"]
            for who in labels.labelled_at(video, t):
                if who not in ref_index or not len(base.boxes):
                    continue
                j = int(base.sims[:, ref_index[who]].argmax())
                if base.sims[j, ref_index[who]] >= threshold:
                    cases.append((video, t, who, base.boxes[j]))
    cases = evenly(cases, max_cases)
    per_video = defaultdict(int)
    for video, *_ in cases:
        per_video[video] += 1
    out: dict[str, Any] = {"cases": len(cases), "cases_per_video": dict(per_video), "targets": {}}
    timing: dict[str, list[float]] = defaultdict(list)
    for target in targets:
        counts = {mode: {"cases": 0, "detected": 0, "found": 0} for mode in DETECT_MODES}
        for video, t, who, box in cases:
            scale = target / float(min(box[2:] - box[:2]))
            if scale >= 1.0:  # already this small: nothing to shrink
                continue
            for c in counts.values():
                c["cases"] += 1
            canvas, (ox, oy) = shrink_into_canvas(videos[video][2][t], scale)
            expected = (box * scale + np.array([ox, oy, ox, oy])).astype(np.float32)
            for mode, r in measure(canvas).items():
                timing[mode].append(r.cpu_ms)
                if not len(r.boxes):
                    continue
                hit = box_iou(expected, r.boxes) >= SAME_FACE_IOU
                counts[mode]["detected"] += int(hit.any())
                counts[mode]["found"] += int((hit & (r.sims[:, ref_index[who]] >= threshold)).any())
        out["targets"][str(target)] = counts
    out["cpu_ms_median_1080p"] = {mode: round(statistics.median(v), 2) for mode, v in timing.items() if v}
    return out


# --- scoring ------------------------------------------------------------------------------------


def new_face_mask(boxes: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Faces in ``boxes`` with no face of ``baseline`` at IoU >= SAME_FACE_IOU."""
    if not len(baseline):
        return np.ones(len(boxes), bool)
    return np.array([box_iou(b, baseline).max() < SAME_FACE_IOU for b in boxes], bool)


def empty_counts() -> dict[str, int]:
    return {"samples": 0, "faces": 0, "pairs": 0, "pairs_with_face": 0, "ref_pairs": 0, "found": 0}


def face_record(kind: str, mode: str, video: str, t: float, r: FrameResult, j: int, ref_names: list[str]) -> dict:
    best = int(r.sims[j].argmax()) if r.sims.shape[1] else -1
    return {
        "kind": kind,
        "mode": mode,
        "video": video,
        "t": round(t, 3),
        "box": [round(float(v), 1) for v in r.boxes[j]],
        "face_px": round(float(min(r.boxes[j, 2:] - r.boxes[j, :2])), 1),
        "best_ref": ref_names[best] if best >= 0 else None,
        "best_sim": round(float(r.sims[j, best]), 3) if best >= 0 else None,
    }


def best_sim(r: FrameResult, ref: int) -> float | None:
    return float(r.sims[:, ref].max()) if len(r.boxes) else None


VideoRun = tuple[dict[str, Any], list[tuple[float, dict[str, FrameResult]]], dict[float, np.ndarray]]


def score(
    labels: Labels,
    videos: dict[str, VideoRun],
    ref_names: list[str],
    threshold: float,
) -> dict[str, Any]:
    ref_index = {name: i for i, name in enumerate(ref_names)}
    summary: dict[str, Any] = {}
    events: list[dict[str, Any]] = []  # new / lost faces, false matches, hits gained or lost vs scaled
    for mode in DETECT_MODES:
        by_class: dict[str, dict[str, int]] = {c: empty_counts() for c in (*CLASSES, "all")}
        total = new = lost = false_all = false_best = false_new = new_found = labelled_samples_with_face = 0
        timing: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"wall": [], "cpu": [], "ratio": []})
        for video, (info, frames, _) in videos.items():
            res = f"{info['width']}x{info['height']}"
            for t, per_mode in frames:
                r, base = per_mode[mode], per_mode["scaled"]
                timing[res]["wall"].append(r.wall_ms)
                timing[res]["cpu"].append(r.cpu_ms)
                timing[res]["ratio"].append(r.cpu_ms / max(base.cpu_ms, 1e-6))
                total += len(r.boxes)
                is_new = new_face_mask(r.boxes, base.boxes)
                is_lost = new_face_mask(base.boxes, r.boxes)
                new += int(is_new.sum())
                lost += int(is_lost.sum())
                present = labels.present_near(video, t)
                wrong = [j for name, j in ref_index.items() if name not in present]
                false = (r.sims[:, wrong] >= threshold).any(axis=1) if wrong else np.zeros(len(r.boxes), bool)
                false_all += int(false.sum())
                # Stricter: the face's best reference is someone absent (it would be shown as them).
                if len(r.boxes) and r.sims.shape[1]:
                    false_best += int((np.isin(r.sims.argmax(axis=1), wrong) & false).sum())
                false_new += int((false & is_new).sum())
                labelled = labels.labelled_at(video, t)
                if labelled and len(r.boxes):
                    labelled_samples_with_face += 1
                for cls in {*labelled.values(), "all"} if labelled else ():
                    if cls in by_class:
                        by_class[cls]["samples"] += 1
                        by_class[cls]["faces"] += len(r.boxes)
                for who, cls in labelled.items():
                    hit = base_hit = False
                    if who in ref_index:
                        sim, base_sim = best_sim(r, ref_index[who]), best_sim(base, ref_index[who])
                        hit = sim is not None and sim >= threshold
                        base_hit = base_sim is not None and base_sim >= threshold
                        if hit and is_new[int(r.sims[:, ref_index[who]].argmax())]:
                            new_found += 1
                        if hit != base_hit:
                            events.append(
                                {
                                    "kind": "hit_gained" if hit else "hit_lost",
                                    "mode": mode,
                                    "video": video,
                                    "t": round(t, 3),
                                    "identity": who,
                                    "visibility": cls,
                                    "sim": None if sim is None else round(sim, 3),
                                    "scaled_sim": None if base_sim is None else round(base_sim, 3),
                                }
                            )
                    for key in (cls, "all"):
                        if key not in by_class:
                            continue
                        c = by_class[key]
                        c["pairs"] += 1
                        c["pairs_with_face"] += int(len(r.boxes) > 0)
                        if who in ref_index:
                            c["ref_pairs"] += 1
                            c["found"] += int(hit)
                for j in np.flatnonzero(false):
                    record = face_record("false_match", mode, video, t, r, j, ref_names)
                    record["wrong_refs"] = {
                        ref_names[k]: round(float(r.sims[j, k]), 3) for k in wrong if r.sims[j, k] >= threshold
                    }
                    record["is_new"] = bool(is_new[j])
                    events.append({**record, "labelled": labelled})
                if mode != "scaled":
                    for j in np.flatnonzero(is_new):
                        events.append({**face_record("new", mode, video, t, r, j, ref_names), "labelled": labelled})
                    for j in np.flatnonzero(is_lost):
                        events.append({**face_record("lost", mode, video, t, base, j, ref_names), "labelled": labelled})
        summary[mode] = {
            "faces": total,
            "new_vs_scaled": new,
            "lost_vs_scaled": lost,
            "false_matches": false_all,
            "false_matches_best_ref_absent": false_best,
            "false_matches_new": false_new,
            "labelled_samples_with_face": labelled_samples_with_face,
            "found_via_new_face": new_found,
            "by_class": by_class,
            "timing": {
                res: {
                    "frames": len(v["cpu"]),
                    "cpu_ms_median": round(statistics.median(v["cpu"]), 2),
                    "wall_ms_median": round(statistics.median(v["wall"]), 2),
                    "ratio_vs_scaled_median": round(statistics.median(v["ratio"]), 2),
                }
                for res, v in sorted(timing.items(), key=lambda kv: int(kv[0].split("x")[0]) * int(kv[0].split("x")[1]))
            },
        }
    return {"summary": summary, "events": events}


# --- report -------------------------------------------------------------------------------------


def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "-"


def table(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [f"{'':36}" + "".join(f"{m:>18}" for m in DETECT_MODES)]

    def line(label: str, cells: list[str]) -> None:
        lines.append(f"{label:36}" + "".join(f"{c:>18}" for c in cells))

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        line(label, [cell(s[m]) for m in DETECT_MODES])

    row("faces kept (all frames)", lambda m: str(m["faces"]))
    row("  new vs scaled / lost", lambda m: f"{m['new_vs_scaled']} / {m['lost_vs_scaled']}")
    row(
        "  false matches (all/best/new)",
        lambda m: f"{m['false_matches']}/{m['false_matches_best_ref_absent']}/{m['false_matches_new']}",
    )
    row("labelled samples with >=1 face", lambda m: str(m["labelled_samples_with_face"]))
    for cls in (*CLASSES, "all"):
        row(f"[{cls}] faces in labelled samples", lambda m, c=cls: str(m["by_class"][c]["faces"]))
        row(
            f"[{cls}] pairs with >=1 face",
            lambda m, c=cls: pct(m["by_class"][c]["pairs_with_face"], m["by_class"][c]["pairs"]),
        )
        row(
            f"[{cls}] found >= thr (ref people)",
            lambda m, c=cls: pct(m["by_class"][c]["found"], m["by_class"][c]["ref_pairs"]),
        )
    row("found through a new face", lambda m: str(m["found_via_new_face"]))
    for res in s["scaled"]["timing"]:
        row(
            f"{res} cpu ms/frame (x scaled)",
            lambda m, r=res: f"{m['timing'][r]['cpu_ms_median']:.1f} (x{m['timing'][r]['ratio_vs_scaled_median']:.1f})",
        )
        row(f"{res} wall ms/frame", lambda m, r=res: f"{m['timing'][r]['wall_ms_median']:.1f}")
    wide = result.get("wide_shots")
    if wide and wide["cases"]:
        n = wide["cases"]
        lines.append(f"synthetic 1080p wide shots: {n} labelled faces that scaled matches in the video, shrunk to")
        for target, counts in wide["targets"].items():
            line(f"  {target} px: detected", [pct(counts[m]["detected"], counts[m]["cases"]) for m in DETECT_MODES])
            line(f"  {target} px: found >= thr", [pct(counts[m]["found"], counts[m]["cases"]) for m in DETECT_MODES])
        line("  cpu ms/frame", [f"{wide['cpu_ms_median_1080p'].get(m, 0.0):.1f}" for m in DETECT_MODES])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "small_faces.json")
    parser.add_argument("--max-samples", type=int, default=0, help="samples per video, evenly spread (0: all)")
    parser.add_argument("--videos", nargs="*", default=[], help="only videos whose path contains one of these")
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--wide-targets", type=int, nargs="*", default=[24, 32], help="face px in synthetic wide shots")
    parser.add_argument("--wide-cases", type=int, default=30, help="labelled faces shrunk into wide shots (0: skip)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.root.is_dir():
        log.error("%s not found", args.root)
        return 2

    settings = load_settings(None, models={"intra_op_threads": 1})
    cfg = settings.models
    pack = load_pack(cfg)
    threshold = pack.info.threshold if cfg.match_threshold is None else cfg.match_threshold
    refs = load_references(pack, args.root, cfg.det_score_threshold, cfg.min_face_px)
    ref_names = sorted(refs)
    ref_matrix = np.stack([refs[n] for n in ref_names])
    labels = Labels.load(args.root)

    paths = [row["video_path"] for row in read_csv(args.root / "videos_meta.csv")]
    if args.videos:
        paths = [p for p in paths if any(s in p for s in args.videos)]
    measure = Measurer(pack, ref_matrix, cfg.det_size, args.overlap, cfg.det_score_threshold, cfg.min_face_px)
    videos: dict[str, VideoRun] = {}
    started = time.perf_counter()
    for rel in paths:
        t0 = time.perf_counter()
        keep = (lambda t, rel=rel: bool(labels.labelled_at(rel, t))) if args.wide_cases else (lambda t: False)
        videos[rel] = run_video(measure, args.root / rel, args.max_samples, keep)
        info = videos[rel][0]
        log.info(
            "%s: %d samples %dx%d in %.1f s",
            rel,
            info["samples"],
            info["width"],
            info["height"],
            time.perf_counter() - t0,
        )
    result = score(labels, videos, ref_names, threshold)
    if args.wide_cases:
        t0 = time.perf_counter()
        result["wide_shots"] = run_wide_shots(
            measure, labels, videos, ref_names, threshold, tuple(args.wide_targets), args.wide_cases
        )
        log.info("synthetic wide shots: %d cases in %.1f s", result["wide_shots"]["cases"], time.perf_counter() - t0)
    result["settings"] = {
        "pack": pack.info.name,
        "det_size": cfg.det_size,
        "tile_overlap": args.overlap,
        "det_score_threshold": cfg.det_score_threshold,
        "min_face_px": cfg.min_face_px,
        "match_threshold": threshold,
        "intra_op_threads": cfg.intra_op_threads,
        "sample_fps": SAMPLE_FPS,
        "max_samples": args.max_samples,
        "references": ref_names,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    result["videos"] = {rel: info for rel, (info, _, _) in videos.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\ndetails: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
