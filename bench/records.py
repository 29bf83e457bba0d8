"""Search-record reads as the control store grows: 100 against 100,000 stored searches.

    python bench/records.py --sizes 100,1000,10000,100000 --reads 300 --out bench-out/records

For each size a fresh control store (app.store.control.ControlStore) gets that many completed
search records in one write (ten clip items each, like a real search), then the app's
maintenance (app.store.control.ControlStore.maintain: the request_id scalar index, compaction).
Then, in this process, one read at a time:

  read        RequestRecords.get of a random stored id (what a GET does on a cache miss)
  clips       ExtraClips.of_request of it (the other read of a GET)
  versions    ResultCache.versions() (what a GET does on a cache hit, besides the lookup)
  cached GET  ResultCache.read of a settled, cached id

p50/p95 per size, and each size's p50 over the p50 at the smallest size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from machine import cpu_model, loadavg

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def stored_records(n: int) -> list[dict]:
    from app.store.records import SearchRecord

    videos = [{"uuid": str(uuid.uuid4()), "video_url": "http://x/" + "y" * 80} for _ in range(10)]
    now = datetime.now(UTC)
    rows = []
    for _ in range(n):
        rec = SearchRecord(str(uuid.uuid4()), 1, 1, "completed", uuid.uuid4().hex, "yunet-sface", None)
        rec.videos, rec.hits = videos, 100
        rec.created_at = rec.updated_at = now
        rec.deadline_at = now + timedelta(seconds=600)
        rows.append(rec.to_row())
    return rows


def timed(fn, args: list, reads: int) -> dict:
    fn(args[0])  # warm
    out = []
    for i in range(reads):
        t = time.perf_counter()
        fn(args[i % len(args)])
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return {"p50_ms": round(statistics.median(out), 3), "p95_ms": round(out[int(0.95 * (len(out) - 1))], 3)}


def measure(n: int, reads: int) -> dict:
    import pyarrow as pa

    from app.store.control import REQUESTS, SCHEMAS, ControlStore
    from app.store.records import ExtraClips, RequestRecords
    from app.store.result_cache import ResultCache

    with tempfile.TemporaryDirectory(prefix="facereel-bench-records-") as tmp:
        control = ControlStore(str(Path(tmp) / "control"))
        rows = stored_records(n)
        t = time.perf_counter()
        control.table(REQUESTS).add(pa.Table.from_pylist(rows, schema=SCHEMAS[REQUESTS]))
        write_s = time.perf_counter() - t
        t = time.perf_counter()
        control.maintain()
        maintain_s = time.perf_counter() - t
        records, clips = RequestRecords(control, 600), ExtraClips(control, 600)
        cache = ResultCache(control, 10_000)
        ids = [r["request_id"] for r in random.Random(0).sample(rows, min(len(rows), 200))]
        for rid in ids:  # fill the cache
            cache.read(rid, lambda rid=rid: (records.get(rid), clips.of_request(rid)))
        row = {
            "stored": n,
            "write_s": round(write_s, 2),
            "maintain_s": round(maintain_s, 2),
            "read": timed(records.get, ids, reads),
            "clips": timed(clips.of_request, ids, reads),
            "versions": timed(lambda _: cache.versions(), ids, reads),
            "cached_get": timed(lambda rid: cache.read(rid, lambda: (None, [])), ids, reads),
        }
        print(f"  {n:>7} stored: {json.dumps({k: v for k, v in row.items() if k != 'stored'})}", flush=True)
        return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench-out/records"))
    args = parser.parse_args(argv)
    load_before = loadavg()
    rows = [measure(int(n), args.reads) for n in args.sizes.split(",")]
    base = rows[0]["read"]["p50_ms"]
    result = {
        "command": "python bench/records.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "load_before": load_before,
        "load_after": loadavg(),
        "rows": rows,
        "read_p50_vs_smallest": {r["stored"]: round(r["read"]["p50_ms"] / base, 2) for r in rows},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["read_p50_vs_smallest"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
