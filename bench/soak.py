"""Soak: a user's traffic with process kills, then a drain; every status and clip checked.

    .venv/bin/python bench/soak.py [--minutes 8] [--kill-every 45 60] [--out bench-out/soak]
    .venv/bin/python bench/soak.py --minutes 1.5 --kill-every 35 45   # the short variant (CI)

On one private local Ray cluster (2 CPUs, `facereel serve`'s environment) serving the demo's
synthetic event (two videos, one photo), for ``--minutes``:
- ``--pollers`` clients poll the accepted searches' records (with their ETags);
- a selfie POST every ``--selfie-every`` s and a Face Search POST every ``--face-every`` s,
  over ``--keys`` API keys, each honouring Retry-After on 429/503;
- a SIGKILL every ``--kill-every`` s, cycling through the ingress replica, the matcher
  replica, the embedder replica, a search job's worker (``run_search``) and a clip worker
  (``cut_one_clip``);
then the posts stop and the pollers drain until every accepted search is terminal (or
``--drain-s`` passes).

Reported: answers by status, non-JSON answers, 5xx other than 503, the shed share of POSTs;
status flips (a search that read terminal and later read anything else), searches that
read ``failed`` and later another status, lost searches (never terminal); POST -> first
terminal reading p50/p95, apart for searches a kill touched (in flight at a kill); and
every clip of a finished search downloaded and checked by demux (pipelines/clip_verify.py:
frames from 0, no step over 1.5 frames, duration within a frame of the item's). Terminal times
are also given per kind of kill a search was in flight at. The Serve deployments are the repo's
serve_config.yaml ones (``--serve-config``), as ``facereel serve`` deploys them.

The exit status is 1 when a status flipped, a search was lost, an answer was not JSON, a 5xx
other than 503 came, or a clip failed its check: CI runs the short variant (``.ci/run``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.core.contract import PROCESSING  # noqa: E402
from app.entry.demo import DEMO_EVENT as EVENT  # noqa: E402  (the soak serves the demo's event)
from app.entry.demo import DEMO_ORG as ORG  # noqa: E402
from app.store.control import REQUESTS  # noqa: E402
from bench.machine import cpu_model, loadavg  # noqa: E402

# Counts that must be 0 (the exit status is 1 otherwise): the short variant is CI's check.
INTEGRITY = ("status_flips", "failed_then_changed", "lost", "non_json", "server_errors_not_503", "clips_failing_check")
TERMINAL = {"completed", "no_matches", "no_segments", "clip_failed", "failed"}
KINDS = {  # process title fragments, as `ps` shows Ray's workers
    "ingress": "ServeReplica:facereel:ApiIngress",
    "matcher": "ServeReplica:facereel:SearchMatcher",
    "embedder": "ServeReplica:facereel:SelfieEmbedder",
    "search job": "ray::run_search",
    "clip worker": "ray::cut_one_clip",
}


@dataclass
class Search:
    request_id: str
    posted_at: float
    kind: str  # "selfie"
    readings: list[tuple[float, str]] = field(default_factory=list)
    answered_at: float = 0.0  # when the POST's answer arrived (upload and selfie embedding are before it)
    body: dict | None = None

    @property
    def first_terminal(self) -> tuple[float, str] | None:
        return next(((t, s) for t, s in self.readings if s in TERMINAL), None)


@dataclass
class Tally:
    answers: dict[str, int] = field(default_factory=dict)
    non_json: int = 0
    server_errors: int = 0  # 5xx other than 503
    posts: int = 0
    shed_posts: int = 0
    kills: list[tuple[float, str, int]] = field(default_factory=list)
    searches: dict[str, Search] = field(default_factory=dict)

    def answer(self, route: str, status: int, body) -> None:
        key = f"{route} {status}"
        self.answers[key] = self.answers.get(key, 0) + 1
        if body is None and status != 304:
            self.non_json += 1
        if status >= 500 and status != 503:
            self.server_errors += 1


def json_or_none(r) -> dict | None:
    try:
        body = r.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and {"responseType", "message", "data"} <= set(body) else None


def retry_after(r) -> float:
    try:
        return float(r.headers.get("retry-after", "2"))
    except ValueError:
        return 2.0


def pids_of(kind: str) -> list[int]:
    """This run's processes of a kind: descendants of this process (its private cluster's
    raylet and workers), never another cluster's on the same machine."""
    fragment = KINDS[kind]
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if fragment in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:  # ended meanwhile
            continue
    return found


