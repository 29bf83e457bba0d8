"""Index an event's media into LanceDB with a streaming Ray Data pipeline.

media list -> probe (Ray tasks) -> decode chunks (tasks) -> detect + align (actor pool)
-> embed (actor pool) -> LanceDB (appended by the driver as batches stream in).

Incremental: media already ``indexed`` for the event are skipped; faces of media that
are (re)indexed are deleted first, so re-runs and retries never duplicate rows. A
media file's status is written only after all of its faces are stored.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from pipelines.bib_sightings import BibSightings
from pipelines.cluster import (
    StorageRoot,
    check_shared_storage,
    check_sources_everywhere,
    node_capacities,
    settled_capacities,
)
from pipelines.config import PoolSettings, Settings, TrackSettings
from pipelines.decode import MediaProbe, WorkItem, plan_work, probe_photo, probe_video
from pipelines.index_report import IndexCancelled, IndexProgress, IndexReport, MediaProgress
from pipelines.linking import VideoTracks
from pipelines.local_cluster import agent_port_for_a_new_node
from pipelines.media import MediaSource, fsspec_options, is_remote, list_media
from pipelines.metrics import index_progress
from pipelines.models import pack_info
from pipelines.models.base import PackInfo
from pipelines.placement import PoolFit, StageFit, describe_nodes, embed_threads, fit_stages
from pipelines.stages import KIND_END, KIND_FACE, KIND_FRAME, DetectAlign, Embed, ReadBibs, decode_batches
from pipelines.tracks import NO_TRACK, SIGNATURE_DIM, face_quality
from pipelines.watchdog import watched

log = logging.getLogger(__name__)

FACE_NAMESPACE = uuid.UUID("6f0c5a8e-2b7d-4f1e-9a43-0c2f6f9d1e55")


def ensure_ray(settings: Settings) -> None:
    """Join the cluster ``ray.address`` names, else $RAY_ADDRESS (set by ``ray job submit``
    and on cluster nodes), else start a private local one."""
    if not ray.is_initialized():
        address = settings.ray.address or os.environ.get("RAY_ADDRESS") or "local"
        with agent_port_for_a_new_node() if address == "local" else nullcontext():
            ray.init(
                address=address,
                num_cpus=settings.ray.num_cpus if address == "local" else None,
                include_dashboard=False,
                log_to_driver=settings.ray.log_to_driver,
                configure_logging=False,
            )


@ray.remote(num_cpus=0.25)
def _probe(source: MediaSource, storage_options: dict | None) -> MediaProbe | str:
    """The media's probe, or the error that makes this file fail alone."""
    try:
        if source.media_type == "photo":
            return probe_photo(source.uri, storage_options)
        return probe_video(source.uri, storage_options)
    except Exception as exc:
        return f"probe failed: {type(exc).__name__}: {exc}"


def check_cluster_storage(settings: Settings, sources: list[MediaSource]) -> None:
    """On a multi-node cluster: the store must be shared (probed from every node) and every
    node must see the media; on one node this is one look at the node table."""
    local = [s.uri for s in sources if not is_remote(s.uri)]
    node_ids = check_shared_storage(
        [StorageRoot("store.uri", settings.store_uri, settings.store.storage_options or None)],
        settings.ray.shared_paths,
        unprobed={"media": local[0]} if local else None,
    )
    if not node_ids:
        return
    sample = list(
        {str(Path(s.uri).parent) if not is_remote(s.uri) else s.uri.rsplit("/", 1)[0]: s for s in sources}.values()
    )[:8]
    opts = settings.store.storage_options or None
    check_sources_everywhere(
        [s.uri for s in sample],
        [fsspec_options(s.uri, s.storage_options if s.storage_options is not None else opts) for s in sample],
        node_ids,
    )


def stage_pools(settings: Settings, bibs: bool) -> dict[str, PoolSettings]:
    """The actor pools of the pipeline, in order."""
    pools = {"bibs": settings.bibs.pool} if bibs else {}
    return pools | {"detect": settings.index.detect, "embed": settings.index.embed}


def fit_to_cluster(settings: Settings, bibs: bool = False, settle_s: float = 1.0) -> StageFit:
    """Stage requests and pool sizes for the cluster as it is now, node by node; raises
    ``ClusterTooSmall`` at once when it cannot run the pipeline."""
    pools = stage_pools(settings, bibs)
    need = settings.index.decode_num_cpus + sum(p.num_cpus * max(1, p.min_size) for p in pools.values())
    fit = fit_stages(settled_capacities(need, settle_s), settings.index.decode_num_cpus, pools)
    for note in fit.notes:
        log.debug("index stages: %s", note)
    return fit


