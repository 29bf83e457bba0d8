"""API benchmark: the real Ray Serve app over real HTTP, on an event of generated video.

    python bench/api.py --minutes 10 --searches 20 --clients 50 --out /tmp/facereel-api-bench

One run, one process, one private local Ray cluster (``ray.init(num_cpus=2)``):

  event     ceil(minutes * 60 / video_s) synthetic videos (pans across InsightFace's t1.jpg at
            different zooms, speeds and phases, every other one mirrored; six people, most of
            them in most videos), cached in <out>/media. Indexed with pipelines.index.index_event
            into a fresh data_dir; an org, an event and an API key with very high rate limits are
            created and the Serve app (app.entry.serve.build_api) is started on a free 127.0.0.1 port.
  post      sequential searches: POST a selfie (a different crop of one of the six people each
            time, cycling), then GET the record every --poll-s until its status leaves
            ``processing``. One unmeasured warm-up search first.
  get       --clients concurrent keep-alive clients (an httpx.AsyncClient and connection each),
            --get-s seconds per route, --get-rounds interleaved rounds: GET /healthz (no work: the
            Serve proxy + ingress floor), GET Event Details (auth: key lookup, rate-limit actor
            call, event read) and GET /video-clipping/{request_id} of the completed searches
            (auth + event read + record read); first each route with one client (--baseline-s),
            then the reads behind one GET timed alone in this process.
  growth    record reads on a scratch control store as searches accumulate (--record-growth),
            then after the app's table maintenance.
  breakdown in-process, after Serve is gone: how long the pieces of one search take alone
            (selfie embedding, the face search, segment planning, cutting each clip).

Before each measured phase the script waits (polling every 10 s, at most --load-wait-s) for the
1-minute load average to drop to --max-load and records what it saw. Each phase also records
CPU used by the machine, by this process (the HTTP client) and by processes outside this
benchmark's process tree. Results: <out>/results.json and a markdown summary on stdout and in
<out>/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from machine import cpu_model, loadavg

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ORG_ID, EVENT_ID = 1, 1
WIDTH, HEIGHT = 640, 360
# Video i uses ZOOMS[i % 5], SWEEPS_S[i % 10]; odd videos are mirrored. The camera moves
# back and forth across the picture, one sweep (one edge to the other) every SWEEPS_S seconds.
ZOOMS = (0.8, 0.7, 0.85, 0.75, 0.65)
SWEEPS_S = (60.0, 25.0, 40.0, 15.0, 30.0, 50.0, 20.0, 35.0, 45.0, 10.0)
# Selfie variants (margin around the face, rescale, mirror); search i uses person i % 6 and
# variant (i // 6) % len, so consecutive searches never upload the same image.
SELFIE_VARIANTS = ((0.8, 1.5, True), (0.6, 1.0, False), (1.0, 2.0, True), (0.5, 1.2, False), (0.9, 0.8, True))
HIGH_LIMITS = {"post_per_minute": 1e6, "post_burst": 100_000, "get_per_minute": 1e9, "get_burst": 10_000_000}


# --------------------------------------------------------------------------- small helpers
def wait_for_load(max_load: float, max_wait_s: float, poll_s: float = 10.0) -> dict:
    """Wait until the 1-minute load average is at most ``max_load``; returns what was seen."""
    started = time.monotonic()
    seen = [loadavg()]
    while seen[-1][0] > max_load and time.monotonic() - started < max_wait_s:
        print(f"  load {seen[-1]} > {max_load}: waiting", flush=True)
        time.sleep(poll_s)
        seen.append(loadavg())
    return {
        "max_load": max_load,
        "waited_s": round(time.monotonic() - started, 1),
        "ok": seen[-1][0] <= max_load,
        "start": seen[-1],
        "polls": seen,
    }


def git_state() -> dict:
    """The commit the app code came from, and whether the working tree differed from it."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": git("status", "--porcelain", "--", "app", "pipelines"),
    }


def machine_info() -> dict:
    import httpx
    import lancedb
    import ray

    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "lancedb": lancedb.__version__,
        "httpx": httpx.__version__,
        "platform": platform.platform(),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def latency_stats(seconds: list[float]) -> dict:
    """Latency summary in milliseconds."""
    if not seconds:
        return {"n": 0}
    return {
        "n": len(seconds),
        "mean_ms": ms(statistics.fmean(seconds)),
        "p50_ms": ms(pct(seconds, 50)),
        "p95_ms": ms(pct(seconds, 95)),
        "p99_ms": ms(pct(seconds, 99)),
        "max_ms": ms(max(seconds)),
        "min_ms": ms(min(seconds)),
    }


