"""Load test: 200 concurrent clients for 60 s with POST bursts, against the real Serve app.

    python bench/load.py --out bench-out/load [--limits 64/16,32/8 --clients 200 --duration-s 60]

One process, one private local Ray cluster (``ray.init(num_cpus=2)``). A short synthetic
event (bench/api.py's generated pans) is indexed once; a few searches are completed so that
GETs have records to read. Then, for each admission setting in --limits
(``max_concurrent_reads/max_concurrent_writes`` per ingress replica), the app is deployed
with it and loaded:

  GET clients   --clients keep-alive clients in a closed loop, each GETting Event Details or a
                completed search record in turn, spread over --keys API keys (the product's
                default rate limits, so 429s are real). A client honours Retry-After on a
                429 or 503, as the API asks of well-behaved clients.
  POST bursts   every --burst-every-s, --burst POSTs of a selfie at once, spread over the keys.
                Each accepted search is then polled until it is terminal (or --terminal-s).

Recorded per setting: p50/p99 of accepted (200) GETs and POSTs, the shares of 200/429/503
and anything else, non-JSON answers, accepted searches left non-terminal, and the CPU the
client itself used. Results: <out>/results.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from api import HIGH_LIMITS, free_port, git_state, machine_info, make_video, selfies, t1_face_boxes, video_plan

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ORG_ID, EVENT_ID = 1, 1
TERMINAL = {"completed", "no_matches", "no_segments", "clip_failed", "failed"}


# Who used the two cores during a run, by what the process is (its Ray actor or task name).
PROCESS_KINDS = (
    ("ProxyActor", "Serve proxy"),
    ("ApiIngress", "ApiIngress"),
    ("SelfieEmbedder", "SelfieEmbedder"),
    ("SearchMatcher", "SearchMatcher"),
    ("ServeController", "Serve controller"),
    ("run_search", "run_search tasks"),
    ("cut_one_clip", "clip tasks"),
    ("ffmpeg", "ffmpeg"),
    ("ray::IDLE", "Ray workers, idle or starting"),
    ("default_worker.py", "Ray workers, idle or starting"),  # before "raylet": it is in their arguments
    ("raylet", "raylet"),
    ("gcs_server", "GCS"),
)


def process_kind(cmdline: str, pid: int) -> str:
    if pid == os.getpid():
        return "bench client"
    for needle, kind in PROCESS_KINDS:
        if needle in cmdline:
            return kind
    return "other"


class CpuSampler:
    """CPU seconds per kind of process over a run: every process is sampled each 0.5 s, so
    short-lived ones (a worker that starts, a clip's ffmpeg) count up to their last sample."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.started = time.monotonic()
        self.baseline = True  # the first sample: what running processes had used before
        self.previous: dict[int, float] = {}
        self.sampled_at = time.perf_counter()
        # (time, seconds since the previous sample, CPU seconds by kind in them): when it was used
        self.series: list[tuple[float, float, dict[str, float]]] = []

    def sample(self) -> None:
        now = time.perf_counter()
        step: dict[str, float] = {}
        for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
            try:
                times = proc.info["cpu_times"]
                used = times.user + times.system
                # The latest name counts: a worker starts as default_worker.py, then takes its task's.
                kind = process_kind(" ".join(proc.info["cmdline"] or []), proc.pid)
            except (psutil.Error, TypeError):
                continue
            self.first.setdefault(proc.pid, used if self.baseline else 0.0)  # a new process: all of it
            self.last[proc.pid] = (kind, used)
            step[kind] = step.get(kind, 0.0) + used - self.previous.get(proc.pid, self.first[proc.pid])
            self.previous[proc.pid] = used
        if not self.baseline:
            self.series.append((now, now - self.sampled_at, step))
        self.sampled_at = now
        self.baseline = False

    def cores_when(self, inside) -> dict[str, float]:
        """Mean cores by kind over the samples whose time ``inside(t)`` holds."""
        picked = [(dt, step) for t, dt, step in self.series if inside(t)]
        wall = sum(dt for dt, _ in picked) or 1.0
        out: dict[str, float] = {}
        for _, step in picked:
            for kind, used in step.items():
                out[kind] = out.get(kind, 0.0) + used
        return {k: round(v / wall, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v / wall >= 0.01}

    def totals(self) -> dict[str, float]:
        wall = time.monotonic() - self.started
        out: dict[str, float] = {}
        for pid, (kind, used) in self.last.items():
            out[kind] = out.get(kind, 0.0) + used - self.first.get(pid, 0.0)
        return {k: round(v / wall, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0.05 * wall / 100}


async def sample_cpu(sampler: CpuSampler, until: float) -> None:
    while time.monotonic() < until:
        await asyncio.to_thread(sampler.sample)
        await asyncio.sleep(0.5)


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


async def get_client(http, urls: list[str], key: str, start_in_s: float, until: float, log: list) -> None:
    await asyncio.sleep(start_in_s)  # clients arrive over --ramp-s, not all in one instant
    i = 0
    while time.monotonic() < until:
        url = urls[i % len(urls)]
        i += 1
        t0 = time.perf_counter()
        try:
            async with http.get(url, headers={"X-API-Key": key}) as r:
                await r.read()
                status, retry = r.status, r.headers.get("retry-after")
                json_ok = r.headers.get("content-type", "").startswith("application/json")
        except Exception as exc:  # a dropped connection counts as an answer of its own kind
            status, retry, json_ok = type(exc).__name__, None, False
        log.append(("GET", status, time.perf_counter() - t0, json_ok, t0))
        if retry is not None:
            await asyncio.sleep(float(retry))


async def post_once(http, url: str, key: str, jpeg: bytes, log: list, accepted: list) -> None:
    t0 = time.perf_counter()
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("file", jpeg, filename="selfie.jpg", content_type="image/jpeg")
    try:
        async with http.post(url, headers={"X-API-Key": key}, data=form) as r:
            body = await r.read()
            status = r.status
            json_ok = r.headers.get("content-type", "").startswith("application/json")
        if status == 200:
            accepted.append(json.loads(body)["data"]["request_id"])
    except Exception as exc:
        status, json_ok = type(exc).__name__, False
    log.append(("POST", status, time.perf_counter() - t0, json_ok, t0))


async def load(base: str, keys: list[str], records: list[str], photos: list[bytes], args, burst: int) -> dict:
    import aiohttp  # a client that costs less CPU per request than httpx: it shares the 2 cores

    api = f"{base}/api/v1/ext/{ORG_ID}/event/{EVENT_ID}"
    urls = [api, *(f"{api}/video-clipping/{rid}" for rid in records)]
    log: list[tuple] = []
    accepted: list[str] = []
    connector = aiohttp.TCPConnector(limit=args.clients + burst + 10)
    me = psutil.Process()
    cpu0 = me.cpu_times()
    timeout = aiohttp.ClientTimeout(total=120)
    sampler = CpuSampler()
    sampler.sample()  # what each running process had used before the run
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        until = time.monotonic() + args.duration_s
        sampling = asyncio.create_task(sample_cpu(sampler, until))
        clients = [
            asyncio.create_task(get_client(http, urls, keys[i % len(keys)], args.ramp_s * i / args.clients, until, log))
            for i in range(args.clients)
        ]
        bursts = []
        burst_starts: list[float] = []  # perf_counter times, as the log's
        at = time.monotonic() + args.burst_every_s
        n = 0
        while at < until:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            burst_starts.append(time.perf_counter())
            for _ in range(burst):
                key, photo = keys[n % len(keys)], photos[n % len(photos)]
                post = post_once(http, f"{api}/video-clipping/search-by-selfie", key, photo, log, accepted)
                bursts.append(asyncio.create_task(post))
                n += 1
            at += args.burst_every_s
        await asyncio.gather(*clients, *bursts, sampling)
        cpu1 = me.cpu_times()
        cores = sampler.totals()
        # Every accepted search must end.
        pending = set(accepted)
        deadline = time.monotonic() + args.terminal_s
        while pending and time.monotonic() < deadline:
            for rid in list(pending):
                async with http.get(f"{api}/video-clipping/{rid}", headers={"X-API-Key": keys[0]}) as r:
                    if r.status == 200 and (await r.json())["data"]["status"] in TERMINAL:
                        pending.discard(rid)
            if pending:
                await asyncio.sleep(1.0)

    def near(t: float) -> bool:
        return any(0.0 <= t - b <= args.burst_window_s for b in burst_starts)

    result: dict[str, Any] = {
        "client_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 1),
        "cores_by_process": cores,  # mean cores used over the run, by kind of process
    }
    if burst_starts:
        result["cores_near_bursts"] = sampler.cores_when(near)
        result["cores_between_bursts"] = sampler.cores_when(lambda t: not near(t))

    for kind in ("GET", "POST"):
        rows = [r for r in log if r[0] == kind]
        statuses: dict[str, int] = {}
        for r in rows:
            statuses[str(r[1])] = statuses.get(str(r[1]), 0) + 1
        ok = [r[2] for r in rows if r[1] == 200]
        shed = [r[2] for r in rows if r[1] == 503]
        result[kind] = {
            "requests": len(rows),
            "per_s": round(len(rows) / args.duration_s, 1),
            "statuses": statuses,
            "shares": {s: round(n / len(rows), 3) for s, n in statuses.items()} if rows else {},
            "accepted_p50_ms": pct(ok, 50),
            "accepted_p99_ms": pct(ok, 99),
            "shed_p99_ms": pct(shed, 99),
            # Accepted requests sent within --burst-window-s after a burst began, and the rest:
            # whether a tail comes from the bursts' work or from the readers themselves.
            "accepted_p99_ms_near_bursts": pct([r[2] for r in rows if r[1] == 200 and near(r[4])], 99),
            "accepted_p99_ms_between_bursts": pct([r[2] for r in rows if r[1] == 200 and not near(r[4])], 99),
            "non_json": sum(1 for r in rows if not r[3]),
        }
    result["searches_accepted"] = len(accepted)
    result["searches_not_terminal"] = len(pending)
    return result


def summarise(result: dict) -> str:
    lines = [
        f"Machine: {result['machine']['cpus']} cores, {result['machine']['cpu_model']}; command: `{result['command']}`",
        "",
        "| reads/writes | GET req/s | GET p50 / p99 (200) | GET 200 / 429 / 503 | POST p50 / p99 (200) "
        "| POST 200 / 429 / 503 | non-JSON | searches accepted / not terminal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        g, p = run["GET"], run["POST"]

        def shares(x: dict) -> str:
            return " / ".join(f"{100 * x['shares'].get(s, 0):.1f} %" for s in ("200", "429", "503"))

        lines.append(
            f"| {run['limits']} | {g['per_s']} | {g['accepted_p50_ms']} / {g['accepted_p99_ms']} ms | {shares(g)} "
            f"| {p['accepted_p50_ms']} / {p['accepted_p99_ms']} ms | {shares(p)} | {g['non_json'] + p['non_json']} "
            f"| {run['searches_accepted']} / {run['searches_not_terminal']} |"
        )
    lines.append("")
    for run in result["runs"]:
        busy = ", ".join(f"{kind} {cores}" for kind, cores in run.get("cores_by_process", {}).items())
        lines.append(f"- {run['limits']}: mean cores used, by process: {busy}")
        g = run["GET"]
        lines.append(
            f"  accepted GET p99 within {result['args']['burst_window_s']} s of a burst's start "
            f"{g.get('accepted_p99_ms_near_bursts')} ms, at other times {g.get('accepted_p99_ms_between_bursts')} ms"
        )
        for when in ("near_bursts", "between_bursts"):
            if f"cores_{when}" in run:
                busy = ", ".join(f"{kind} {cores}" for kind, cores in run[f"cores_{when}"].items())
                lines.append(f"  cores {when.replace('_', ' ')}: {busy}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--limits", default="64/16,32/8", help="max_concurrent_reads/max_concurrent_writes, comma-separated"
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--ramp-s", type=float, default=2.0, help="seconds over which the GET clients start")
    parser.add_argument(
        "--burst", default="30", help="POSTs sent at once in each burst; one value, or one per --limits value"
    )
    parser.add_argument("--burst-every-s", type=float, default=20.0)
    parser.add_argument(
        "--burst-window-s", type=float, default=10.0, help="GETs sent this long after a burst began count as near it"
    )
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--video-s", type=float, default=30.0)
    parser.add_argument("--terminal-s", type=float, default=600.0)
    parser.add_argument("--api-set", action="append", default=[], help="extra api setting for every run, name=value")
    parser.add_argument(
        "--ingress", default="",
        help="ApiIngress max_ongoing_requests/max_queued_requests per run, comma-separated, paired with --limits "
        "(default: serve_config.yaml's); a small queue sheds in Serve's proxy, before routing",
    )  # fmt: skip
    parser.add_argument(
        "--ray-config", action="append", default=[],
        help="a Ray system config for the private cluster, name=value (e.g. num_workers_soft_limit=12)",
    )  # fmt: skip
    parser.add_argument(
        "--proxy", default="",
        help="api.proxy_max_reads/proxy_max_writes[/proxy_max_reads_while_writing] for Serve's proxy, one per invocation (it is read at the "
        "cluster's start; default: the config's); 0/0 turns the proxy's admission off",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench-out/load"))
    args = parser.parse_args()

    out = args.out.resolve()
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    result: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(),
        "git": git_state(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": [],
    }
    boxes = t1_face_boxes(out)
    videos = [make_video(media, spec, boxes) for spec in video_plan(args.videos, args.video_s, 25.0)]
    photos = [s["jpeg"] for s in selfies(boxes, 12)]

    import httpx
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
    base = f"http://127.0.0.1:{port}"
    settings = load_app_settings(None, data_dir=str(run_dir / "data"), ray={"num_cpus": 2},
                                 api={"public_base_url": base})  # fmt: skip
    from app.entry.serving_env import install_in_environment

    install_in_environment()  # Serve's own 503s (a full proxy queue) in the envelope, as `facereel serve`
    if args.proxy:  # the proxy reads its admission bounds from the environment it starts in
        names = ("PROXY_MAX_READS", "PROXY_MAX_WRITES", "PROXY_MAX_READS_WHILE_WRITING")
        for name, value in zip(names, args.proxy.split("/"), strict=False):
            os.environ[f"FACEREEL_API__{name}"] = value
    proxy = f"{settings.api.proxy_max_reads}/{settings.api.proxy_max_writes}" if not args.proxy else args.proxy
    system = {k: int(v) if v.lstrip("-").isdigit() else v for k, v in (kv.split("=", 1) for kv in args.ray_config)}
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _system_config=system or None,
    )
    try:
        print("indexing", flush=True)
        index_event(settings, ORG_ID, EVENT_ID, [str(v) for v in videos])
        control = ControlStore(settings.control_uri)
        EventStore(control).create_org("load bench", ORG_ID)
        EventStore(control).create_event(ORG_ID, "load bench event", EVENT_ID)
        keys = [KeyStore(control).create(ORG_ID, name=f"load {i}")[0] for i in range(args.keys)]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # A few completed searches for the GETs to read (unlimited rates for the setup only).
        setup = settings.model_copy(update={"api": settings.api.model_copy(update=HIGH_LIMITS)})
        serve.run(build_api(setup), name="facereel", route_prefix="/")
        records = []
        with httpx.Client(timeout=120) as http:
            url = f"{base}/api/v1/ext/{ORG_ID}/event/{EVENT_ID}/video-clipping"
            for jpeg in photos[:3]:
                rid = http.post(f"{url}/search-by-selfie", headers={"X-API-Key": keys[0]},
                                files={"file": ("s.jpg", jpeg, "image/jpeg")}).json()["data"]["request_id"]  # fmt: skip
                while http.get(f"{url}/{rid}", headers={"X-API-Key": keys[0]}).json()["data"]["status"] not in TERMINAL:
                    time.sleep(0.5)
                records.append(rid)
        specs = args.limits.split(",")
        ingress = args.ingress.split(",") if args.ingress else [""] * len(specs)
        if len(ingress) != len(specs):
            parser.error("--ingress needs one value per --limits value")
        bursts = [int(b) for b in args.burst.split(",")]
        bursts = bursts * len(specs) if len(bursts) == 1 else bursts
        if len(bursts) != len(specs):
            parser.error("--burst needs one value, or one per --limits value")
        for spec, queue, burst in zip(specs, ingress, bursts, strict=True):
            reads, writes = (int(x) for x in spec.split("/"))
            extra = {k: float(v) if "." in v else int(v) for k, v in (kv.split("=", 1) for kv in args.api_set)}
            api = settings.api.model_copy(
                update={"max_concurrent_reads": reads, "max_concurrent_writes": writes, **extra}
            )
            app_settings = settings.model_copy(update={"api": api})
            if queue:
                ongoing, queued = (int(x) for x in queue.split("/"))
                app = build_api(
                    app_settings,
                    {"ApiIngress": {"max_ongoing_requests": ongoing, "max_queued_requests": queued}},
                )
            else:
                app = build_api(app_settings)
            serve.run(app, name="facereel", route_prefix="/")
            print(f"load with {reads}/{writes}, ingress {queue or 'default'}", flush=True)
            run = asyncio.run(load(base, keys, records, photos, args, burst))
            run["limits"] = (
                spec + f", proxy {proxy}" + (f", ingress {queue}" if queue else "") + ("" if burst else ", GETs only")
            )
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(summarise(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