@ray.remote(num_cpus=0)
class FrameTally:
    """Sampled frames the detect actors have finished (with or without faces): the driver
    reads it while the stream has not yet brought their faces out (progress)."""

    def __init__(self) -> None:
        self.frames = 0

    def add(self, frames: int) -> None:
        self.frames += frames

    def total(self) -> int:
        return self.frames


# How often the driver reads the detect actors' tally while it waits for batches.
TALLY_POLL_S = 0.5


def build_dataset(
    items: list[WorkItem], settings: Settings, fit: StageFit, tally: ray.actor.ActorHandle | None = None
) -> ray.data.Dataset:
    """The streaming pipeline over ``items`` with the stages sized by ``fit``; with a
    ``bibs`` pool an OCR stage reads race numbers before detection (it needs whole frames,
    which detection drops)."""
    idx = settings.index

    def pool_models_cfg(name: str, pool: PoolFit):
        if pool.num_gpus > 0:
            return settings.models.model_copy(update={"providers": "cuda"})
        if name == "embed":
            threads = embed_threads(pool, fit.decode_cpus, settings.models.intra_op_threads)
            return settings.models.model_copy(update={"intra_op_threads": threads})
        return settings.models

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = idx.ray_progress
    ctx.print_on_execution_start = idx.ray_progress
    # Small blocks keep the stream moving: by default Ray merges a decoder's batches into
    # ~128 MiB blocks (dozens of frames) before detection can start.
    ctx.target_max_block_size = idx.block_mb * 1024 * 1024
    # Batches reach the writer in input order: a video's frames arrive in time order for
    # track linking, and a chunk's end marker after all of its faces.
    ctx.execution_options.preserve_order = True
    # Rows carry positions; the WorkItems themselves travel as they are, with the decode function.
    ds = ray.data.from_items([{"work": i} for i in range(len(items))], override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(
        decode_batches,
        batch_size=1,
        num_cpus=fit.decode_cpus,
        fn_kwargs={
            "work": items,
            "sample_fps": settings.decode.sample_fps,
            "thread_type": settings.decode.thread_type,
            "storage_options": settings.store.storage_options or None,
        },
    )
    stages = {"bibs": ReadBibs, "detect": DetectAlign, "embed": Embed}
    for name, pool in fit.pools.items():
        kwargs = (
            {"bib_cfg": settings.bibs, "sample_fps": settings.decode.sample_fps}
            if name == "bibs"
            else {"models_cfg": pool_models_cfg(name, pool)}
        )
        if name == "detect" and tally is not None:
            kwargs["tally"] = tally
        # Actor pools spread over the nodes (Ray Data's default strategy for actors is SPREAD).
        ds = ds.map_batches(
            stages[name],
            batch_size=pool.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size),
            num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus,
            fn_constructor_kwargs=kwargs,
        )
    return ds


def stall_explanation(fit: StageFit) -> str:
    """What the stages asked and what each node has free: the message of a stalled run."""
    asks = ", ".join(
        [f"decode {fit.decode_cpus:g} CPU"]
        + [
            f"{name} {p.num_cpus:g} CPU"
            + (f" + {p.num_gpus:g} GPU" if p.num_gpus else "")
            + f" x {p.min_size}-{p.max_size}"
            for name, p in fit.pools.items()
        ]
    )
    try:
        free = describe_nodes(node_capacities())
    except Exception as exc:
        free = f"(node table unavailable: {exc})"
    return f"the stages ask {asks}; nodes now: {free}"


