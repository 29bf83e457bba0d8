"""Ingest benchmark: one synthetic 720p video through four ways of indexing it.

    python bench/ingest.py --duration 60 --out bench-out/

Variants, each run in its own fresh Python process so peak RSS is per variant:

  decode    pipelines.decode.sample_video over the whole video (PyAV, sampled frames only
            converted to BGR), one process.
  models    detect + align + embed (load_pack) on the same sampled frames, decoded into
            memory before the clock starts, one process.
  pipeline  pipelines.index.index_event on a fresh data_dir, on a private local Ray cluster
            using every CPU. Ray startup (ensure_ray) is timed separately.
  naive     one process: cv2.VideoCapture reads (decodes and converts) EVERY frame; detect,
            align and embed run on the sampled frames only, sequentially.
  ocr       BIB reading alone (pipelines.bibs.BibReader, one process): the sampled frames
            chosen at bibs.sample_fps, decoded into memory first, then generated bib photos
            (t1.jpg's six people with printed numbers): seconds per frame and per photo.
  pipeline-bibs  as pipeline, with BIB reading on (the OCR actor pool before detection),
            for the ingest rate with BIBs on versus off.

Every variant takes its settings from load_settings(), so FACEREEL_* variables and a
facereel.yaml apply to all of them alike. In particular the onnxruntime intra-op thread
count (models.intra_op_threads, default 1) is the same for the one-process variants and for
each pipeline actor, so they run identical sessions. The synthetic video is cached in the
output directory; results go to <out>/results.json, per-run details to <out>/raw/.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from machine import cpu_model, loadavg

VARIANTS = ("decode", "models", "naive", "pipeline", "ocr", "pipeline-bibs")
BIB_PHOTOS = 6
WIDTH, HEIGHT = 1280, 720
# t1.jpg's six faces span 417 px vertically; x1.6 makes them ~160 px wide and still fits 720 p.
PAN_SCALE = 1.6
SAMPLE_RSS_S = 0.2


# --------------------------------------------------------------------------- helpers
def own_peak_rss_mib() -> float:
    """This process's peak RSS (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def system_busy_s() -> float:
    """CPU seconds all processes on the machine have used since boot (not idle, not iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def video_meta_path(video: Path) -> Path:
    return video.with_suffix(".json")


def iter_sampled_frames(video: Path, settings, probe) -> Iterator:
    """Sampled frames of ``video`` via pipelines.decode, chunk by chunk like the pipeline."""
    from pipelines.decode import plan_chunks, sample_video

    dec = settings.decode
    for chunk in plan_chunks(probe.start_s, probe.duration_s, dec.sample_fps, dec.chunk_s):
        yield from sample_video(str(video), probe, chunk, dec.sample_fps, dec.thread_type)


# --------------------------------------------------------------------------- video
LOOP_BASE_S = 60.0  # longer videos are this one played back to back (stream copy)


def make_video(out: Path, duration_s: float, fps: float) -> tuple[Path, dict]:
    """The cached synthetic video: a pan across t1.jpg (six people) upscaled x1.6. Past
    LOOP_BASE_S it is the 60 s pan repeated (a 10-minute event in seconds, not minutes of
    rendering); the pipeline and the baselines see the same frames either way."""
    video = out / f"pan_{WIDTH}x{HEIGHT}_{fps:g}fps_{duration_s:g}s.mp4"
    meta_path = video_meta_path(video)
    if video.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        meta["generated_now"] = False
        return video, meta
    if duration_s > LOOP_BASE_S and duration_s % LOOP_BASE_S == 0:
        return loop_video(out, video, duration_s, fps)

    from pipelines.config import load_settings
    from pipelines.models import load_pack
    from pipelines.synthetic import insightface_image, make_pan_video, read_bgr

    settings = load_settings()
    pack = load_pack(settings.models.model_copy(update={"det_size": 1280}))
    faces = pack.detector.detect(read_bgr(insightface_image("t1.jpg")))
    if len(faces) != 6:
        raise RuntimeError(f"expected 6 faces in t1.jpg, found {len(faces)}")
    tmp = video.with_name(video.stem + ".tmp.mp4")
    t0 = time.perf_counter()
    pan = make_pan_video(tmp, faces, width=WIDTH, height=HEIGHT, fps=fps, duration_s=duration_s, scale=PAN_SCALE)
    seconds = time.perf_counter() - t0
    tmp.replace(video)
    meta = {
        "width": pan.width,
        "height": pan.height,
        "fps": pan.fps,
        "duration_s": pan.duration_s,
        "scale": pan.scale,
        "speed_px_s": pan.speed_px_s,
        "codec": "h264 (libx264 veryfast, yuv420p, GOP 2 s) + aac audio",
        "content": "pan across insightface t1.jpg (6 people) upscaled x1.6",
        "generate_s": round(seconds, 2),
        "size_bytes": video.stat().st_size,
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    meta["generated_now"] = True
    return video, meta


def loop_video(out: Path, video: Path, duration_s: float, fps: float) -> tuple[Path, dict]:
    import imageio_ffmpeg

    base, base_meta = make_video(out, LOOP_BASE_S, fps)
    times = int(duration_s // LOOP_BASE_S)
    listing = video.with_suffix(".txt")
    listing.write_text("".join(f"file '{base.resolve()}'\n" for _ in range(times)))
    tmp = video.with_name(video.stem + ".tmp.mp4")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing)]
    subprocess.run([*cmd, "-c", "copy", "-movflags", "+faststart", str(tmp)], check=True)
    listing.unlink()
    tmp.replace(video)
    meta = {k: v for k, v in base_meta.items() if k != "generated_now"}
    meta |= {"duration_s": duration_s, "content": f"{meta['content']}, {times} times back to back (stream copy)"}
    meta["size_bytes"] = video.stat().st_size
    video_meta_path(video).write_text(json.dumps(meta, indent=2))
    meta["generated_now"] = True
    return video, meta


# --------------------------------------------------------------------------- variants
def run_decode(video: Path) -> dict:
    from pipelines.config import load_settings
    from pipelines.decode import probe_video

    settings = load_settings()
    rss_before = current_rss_mib()
    cpu0, t0 = own_cpu_s(), time.perf_counter()
    probe = probe_video(str(video))
    probe_s = time.perf_counter() - t0
    frames = sum(1 for _ in iter_sampled_frames(video, settings, probe))  # each frame dropped
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "probe_s": probe_s,
        "cpu_s": own_cpu_s() - cpu0,
        "frames": frames,
        "faces": None,
        "video_s": probe.duration_s,
        "peak_rss_mib": own_peak_rss_mib(),
        "rss_before_mib": rss_before,
        "note": f"PyAV thread_type={settings.decode.thread_type}, chunk_s={settings.decode.chunk_s:g}",
    }


def run_models(video: Path) -> dict:
    import numpy as np

    from pipelines.config import load_settings
    from pipelines.decode import probe_video
    from pipelines.models import load_pack
    from pipelines.models.base import filter_detections

    settings = load_settings()
    cfg = settings.models
    rss_imports = current_rss_mib()
    probe = probe_video(str(video))
    frames = list(iter_sampled_frames(video, settings, probe))  # not timed
    rss_frames = current_rss_mib()
    t0 = time.perf_counter()
    pack = load_pack(cfg)
    load_s = time.perf_counter() - t0
    from pipelines.tracks import TrackLinker, crop_sharpness, face_quality, frame_signature, is_shot_cut

    batch = settings.index.embed.batch_size
    det_s = align_s = emb_s = track_s = 0.0
    crops: list = []
    vectors: list = []
    per_frame: list = []  # (timestamp, boxes, qualities, signature)
    faces = 0
    cpu0, start = own_cpu_s(), time.perf_counter()
    for f in frames:
        t = time.perf_counter()
        dets = filter_detections(pack.detector.detect(f.image), cfg.det_score_threshold, cfg.min_face_px)
        t2 = time.perf_counter()
        aligned = pack.align_all(f.image, dets)
        crops.extend(aligned)
        t3 = time.perf_counter()
        det_s, align_s = det_s + t2 - t, align_s + t3 - t2
        # What tracking adds in the detect actor: a frame signature and a sharpness per face.
        sig = frame_signature(f.image)
        quality = [
            face_quality(min(b[2] - b[0], b[3] - b[1]), s, crop_sharpness(c))
            for b, s, c in zip(dets.boxes, dets.scores, aligned, strict=True)
        ]
        per_frame.append((f.timestamp_s, dets.boxes, np.asarray(quality, np.float32), sig))
        track_s += time.perf_counter() - t3
        faces += len(dets)
        while len(crops) >= batch:
            t = time.perf_counter()
            vectors.extend(pack.embedder.embed(np.stack(crops[:batch])))
            emb_s += time.perf_counter() - t
            crops = crops[batch:]
    if crops:
        t = time.perf_counter()
        vectors.extend(pack.embedder.embed(np.stack(crops)))
        emb_s += time.perf_counter() - t
    # What tracking adds in the writer: linking every frame's faces.
    t = time.perf_counter()
    linker, prev, used = TrackLinker(settings.tracks, "bench"), None, 0
    for ts, boxes, quality, sig in per_frame:
        n = len(boxes)
        if n:
            linker.add_frame(ts, boxes, np.stack(vectors[used : used + n]), quality, is_shot_cut(prev, sig, 0.4))
        prev, used = sig, used + n
    tracks = len(linker.finish())
    track_s += time.perf_counter() - t
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "cpu_s": own_cpu_s() - cpu0,
        "frames": len(frames),
        "faces": faces,
        "video_s": probe.duration_s,
        "peak_rss_mib": own_peak_rss_mib(),
        "rss_before_mib": rss_imports,
        "rss_with_frames_mib": rss_frames,
        "load_s": load_s,
        "detect_s": det_s,
        "align_s": align_s,
        "embed_s": emb_s,
        "detect_ms_per_frame": 1000 * det_s / max(1, len(frames)),
        "embed_ms_per_face": 1000 * emb_s / max(1, faces),
        "track_s": track_s,
        "tracks": tracks,
        "track_share": track_s / wall,
        "note": f"intra_op_threads={cfg.intra_op_threads}, embed batch {batch}; "
        "peak RSS includes the pre-decoded frames",
    }


def run_naive(video: Path) -> dict:
    import cv2

    from pipelines.config import load_settings
    from pipelines.decode import GridSampler
    from pipelines.models import load_pack
    from pipelines.models.base import filter_detections

    settings = load_settings()
    cfg = settings.models
    rss_before = current_rss_mib()
    cpu0, start = own_cpu_s(), time.perf_counter()
    pack = load_pack(cfg)
    load_s = time.perf_counter() - start
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {video}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    sampler = GridSampler(0.0, settings.decode.sample_fps, fps, 0, 10**9)
    decoded = sampled = faces = 0
    read_s = model_s = 0.0
    while True:
        t = time.perf_counter()
        ok, image = cap.read()
        read_s += time.perf_counter() - t
        if not ok:
            break
        index = decoded
        decoded += 1
        if sampler.accept(index / fps) is None:
            continue
        t = time.perf_counter()
        dets = filter_detections(pack.detector.detect(image), cfg.det_score_threshold, cfg.min_face_px)
        pack.embedder.embed(pack.align_all(image, dets))
        model_s += time.perf_counter() - t
        sampled += 1
        faces += len(dets)
    cap.release()
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "cpu_s": own_cpu_s() - cpu0,
        "frames": sampled,
        "faces": faces,
        "video_s": decoded / fps,
        "decoded_frames": decoded,
        "peak_rss_mib": own_peak_rss_mib(),
        "rss_before_mib": rss_before,
        "load_s": load_s,
        "read_s": read_s,
        "model_s": model_s,
        "note": f"cv2 {cv2.__version__} reads every frame; "
        f"intra_op_threads={cfg.intra_op_threads}, "
        "embed per frame; wall includes model load",
    }


class TreeSampler(threading.Thread):
    """RSS summed over a process and all its descendants (Ray's processes are), and the CPU
    time of every process of the tree seen so far (a lower bound: time spent after a
    process's last sample, and by processes shorter than one period, is missed)."""

    def __init__(self, period_s: float, pid: int | None = None) -> None:
        super().__init__(daemon=True)
        self.period_s = period_s
        self.root = psutil.Process(pid)
        self.stop_event = threading.Event()
        self.peak: dict[str, float] = {
            "total": 0.0,
            "driver": 0.0,
            "workers": 0.0,
            "ray_system": 0.0,
        }
        self.peak_processes = 0
        self.cpu: dict[int, float] = {}
        self.kinds: dict[int, str] = {}
        self.samples = 0
        # Optional CPU timeline: set ``origin`` (a perf_counter value) to start recording.
        self.origin: float | None = None
        self.series: list[tuple[float, dict[int, float]]] = []
        self.labels: dict[int, str] = {}

    def kind(self, proc: psutil.Process) -> str:
        if proc.pid not in self.kinds:
            try:
                name, cmd = proc.name(), " ".join(proc.cmdline())
            except psutil.Error:
                name, cmd = "", ""
            worker = name.startswith("ray::") or "default_worker.py" in cmd
            self.kinds[proc.pid] = "workers" if worker else "ray_system"
        return self.kinds[proc.pid]

    def sample(self) -> None:
        sums = {"driver": 0.0, "workers": 0.0, "ray_system": 0.0}
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for p in procs:
            try:
                with p.oneshot():
                    rss = p.memory_info().rss / 2**20
                    times = p.cpu_times()
            except psutil.Error:
                continue
            sums["driver" if p.pid == self.root.pid else self.kind(p)] += rss
            self.cpu[p.pid] = times.user + times.system
            if self.origin is not None:
                self.label(p)
        if self.origin is not None:
            self.series.append((time.perf_counter() - self.origin, dict(self.cpu)))
        total = sum(sums.values())
        if total > self.peak["total"]:
            self.peak = {"total": total, **sums}
        self.peak_processes = max(self.peak_processes, len(procs))
        self.samples += 1

    def label(self, proc: psutil.Process) -> None:
        """What a process is: the driver, a Ray system process, or the task/actor it ran."""
        if proc.pid == self.root.pid:
            self.labels[proc.pid] = "driver"
            return
        try:
            title = proc.cmdline()[0] if self.kind(proc) == "workers" else proc.name()
        except (psutil.Error, IndexError):
            return
        title = title.removeprefix("ray::").split(" ")[0]
        if "/" in title:  # a worker before Ray sets its process title
            title = "worker (starting)"
        if title and (title != "IDLE" or proc.pid not in self.labels):
            self.labels[proc.pid] = title if self.kind(proc) == "workers" else "ray system"

    def timeline(self, bin_s: float = 1.0) -> dict[str, list[float]]:
        """Cores used per label in consecutive ``bin_s`` bins after ``origin``."""
        if len(self.series) < 2:
            return {}
        bins = int(self.series[-1][0] // bin_s) + 1
        out: dict[str, list[float]] = {}
        for (_, before), (t, after) in itertools.pairwise(self.series):
            for pid, cpu in after.items():
                used = cpu - before.get(pid, cpu)
                if used > 0:
                    row = out.setdefault(self.labels.get(pid, "other"), [0.0] * bins)
                    row[min(bins - 1, int(t // bin_s))] += used / bin_s
        return {k: [round(x, 2) for x in v] for k, v in sorted(out.items())}

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.period_s)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        self.sample()


def run_ocr(video: Path) -> dict:
    import numpy as np

    from pipelines.bibs import BibReader, bib_sample_mask
    from pipelines.config import load_settings
    from pipelines.decode import probe_video
    from pipelines.models import load_pack
    from pipelines.synthetic import insightface_image, read_bgr
    from pipelines.synthetic_bibs import make_bib_photos

    settings = load_settings()
    probe = probe_video(str(video))
    sampled = list(iter_sampled_frames(video, settings, probe))
    frames = [f.image for f in sampled]
    times = np.array([f.timestamp_s for f in sampled])
    chosen = [
        img
        for img, keep in zip(
            frames, bib_sample_mask(times, settings.decode.sample_fps, settings.bibs.sample_fps), strict=True
        )
        if keep
    ]
    pack = load_pack(settings.models.model_copy(update={"det_size": 1280}))
    faces = pack.detector.detect(read_bgr(insightface_image("t1.jpg")))
    with tempfile.TemporaryDirectory(prefix="facereel-bench-bibs-") as tmp:
        photos = [read_bgr(p) for p, _ in make_bib_photos(Path(tmp), faces.boxes)[:BIB_PHOTOS]]
    load0 = time.perf_counter()
    reader = BibReader(settings.bibs)
    load_s = time.perf_counter() - load0
    cpu0, t0 = own_cpu_s(), time.perf_counter()
    frame_reads = sum(len(reader.read(img)) for img in chosen)
    frames_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    photo_reads = sum(len(reader.read(img)) for img in photos)
    photos_s = time.perf_counter() - t1
    return {
        "wall_s": frames_s,
        "cpu_s": own_cpu_s() - cpu0,
        "frames": len(chosen),
        "faces": None,
        "video_s": probe.duration_s,
        "ocr_s_per_frame": frames_s / max(1, len(chosen)),
        "ocr_s_per_photo": photos_s / len(photos),
        "photo_size": list(photos[0].shape[1::-1]),
        "bibs_read_frames": frame_reads,
        "bibs_read_photos": photo_reads,
        "bibs_in_photos": BIB_PHOTOS * len(faces),
        "reader_load_s": load_s,
        "peak_rss_mib": own_peak_rss_mib(),
        "note": f"bibs.sample_fps={settings.bibs.sample_fps:g} of decode.sample_fps={settings.decode.sample_fps:g}",
    }


def run_pipeline(video: Path, logs_dir: Path, tag: str, bibs: bool = False) -> dict:
    from pipelines.config import load_settings
    from pipelines.index import ensure_ray, index_event

    sampler = TreeSampler(SAMPLE_RSS_S)
    sampler.start()
    data_dir = Path(tempfile.mkdtemp(prefix="facereel-bench-"))
    try:
        settings = load_settings(data_dir=str(data_dir))
        t0 = time.perf_counter()
        import ray

        ensure_ray(settings)
        ray_start_s = time.perf_counter() - t0
        cpus = ray.cluster_resources().get("CPU", 0.0)
        sampler.sample()
        cpu_at_start = sum(sampler.cpu.values())
        progress: list[tuple[float, int, int]] = []
        t1 = time.perf_counter()
        sampler.origin = t1
        sampler.sample()
        report = index_event(
            settings,
            1,
            1,
            [str(video)],
            on_progress=lambda p: (
                (p.frames_done or p.faces) and progress.append((time.perf_counter() - t1, p.frames_done, p.faces))
            ),
            bibs=bibs,
        )
        wall = time.perf_counter() - t1
        sampler.sample()
        cpu_s = sum(sampler.cpu.values()) - cpu_at_start
        from pipelines.models import pack_info
        from pipelines.store import FaceStore

        stored = FaceStore.from_settings(settings, pack_info(settings.models.pack)).count_faces(1, 1)
        copy_ray_data_logs(logs_dir, tag)
        data_log = logs_dir / f"{tag}-ray-data.log"
        operators = operator_stats(data_log.read_text(errors="replace")) if data_log.is_file() else {}
        ray.shutdown()
    finally:
        sampler.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    idx = settings.index
    return {
        "wall_s": wall,
        "ray_start_s": ray_start_s,
        "cpu_s": cpu_s,
        "frames": report.frames,
        "faces": report.faces,
        "stored_faces": stored,
        "tracking_s": report.tracking_s,
        "tracking_share": report.tracking_s / wall,
        "bibs_read": report.bibs,
        "failed": report.failed,
        "video_s": None,
        "cluster_cpus": cpus,
        "first_output_s": progress[0][0] if progress else None,
        "progress": [(round(t, 2), d, f) for t, d, f in progress],
        "operators": operators,
        "cpu_timeline_1s": sampler.timeline(),
        "peak_rss_mib": sampler.peak["total"],
        "peak_rss_split_mib": sampler.peak,
        "peak_processes": sampler.peak_processes,
        "rss_samples": sampler.samples,
        "note": f"decode {idx.decode_num_cpus:g} CPU/task, "
        f"detect pool {idx.detect.num_cpus:g} CPU/actor, "
        f"embed pool {idx.embed.num_cpus:g} CPU/actor, "
        f"intra_op_threads={settings.models.intra_op_threads}",
    }


OPERATOR_KEYS = (
    "num_tasks_finished",
    "rows_inputs_of_submitted_tasks",
    "rows_task_outputs_generated",
    "num_task_outputs_generated",
    "task_scheduling_time_s",
    "function_body_time_s",
    "task_completion_time_s",
    "task_submission_backpressure_time",
    "task_output_backpressure_time_s",
    "block_serialization_time_s",
)


def operator_stats(log_text: str) -> dict[str, dict[str, float]]:
    """Selected per-operator metrics from the 'Operator ... completed' lines of ray-data.log."""
    stats: dict[str, dict[str, float]] = {}
    pattern = r"Operator \w+\[(?P<name>[^\]]*\)?)\] completed\. Operator Metrics:\n(?P<body>.*)"
    for m in re.finditer(pattern, log_text):
        values = {}
        for key in OPERATOR_KEYS:
            found = re.search(rf"'{key}': ([0-9.e+-]+)", m.group("body"))
            if found:
                values[key] = round(float(found.group(1)), 3)
        stats[m.group("name")] = values
    return stats


def copy_ray_data_logs(logs_dir: Path, tag: str) -> None:
    """Keep Ray Data's per-operator stats (ray-data.log) for later reading."""
    try:
        import ray

        session_logs = Path(ray._private.worker._global_node.get_logs_dir_path())
        for f in [*session_logs.glob("ray-data*/*.log"), *session_logs.glob("ray-data*.log")]:
            shutil.copy(f, logs_dir / f"{tag}-{f.name}")
    except Exception as exc:  # diagnostics only
        print(f"could not copy Ray Data logs: {exc}", file=sys.stderr)


def child_main(args: argparse.Namespace) -> int:
    video = Path(args.video)
    if args.only == "decode":
        result = run_decode(video)
    elif args.only == "models":
        result = run_models(video)
    elif args.only == "naive":
        result = run_naive(video)
    elif args.only == "ocr":
        result = run_ocr(video)
    else:
        logs = Path(args.result).parent.parent / "logs"
        result = run_pipeline(video, logs, Path(args.result).stem, bibs=args.only == "pipeline-bibs")
    Path(args.result).write_text(json.dumps(result, indent=2, default=str))
    return 0


# --------------------------------------------------------------------------- driver
def run_child(variant: str, video: Path, out: Path, rep: int) -> dict:
    raw = out / "raw" / f"{variant}-{rep}.json"
    log = out / "logs" / f"{variant}-{rep}.log"
    raw.unlink(missing_ok=True)
    env = dict(os.environ)
    if variant.startswith("pipeline"):
        env["RAY_ADDRESS"] = "local"  # a private cluster, never one a test run started
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--only",
        variant,
        "--video",
        str(video),
        "--result",
        str(raw),
    ]
    load_before = loadavg()
    busy0, ours0, t0 = system_busy_s(), children_cpu_s(), time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        tree = TreeSampler(0.5, proc.pid)
        tree.start()
        proc.wait()
        tree.stop_event.set()
        tree.join()
    elapsed = time.perf_counter() - t0
    # CPU used by processes outside this variant's process tree while it ran. Ours is the
    # larger of two lower bounds: reaped descendants (rusage) and every process of the tree
    # sampled while alive (catches Ray workers that are orphaned rather than reaped).
    ours = max(children_cpu_s() - ours0, sum(tree.cpu.values()))
    others = max(0.0, (system_busy_s() - busy0) - ours) / elapsed
    if proc.returncode != 0 or not raw.is_file():
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"variant {variant} failed (rc {proc.returncode}); log {log}:\n{tail}")
    result = json.loads(raw.read_text())
    result.update(
        {
            "process_s": elapsed,
            "other_cores_busy": others,
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        }
    )
    return result


def median_of(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarise(runs: dict[str, list[dict]], video_s: float) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for variant, rs in runs.items():
        wall = median_of(rs, "wall_s")
        frames = rs[0]["frames"]
        faces = rs[0]["faces"]
        row = {
            "wall_s": wall,
            "wall_s_min": min(r["wall_s"] for r in rs),
            "wall_s_max": max(r["wall_s"] for r in rs),
            "frames": frames,
            "faces": faces,
            "frames_per_s": frames / wall,
            "faces_per_s": faces / wall if faces is not None else None,
            "realtime_x": video_s / wall,
            "cores_busy": median_of(rs, "cpu_s") / wall,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            "other_cores_busy": max(r["other_cores_busy"] for r in rs),
        }
        rows[variant] = row
        if variant == "pipeline":
            ray_s = median_of(rs, "ray_start_s")
            total = wall + ray_s
            rows["pipeline+ray_start"] = {
                **row,
                "wall_s": total,
                "wall_s_min": min(r["wall_s"] + r["ray_start_s"] for r in rs),
                "wall_s_max": max(r["wall_s"] + r["ray_start_s"] for r in rs),
                "frames_per_s": frames / total,
                "faces_per_s": faces / total,
                "realtime_x": video_s / total,
                "cores_busy": None,
            }
    return rows


LABELS = {
    "decode": "(a) decode only (PyAV, sampled)",
    "models": "(b) models only (detect+align+embed)",
    "pipeline": "(c) pipeline: index_event, Ray up",
    "pipeline+ray_start": "(c') pipeline incl. Ray startup",
    "naive": "(d) naive: cv2 every frame + models",
    "pipeline-bibs": "(e) pipeline with BIB reading",
    "ocr": "(f) BIB OCR only (frames at bibs.sample_fps)",
}


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown_table(rows: dict[str, dict]) -> str:
    lines = [
        "| variant | wall s (min–max) | sampled frames | frames/s | faces | faces/s "
        "| realtime × | cores busy | peak RSS MiB | other load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ("decode", "models", "pipeline", "pipeline+ray_start", "naive", "pipeline-bibs", "ocr"):
        r = rows.get(key)
        if r is None:
            continue
        spread = f"{r['wall_s']:.2f} ({r['wall_s_min']:.2f}–{r['wall_s_max']:.2f})"
        lines.append(
            f"| {LABELS[key]} | {spread} | {r['frames']} | {fmt(r['frames_per_s'])} | "
            f"{fmt(r['faces'], 0) if r['faces'] is not None else '–'} | {fmt(r['faces_per_s'])} | "
            f"{fmt(r['realtime_x'])} | {fmt(r['cores_busy'], 2)} | {fmt(r['peak_rss_mib'], 0)} | "
            f"{fmt(r['other_cores_busy'], 2)} |"
        )
    return "\n".join(lines)


def ratios(rows: dict[str, dict]) -> dict[str, float]:
    pipe, naive = rows["pipeline"], rows["naive"]
    slowest = min(rows["decode"]["frames_per_s"], rows["models"]["frames_per_s"])
    return {
        "pipeline_vs_naive": pipe["frames_per_s"] / naive["frames_per_s"],
        "pipeline_incl_ray_start_vs_naive": rows["pipeline+ray_start"]["frames_per_s"] / naive["frames_per_s"],
        "pipeline_vs_slowest_stage": pipe["frames_per_s"] / slowest,
        "slowest_stage": "decode" if rows["decode"]["frames_per_s"] <= rows["models"]["frames_per_s"] else "models",
    }


def default_intra_op_threads() -> int:
    from pipelines.config import ModelSettings

    return ModelSettings.model_fields["intra_op_threads"].default


def environment() -> dict:
    import av
    import cv2
    import onnxruntime
    import ray

    from pipelines.config import load_settings

    s = load_settings()
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "versions": {
            "ray": ray.__version__,
            "onnxruntime": onnxruntime.__version__,
            "av": av.__version__,
            "opencv": cv2.__version__,
        },
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "settings": {
            "sample_fps": s.decode.sample_fps,
            "chunk_s": s.decode.chunk_s,
            "thread_type": s.decode.thread_type,
            "model_pack": s.models.pack,
            "det_size": s.models.det_size,
            "intra_op_threads": s.models.intra_op_threads,
            "index": s.index.model_dump(exclude={"photo_extensions", "video_extensions"}),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="video length in seconds")
    parser.add_argument("--fps", type=float, default=25.0, help="video frame rate")
    parser.add_argument("--out", default="bench-out", help="output directory (video cache, results)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (median reported)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--only", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only:
        return child_main(args)

    out = Path(args.out)
    for sub in ("raw", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")

    started = time.perf_counter()
    load_start = loadavg()
    video, meta = make_video(out, args.duration, args.fps)
    print(
        f"video: {video} ({'generated' if meta['generated_now'] else 'cached'}, {meta['size_bytes'] / 2**20:.1f} MiB)"
    )
    env = environment()
    print(f"machine: {env['cpu_model']}, {env['logical_cpus']} CPUs, {env['memory_gib']} GiB; load {load_start}")

    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(args.repeat):  # interleaved, so a transient load spike hits every variant
        for v in variants:
            r = run_child(v, video, out, rep)
            runs[v].append(r)
            print(
                f"  {v:<9} run {rep + 1}/{args.repeat}: {r['wall_s']:.2f} s, {r['frames']} frames, "
                f"{r['faces']} faces, peak RSS {r['peak_rss_mib']:.0f} MiB, "
                f"other processes {r['other_cores_busy']:.2f} cores busy"
            )

    rows = summarise(runs, meta["duration_s"])
    table = markdown_table(rows)
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": env,
        "video": {"path": str(video), **meta},
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "total_s": time.perf_counter() - started,
        "rows": rows,
        "runs": runs,
    }
    print()
    print(table)
    if all(k in rows for k in ("decode", "models", "pipeline", "naive")):
        result["ratios"] = rt = ratios(rows) | result.get("ratios", {})
        print()
        print(
            f"pipeline / naive (sampled frames/s): {rt['pipeline_vs_naive']:.2f}x "
            f"({rt['pipeline_incl_ray_start_vs_naive']:.2f}x including Ray startup)"
        )
        print(
            f"pipeline / slowest single stage ({rt['slowest_stage']}), sampled frames/s: "
            f"{rt['pipeline_vs_slowest_stage']:.2f}"
        )
    if "ocr" in runs:
        o = runs["ocr"][0]
        result["bibs"] = bibs = {
            "ocr_s_per_sampled_frame": statistics.median(r["ocr_s_per_frame"] for r in runs["ocr"]),
            "ocr_s_per_photo": statistics.median(r["ocr_s_per_photo"] for r in runs["ocr"]),
            "photo_size": o["photo_size"],
            "bibs_read_in_photos": f"{o['bibs_read_photos']} of {o['bibs_in_photos']} printed (sizes 8-36 px)",
        }
        print(
            f"BIB OCR: {bibs['ocr_s_per_sampled_frame']:.3f} s per frame read ({WIDTH}x{HEIGHT}), "
            f"{bibs['ocr_s_per_photo']:.3f} s per photo ({o['photo_size'][0]}x{o['photo_size'][1]}); "
            f"{bibs['bibs_read_in_photos']}"
        )
    if "pipeline" in rows and "pipeline-bibs" in rows:
        rate = rows["pipeline-bibs"]["frames_per_s"] / rows["pipeline"]["frames_per_s"]
        result.setdefault("ratios", {})["pipeline_bibs_on_vs_off"] = rate
        print(f"ingest with BIBs on / off (sampled frames/s): {rate:.2f}x")
    faces = {v: rows[v]["faces"] for v in ("models", "pipeline", "naive", "pipeline-bibs") if v in rows}
    if len(set(faces.values())) > 1:
        print(f"note: face counts differ between variants: {faces}")
    if "pipeline" in runs and any(r["stored_faces"] != r["faces"] for r in runs["pipeline"]):
        print("WARNING: LanceDB row count differs from the pipeline's reported faces")
    threads = env["settings"]["intra_op_threads"]
    default = "the config default" if threads == default_intra_op_threads() else "NOT the default"
    print(f"onnxruntime intra_op_threads = {threads} ({default}) for (b), (d) and every actor of (c)")
    for variant, key in (("models", "track_share"), ("pipeline", "tracking_share")):
        shares = [r[key] for r in runs.get(variant, []) if r.get(key) is not None]
        if shares:
            where = "signatures, sharpness and linking in (b)" if variant == "models" else "writer-side linking in (c)"
            print(f"tracking: {statistics.median(shares):.1%} of {variant} time ({where})")
    print(f"load average start {load_start}, end {result['loadavg_end']}; total {result['total_s']:.0f} s")
    result["table_markdown"] = table
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