class CpuMeter:
    """CPU used over a phase: whole machine, this process, and outside this process tree.

    The tree is this process and its descendants (the Ray cluster it started, its workers
    and their ffmpeg children); reaped children count through their parent's children times.
    """

    def __init__(self) -> None:
        self.me = psutil.Process()

    def _tree(self) -> dict[int, tuple[str, float]]:
        out = {}
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                out[proc.pid] = (self._label(proc), t.user + t.system + t.children_user + t.children_system)
            except psutil.Error:
                pass
        return out

    def _label(self, proc: psutil.Process) -> str:
        if proc.pid == self.me.pid:
            return "benchmark process (HTTP client)"
        cmd = proc.cmdline()
        first = cmd[0] if cmd else proc.name()
        if first.startswith("ray::"):  # "ray::ProxyActor.receive_asgi_messages" -> "ray::ProxyActor"
            return first.split(" ")[0].split(".")[0]
        name = proc.name()
        if "ffmpeg" in name:
            return "ffmpeg"
        if name in ("raylet", "gcs_server"):
            return name
        return "other Ray processes"

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def start(self) -> None:
        self.t0, self.busy0, self.tree0 = time.monotonic(), self._busy(), self._tree()
        self.own0 = sum(os.times()[:2])

    def stop(self) -> dict:
        wall = time.monotonic() - self.t0
        busy = self._busy() - self.busy0
        by_label: dict[str, float] = {}
        for pid, (label, cpu) in self._tree().items():
            used = cpu - self.tree0.get(pid, ("", 0.0))[1]
            by_label[label] = by_label.get(label, 0.0) + used
        tree = sum(by_label.values())
        own = sum(os.times()[:2]) - self.own0
        return {
            "wall_s": round(wall, 2),
            "machine_cores_busy": round(busy / wall, 2),
            "client_cores": round(own / wall, 2),
            "bench_tree_cores": round(tree / wall, 2),
            "outside_cores": round(max(0.0, busy - tree) / wall, 2),
            "cores_by_process": {
                k: round(v / wall, 3) for k, v in sorted(by_label.items(), key=lambda kv: -kv[1]) if v / wall >= 0.005
            },
        }


# --------------------------------------------------------------------------- event media
def t1_face_boxes(out: Path) -> np.ndarray:
    """The six face boxes of t1.jpg (original pixels, sorted left to right), cached."""
    cache = out / "t1_faces.json"
    if cache.is_file():
        return np.asarray(json.loads(cache.read_text()), np.float32)
    from app.config import load_app_settings
    from pipelines.models import load_pack
    from pipelines.synthetic import insightface_image, read_bgr

    settings = load_app_settings()
    pack = load_pack(settings.models.model_copy(update={"det_size": 1280}))
    dets = pack.detector.detect(read_bgr(insightface_image("t1.jpg")))
    if len(dets) != 6:
        raise RuntimeError(f"expected the six faces of t1.jpg, found {len(dets)}")
    boxes = dets.boxes[np.argsort(dets.boxes[:, 0])].astype(np.float32)
    cache.write_text(json.dumps(boxes.tolist()))
    return boxes


def video_plan(n: int, duration_s: float, fps: float) -> list[dict]:
    plan = []
    for i in range(n):
        plan.append(
            {
                "index": i,
                "zoom": ZOOMS[i % len(ZOOMS)],
                "sweep_s": SWEEPS_S[i % len(SWEEPS_S)],
                "phase": round((0.37 * i) % 2.0, 2),  # in sweeps: where on the back-and-forth path t=0 is
                "mirrored": i % 2 == 1,
                "duration_s": duration_s,
                "fps": fps,
            }
        )
    return plan


def make_video(media: Path, spec: dict, boxes: np.ndarray) -> Path:
    """One back-and-forth pan across t1.jpg (x ``zoom``), cached by its parameters."""
    import cv2

    from pipelines.synthetic import ffmpeg, insightface_image, read_bgr

    name = (
        f"pan{spec['index']:02d}_z{spec['zoom']:g}_sw{spec['sweep_s']:g}_ph{spec['phase']:g}"
        f"{'_mirror' if spec['mirrored'] else ''}_{WIDTH}x{HEIGHT}_{spec['fps']:g}fps_{spec['duration_s']:g}s.mp4"
    )
    path = media / name
    if path.is_file() and path.stat().st_size > 0:
        return path
    image = read_bgr(insightface_image("t1.jpg"))
    if spec["mirrored"]:
        image = cv2.flip(image, 1)
    zoom = spec["zoom"]
    big = cv2.resize(image, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA)
    top, bottom = boxes[:, 1].min() * zoom, boxes[:, 3].max() * zoom
    if bottom - top > HEIGHT or big.shape[1] < WIDTH:
        raise ValueError(f"zoom {zoom} does not fit the faces into {WIDTH}x{HEIGHT}")
    y = int(max(0, min(big.shape[0] - HEIGHT, (top + bottom) / 2 - HEIGHT / 2)))
    travel = big.shape[1] - WIDTH
    # Triangle wave in [0, travel]: one edge to the other every sweep_s seconds.
    x = f"{travel}*(1-abs(mod(t/{spec['sweep_s']}+{spec['phase']},2)-1))"
    still = path.with_suffix(".still.png")
    tmp = path.with_suffix(".tmp.mp4")
    cv2.imwrite(str(still), big)
    fps, dur = spec["fps"], spec["duration_s"]
    ffmpeg(
        "-loop", "1", "-framerate", str(fps), "-i", str(still),
        "-f", "lavfi", "-i", f"sine=frequency={330 + 20 * spec['index']}:sample_rate=44100:duration={dur}",
        "-vf", f"crop={WIDTH}:{HEIGHT}:x='{x}':y={y}",
        "-t", str(dur), "-r", str(fps), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-g", str(int(fps * 2)), "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(tmp),
    )  # fmt: skip
    still.unlink()
    tmp.rename(path)
    return path


