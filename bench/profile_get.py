"""Where an authorised GET spends the ingress replica's CPU: py-spy over the ApiIngress
process while 50 keep-alive clients read one route.

    python bench/profile_get.py --route details --clients 50 --seconds 20 --out bench-out/profile

One private Ray cluster (``num_cpus=2``), the Serve app as ``app.entry.serve.build_api`` builds it,
an org, an event and a key with unlimited rates (the rate-limit actor is still called on
every request, as in production). ``--route details`` reads Event Details, ``healthz``
reads /healthz, ``result`` a finished search (bench/poll.py's record). py-spy samples the ingress replica's process (``--idle`` off, so only CPU
time) for the middle of the run; the collapsed stacks are written to
``<out>/<route>.collapsed`` and the frames with the largest inclusive share are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ORG_ID, EVENT_ID = 1, 1
UNLIMITED = {"get_per_minute": 1e9, "get_burst": 10_000_000, "max_concurrent_reads": 1000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def hammer(url: str, key: str, clients: int, seconds: float) -> int:
    import aiohttp

    done = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < stop:
                async with http.get(url, headers={"X-API-Key": key}) as r:
                    await r.read()
                    done += r.status == 200

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


def top_frames(collapsed: Path, n: int = 30) -> list[tuple[str, float]]:
    """Frames by inclusive share of the samples (each frame counted once per stack)."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        for frame in set(stack.split(";")):
            inclusive[frame] += samples
    return [(frame, round(100 * c / max(1, total), 1)) for frame, c in inclusive.most_common(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--route", choices=("details", "healthz", "result"), default="details")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("bench-out/profile"))
    parser.add_argument("--api-set", action="append", default=[], help="an api setting, name=value (repeatable)")
    parser.add_argument("--tag", default="", help="added to the output file names")
    args = parser.parse_args()
    import ray
    from api import api_overrides
    from ray import serve

    from app.config import load_app_settings
    from app.entry.serve import build_api
    from app.store.control import ControlStore
    from app.store.events import EventStore
    from app.store.keys import KeyStore

    out = args.out.resolve()
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_app_settings(
        None,
        data_dir=str(run_dir / "data"),
        ray={"num_cpus": 2},
        api={"public_base_url": base, **UNLIMITED, **api_overrides(args.api_set)},
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        control = ControlStore(settings.control_uri)
        EventStore(control).create_org("profile", ORG_ID)
        EventStore(control).create_event(ORG_ID, "profile event", EVENT_ID)
        key = KeyStore(control).create(ORG_ID, name="profile")[0]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_api(settings), name="facereel", route_prefix="/")
        url = f"{base}/healthz" if args.route == "healthz" else f"{base}/api/v1/ext/{ORG_ID}/event/{EVENT_ID}"
        if args.route == "result":  # a finished search's GET, as 50 pollers read it (bench/poll.py)
            from poll import finished_record

            url = f"{url}/video-clipping/{finished_record(settings, control)}"
        ingress = next(p for p in psutil.process_iter(["cmdline"]) if "ApiIngress" in " ".join(p.info["cmdline"] or []))
        out.mkdir(parents=True, exist_ok=True)
        collapsed = out / f"{args.route}{args.tag}.collapsed"
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(ingress.pid),
                "--duration", str(int(args.seconds * 0.6)), "--format", "raw", "--output", str(collapsed),
                "--rate", "200", "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started = time.perf_counter()
        done = asyncio.run(hammer(url, key, args.clients, args.seconds))
        rate = done / (time.perf_counter() - started)
        spy.wait(timeout=60)
    finally:
        serve.shutdown()
        ray.shutdown()
    frames = top_frames(collapsed)
    result = {
        "route": args.route,
        "api_set": args.api_set,
        "clients": args.clients,
        "req_per_s": round(rate, 1),
        "top_frames": frames,
    }
    (out / f"{args.route}{args.tag}.json").write_text(json.dumps(result, indent=2))
    print(f"{args.route}: {rate:.1f} req/s")
    for frame, share in frames:
        print(f"  {share:5.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
