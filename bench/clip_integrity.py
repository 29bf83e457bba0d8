"""Clip integrity over the source corpus (issue 21): every window of every source kind in
pipelines/clip_corpus.py is cut with pipelines.clip.cut_clip (which verifies its output) and
checked again here against a plan from a demux of the whole source; per source it reports
the share of cuts made by smart cut and by re-encode, the median cut time of each, and the
verification failures (there must be none).

    python bench/clip_integrity.py --out bench-out/clip-integrity [--windows 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-out/clip-integrity"))
    args = parser.parse_args(argv)

    import av

    from pipelines import clip_corpus, clip_verify, smart_cut
    from pipelines.clip import ClipError, cut_clip
    from pipelines.config import ClipSettings

    settings = ClipSettings()
    rows, times = [], {"smart_cut": [], "reencoded": []}
    failures = 0
    for kind, spec in clip_corpus.KINDS.items():
        source = clip_corpus.build(kind, args.out / "sources")
        with av.open(str(source)) as container:
            s = container.streams.video[0]
            start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
        packets = smart_cut.all_packets(str(source))
        per = {"smart_cut": [], "reencoded": []}
        bad = []
        for n, (a, b) in enumerate(clip_corpus.windows(spec.duration_s, start, count=args.windows)):
            out = args.out / "clips" / f"{kind}-{n}"
            t0 = time.perf_counter()
            try:
                info = cut_clip(str(source), a, b, out / "clip.mp4", out / "poster.jpg", a, settings)
            except ClipError as exc:
                bad.append(f"[{a:.3f}, {b:.3f}): {exc.message}")
                continue
            elapsed = time.perf_counter() - t0
            per[info.encoding].append(elapsed)
            times[info.encoding].append(elapsed)
            frames = [p for p in packets if info.start_s - 1e-4 <= p.pts_s < b - 1e-4]
            plan = clip_verify.plan_window([p.pts_s for p in frames], [p.duration_s for p in frames])
            if problems := clip_verify.check(clip_verify.demux_clip(out / "clip.mp4"), plan):
                bad.append(f"[{a:.3f}, {b:.3f}): {'; '.join(problems)}")
        failures += len(bad)
        total = sum(len(v) for v in per.values()) or 1
        row = {
            "source": kind,
            "cuts": sum(len(v) for v in per.values()),
            "smart_cut_share": round(len(per["smart_cut"]) / total, 2),
            "smart_cut_median_s": round(statistics.median(per["smart_cut"]), 3) if per["smart_cut"] else None,
            "reencode_median_s": round(statistics.median(per["reencoded"]), 3) if per["reencoded"] else None,
            "failures": bad,
        }
        rows.append(row)
        print(json.dumps(row))
    n = sum(len(v) for v in times.values())
    summary = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "cuts": n,
        "smart_cut_share": round(len(times["smart_cut"]) / max(n, 1), 3),
        "smart_cut_median_s": round(statistics.median(times["smart_cut"]), 3) if times["smart_cut"] else None,
        "reencode_median_s": round(statistics.median(times["reencoded"]), 3) if times["reencoded"] else None,
        "verification_failures": failures,
    }
    print(json.dumps(summary))
    (args.out / "summary.json").write_text(json.dumps({"sources": rows, "summary": summary}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
