"""Clip cutting: smart cut (edges re-encoded, whole GOPs copied) against a full re-encode.

    python bench/clip.py --duration 30 --clip-s 20 --windows 5 --reps 3 --out bench-out/clip

The source is bench/ingest.py's cached synthetic video (1280x720, 25 fps, libx264 veryfast
with a 2 s GOP, AAC audio). Each window starts mid-GOP, so a smart cut re-encodes a partial
GOP at both edges. For every window and repetition the two ways are timed back to back
(pipelines.clip.cut_clip as the clip workers call it: the frame snaps, the MP4, the poster
and the probe), one at a time in this process, and their outputs are checked to hold the
same number of video packets. The ratio is the median full re-encode time over the median
smart-cut time, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
from machine import cpu_model, loadavg

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def video_packets(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of source video")
    parser.add_argument("--clip-s", type=float, default=20.0)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--video", type=Path, help="cut this file instead of the generated one")
    parser.add_argument("--out", type=Path, default=Path("bench-out/clip"))
    args = parser.parse_args(argv)

    from ingest import make_video

    from pipelines.clip import cut_clip
    from pipelines.config import ClipSettings

    args.out.mkdir(parents=True, exist_ok=True)
    if args.video:
        video, meta = args.video, {}
    else:
        video, meta = make_video(args.out, args.duration, 25.0)
    span = args.duration - args.clip_s - 1.0
    # Starts spread over the video, each 0.37 s past a GOP boundary (2 s GOPs).
    starts = [round(0.37 + (span - 0.37) * i / max(1, args.windows - 1), 2) for i in range(args.windows)]
    starts = [s - (s % 2.0) + 0.37 for s in starts]
    variants = {"reencoded": ClipSettings(smart_cut=False), "smart_cut": ClipSettings(smart_cut=True)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    sizes: dict[str, list[int]] = {name: [] for name in variants}
    encodings: dict[str, set[str]] = {name: set() for name in variants}
    mismatched = []
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="facereel-bench-clip-") as tmp:
        for rep in range(args.reps):
            for start in starts:
                packets = {}
                for name, settings in variants.items():
                    mp4, jpg = Path(tmp) / f"{name}.mp4", Path(tmp) / f"{name}.jpg"
                    t = time.perf_counter()
                    info = cut_clip(str(video), start, start + args.clip_s, mp4, jpg, start + 1.0, settings)
                    times[name].append(time.perf_counter() - t)
                    sizes[name].append(info.size_bytes)
                    encodings[name].add(info.encoding)
                    packets[name] = video_packets(mp4)
                if len(set(packets.values())) != 1:
                    mismatched.append({"start_s": start, **packets})
                print(f"  rep {rep} start {start:.2f} s: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    med = {name: statistics.median(v) for name, v in times.items()}
    result = {
        "command": "python bench/clip.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "load_before": load_before,
        "load_after": loadavg(),
        "source": {"path": str(video), **meta},
        "clip_s": args.clip_s,
        "starts_s": starts,
        "reps": args.reps,
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "p90_s": {k: round(sorted(v)[int(0.9 * (len(v) - 1))], 3) for k, v in times.items()},
        "median_bytes": {k: int(statistics.median(v)) for k, v in sizes.items()},
        "encodings": {k: sorted(v) for k, v in encodings.items()},
        "packet_count_mismatches": mismatched,
        "speedup_smart_vs_reencoded": round(med["reencoded"] / med["smart_cut"], 2),
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