def face_rows(
    batch: dict[str, np.ndarray],
    org_id: int,
    event_id: int,
    pack: PackInfo,
    tracks: TrackSettings,
) -> tuple[pa.Table, np.ndarray]:
    """Face rows of one pipeline batch as an Arrow table in the faces schema's column order
    (``track_id`` still unset), and each row's frame signature for the linker."""
    dim = pack.dim
    sel = batch["kind"] == KIND_FACE
    n = int(sel.sum())
    keys = batch["media_key"][sel]
    ts = batch["timestamp_s"][sel]
    bbox = np.asarray(batch["bbox"][sel], np.float32).reshape(n, 4)
    face_ids = [
        str(uuid.uuid5(FACE_NAMESPACE, f"{org_id}/{event_id}/{k}/{t:.4f}/{b[0]:.1f},{b[1]:.1f}"))
        for k, t, b in zip(keys, ts, bbox, strict=True)
    ]

    def fixed(arr: np.ndarray, width: int) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(arr, np.float32).reshape(-1)), width)

    quality = [
        face_quality(
            px, det, sharp, full_face_px=tracks.full_quality_face_px, full_sharpness=tracks.full_quality_sharpness
        )
        for px, det, sharp in zip(batch["face_px"][sel], batch["det_score"][sel], batch["sharpness"][sel], strict=True)
    ]
    table = pa.table(
        {
            "face_id": pa.array(face_ids, pa.string()),
            "org_id": pa.array(np.full(n, org_id, np.int64)),
            "event_id": pa.array(np.full(n, event_id, np.int64)),
            "media_type": pa.array(batch["media_type"][sel].astype(str)),
            "media_key": pa.array(keys.astype(str)),
            "timestamp_s": pa.array(ts.astype(np.float64)),
            "frame_index": pa.array(batch["frame_index"][sel].astype(np.int64)),
            "bbox": fixed(bbox, 4),
            "landmarks": fixed(np.asarray(batch["landmarks"][sel]).reshape(n, 10), 10),
            "det_score": pa.array(batch["det_score"][sel].astype(np.float32)),
            "face_px": pa.array(batch["face_px"][sel].astype(np.float32)),
            "track_id": pa.array(np.full(n, NO_TRACK, np.int64)),
            "quality": pa.array(np.asarray(quality, np.float32)),
            "vector": fixed(np.asarray(batch["vector"][sel]).reshape(n, dim), dim),
            "model_pack": pa.array([pack.name] * n, pa.string()),
            "model_version": pa.array([pack.version] * n, pa.string()),
        }
    )
    return table, np.asarray(batch["signature"][sel], np.float32).reshape(n, SIGNATURE_DIM)


def frames_out(
    batch: dict[str, np.ndarray], chunk_of: dict[str, int], last: dict[str, float]
) -> dict[tuple[str, int], int]:
    """Sampled frames that came out of the pipeline in ``batch``, per (media key, chunk index).

    Rows arrive in order: a frame's face rows (or its one ``frame`` marker row, when no face
    was found) are consecutive, and a chunk's end row follows its frames, so a frame is new
    when its time differs from the media's last one, and an end row moves on to the next
    chunk. ``last`` (each media's last frame time) is updated; ``chunk_of`` is not. Pure.
    """
    out: dict[tuple[str, int], int] = defaultdict(int)
    cursor: dict[str, int] = {}
    for kind, key, t in zip(batch["kind"], batch["media_key"], batch["timestamp_s"], strict=True):
        key = str(key)
        if kind == KIND_END:
            cursor[key] = cursor.get(key, chunk_of.get(key, 0)) + 1
            last.pop(key, None)
        elif kind in (KIND_FACE, KIND_FRAME) and last.get(key) != float(t):
            last[key] = float(t)
            out[(key, cursor.get(key, chunk_of.get(key, 0)))] += 1
    return dict(out)


def index_event(
    settings: Settings,
    org_id: int,
    event_id: int,
    inputs: list[str],
    on_progress: Callable[[IndexProgress], None] | None = None,
    bibs: bool = False,
) -> IndexReport:
    """Index ``inputs`` (paths, directories, URIs) into the event; returns what happened.

    Media already indexed from the same location are skipped. ``on_progress`` is called at
    each stage and as chunks finish. With ``bibs`` (events with BIB search) race numbers are
    read too (``settings.bibs``).
    """
    sources = list_media(
        inputs, settings.index.photo_extensions, settings.index.video_extensions, settings.store.storage_options or None
    )
    return index_sources(settings, org_id, event_id, sources, on_progress=on_progress, bibs=bibs)