def selfies(boxes: np.ndarray, n: int, offset: int = 0) -> list[dict]:
    """``n`` different selfie JPEGs, cycling through the six people."""
    import cv2

    from pipelines.synthetic import selfie_of

    out = []
    for i in range(offset, offset + n):
        person, variant = i % 6, (i // 6) % len(SELFIE_VARIANTS)
        margin, scale, flip = SELFIE_VARIANTS[variant]
        image = selfie_of(boxes[person], margin=margin, scale=scale, flip=flip)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out.append({"person": person, "variant": variant, "jpeg": buf.tobytes(), "size": image.shape[1::-1]})
    return out


# --------------------------------------------------------------------------- phases
def post_phase(base: str, key: str, items: list[dict], poll_s: float, timeout_s: float) -> list[dict]:
    """Sequential searches: POST, then poll GET until the status is terminal."""
    import httpx

    url = f"{base}/api/v1/ext/{ORG_ID}/event/{EVENT_ID}/video-clipping"
    headers = {"X-API-Key": key}
    results = []
    with httpx.Client(timeout=60) as http:
        for n, item in enumerate(items):
            t0 = time.perf_counter()
            r = http.post(
                f"{url}/search-by-selfie", headers=headers, files={"file": ("selfie.jpg", item["jpeg"], "image/jpeg")}
            )
            t_post = time.perf_counter()
            row: dict[str, Any] = {
                "person": item["person"],
                "variant": item["variant"],
                "post_http": r.status_code,
                "post_s": t_post - t0,
                "polls": 0,
            }
            body = r.json()
            if r.status_code != 200:
                row.update(status=f"http_{r.status_code}:{body['data'].get('code')}", terminal_s=t_post - t0)
                results.append(row)
                print(f"  search {n}: POST {r.status_code} {body}", flush=True)
                continue
            rid, status = body["data"]["request_id"], body["data"]["status"]
            row["request_id"] = rid
            data = body["data"]
            t_end = t_post
            while status == "processing" and time.perf_counter() - t0 < timeout_s:
                time.sleep(poll_s)
                g = http.get(f"{url}/{rid}", headers=headers)
                t_end = time.perf_counter()
                row["polls"] += 1
                data = g.json()["data"]
                status = data["status"] if g.status_code == 200 else f"http_{g.status_code}"
            videos = data.get("videos") or []
            row.update(
                status=status if status != "processing" else "timeout",
                terminal_s=t_end - t0,
                clips=len(videos),
                clip_errors=len(data.get("clip_errors") or []),
                clip_durations_s=[v.get("duration_seconds") for v in videos],
                clip_sources=[v["source_video_key"] for v in videos],
            )
            results.append(row)
            print(
                f"  search {n}: person {item['person']} POST {row['post_s'] * 1000:.0f} ms -> {row['status']} "
                f"in {row['terminal_s']:.2f} s, {row.get('clips', 0)} clips",
                flush=True,
            )
    return results


async def _hammer(
    url: str | list[str], headers: dict, clients: int, warmup_s: float, duration_s: float, shared: bool
) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    sizes: list[int] = []
    urls = [url] if isinstance(url, str) else list(url)
    # One keep-alive connection per client. Either one AsyncClient whose pool holds them all
    # (--client-pool shared) or one AsyncClient per client (the default: httpx's pool costs
    # CPU per request that grows with the number of connections it holds).
    n_pools = 1 if shared else clients
    per_pool = clients if shared else 1
    limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
    pools = [httpx.AsyncClient(limits=limits, timeout=30) for _ in range(n_pools)]
    try:
        t_start = time.perf_counter() + warmup_s
        t_stop = t_start + duration_s

        async def client(c: int) -> None:
            http = pools[c % n_pools]
            i = c
            while True:
                t0 = time.perf_counter()
                if t0 >= t_stop:
                    return
                target = urls[i % len(urls)]
                i += 1
                try:
                    r = await http.get(target, headers=headers)
                    ok, label = r.status_code == 200, f"http_{r.status_code}"
                    size = len(r.content)
                except Exception as exc:  # counted, not raised: the load goes on
                    ok, label, size = False, type(exc).__name__, 0
                if t0 >= t_start:
                    if ok:
                        latencies.append(time.perf_counter() - t0)
                        sizes.append(size)
                    else:
                        errors[label] = errors.get(label, 0) + 1

        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - t_start
    finally:
        await asyncio.gather(*(p.aclose() for p in pools))
    n_ok = len(latencies)
    return {
        "clients": clients,
        "client_pool": "shared" if shared else "per-client",
        "duration_s": round(elapsed, 2),
        "ok": n_ok,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "req_per_s": round((n_ok + sum(errors.values())) / elapsed, 1),
        "ok_per_s": round(n_ok / elapsed, 1),
        "response_bytes": int(statistics.median(sizes)) if sizes else 0,
        **latency_stats(latencies),
    }


def get_phase(name: str, url, headers: dict, clients: int, warmup_s: float, duration_s: float, shared: bool) -> dict:
    meter = CpuMeter()
    load_before = loadavg()
    meter.start()
    stats = asyncio.run(_hammer(url, headers, clients, warmup_s, duration_s, shared))
    stats["cpu"] = cpu = meter.stop()  # includes the warm-up seconds; rates, so comparable
    rate = stats["req_per_s"] or float("nan")
    cpu["tree_cpu_ms_per_req"] = round(cpu["bench_tree_cores"] / rate * 1000, 2)
    cpu["server_cpu_ms_per_req"] = round((cpu["bench_tree_cores"] - cpu["client_cores"]) / rate * 1000, 2)
    stats["loadavg_before"], stats["loadavg_after"] = load_before, loadavg()
    print(
        f"  {name}: {stats['req_per_s']} req/s, p50 {stats.get('p50_ms')} ms, p95 {stats.get('p95_ms')} ms, "
        f"p99 {stats.get('p99_ms')} ms, errors {stats['errors']}, cpu {stats['cpu']}",
        flush=True,
    )
    return stats


def server_side(settings, rows: list[dict]) -> None:
    """Add the record's own timing: created_at (record written, POST) -> updated_at (finished)."""
    from app.store.control import REQUESTS, ControlStore

    control = ControlStore(settings.control_uri)
    for row in rows:
        rid = row.get("request_id")
        if not rid:
            continue
        recs = control.rows(REQUESTS, f"request_id = '{rid}'", 1)
        if recs:
            rec = recs[0]
            row["hits"] = rec["hits"]
            row["server_s"] = (rec["updated_at"] - rec["created_at"]).total_seconds()


def requests_table_state(settings) -> dict:
    from app.store.control import REQUESTS, ControlStore

    table = ControlStore(settings.control_uri).table(REQUESTS)
    state: dict[str, Any] = {"rows": table.count_rows(), "version": table.version}
    with contextlib.suppress(Exception):  # stats() differs between lancedb versions
        state["fragments"] = table.stats()["fragment_stats"]["num_fragments"]
    return state


def get_pieces(settings, api_key: str, request_id: str, n: int = 100) -> dict:
    """The reads behind one authorised GET, timed alone in this process (wall and CPU ms each)."""
    import ray

    from app.features.ratelimit import ACTOR_NAME
    from app.store.control import ControlStore
    from app.store.events import EventStore
    from app.store.keys import KeyStore
    from app.store.records import RequestRecords

    control = ControlStore(settings.control_uri)
    keys, events, records = KeyStore(control), EventStore(control), RequestRecords(control, 600)
    limiter = ray.get_actor(ACTOR_NAME, namespace="facereel")
    pieces = {
        "api key lookup (LanceDB)": lambda: keys.lookup(api_key),
        "event read (LanceDB)": lambda: events.get(ORG_ID, EVENT_ID),
        "search record read (LanceDB)": lambda: records.get(request_id),
        "rate-limit actor call": lambda: ray.get(limiter.take.remote("bench-pieces", "get", 1e9, 10_000_000)),
    }
    out = {}
    for name, fn in pieces.items():
        fn()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        out[name] = {
            "wall_ms": round((time.perf_counter() - w0) / n * 1000, 2),
            "cpu_ms": round((time.process_time() - c0) / n * 1000, 2),
        }
    return out


def api_overrides(pairs: list[str]) -> dict[str, Any]:
    """``name=value`` pairs as api settings (numbers parsed; the settings model validates)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, value = pair.split("=", 1)
        try:
            out[name] = float(value) if "." in value else int(value)
        except ValueError:
            out[name] = value
    return out


def record_growth(counts: list[int], reads: int = 50) -> list[dict]:
    """Record reads as searches accumulate, in a scratch control store, in this process.

    Each search writes its record as the app does (RequestRecords.start, then finish with ten
    clip items); nothing compacts the table in between, as nothing does in the app.
    """
    from app.store.control import REQUESTS, ControlStore
    from app.store.records import RequestRecords, SearchRecord

    videos = [{"uuid": str(uuid.uuid4()), "video_url": "http://x/" + "y" * 80} for _ in range(10)]
    out = []
    with tempfile.TemporaryDirectory(prefix="facereel-bench-control-") as tmp:
        control = ControlStore(str(Path(tmp) / "control"))
        records = RequestRecords(control, 600)
        ids: list[str] = []

        def time_reads() -> float:
            rid = ids[len(ids) // 2]
            records.get(rid)
            t = time.perf_counter()
            for _ in range(reads):
                records.get(rid)
            return (time.perf_counter() - t) / reads

        for count in sorted(counts):
            t = time.perf_counter()
            added = 0
            while len(ids) < count:
                rid = str(uuid.uuid4())
                ids.append(rid)
                rec = records.start(SearchRecord(rid, ORG_ID, EVENT_ID, "processing", "", "yunet-sface", None))
                records.finish(rid, rec.job_id, "completed", videos=videos, hits=100)
                added += 1
            write_s = (time.perf_counter() - t) / max(1, added)
            table = control.table(REQUESTS)
            row = {"searches": count, "version": table.version, "read_ms": ms(time_reads())}
            with contextlib.suppress(Exception):
                row["fragments"] = table.stats()["fragment_stats"]["num_fragments"]
            row["start_plus_finish_ms"] = ms(write_s) if added else None
            out.append(row)
            print(f"  record growth: {row}", flush=True)
        # What the app's periodic maintenance does when it has it (index, compact, prune).
        maintain = getattr(control, "maintain", None)
        how = "maintain()" if maintain else "optimize()"
        t = time.perf_counter()
        maintain() if maintain else control.table(REQUESTS).optimize()
        row = {"searches": len(ids), "after": how, "seconds": round(time.perf_counter() - t, 2)}
        row["read_ms"] = ms(time_reads())
        with contextlib.suppress(Exception):
            row["fragments"] = control.table(REQUESTS).stats()["fragment_stats"]["num_fragments"]
        out.append(row)
        print(f"  record growth: {row}", flush=True)
    return out


def breakdown(settings, selfie: dict) -> dict:
    """The pieces of one search, in this process, one after another (Serve and Ray are down)."""
    from app.jobs.dispatch import video_bounds
    from pipelines.clip import cut_clip
    from pipelines.match import References, find_person, timed_hits
    from pipelines.models import load_pack, pack_info
    from pipelines.models.registry import match_threshold
    from pipelines.segments import best_window
    from pipelines.selfie import decode_image_bytes, embed_selfie
    from pipelines.store import FaceStore

    out: dict[str, Any] = {"person": selfie["person"], "variant": selfie["variant"]}
    pack = load_pack(settings.models)
    image = decode_image_bytes(selfie["jpeg"])
    embed_selfie(pack, image, settings.models.det_score_threshold, settings.models.min_face_px)  # warm
    t = time.perf_counter()
    reps = 5
    for _ in range(reps):
        query = embed_selfie(pack, image, settings.models.det_score_threshold, settings.models.min_face_px)
    out["embed_selfie_ms"] = ms((time.perf_counter() - t) / reps)
    threshold = match_threshold(settings.models)
    t = time.perf_counter()
    store = FaceStore.from_settings(settings, pack_info(settings.models.pack))
    out["open_store_ms"] = ms(time.perf_counter() - t)
    refs = References(query.vector.reshape(1, -1))
    for mode in ("faces", "tracks"):
        t = time.perf_counter()
        found = find_person(store, ORG_ID, EVENT_ID, refs, threshold, settings.match.model_copy(update={"mode": mode}))
        out[f"match_{mode}_ms"] = ms(time.perf_counter() - t)
    hits = timed_hits(found)
    out["hits"] = sum(len(v) for v in hits.values())
    t = time.perf_counter()
    media = {key: store.media_row(ORG_ID, EVENT_ID, key) for key in hits}
    windows = {k: w for k in hits if (w := best_window(hits[k], *video_bounds(media[k]), settings.segments))}
    out["plan_windows_ms"] = ms(time.perf_counter() - t)
    cuts = []
    with tempfile.TemporaryDirectory(prefix="facereel-bench-clip-") as tmp:
        for key, window in windows.items():
            t = time.perf_counter()
            info = cut_clip(
                media[key]["uri"],
                window.start_s,
                window.end_s,
                Path(tmp) / f"{key}.mp4",
                Path(tmp) / f"{key}.jpg",
                window.poster_s,
                settings.clip,
            )
            cuts.append({"media_key": key, "clip_s": round(info.duration_s, 2), "cut_s": time.perf_counter() - t})
    out["clips"] = len(cuts)
    out["cut_s_each"] = [round(c["cut_s"], 3) for c in cuts]
    out["clip_s_each"] = [c["clip_s"] for c in cuts]
    out["cut_s_total"] = round(sum(c["cut_s"] for c in cuts), 2)
    out["cut_s_median"] = round(statistics.median(c["cut_s"] for c in cuts), 3) if cuts else None
    out["cut_cpu_note"] = "ffmpeg libx264 veryfast re-encode + poster + probes, one clip at a time, ffmpeg threads auto"
    return out


# --------------------------------------------------------------------------- report
def summarise(result: dict) -> str:
    idx, searches, gets = result["index"], result["searches"], result["get"]
    lines = []
    lines.append(
        f"Event: {idx['videos']} videos, {idx['video_minutes']:g} min of {WIDTH}x{HEIGHT} "
        f"{result['args']['fps']:g} fps video; indexed in {idx['seconds']:.1f} s "
        f"({idx['realtime_x']:.1f}x realtime), {idx['frames']} sampled frames, {idx['faces']} faces.\n"
    )
    lines.append(f"| search metric (n = {searches['n']}) | p50 | p95 | max | mean |")
    lines.append("|---|---|---|---|---|")
    for label, key in (("POST response (ms)", "post"), ("POST -> terminal status (ms)", "terminal")):
        s = searches[key]
        lines.append(f"| {label} | {s['p50_ms']} | {s['p95_ms']} | {s['max_ms']} | {s['mean_ms']} |")
    s = searches["server"]
    if s.get("n"):
        lines.append(
            f"| record written -> finished, server side (ms) | {s['p50_ms']} | {s['p95_ms']} | {s['max_ms']} | {s['mean_ms']} |"
        )
    c = searches["clips_per_search"]
    lines.append(f"| clips per search | {c['median']:g} | – | {c['max']} | {c['mean']:.1f} |")
    d = searches["clip_duration_s"]
    if d:
        lines.append(f"| clip duration (s) | {d['median']:.1f} | – | {d['max']:.1f} | {d['mean']:.1f} |")
    lines.append("")
    lines.append(f"Statuses: {searches['statuses']}; warm-up search (not counted): {searches['warmup']}.\n")
    a = result["args"]
    lines.append(
        f"| GET route ({a['clients']} clients, {a['get_s']:g} s) | req/s | p50 ms | p95 ms | p99 ms | max ms "
        "| errors | response bytes | server CPU ms/req | client cores | machine cores busy | outside cores |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, route in gets.items():
        for i, g in enumerate(route["rounds"], 1):
            lines.append(
                f"| {name} (round {i}) | {g['req_per_s']} | {g.get('p50_ms')} | {g.get('p95_ms')} | {g.get('p99_ms')} "
                f"| {g.get('max_ms')} | {g['errors']} | {g['response_bytes']} | {g['cpu']['server_cpu_ms_per_req']} "
                f"| {g['cpu']['client_cores']} | {g['cpu']['machine_cores_busy']} | {g['cpu']['outside_cores']} |"
            )
    if one := result.get("get_one_client"):
        lines.append("")
        lines.append(
            f"| same routes, 1 client ({a['baseline_s']:g} s) | req/s | p50 ms | p95 ms | p99 ms | max ms | errors |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for name, g in one.items():
            lines.append(
                f"| {name} | {g['req_per_s']} | {g.get('p50_ms')} | {g.get('p95_ms')} | {g.get('p99_ms')} "
                f"| {g.get('max_ms')} | {g['errors']} |"
            )
    lines.append("")
    r = result["ratios"]
    lines.append(
        "Ratios (mean req/s over the rounds): "
        f"GET record / healthz throughput = {r['get_record_vs_healthz_throughput']}; "
        f"Event Details / healthz = {r['event_details_vs_healthz_throughput']}; "
        f"POST->terminal p50 / median clip duration = {r['terminal_p50_vs_clip_duration']}; "
        f"POST->terminal p50 / clip seconds per search (median) = {r['terminal_p50_vs_clip_seconds_per_search']}."
    )
    lines.append(
        "\nCPU by process during the GET rounds (cores, mean over rounds; the machine has "
        f"{result['machine']['cpus']}):\n"
    )

    def by_process(r: dict) -> dict[str, float]:  # one row per actor, whatever method it was running
        merged: dict[str, float] = {}
        for p, v in r["cpu"]["cores_by_process"].items():
            merged[p.split(".")[0]] = merged.get(p.split(".")[0], 0.0) + v
        return merged

    procs: list[str] = []
    for route in gets.values():
        for r in route["rounds"]:
            procs += [p for p in by_process(r) if p not in procs]
    lines.append("| process | " + " | ".join(gets) + " |")
    lines.append("|---" * (len(gets) + 1) + "|")
    for p in procs:
        cells = []
        for route in gets.values():
            vals = [by_process(r).get(p, 0.0) for r in route["rounds"]]
            cells.append(f"{statistics.fmean(vals):.2f}")
        if max(float(c) for c in cells) >= 0.02:
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
    if pieces := result.get("get_pieces"):
        lines.append(
            "\nPieces of an authorised GET, each alone in the benchmark process (mean wall / CPU ms): "
            + "; ".join(f"{k} {v['wall_ms']} / {v['cpu_ms']}" for k, v in pieces.items())
            + "."
        )
    if growth := result.get("record_growth"):
        lines.append(
            "\n| searches stored (scratch control store) | table version | fragments | record read ms | start + finish ms |"
        )
        lines.append("|---|---|---|---|---|")
        for row in growth:
            label = (
                f"{row['searches']} after {row['after']} ({row['seconds']} s)"
                if row.get("after")
                else str(row["searches"])
            )
            lines.append(
                f"| {label} | {row.get('version', '–')} | {row.get('fragments', '–')} | {row['read_ms']} "
                f"| {row.get('start_plus_finish_ms') or '–'} |"
            )
    b = result.get("breakdown")
    if b:
        lines.append(
            f"\nBreakdown (person {b['person']}, in-process, sequential): embed selfie {b['embed_selfie_ms']} ms, "
            f"open face store {b['open_store_ms']} ms, "
            f"match per face {b['match_faces_ms']} ms, by track + expansion {b['match_tracks_ms']} ms ({b['hits']} hits), "
            f"plan windows {b['plan_windows_ms']} ms, "
            f"{b['clips']} clips cut in {b['cut_s_total']} s (median {b['cut_s_median']} s per clip)."
        )
    return "\n".join(lines)


def search_summary(rows: list[dict], warmup: list[dict]) -> dict:
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    clips = [r.get("clips", 0) for r in rows]
    durations = [d for r in rows for d in r.get("clip_durations_s", []) if d is not None]
    per_search_s = [sum(d for d in r.get("clip_durations_s", []) if d is not None) for r in rows if r.get("clips")]
    return {
        "n": len(rows),
        "statuses": statuses,
        "post": latency_stats([r["post_s"] for r in rows]),
        "terminal": latency_stats([r["terminal_s"] for r in rows]),
        "server": latency_stats([r["server_s"] for r in rows if "server_s" in r]),
        "clips_per_search": {
            "median": statistics.median(clips),
            "mean": statistics.fmean(clips),
            "min": min(clips),
            "max": max(clips),
        },
        "clip_duration_s": (
            {"median": statistics.median(durations), "mean": statistics.fmean(durations), "max": max(durations)}
            if durations
            else {}
        ),
        "clip_seconds_per_search_median": statistics.median(per_search_s) if per_search_s else None,
        "polls_per_search_median": statistics.median(r["polls"] for r in rows),
        "warmup": [
            {
                k: round(v, 3) if isinstance(v, float) else v
                for k, v in w.items()
                if k in ("status", "post_s", "terminal_s", "clips")
            }
            for w in warmup
        ],
        "rows": rows,
    }


# --------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of event video to generate and index")
    parser.add_argument("--video-s", type=float, default=60.0, help="length of each generated video")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--searches", type=int, default=20)
    parser.add_argument("--warmup-searches", type=int, default=1)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--get-s", type=float, default=20.0, help="measured seconds per GET route")
    parser.add_argument("--client-pool", choices=("per-client", "shared"), default="per-client")
    parser.add_argument("--get-rounds", type=int, default=2, help="interleaved rounds over the GET routes")
    parser.add_argument("--get-warmup-s", type=float, default=2.0, help="unmeasured seconds before each GET route")
    parser.add_argument("--baseline-s", type=float, default=5.0, help="seconds per GET route with one client")
    parser.add_argument(
        "--record-growth",
        default="20,100,300,1000",
        help="search counts at which to time a record read in a scratch control store ('' to skip)",
    )
    parser.add_argument("--poll-s", type=float, default=0.1)
    parser.add_argument("--search-timeout-s", type=float, default=300.0)
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--load-wait-s", type=float, default=300.0)
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument(
        "--compare-per-face", action="store_true", help="repeat the searches with per-face matching (the baseline)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/api"))
    parser.add_argument("--report-only", action="store_true", help="re-print <out>/results.json as markdown")
    parser.add_argument(
        "--api-set", action="append", default=[], help="an api setting for the app, name=value (repeatable)"
    )
    args = parser.parse_args()
    if args.report_only:
        print(summarise(json.loads((args.out / "results.json").read_text())))
        return 0

    out = args.out.resolve()
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    started_at = datetime.now(UTC)
    result: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(),
        "git": git_state(),
        "loadavg_at_start": loadavg(),
    }

    # ---- event media (cached) -------------------------------------------------------------
    print("[1/6] event media", flush=True)
    boxes = t1_face_boxes(out)
    n_videos = math.ceil(args.minutes * 60 / args.video_s)
    t = time.perf_counter()
    plan = video_plan(n_videos, args.video_s, args.fps)
    videos = [make_video(media, spec, boxes) for spec in plan]
    result["media"] = {
        "generate_s": round(time.perf_counter() - t, 1),
        "videos": [{**spec, "file": v.name, "bytes": v.stat().st_size} for spec, v in zip(plan, videos, strict=True)],
    }
    print(f"  {len(videos)} videos ready in {result['media']['generate_s']} s", flush=True)

    import ray
    from ray import serve

    from app.config import load_app_settings
    from app.entry.serve import build_api
    from app.store.control import ControlStore
    from app.store.events import EventStore
    from app.store.keys import KeyStore
    from pipelines.index import index_event

    run_dir = out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    port = free_port()
    settings = load_app_settings(
        None,
        data_dir=str(run_dir / "data"),
        ray={"num_cpus": 2},
        api={"public_base_url": f"http://127.0.0.1:{port}", **HIGH_LIMITS, **api_overrides(args.api_set)},
    )
    base = f"http://127.0.0.1:{port}"

    print("  waiting for a quiet machine before indexing", flush=True)
    result["load_wait_index"] = wait_for_load(args.max_load, args.load_wait_s)
    # address="local": always a new private cluster, never one another run started.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        # ---- index -----------------------------------------------------------------------
        print("[2/6] indexing", flush=True)
        meter = CpuMeter()
        meter.start()
        report = index_event(settings, ORG_ID, EVENT_ID, [str(v) for v in videos])
        video_s = n_videos * args.video_s
        result["index"] = {
            "videos": n_videos,
            "video_minutes": video_s / 60,
            "seconds": report.seconds,
            "realtime_x": video_s / report.seconds,
            "faces": report.faces,
            "frames": report.frames,
            "indexed": len(report.indexed),
            "failed": report.failed,
            "cpu": meter.stop(),
        }
        print(f"  {result['index']}", flush=True)
        if report.failed:
            raise RuntimeError(f"indexing failed for {report.failed}")
        for _ in range(60):  # Ray Data's actors must hand their CPUs back before Serve starts
            if ray.available_resources().get("CPU", 0.0) >= 2.0 - 1e-6:
                break
            time.sleep(0.5)
        result["cpus_free_after_index"] = ray.available_resources().get("CPU", 0.0)

        # ---- org, event, key; Serve -------------------------------------------------------
        print("[3/6] starting Serve", flush=True)
        control = ControlStore(settings.control_uri)
        events = EventStore(control)
        events.create_org("api bench", ORG_ID)
        events.create_event(ORG_ID, "api bench event", EVENT_ID)
        api_key, _ = KeyStore(control).create(ORG_ID, name="api bench")
        headers = {"X-API-Key": api_key}
        t = time.perf_counter()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_api(settings), name="facereel", route_prefix="/")
        result["serve_start_s"] = round(time.perf_counter() - t, 1)
        print(f"  Serve up on {base} in {result['serve_start_s']} s", flush=True)

        # ---- searches ---------------------------------------------------------------------
        print("[4/6] searches", flush=True)
        all_selfies = selfies(boxes, args.warmup_searches + args.searches)
        warm = post_phase(base, api_key, all_selfies[: args.warmup_searches], args.poll_s, args.search_timeout_s)
        result["load_wait_searches"] = wait_for_load(args.max_load, args.load_wait_s)
        meter.start()
        rows = post_phase(base, api_key, all_selfies[args.warmup_searches :], args.poll_s, args.search_timeout_s)
        search_cpu = meter.stop()
        search_cpu["loadavg_after"] = loadavg()
        server_side(settings, rows)
        result["searches"] = search_summary(rows, warm)
        result["searches"]["cpu"] = search_cpu
        result["requests_table"] = requests_table_state(settings)
        if args.compare_per_face:
            # The same searches with the earlier per-face matching: the baseline of this run.
            per_face = settings.model_copy(update={"match": settings.match.model_copy(update={"mode": "faces"})})
            serve.run(build_api(per_face), name="facereel", route_prefix="/")
            post_phase(base, api_key, all_selfies[: args.warmup_searches], args.poll_s, args.search_timeout_s)
            result["load_wait_per_face"] = wait_for_load(args.max_load, args.load_wait_s)
            base_rows = post_phase(
                base, api_key, all_selfies[args.warmup_searches :], args.poll_s, args.search_timeout_s
            )
            result["searches_per_face"] = search_summary(base_rows, [])
            serve.run(build_api(settings), name="facereel", route_prefix="/")

        # ---- GET load ---------------------------------------------------------------------
        print("[5/6] GET load", flush=True)
        rids = [r["request_id"] for r in rows if r.get("request_id") and r["status"] != "timeout"]
        result["load_wait_get"] = wait_for_load(args.max_load, args.load_wait_s)
        api = f"{base}/api/v1/ext/{ORG_ID}/event/{EVENT_ID}"
        targets = {
            "GET /healthz": (f"{base}/healthz", {}),
            "GET Event Details": (api, headers),
            "GET /video-clipping/{request_id}": ([f"{api}/video-clipping/{rid}" for rid in rids], headers),
        }
        result["get_one_client"] = {}
        for name, (url, hdrs) in targets.items():  # unloaded latency: one client, one request at a time
            result["get_one_client"][name] = get_phase(
                f"{name}, 1 client", url, hdrs, 1, 1.0, args.baseline_s, args.client_pool == "shared"
            )
        result["get"] = {name: {"rounds": []} for name in targets}
        for _ in range(args.get_rounds):  # interleaved, so slow drift in outside load hits every route
            for name, (url, hdrs) in targets.items():
                stats = get_phase(
                    name, url, hdrs, args.clients, args.get_warmup_s, args.get_s, args.client_pool == "shared"
                )
                result["get"][name]["rounds"].append(stats)
        for route in result["get"].values():
            route["req_per_s_mean"] = round(statistics.fmean(r["req_per_s"] for r in route["rounds"]), 1)
        result["requests_table_after_get"] = requests_table_state(settings)
        if rids:
            result["get_pieces"] = get_pieces(settings, api_key, rids[0])
            print(f"  pieces of a GET, alone: {result['get_pieces']}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()

    # ---- breakdown ----------------------------------------------------------------------
    if not args.no_breakdown:
        print("[6/6] breakdown", flush=True)
        median_row = sorted(rows, key=lambda r: r["terminal_s"])[len(rows) // 2]
        pick = next(s for s in all_selfies[args.warmup_searches :] if s["person"] == median_row["person"])
        result["breakdown"] = breakdown(settings, pick)

    if args.record_growth.strip():
        print("[+] record reads as searches accumulate", flush=True)
        result["record_growth"] = record_growth([int(x) for x in args.record_growth.split(",")])

    g = result["get"]
    health = g["GET /healthz"]["req_per_s_mean"]
    clip_median = result["searches"]["clip_duration_s"].get("median")
    per_search = result["searches"]["clip_seconds_per_search_median"]
    term_p50 = result["searches"]["terminal"]["p50_ms"] / 1000
    if "searches_per_face" in result:
        faces_p50 = result["searches_per_face"]["terminal"]["p50_ms"] / 1000
        result["terminal_p50_tracks_vs_per_face"] = round(term_p50 / faces_p50, 3)
        print(f"POST -> terminal p50: {term_p50:.2f} s by track + expansion, {faces_p50:.2f} s per face", flush=True)
    result["ratios"] = {
        "get_record_vs_healthz_throughput": round(g["GET /video-clipping/{request_id}"]["req_per_s_mean"] / health, 3),
        "event_details_vs_healthz_throughput": round(g["GET Event Details"]["req_per_s_mean"] / health, 3),
        "terminal_p50_vs_clip_duration": round(term_p50 / clip_median, 3) if clip_median else None,
        "terminal_p50_vs_clip_seconds_per_search": round(term_p50 / per_search, 3) if per_search else None,
    }
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["loadavg_at_end"] = loadavg()
    text = summarise(result)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "results.md").write_text(text + "\n")
    print("\n" + text)
    print(f"\nresults: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