async def killer(tally: Tally, until: float, every: tuple[float, float], seed: int) -> None:
    rng = random.Random(seed)
    for kind in itertools.cycle(KINDS):
        await asyncio.sleep(rng.uniform(*every))
        if time.monotonic() >= until:
            return
        end = time.monotonic() + 15  # a job or clip worker exists only while one runs
        while not (pids := pids_of(kind)) and time.monotonic() < end:
            await asyncio.sleep(0.2)
        if not pids:
            print(f"  kill: no {kind} process within 15 s, skipped", flush=True)
            continue
        pid = rng.choice(pids)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        tally.kills.append((time.monotonic(), kind, pid))
        print(f"  kill: {kind} (pid {pid}) at {time.strftime('%H:%M:%S')}", flush=True)


async def poster(
    http, base: str, keys: list[str], selfie: bytes, tally: Tally, every: float, until: float, face: bool
) -> None:
    i = 0
    route = "face-search" if face else "video-clipping/search-by-selfie"
    next_at = time.monotonic()
    while (now := time.monotonic()) < until:
        await asyncio.sleep(max(0.0, next_at - now))
        next_at += every
        key = keys[i % len(keys)]
        i += 1
        rid = str(uuid.uuid4())
        url = f"{base}/api/v1/ext/{ORG}/event/{EVENT}/{route}"
        t0 = time.monotonic()
        try:
            r = await http.post(url, headers={"X-API-Key": key}, files={"file": ("s.jpg", selfie, "image/jpeg")},
                                data={"request_id": rid})  # fmt: skip
        except Exception as exc:
            tally.answers[f"POST {type(exc).__name__}"] = tally.answers.get(f"POST {type(exc).__name__}", 0) + 1
            continue
        body = json_or_none(r)
        tally.posts += 1
        tally.answer(f"POST {route.split('/')[0]}", r.status_code, body)
        if r.status_code in (429, 503):
            tally.shed_posts += 1
            next_at = max(next_at, time.monotonic() + retry_after(r))  # honour Retry-After
            continue
        if not face and r.status_code == 200 and body is not None:
            now = time.monotonic()
            tally.searches[rid] = Search(rid, t0, "selfie", [(now, body["data"]["status"])], answered_at=now)


async def poller(http, base: str, key: str, tally: Tally, stop: asyncio.Event, n: int, of: int) -> None:
    etags: dict[str, str] = {}
    while not stop.is_set():
        mine = [s for i, s in enumerate(list(tally.searches.values())) if i % of == n and s.body is None]
        # Searches still in flight first: the moment one turns terminal is what is timed, and
        # the terminal ones are only re-read to catch a flip.
        mine.sort(key=lambda s: s.first_terminal is not None)
        if not mine:
            await asyncio.sleep(0.2)
            continue
        for search in mine:
            url = f"{base}/api/v1/ext/{ORG}/event/{EVENT}/video-clipping/{search.request_id}"
            headers = {"X-API-Key": key}
            if search.request_id in etags:
                headers["If-None-Match"] = etags[search.request_id]
            try:
                r = await http.get(url, headers=headers)
            except Exception as exc:
                tally.answers[f"GET {type(exc).__name__}"] = tally.answers.get(f"GET {type(exc).__name__}", 0) + 1
                await asyncio.sleep(0.5)
                continue
            body = json_or_none(r)
            tally.answer("GET record", r.status_code, body)
            if r.status_code == 304:
                search.readings.append((time.monotonic(), search.readings[-1][1]))
            elif r.status_code == 200 and body is not None:
                status = body["data"]["status"]
                search.readings.append((time.monotonic(), status))
                if "etag" in r.headers:
                    etags[search.request_id] = r.headers["etag"]
                # Keep reading a terminal record for a while: a flip would show up here.
                if status in TERMINAL and time.monotonic() - search.first_terminal[0] > 20:
                    search.body = body
            elif r.status_code in (429, 503):
                await asyncio.sleep(retry_after(r))
            await asyncio.sleep(0.5)


def verify_clip(http_get, item: dict, folder: Path) -> list[str]:
    """Download a clip as a participant does and check it by demux."""
    from pipelines import clip_verify

    path = folder / f"{item['uuid']}.mp4"
    path.write_bytes(http_get(item["video_url"]).content)
    clip = clip_verify.demux_clip(path)
    if len(clip.video) < 2:
        return [f"{len(clip.video)} frames"]
    steps = np.diff(sorted(p for p, _ in clip.video))
    frame_s = float(np.median(steps))
    want_s = float(item["end_seconds"]) - float(item["start_seconds"])
    plan = clip_verify.Plan(len(clip.video), want_s, frame_s, 1.5 * frame_s,
                            want_s if clip.audio is not None else None)  # fmt: skip
    problems = clip_verify.check(clip, plan)
    if abs(float(item.get("duration_seconds", want_s)) - clip.duration_s) > frame_s:
        problems.append(f"duration_seconds {item.get('duration_seconds')} but the file holds {clip.duration_s:.3f} s")
    return problems