def index_sources(
    settings: Settings,
    org_id: int,
    event_id: int,
    sources: list[MediaSource],
    on_progress: Callable[[IndexProgress], None] | None = None,
    bibs: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> IndexReport:
    """Index the given sources (the work of ``index_event`` once media are listed).

    ``should_stop`` is asked between batches; when it answers True the run stops, removes
    every row of the media it had not finished (so each media item is fully indexed or not
    at all) and raises ``IndexCancelled``.
    """
    started = time.monotonic()
    ensure_ray(settings)
    check_cluster_storage(settings, sources)
    from pipelines.store import MEDIA_FAILED, MEDIA_INDEXED, FaceStore  # lancedb after ray.init

    info = pack_info(settings.models.pack)
    store = FaceStore.from_settings(settings, info)
    report = IndexReport(org_id, event_id)
    report.found = len(sources)
    done = store.indexed_sources(org_id, event_id)
    # Same key and same location: already indexed. Same key elsewhere: a replacement.
    todo = [s for s in sources if done.get(s.media_key) != s.uri]
    report.skipped = len(sources) - len(todo)
    status = IndexProgress(media_total=len(todo), indexed=report.indexed, failed=report.failed)

    telling = threading.RLock()  # the driver and the thread that reads the detect tally

    def tell(stage: str | None = None) -> None:
        with telling:
            if stage is not None:
                status.stage = stage
            if on_progress:
                on_progress(status)

    def follow_tally(tally: ray.actor.ActorHandle, done: threading.Event) -> None:
        """Frames the detect actors finished, told as they grow (stage ``detect`` until the
        first faces reach the writer)."""
        seen = 0
        while not done.wait(TALLY_POLL_S):
            try:
                detected = int(ray.get(tally.total.remote(), timeout=10))
            except Exception:  # progress only: the next read tries again
                log.debug("reading the frame tally failed", exc_info=True)
                continue
            if detected <= seen:
                continue
            seen = detected
            with telling:
                status.frames_detected = detected
                status.count()
                tell("detect" if status.stage == "decode" else None)

    def stop_here() -> None:
        """Stop if asked: remove what was started and not finished, then raise."""
        if should_stop is None or not should_stop():
            return
        unfinished = [
            s.media_key for s in todo if s.media_key not in report.indexed and s.media_key not in report.failed
        ]
        store.delete_media_faces(org_id, event_id, unfinished)
        store.delete_media_rows(org_id, event_id, unfinished)
        report.seconds = time.monotonic() - started
        raise IndexCancelled(report)

    def stored_totals() -> None:
        report.event_faces = store.count_faces(org_id, event_id)
        report.event_media = len(store.indexed_sources(org_id, event_id))

    if not todo:
        stored_totals()
        report.seconds = time.monotonic() - started
        return report
    tell("probe")
    stop_here()
    store.delete_media_faces(org_id, event_id, [s.media_key for s in todo])

    def media_row(mp: MediaProgress, status: str, error: str) -> dict:
        p = mp.probe
        return {
            "org_id": org_id, "event_id": event_id, "media_key": mp.source.media_key, "uri": mp.source.uri,
            "media_type": mp.source.media_type, "status": status,
            "start_s": p and p.start_s, "duration_s": p and p.duration_s, "fps": p and p.fps,
            "width": p and p.width, "height": p and p.height, "codec": p and p.codec,
            "size_bytes": mp.source.size_bytes, "face_count": mp.faces, "error": error or None, "model_pack": info.name,
            "taken_at": p and p.taken_at,
        }  # fmt: skip

    fit_to_cluster(settings, bibs, settle_s=0.0)  # fail now, not after the probes, when it cannot run
    opts = settings.store.storage_options or None
    probes = ray.get([_probe.remote(s, s.storage_options if s.storage_options is not None else opts) for s in todo])
    progress: dict[str, MediaProgress] = {}
    early_failures = []
    for source, probe in zip(todo, probes, strict=True):
        if isinstance(probe, str):
            early_failures.append(media_row(MediaProgress(source, None, 0), MEDIA_FAILED, probe))
            report.failed[source.media_key] = probe
        else:
            progress[source.media_key] = MediaProgress(source, probe, 0)
    store.record_media(early_failures)
    status.media_done = len(report.failed)

    items = plan_work(
        [(mp.source, mp.probe) for mp in progress.values() if mp.probe is not None],
        settings.decode.sample_fps,
        settings.decode.chunk_s,
    )
    for item in items:
        progress[item.source.media_key].chunks_total += 1
    status.frames_planned = sum(item.chunk.end_sample - item.chunk.first_sample for item in items)
    pending: list[pa.Table] = []
    pending_tracks: list[pa.Table] = []
    pending_bibs: list[pa.Table] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_tracks, pending_bibs, pending_rows
        if pending:
            store.add_faces(pa.concat_tables(pending))
        if pending_tracks:
            store.add_tracks(pa.concat_tables(pending_tracks))
        if pending_bibs:
            store.add_bibs(pa.concat_tables(pending_bibs))
        pending, pending_tracks, pending_bibs, pending_rows = [], [], [], 0

    def write(faces: pa.Table | None, tracks: pa.Table) -> None:
        nonlocal pending_rows
        if faces is not None:
            pending.append(faces)
            pending_rows += faces.num_rows
        if tracks.num_rows:
            pending_tracks.append(tracks)  # stored with the next flush of faces

    if items:
        tell("decode")
        stop_here()
        fit = fit_to_cluster(settings, bibs)
        tally = FrameTally.remote()
        ds = build_dataset(items, settings, fit, tally)
        linking = VideoTracks(settings.tracks, org_id, event_id, info)
        sightings = BibSightings(org_id, event_id)
        planned = {(item.source.media_key, item.chunk_index): item.chunk for item in items}
        chunk_of = {key: 0 for key in progress}  # chunks arrive in order per media
        frames_in_chunk: dict[tuple[str, int], int] = defaultdict(int)  # frames out so far
        last_frame: dict[str, float] = {}
        stream = watched(
            lambda: ds.iter_batches(batch_format="numpy", batch_size=None),
            settings.index.stall_timeout_s,
            lambda: stall_explanation(fit),
        )
        tally_done = threading.Event()
        tally_reader = threading.Thread(target=follow_tally, args=(tally, tally_done), name="frame-tally", daemon=True)
        tally_reader.start()
        try:
            for batch in stream:
                if len(batch["kind"]) == 0:
                    continue
                moved = 0
                for (key, index), n in frames_out(batch, chunk_of, last_frame).items():
                    chunk = planned[(key, index)]
                    n = min(n, chunk.end_sample - chunk.first_sample - frames_in_chunk[(key, index)])
                    frames_in_chunk[(key, index)] += n
                    moved += n
                with telling:
                    status.frames_out += moved
                    status.count()
                if bibs:
                    sightings.add(batch)
                faces, signatures = face_rows(batch, org_id, event_id, info, settings.tracks)
                if faces.num_rows:
                    linking.add(faces, signatures)
                    for key, count in zip(
                        *np.unique(faces.column("media_key").to_numpy(zero_copy_only=False), return_counts=True),
                        strict=True,
                    ):
                        progress[str(key)].seen += int(count)
                finished = []
                ended = np.flatnonzero(batch["kind"] == KIND_END)
                for i in ended:
                    mp = progress[str(batch["media_key"][i])]
                    chunk_faces, closed = linking.end_chunk(mp.source.media_key)
                    write(chunk_faces, closed)
                    mp.faces += chunk_faces.num_rows if chunk_faces is not None else 0  # what is stored
                    if bibs:
                        read = sightings.end_chunk(mp.source.media_key, chunk_faces)
                        if read.num_rows:
                            pending_bibs.append(read)
                    index = chunk_of[mp.source.media_key]
                    chunk = planned[(mp.source.media_key, index)]
                    chunk_of[mp.source.media_key] += 1
                    # The frames the chunk planned and did not yield count as done now.
                    with telling:
                        status.frames_out += chunk.end_sample - chunk.first_sample
                        status.frames_out -= frames_in_chunk.pop((mp.source.media_key, index), 0)
                        status.count()
                    mp.chunks_done += 1
                    mp.frames += int(batch["frames"][i])
                    if batch["error"][i]:
                        mp.errors.append(str(batch["error"][i]))
                    if mp.chunks_done == mp.chunks_total:
                        write(None, linking.end_media(mp.source.media_key))
                        finished.append(mp)
                if pending_rows >= settings.index.write_batch_rows or finished:
                    flush()  # faces are stored before their media is marked indexed
                rows = []
                for mp in finished:
                    if mp.errors or mp.frames == 0:
                        error = "; ".join(mp.errors) or "no frames decoded"
                        store.delete_media_faces(org_id, event_id, [mp.source.media_key])
                        report.failed[mp.source.media_key] = error
                        mp.faces = 0
                        rows.append(media_row(mp, MEDIA_FAILED, error))
                    else:
                        report.indexed.append(mp.source.media_key)
                        rows.append(media_row(mp, MEDIA_INDEXED, ""))
                    report.frames += mp.frames
                    report.faces += mp.faces
                    index_progress(mp.frames, mp.faces, rows[-1]["status"])
                store.record_media(rows)
                status.media_done = len(report.indexed) + len(report.failed)
                status.faces = sum(m.live_faces for m in progress.values())
                if len(ended) or faces.num_rows or moved:
                    tell("embed")
                stop_here()
        finally:
            tally_done.set()
            tally_reader.join()  # the tally actor goes with its last handle
        flush()
        report.tracking_s = linking.seconds
        report.bibs = sightings.count
    tell("write")
    store.optimize()
    store.ensure_indices()
    stored_totals()
    report.seconds = time.monotonic() - started
    return report
