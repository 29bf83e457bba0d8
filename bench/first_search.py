"""The first search after `facereel serve` starts, against the warm p50 of the searches that
follow, in one run; then `facereel demo`'s own polls.

    .venv/bin/python bench/first_search.py [--searches 10] [--out bench-out/first-search]

1. The demo's synthetic event (app/entry/demo.py) is built and indexed with `facereel index`.
2. `facereel serve` runs the repo's serve_config.yaml (its port changed to a free one) as a
   user starts it; the clock starts when it prints that the API answers.
3. One selfie search, POST to terminal (GET every 0.1 s), then ``--searches`` more, one
   after another: the first one's time over the p50 of the rest is the ratio. Each search's
   POST time, and its record's time in Ray's queue and running, say where the time went.
4. `facereel demo` in a fresh data dir: how many GETs its contract backoff (3, 5, 10, 15 s)
   made before the search was terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import cpu_model, loadavg  # noqa: E402

FACEREEL = [sys.executable, "-m", "app.entry.cli"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def search_once(base: str, key: str, selfie: bytes, poll_s: float = 0.1, limit_s: float = 300.0) -> dict:
    url = f"{base}/api/v1/ext/1/event/1/video-clipping"
    headers = {"X-API-Key": key}
    t0 = time.perf_counter()
    started = httpx.post(
        f"{url}/search-by-selfie", headers=headers, files={"file": ("s.jpg", selfie, "image/jpeg")}, timeout=60
    )
    started.raise_for_status()
    rid = started.json()["data"]["request_id"]
    post_s = time.perf_counter() - t0
    while True:
        status = httpx.get(f"{url}/{rid}", headers=headers, timeout=60).json()["data"]["status"]
        if status != "processing" or time.perf_counter() - t0 > limit_s:
            return {
                "request_id": rid,
                "status": status,
                "post_s": round(post_s, 3),
                "terminal_s": round(time.perf_counter() - t0, 3),
            }
        time.sleep(poll_s)  # the poll interval of a client measuring to 0.1 s


def job_step_times(request_ids: list[str]) -> dict[str, str]:
    """Each search job's own lines, "search <id> ran in 2.31 s (started 0.20, match 1.10, ...)"
    and its clips' "cut in" lines, from this machine's Ray worker logs (app/jobs/dispatch.py
    logs them: at WARNING when slow, so the warm ones are usually absent)."""
    import glob
    import re

    wanted: dict[str, set[str]] = {rid: set() for rid in request_ids}
    pattern = re.compile(r"(?:search (\S+) ran in .*|clip \S+ of search (\S+) cut in .*)$")
    for path in glob.glob(os.path.join(tempfile.gettempdir(), "ray", "session_*", "logs", "worker-*")):
        with open(path, errors="replace") as f:
            for line in f:
                if ("ran in" in line or "cut in" in line) and (m := pattern.search(line.rstrip())):
                    rid = m.group(1) or m.group(2)
                    if rid in wanted:
                        wanted[rid].add(m.group(0))
    return {rid: "; ".join(sorted(lines)) for rid, lines in wanted.items() if lines}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searches", type=int, default=10, help="warm searches after the first")
    parser.add_argument("--out", type=Path, default=Path("bench-out/first-search"))
    parser.add_argument("--no-demo", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEREEL_", "RAY_ADDRESS"))}
    env |= {
        "FACEREEL_DATA_DIR": str(out / "data"),
        "FACEREEL_API__PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "PYTHONPATH": str(REPO),
    }
    os.environ.update({k: env[k] for k in ("FACEREEL_DATA_DIR", "FACEREEL_API__PUBLIC_BASE_URL")})
    from app.config import load_app_settings
    from app.entry.demo import DEMO_EVENT, DEMO_ORG, build_demo_media, ensure_demo_event

    settings = load_app_settings(None)
    result: dict = {"machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "loadavg_before": loadavg()}}
    result["command"] = " ".join(sys.argv)
    print("[1/4] building and indexing the demo event", flush=True)
    selfie_path, _ = build_demo_media(out / "media", settings)
    key = ensure_demo_event(settings)
    subprocess.run(
        [
            *FACEREEL,
            "index",
            "--quiet",
            "--org",
            str(DEMO_ORG),
            "--event",
            str(DEMO_EVENT),
            str(out / "media" / "event"),
        ],
        env=env,
        cwd=out,
        check=True,
    )
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    (out / "serve_config.yaml").write_text(yaml.safe_dump(config))

    print("[2/4] facereel serve", flush=True)
    serve = subprocess.Popen(
        [*FACEREEL, "serve", str(out / "serve_config.yaml")], env=env, cwd=out, stdout=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        t_start = time.perf_counter()
        for line in serve.stdout:  # type: ignore[union-attr]
            print(f"    facereel serve: {line.rstrip()}", flush=True)
            if line.startswith("facereel API on"):
                break
        else:
            raise RuntimeError("facereel serve ended before it was ready")
        result["serve_ready_s"] = round(time.perf_counter() - t_start, 1)
        selfie = selfie_path.read_bytes()
        print("[3/4] the first search, then the warm ones", flush=True)
        first = search_once(base, key, selfie)
        print(f"    first: {first}", flush=True)
        warm = [search_once(base, key, selfie) for _ in range(args.searches)]
        p50 = statistics.median(w["terminal_s"] for w in warm)
        result |= {
            "first": first,
            "warm": warm,
            "warm_p50_s": p50,
            "first_vs_warm_p50": round(first["terminal_s"] / p50, 2),
        }
        print(f"    warm p50 {p50:.2f} s; first / warm p50 = {result['first_vs_warm_p50']}", flush=True)
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=120)
        except subprocess.TimeoutExpired:
            serve.kill()

    if "first" in result:  # where each search's time went: its record's queue and run times
        from app.store.control import REQUESTS, ControlStore

        control = ControlStore(settings.control_uri, settings.store.storage_options)
        for search in [result["first"], *result["warm"]]:
            rows = control.rows(REQUESTS, f"request_id = '{search['request_id']}'", 1)
            if rows:
                search["queued_s"], search["running_s"] = rows[0]["queued_s"], rows[0]["running_s"]
        ran = job_step_times([result["first"]["request_id"], *(w["request_id"] for w in result["warm"])])
        for search in [result["first"], *result["warm"]]:
            search["job_steps"] = ran.get(search["request_id"])
        print(f"    first: {result['first']}", flush=True)

    if not args.no_demo:
        print("[4/4] facereel demo", flush=True)
        demo_env = {
            **env,
            "FACEREEL_DATA_DIR": str(out / "demo-data"),
            "FACEREEL_API__PUBLIC_BASE_URL": f"http://127.0.0.1:{free_port()}",
        }
        demo = subprocess.run(
            [*FACEREEL, "demo", "--dir", str(out / "demo")], env=demo_env, cwd=out, capture_output=True, text=True
        )
        lines = demo.stdout.splitlines()
        waits = sum("still processing" in line for line in lines)
        result["demo"] = {"exit_code": demo.returncode, "polls": waits + 1, "output": lines}
        print("\n".join(f"    {line}" for line in lines), flush=True)
        print(f"    the demo's search was terminal at GET number {waits + 1}", flush=True)
    result["machine"]["loadavg_after"] = loadavg()
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