def stored_times(control, request_ids: list[str]) -> dict:
    """The server's own account of the accepted searches: record created (the POST, after its
    selfie was embedded) to the terminal write, and the queued and running parts of it. The
    client's times above add the POST's upload and embedding and the poll that saw the change."""
    rows = [
        r
        for chunk in (request_ids[i : i + 200] for i in range(0, len(request_ids), 200))
        for r in control.rows(REQUESTS, "request_id IN (" + ", ".join(f"'{x}'" for x in chunk) + ")")
    ]
    total = [(r["updated_at"] - r["created_at"]).total_seconds() for r in rows if r["status"] != PROCESSING]
    queued = [r["queued_s"] for r in rows if r.get("queued_s") is not None]
    running = [r["running_s"] for r in rows if r.get("running_s") is not None]
    return {
        "n": len(total),
        "created_to_terminal": {"p50": pct(total, 50), "p95": pct(total, 95), "max": pct(total, 100)},
        "queued": {"p50": pct(queued, 50), "p95": pct(queued, 95)},
        "running": {"p50": pct(running, 50), "p95": pct(running, 95)},
    }


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def report(tally: Tally, clip_problems: dict[str, list[str]], clips: int, minutes: float) -> dict:
    flips, failed_then_other, lost, touched, untouched, posts = [], [], [], [], [], []
    by_kill: dict[str, list[float]] = {}  # a search in flight at kills of two kinds counts under both
    ended: dict[str, int] = {}
    for s in tally.searches.values():
        first = s.first_terminal
        if first is None:
            lost.append(s.request_id)
            continue
        later = {st for t, st in s.readings if t >= first[0]}
        if later != {first[1]}:
            flips.append((s.request_id, [st for _, st in s.readings]))
            if first[1] == "failed":
                failed_then_other.append(s.request_id)
        final = s.readings[-1][1]
        ended[final] = ended.get(final, 0) + 1
        took = first[0] - s.posted_at
        posts.append(s.answered_at - s.posted_at)
        kinds = sorted({kind for at, kind, _ in tally.kills if s.posted_at <= at <= first[0]})
        (touched if kinds else untouched).append(took)
        for kind in kinds:
            by_kill.setdefault(kind, []).append(took)
    return {
        "minutes": minutes,
        "answers": dict(sorted(tally.answers.items())),
        "non_json": tally.non_json,
        "server_errors_not_503": tally.server_errors,
        "posts": tally.posts,
        "shed_posts": tally.shed_posts,
        "shed_share": round(tally.shed_posts / tally.posts, 3) if tally.posts else None,
        "accepted_searches": len(tally.searches),
        "ended": ended,
        "status_flips": len(flips),
        "flips": flips[:20],
        "failed_then_changed": len(failed_then_other),
        "lost": len(lost),
        "kills": [(k, p) for _, k, p in tally.kills],
        "terminal_s_untouched": {"n": len(untouched), "p50": pct(untouched, 50), "p95": pct(untouched, 95)},
        "terminal_s_touched_by_kill": {"n": len(touched), "p50": pct(touched, 50), "p95": pct(touched, 95)},
        "terminal_s_all": {"p50": pct(untouched + touched, 50), "p95": pct(untouched + touched, 95)},
        "post_answer_s": {"p50": pct(posts, 50), "p95": pct(posts, 95)},
        "terminal_s_by_kill": {
            kind: {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95), "max": pct(v, 100)}
            for kind, v in sorted(by_kill.items())
        },
        "clips_checked": clips,
        "clips_failing_check": len(clip_problems),
        "clip_problems": dict(list(clip_problems.items())[:10]),
    }


