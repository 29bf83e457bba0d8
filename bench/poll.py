"""Polling a finished search: N clients, each with its own API key, GET one terminal record
in a closed loop through Serve's proxy, against GET /healthz in the same run.

    .venv/bin/python bench/poll.py [--clients 50] [--seconds 30] [--rounds 2] [--out bench-out/poll]

Phases, one after another on one private local Ray cluster with `facereel serve`'s
environment (the proxy's envelope and admission, app/entry/serving_env.py):
1. ``etag``: each client sends the ETag of its last answer in If-None-Match (a well-behaved
   poller: 304 without a body while the record is unchanged);
2. ``plain``: the same GETs without a validator (every answer is the whole record);
3. ``healthz``: GET /healthz, the cheapest route through the same proxy and replica.

Reports answers by status (304 counts as OK), p50/p95/p99 and throughput, and the ratio of
each phase's OK throughput to /healthz's. The record is written straight to the control
table (a finished search with one clip): what is measured is the GET, not a search.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import cpu_model, loadavg  # noqa: E402

ORG_ID, EVENT_ID = 1, 1


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


async def hammer(urls: list[str], keys: list[str], seconds: float, etag: bool, warmup_s: float = 2.0) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    refusals: list[str] = []  # the first few non-OK bodies: which layer said no, and why
    t_start = time.perf_counter() + warmup_s
    t_stop = t_start + seconds

    async def client(c: int) -> None:
        validator: str | None = None
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1)) as http:
            while (t0 := time.perf_counter()) < t_stop:
                headers = {"X-API-Key": keys[c]}
                if etag and validator:
                    headers["If-None-Match"] = validator
                try:
                    r = await http.get(urls[c % len(urls)], headers=headers)
                    label = str(r.status_code)
                    if r.status_code == 200:
                        validator = r.headers.get("etag")
                    elif r.status_code != 304 and len(refusals) < 5:
                        refusals.append(r.text[:300])
                except Exception as exc:  # counted: the load goes on
                    label = type(exc).__name__
                if t0 >= t_start:
                    statuses[label] = statuses.get(label, 0) + 1
                    if label in ("200", "304"):
                        latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client(c) for c in range(len(keys))))
    elapsed = time.perf_counter() - t_start
    ok = len(latencies)
    return {
        "clients": len(keys),
        "seconds": round(elapsed, 1),
        "answers": statuses,
        "not_ok": sum(n for s, n in statuses.items() if s not in ("200", "304")),
        "ok_per_s": round(ok / elapsed, 1),
        "p50_ms": pct(latencies, 50),
        "p95_ms": pct(latencies, 95),
        "p99_ms": pct(latencies, 99),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
        "refusals": refusals,
    }


def finished_record(settings, control) -> str:
    from app.core.contract import COMPLETED
    from app.store.records import RequestRecords, SearchRecord

    records = RequestRecords(control, settings.api.request_deadline_s)
    rid = str(uuid.uuid4())
    record = records.start(SearchRecord(rid, ORG_ID, EVENT_ID, "processing", "", "yunet-sface", np.zeros((1, 128))))
    video = {
        "uuid": str(uuid.uuid4()),
        "video_url": f"{settings.api.public_base_url}/media/{ORG_ID}/{EVENT_ID}/clips/{rid}/c.mp4",
        "source_video_key": "stage_pan.mp4",
        "start_time": "00:00:04",
        "end_time": "00:00:16",
    }
    assert records.finish(rid, record.job_id, COMPLETED, videos=[video], hits=12)
    return rid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out/poll"))
    args = parser.parse_args()

    import ray
    from ray import serve

    from app.config import load_app_settings
    from app.entry.serve import build_api
    from app.entry.serving_env import install_in_environment
    from app.store.control import ControlStore
    from app.store.events import EventStore
    from app.store.keys import KeyStore
    from tests.conftest import free_port

    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = load_app_settings(
        None, data_dir=str(args.out / "data"), ray={"num_cpus": 2}, api={"public_base_url": f"http://127.0.0.1:{port}"}
    )
    install_in_environment()  # the proxy's envelope and admission, as `facereel serve` runs it
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        control = ControlStore(settings.control_uri, settings.store.storage_options)
        events = EventStore(control)
        events.create_org("bench", ORG_ID)
        events.create_event(ORG_ID, "bench", EVENT_ID)
        keys = [KeyStore(control).create(ORG_ID, name=f"poller {i}")[0] for i in range(args.clients)]
        rid = finished_record(settings, control)
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        serve.run(build_api(settings), name="facereel", route_prefix="/", logging_config={"log_level": "WARNING"})
        base = f"http://127.0.0.1:{port}"
        record_url = f"{base}/api/v1/ext/{ORG_ID}/event/{EVENT_ID}/video-clipping/{rid}"
        result: dict = {
            "machine": {"cpus": 2, "cpu_model": cpu_model(), "loadavg_before": loadavg()},
            "command": " ".join(sys.argv),
            "settings": {k: getattr(settings.api, k) for k in ("proxy_max_polls", "max_concurrent_polls",
                                                               "proxy_max_reads", "max_concurrent_reads")},
        }  # fmt: skip
        # Phases in rounds (etag, plain, healthz; again): the first phase after a start runs while
        # the cluster is still starting its idle workers, so one round alone favours /healthz.
        phases = (("etag", record_url, True), ("plain", record_url, False), ("healthz", f"{base}/healthz", False))
        rounds: list[dict] = []
        for r in range(args.rounds):
            this: dict = {}
            for name, url, etag in phases:
                this[name] = asyncio.run(hammer([url], keys, args.seconds, etag))
                print(f"round {r + 1} {name:8s} {json.dumps(this[name])}", flush=True)
            health = this["healthz"]["ok_per_s"] or float("nan")
            for name in ("etag", "plain"):
                this[name]["vs_healthz"] = round(this[name]["ok_per_s"] / health, 2)
            rounds.append(this)
        result["rounds"] = rounds
        for name, _, _ in phases:  # all rounds together: OK answers over seconds, worst tail
            runs = [r[name] for r in rounds]
            result[name] = {
                "not_ok": sum(x["not_ok"] for x in runs),
                "ok_per_s": round(sum(x["ok_per_s"] * x["seconds"] for x in runs) / sum(x["seconds"] for x in runs), 1),
                "p99_ms": max(x["p99_ms"] or 0 for x in runs),
            }
        health = result["healthz"]["ok_per_s"] or float("nan")
        for name in ("etag", "plain"):
            result[name]["vs_healthz"] = round(result[name]["ok_per_s"] / health, 2)
        result["machine"]["loadavg_after"] = loadavg()
        (args.out / "results.json").write_text(json.dumps(result, indent=2))
        print(
            f"\nall rounds: etag: {result['etag']['not_ok']} not OK, p99 {result['etag']['p99_ms']} ms, "
            f"{result['etag']['vs_healthz']}x /healthz; plain: {result['plain']['not_ok']} not OK, "
            f"p99 {result['plain']['p99_ms']} ms, {result['plain']['vs_healthz']}x /healthz"
        )
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
