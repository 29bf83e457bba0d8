"""Search at season scale: a million face rows over 200 events, queries filtered by event.

    python bench/search.py --rows 1000000 --events 200 --out bench-out/search

One process, no Ray. The faces table is the product's own (pipelines.store.FaceStore, the
default pack's schema and dimension). Vectors are synthetic but shaped like faces:
--identities unit "identity centres" shared by all events (people come back), each face a
centre plus Gaussian noise (cosine to its centre ~0.7, so two faces of one person meet at
~0.5, around the 0.4 threshold, which is the hard case for an approximate index).

Event sizes: one of 100k faces, ten of 10k, one of 1k, the rest sharing what is left.
For events of 1k, 10k and 100k faces, --queries queries each (a fresh face of one of the
event's people) are run:

  exact      FaceStore.search on the event's rows by brute force (what events below
             store.ann_min_rows get): the ground truth, and the latency without an index
  cached     FaceStore.search from the in-memory event cache (what a SearchMatcher replica
             does): the first read of the event, then p50/p95 and recall against exact
  ann        FaceStore.search through IVF_PQ (sqrt(rows) partitions, dim/8 sub-vectors), for
             each nprobes x refine_factor in the grid: p50/p95 latency and recall of "every
             face at or above the threshold" against exact

Results: <out>/results.json and a markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from machine import cpu_model  # noqa: E402

from pipelines.synthetic_faces import face_rows, unit  # noqa: E402

ORG_ID = 1


def event_sizes(rows: int, events: int) -> list[int]:
    """One 100k event, ten of 10k, one of 1k, the rest sharing what is left (scaled down
    when --rows is small)."""
    fixed = [100_000] + [10_000] * 10 + [1_000]
    if sum(fixed) >= rows:
        scale = rows / (2 * sum(fixed))
        fixed = [max(100, int(s * scale)) for s in fixed]
    rest = events - len(fixed)
    each = (rows - sum(fixed)) // max(1, rest)
    return fixed + [each] * rest


def event_people(event_id: int, faces: int, identities: int) -> np.ndarray:
    """The identities seen at an event (~50 faces each), the same in every run."""
    k = min(max(20, faces // 50), identities)
    return np.random.default_rng(1000 + event_id).choice(identities, size=k, replace=False)


def build(store, sizes: list[int], centres: np.ndarray, noise: float, seed: int) -> None:
    """Write every event's faces."""
    rng = np.random.default_rng(seed)
    dim = centres.shape[1]
    for event_id, n in enumerate(sizes, start=1):
        ids = event_people(event_id, n, len(centres))
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            who = ids[rng.integers(0, len(ids), m)]
            vectors = unit(centres[who] + noise * rng.standard_normal((m, dim)).astype(np.float32))
            store.faces.add(face_rows(store.pack, event_id, vectors, org_id=ORG_ID, first=start, per_media=500))


def query(store, event_id: int, vector: np.ndarray, threshold: float, mode: str, nprobes: int = 0, refine: int = 0):
    """Face ids at or above ``threshold`` in one event through FaceStore.search (the product's
    path), exact or through the index, and the seconds it took."""
    store.ann_min_rows = 1 if mode == "ann" else 10**12
    store.ann_nprobes, store.ann_refine_factor = nprobes or store.ann_nprobes, refine or store.ann_refine_factor
    started = time.perf_counter()
    hits = store.search(ORG_ID, event_id, vector, min_similarity=threshold, limit=None)
    return {h.face_id for h in hits}, time.perf_counter() - started


def ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--identities", type=int, default=3000)
    parser.add_argument("--noise", type=float, default=0.09, help="per-dimension noise around a centre")
    parser.add_argument("--threshold", type=float, default=0.4)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--nprobes", default="20,50,100,200")
    parser.add_argument("--refine", default="10,30")
    parser.add_argument("--out", type=Path, default=Path("bench-out/search"))
    parser.add_argument("--reuse", action="store_true", help="keep <out>/db if it exists")
    parser.add_argument("--exact-only", action="store_true", help="skip building and querying the ANN index")
    parser.add_argument(
        "--cache-mb", type=float, default=1024.0,
        help="also search through the in-memory event cache (store.search_cache_mb); 0 skips it",
    )  # fmt: skip
    args = parser.parse_args()

    from pipelines.config import Settings
    from pipelines.models import pack_info
    from pipelines.store import FaceStore

    out = args.out.resolve()
    db = out / "db"
    pack = pack_info(Settings().models.pack)
    result: dict = {"command": " ".join(["python", *sys.argv]), "cpu": cpu_model(), "pack": pack.name}
    rng = np.random.default_rng(7)
    centres = unit(rng.standard_normal((args.identities, pack.dim)).astype(np.float32))
    sizes = event_sizes(args.rows, args.events)
    if db.exists() and not args.reuse:
        shutil.rmtree(db)
    store = FaceStore(str(db), pack, ann_min_rows=args.rows + 1)
    if store.faces.count_rows() == 0:
        t = time.perf_counter()
        build(store, sizes, centres, args.noise, seed=11)
        result["write_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        store.faces.optimize()
        store.ensure_indices()  # the scalar index on event_id
        result["scalar_index_s"] = round(time.perf_counter() - t, 1)
    rows = store.faces.count_rows()
    result["rows"] = rows
    # Queries: a fresh face of one of the event's people (same draw as the build's).
    people = {e: event_people(e, n, args.identities) for e, n in enumerate(sizes, 1)}
    targets = {"1k": sizes.index(min(sizes[:12], key=lambda s: abs(s - 1_000))) + 1, "10k": 2, "100k": 1}

    def queries(event_id: int) -> list[np.ndarray]:
        q_rng = np.random.default_rng(event_id)
        out = []
        for _ in range(args.queries):
            c = centres[q_rng.choice(people[event_id])]
            out.append(unit(c + args.noise * q_rng.standard_normal(pack.dim).astype(np.float32)))
        return out

    truth: dict[str, list[set]] = {}
    result["exact"] = {}
    for name, event_id in targets.items():
        found, took = zip(*(query(store, event_id, v, args.threshold, "exact") for v in queries(event_id)), strict=True)
        truth[name] = list(found)
        result["exact"][name] = {"event_faces": sizes[event_id - 1], "p50_ms": ms(took, 50), "p95_ms": ms(took, 95),
                                 "mean_matches": round(float(np.mean([len(f) for f in found])), 1)}  # fmt: skip
        print(name, "exact", result["exact"][name], flush=True)

    if args.cache_mb > 0:
        # What a SearchMatcher replica does: the first search of an event reads it into memory
        # (timed apart), the rest are a matrix product after a version check.
        cached = FaceStore(str(db), pack, ann_min_rows=10**12, search_cache_mb=args.cache_mb)
        result["cached"] = {}
        for name, event_id in targets.items():
            started = time.perf_counter()
            cached.event_faces(ORG_ID, event_id)
            first_s = time.perf_counter() - started
            recalls, took = [], []
            for v, exact in zip(queries(event_id), truth[name], strict=True):
                started = time.perf_counter()
                found = {
                    h.face_id for h in cached.search(ORG_ID, event_id, v, min_similarity=args.threshold, limit=None)
                }
                took.append(time.perf_counter() - started)
                recalls.append(len(found & exact) / len(exact) if exact else 1.0)
            result["cached"][name] = {"first_read_ms": round(first_s * 1000, 1), "p50_ms": ms(took, 50),
                                      "p95_ms": ms(took, 95), "recall": round(float(np.mean(recalls)), 4),
                                      "min_recall": round(float(np.min(recalls)), 4)}  # fmt: skip
            print(name, "cached", result["cached"][name], flush=True)
        result["cached_mb"] = round(cached.event_cache.nbytes / 2**20, 1)
    if args.exact_only:
        (out / "results.json").write_text(json.dumps(result, indent=2))
        return 0
    t = time.perf_counter()
    from lancedb.index import IvfPq

    store.faces.create_index(
        "vector",
        config=IvfPq(
            distance_type="cosine", num_partitions=max(1, int(rows**0.5)), num_sub_vectors=max(1, pack.dim // 8)
        ),
    )
    result["ann_index_s"] = round(time.perf_counter() - t, 1)
    print("IVF_PQ built in", result["ann_index_s"], "s", flush=True)
    result["ann"] = []
    for nprobes in (int(x) for x in args.nprobes.split(",")):
        for refine in (int(x) for x in args.refine.split(",")):
            for name, event_id in targets.items():
                recalls, took = [], []
                for v, exact in zip(queries(event_id), truth[name], strict=True):
                    found, s = query(store, event_id, v, args.threshold, "ann", nprobes, refine)
                    took.append(s)
                    recalls.append(len(found & exact) / len(exact) if exact else 1.0)
                row = {"event": name, "nprobes": nprobes, "refine": refine, "p50_ms": ms(took, 50),
                       "p95_ms": ms(took, 95), "recall": round(float(np.mean(recalls)), 4),
                       "min_recall": round(float(np.min(recalls)), 4)}  # fmt: skip
                result["ann"].append(row)
                print(row, flush=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