async def run_load(base: str, keys: list[str], selfie: bytes, args, tally: Tally) -> None:
    import httpx

    until = time.monotonic() + args.minutes * 60
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=args.pollers + 8)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        pollers = [asyncio.create_task(poller(http, base, keys[i % len(keys)], tally, stop, i, args.pollers))
                   for i in range(args.pollers)]  # fmt: skip
        await asyncio.gather(
            poster(http, base, keys, selfie, tally, args.selfie_every, until, face=False),
            poster(http, base, keys[::-1], selfie, tally, args.face_every, until, face=True),
            killer(tally, until, tuple(args.kill_every), args.seed),
        )
        print(
            f"  load over at {time.strftime('%H:%M:%S')}: {len(tally.searches)} searches accepted; draining", flush=True
        )
        drain_end = time.monotonic() + args.drain_s
        while time.monotonic() < drain_end and any(s.body is None for s in tally.searches.values()):
            await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*pollers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(45.0, 60.0))
    parser.add_argument("--pollers", type=int, default=20)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--selfie-every", type=float, default=2.0)
    parser.add_argument("--face-every", type=float, default=5.0)
    parser.add_argument("--drain-s", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench-out/soak"))
    parser.add_argument("--serve-config", type=Path, default=REPO / "serve_config.yaml")
    args = parser.parse_args()

    import httpx
    import ray
    from ray import serve

    from app.config import load_app_settings
    from app.entry.demo import build_demo_media, ensure_demo_event
    from app.entry.serve import build_api, serve_config_deployments
    from app.entry.serving_env import install_in_environment
    from app.store.control import ControlStore
    from app.store.keys import KeyStore
    from pipelines.index import ensure_ray, index_event
    from pipelines.local_cluster import free_port

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = load_app_settings(
        None, data_dir=str(out / "data"), ray={"num_cpus": 2, "log_to_driver": False},
        api={"public_base_url": f"http://127.0.0.1:{port}"},
    )  # fmt: skip
    result: dict = {"machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "loadavg_before": loadavg()},
                    "command": " ".join(sys.argv)}  # fmt: skip
    install_in_environment()
    selfie_path, _ = build_demo_media(out / "media", settings)
    ensure_ray(settings)
    try:
        control = ControlStore(settings.control_uri, settings.store.storage_options)
        keys = [ensure_demo_event(settings)]  # the demo's org and event, and a key
        keys += [KeyStore(control).create(ORG, name=f"soak {i}")[0] for i in range(args.keys - 1)]
        index_event(settings, ORG, EVENT, [str(out / "media" / "event")])
        quiet = {"log_level": "WARNING"}
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=quiet)
        # What `facereel serve` deploys: replicas, autoscaling and CPUs from the repo's serve_config.yaml.
        deployments = serve_config_deployments(args.serve_config)
        result["deployments"] = deployments
        serve.run(build_api(settings, deployments), name="facereel", route_prefix="/", logging_config=quiet)
        base = f"http://127.0.0.1:{port}"
        print(f"[soak] {args.minutes} min from {time.strftime('%H:%M:%S')}", flush=True)
        tally = Tally()
        asyncio.run(run_load(base, keys, selfie_path.read_bytes(), args, tally))
        clip_dir = out / "clips"
        clip_dir.mkdir(exist_ok=True)
        problems: dict[str, list[str]] = {}
        clips = 0
        with httpx.Client(timeout=60) as http:
            for i, s in enumerate(tally.searches.values()):
                if s.body is None and s.first_terminal is not None:  # ended late in the drain
                    url = f"{base}/api/v1/ext/{ORG}/event/{EVENT}/video-clipping/{s.request_id}"
                    for _ in range(5):  # over the keys, honouring Retry-After like the pollers
                        answer = http.get(url, headers={"X-API-Key": keys[i % len(keys)]})
                        if answer.status_code not in (429, 503):
                            break
                        time.sleep(float(answer.headers.get("retry-after", "1")))
                    s.body = json_or_none(answer)
                    status = ((s.body or {}).get("data") or {}).get("status")
                    if status is None:  # an error envelope (a shed or refused GET): no reading
                        print(f"  final read of {s.request_id}: {s.body}", flush=True)
                        s.body = None
                    else:
                        s.readings.append((time.monotonic(), status))
                for item in (s.body or {}).get("data", {}).get("videos", []):
                    clips += 1
                    if found := verify_clip(http.get, item, clip_dir):
                        problems[item["uuid"]] = found
        result |= report(tally, problems, clips, args.minutes)
        result["terminal_s_in_the_store"] = stored_times(control, list(tally.searches))
        result["machine"]["loadavg_after"] = loadavg()
        (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
        print(
            json.dumps(
                {k: v for k, v in result.items() if k not in ("flips", "answers", "machine")}, indent=1, default=str
            )
        )
        print(json.dumps(result["answers"], indent=1))
    finally:
        serve.shutdown()
        ray.shutdown()
    broken = {k: result[k] for k in INTEGRITY if result.get(k)}
    if broken:  # what must never happen, kills or not; times are reported, not gated
        print(f"FAIL: {broken}")
        return 1
    print("OK: no status flips, no lost searches, only JSON answers, no 5xx but 503, every clip verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
