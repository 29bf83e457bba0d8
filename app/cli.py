"""``facereel`` command line: index media, search faces, run the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.config import Settings, load_settings

log = logging.getLogger("facereel")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return load_settings(args.config, **overrides)


def cmd_index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pipelines.index import index_event

    settings = _settings(args)
    bar = tqdm(total=0, unit="chunk", desc="indexing", disable=args.quiet)

    def progress(done: int, total: int, faces: int) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix(faces=faces)
        bar.refresh()

    report = index_event(settings, args.org, args.event, args.inputs, on_progress=progress)
    bar.close()
    print(
        f"event {args.org}/{args.event}: {report.found} media found, {report.skipped} already indexed, "
        f"{len(report.indexed)} indexed, {len(report.failed)} failed; {report.frames} frames, "
        f"{report.faces} faces in {report.seconds:.1f} s"
    )
    for key, error in report.failed.items():
        print(f"  FAILED {key}: {error}")
    return 1 if report.failed and not report.indexed and not report.skipped else 0


def search_selfie(settings: Settings, org: int, event: int, selfie: Path, top: int, threshold: float | None):
    """(hits, threshold used, selfie embedding): shared by search-faces and the demo."""
    from pipelines.models import load_pack
    from pipelines.models.registry import match_threshold
    from pipelines.selfie import decode_image_bytes, embed_selfie
    from pipelines.store import FaceStore

    pack = load_pack(settings.models)
    query = embed_selfie(
        pack, decode_image_bytes(selfie.read_bytes()), settings.models.det_score_threshold, settings.models.min_face_px
    )
    store = FaceStore.from_settings(settings, pack.info)
    thr = match_threshold(settings.models) if threshold is None else threshold
    return store.search(org, event, query.vector, min_similarity=thr, limit=top), thr, query


def cmd_search_faces(args: argparse.Namespace) -> int:
    settings = _settings(args)
    hits, thr, query = search_selfie(settings, args.org, args.event, Path(args.selfie), args.top, args.threshold)
    print(
        f"selfie: {query.faces_found} face(s), searching with the largest (score {query.det_score:.2f}); threshold {thr:.3f}"
    )
    if not hits:
        print("no matching faces")
        return 0
    print(f"{'similarity':>10}  {'time':>9}  media")
    for h in hits:
        when = f"{h.timestamp_s:8.2f}s" if h.media_type == "video" else "    photo"
        print(f"{h.similarity:10.3f}  {when}  {h.media_key}")
    return 0


def cmd_media(args: argparse.Namespace) -> int:
    from pipelines.models import pack_info
    from pipelines.store import FaceStore

    settings = _settings(args)
    store = FaceStore.from_settings(settings, pack_info(settings.models.pack))
    for row in sorted(store.media_rows(args.org, args.event), key=lambda r: r["media_key"]):
        extra = f"  {row['error']}" if row["error"] else ""
        print(f"{row['status']:8} {row['media_type']:5} {row['face_count'] or 0:6} faces  {row['media_key']}{extra}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(_settings(args), Path(args.dir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facereel", description=__doc__)
    parser.add_argument("--config", help="YAML config file (default: $FACEREEL_CONFIG or ./facereel.yaml)")
    parser.add_argument("--data-dir", help="where the store and outputs live (default .facereel)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index videos and photos into an event")
    p.add_argument("--org", type=int, required=True)
    p.add_argument("--event", type=int, required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("inputs", nargs="+", help="files, directories or s3:// URIs")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search-faces", help="print the faces of an event that match a selfie")
    p.add_argument("--org", type=int, required=True)
    p.add_argument("--event", type=int, required=True)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--threshold", type=float, help="cosine similarity (default: the pack's)")
    p.add_argument("selfie")
    p.set_defaults(func=cmd_search_faces)

    p = sub.add_parser("media", help="list an event's media and their index status")
    p.add_argument("--org", type=int, required=True)
    p.add_argument("--event", type=int, required=True)
    p.set_defaults(func=cmd_media)

    p = sub.add_parser("demo", help="build a synthetic event, index it and search it with a selfie")
    p.add_argument("--dir", default="demo-data", help="where the synthetic media are written")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"facereel: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
