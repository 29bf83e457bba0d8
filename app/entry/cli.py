"""``facereel`` command line: index media, search faces, run the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.config import AppSettings, load_app_settings

log = logging.getLogger("facereel")


def _settings(args: argparse.Namespace) -> AppSettings:
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    settings = load_app_settings(args.config, **overrides)
    if not getattr(args, "verbose", True):  # workers' output and "(raylet)" lines only with -v
        settings = settings.model_copy(update={"ray": settings.ray.model_copy(update={"log_to_driver": False})})
    return settings


def cmd_index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pipelines.index import index_event
    from pipelines.index_report import IndexProgress

    settings = _settings(args)
    bibs = args.bibs if args.bibs is not None else _event_reads_bibs(settings, args.org, args.event)
    bar = tqdm(total=0, unit="frame", desc="indexing" + (" (faces + BIBs)" if bibs else ""), disable=args.quiet)

    def progress(status: IndexProgress) -> None:
        bar.total = status.frames_planned
        bar.n = status.frames_done
        bar.set_description(f"indexing: {status.stage}" + (" (faces + BIBs)" if bibs else ""))
        bar.set_postfix(media=f"{status.media_done}/{status.media_total}", faces=status.faces)
        bar.refresh()

    report = index_event(settings, args.org, args.event, args.inputs, on_progress=progress, bibs=bibs)
    bar.close()
    print(
        f"event {args.org}/{args.event}: {report.found} media found, {report.skipped} already indexed, "
        f"{len(report.indexed)} indexed, {len(report.failed)} failed; {report.frames} frames, "
        f"{report.faces} faces" + (f", {report.bibs} BIB numbers" if bibs else "") + f" in {report.seconds:.1f} s"
    )
    if report.event_faces is not None:
        print(
            f"event {args.org}/{args.event} now: {report.event_media} media indexed, {report.event_faces} faces stored"
        )
    for key, error in report.failed.items():
        print(f"  FAILED {key}: {error}")
    return 1 if report.failed and not report.indexed and not report.skipped else 0


def _event_reads_bibs(settings: AppSettings, org: int, event: int) -> bool:
    from app.store.control import ControlStore
    from app.store.events import EventStore

    return EventStore(ControlStore(settings.control_uri, settings.store.storage_options)).reads_bibs(org, event)


def cmd_search_bib(args: argparse.Namespace) -> int:
    from pipelines.bib_search import valid_bib
    from pipelines.models import pack_info
    from pipelines.store import FaceStore

    settings = _settings(args)
    number = args.bib.strip()
    if not valid_bib(number, settings.bibs.min_digits, settings.bibs.max_digits):
        raise ValueError(f"a BIB is {settings.bibs.min_digits} to {settings.bibs.max_digits} digits, not {args.bib!r}")
    store = FaceStore.from_settings(settings, pack_info(settings.models.pack))
    sightings = store.bib_sightings(args.org, args.event, number).to_pylist()
    if not sightings:
        print(f"BIB {number}: not read in event {args.org}/{args.event}")
        return 0
    print(f"BIB {number}: {len(sightings)} sightings")
    print(f"{'confidence':>10}  {'time':>9}  {'face':>5}  media")
    for s in sightings:
        when = f"{s['timestamp_s']:8.2f}s" if s["media_type"] == "video" else "    photo"
        face = "yes" if s["face_id"] else "-"
        print(f"{s['confidence']:10.3f}  {when}  {face:>5}  {s['media_key']}")
    return 0


def search_selfie(settings: AppSettings, org: int, event: int, selfie: Path, top: int, threshold: float | None):
    """(hits, threshold used, selfie embedding): shared by search-faces and the demo."""
    from pipelines.models import load_pack
    from pipelines.models.registry import match_threshold
    from pipelines.selfie import decode_image_bytes, embed_selfie
    from pipelines.store import FaceStore

    pack = load_pack(settings.models)
    image = decode_image_bytes(selfie.read_bytes())
    query = embed_selfie(pack, image, settings.models.det_score_threshold, settings.models.min_face_px, settings.selfie)
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


def cmd_eval(args: argparse.Namespace) -> int:
    from pipelines.eval_runner import DEFAULT_EXCLUDE, compare_modes, run_evaluation
    from pipelines.evaluate import format_table, overall

    settings = _settings(args)
    if not args.data_dir:  # keep the evaluation's index apart from the product's
        settings = settings.model_copy(update={"data_dir": str(Path(".facereel-eval"))})
    variants = compare_modes(settings)
    modes = ("faces", "tracks") if args.mode == "both" else (args.mode,)
    variants = {mode: variants[mode] for mode in modes}
    print(f"evaluating {args.set} (index in {settings.store_uri}; modes: {', '.join(modes)})")
    report = run_evaluation(settings, Path(args.set), variants, args.max_photos, tuple(args.exclude or DEFAULT_EXCLUDE))
    for identity, photos in sorted(report.photos_failed.items()):
        print(f"  no usable face in {identity}: {', '.join(photos)}")
    labelled = {s.identity for s in report.scores[modes[-1]] if s.labelled_s > 0}
    before = [s for s in report.scores["faces"] if s.identity in labelled] if len(modes) == 2 else None
    after = [s for s in report.scores[modes[-1]] if s.identity in labelled]
    print(f"\ncoverage per identity ({'per-face -> tracks + expansion' if before else modes[-1]}):")
    print(format_table(after, before))
    strangers = [s for s in report.scores[modes[-1]] if s.identity not in labelled]
    stray = sum(s.segments for s in strangers)
    print(f"\n{len(strangers)} identities with photos but in no video (no-match queries): {stray} segments, all wrong")
    wrong = overall(after).wrong_segments + stray
    print(f"wrong-person segments: {wrong}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.entry.demo import run_demo

    return run_demo(_settings(args), Path(args.dir), keep_serving=args.keep_serving)


def cmd_serve(args: argparse.Namespace) -> int:
    """``serve run`` of the Serve config, with Serve's proxy answering in the API's envelope
    (app/http/proxy_envelope.py): the variable must be in the environment of the process that
    starts the local cluster. Serve's own start-up lines go to a log file unless -v; the
    terminal shows where the API answers once it is ready."""
    import os

    from app.entry.serving_env import install_in_environment

    install_in_environment()
    if args.config:
        os.environ["FACEREEL_CONFIG"] = str(Path(args.config).resolve())
    serve = Path(sys.executable).with_name("serve")
    command = [str(serve), "run", *args.serve_args, args.serve_config]
    if args.verbose:
        os.execv(str(serve), command)
    from app.obs.quiet import library_log_path, run_quietly

    url = serve_url(args.serve_config)
    log_path = library_log_path(_settings(args).data_dir, "serve")
    return run_quietly(command, log_path, f"{url}/healthz", f"facereel API on {url}")


def serve_url(serve_config: str) -> str:
    """Where ``serve run`` of this config answers (its http_options, Serve's defaults)."""
    import yaml

    with open(serve_config, encoding="utf-8") as fh:
        http = (yaml.safe_load(fh) or {}).get("http_options") or {}
    host = http.get("host", "127.0.0.1")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{http.get('port', 8000)}"


def _control(args: argparse.Namespace):
    from app.store.control import ControlStore

    settings = _settings(args)
    return ControlStore(settings.control_uri, settings.store.storage_options)


def cmd_org_create(args: argparse.Namespace) -> int:
    from app.store.events import EventStore

    org_id = EventStore(_control(args)).create_org(args.name, args.id)
    print(f"org {org_id} created")
    return 0


def cmd_org_webhook_secret(args: argparse.Namespace) -> int:
    from app.jobs.notify import org_secret

    try:
        secret = org_secret(_control(args), args.org, rotate=args.rotate)
    except KeyError:
        print(f"no org {args.org}", file=sys.stderr)
        return 1
    print(secret)
    return 0


def cmd_event_create(args: argparse.Namespace) -> int:
    import json

    from app.store.events import EventStore

    event = EventStore(_control(args)).create_event(
        args.org,
        args.name,
        args.id,
        video_search=not args.no_video_search,
        video_selfie_search=not args.no_video_selfie_search,
        face_search=not args.no_face_search,
        bib_search=args.bib_search,
        match_threshold=args.threshold,
        segments=json.loads(args.segments) if args.segments else None,
        source_uri=args.source,
        output_uri=args.output,
        retention_days=args.retention_days,
    )
    print(f"event {event.org_id}/{event.event_id} created: {json.dumps(event.details(_settings(args)))}")
    return 0


def cmd_event_purge(args: argparse.Namespace) -> int:
    from app.features.retention import purge_event
    from app.features.stores import Stores

    settings = _settings(args)
    what = f"event {args.org}/{args.event}: every search record, selfie embedding, clip, thumbnail and face index row"
    if args.delete_event:
        what += ", and the event configuration"
    if not args.yes:
        answer = input(f"This removes everything stored for {what}. It cannot be undone. Type 'yes' to go on: ")
        if answer.strip().lower() != "yes":
            print("nothing removed")
            return 1
    report = purge_event(Stores.open(settings), args.org, args.event, delete_event=args.delete_event)
    print("\n".join(report.lines()))
    return 0


def cmd_key_create(args: argparse.Namespace) -> int:
    from app.store.events import EventStore
    from app.store.keys import KeyStore

    control = _control(args)
    if not EventStore(control).org_exists(args.org):
        raise ValueError(f"org {args.org} does not exist")
    key, info = KeyStore(control).create(args.org, args.event, args.name or "")
    print(
        f"API key {info.key_id} for org {info.org_id}"
        + (f", event {info.event_id}" if info.event_id else ", all events")
    )
    print(key)
    print("Store it now: it is shown only once (only its hash is kept).", file=sys.stderr)
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    from app.store.keys import KeyStore

    KeyStore(_control(args)).deactivate(args.key_id)
    print(f"API key {args.key_id} revoked")
    return 0


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
    p.add_argument(
        "--bibs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read race numbers too (default: the event's bib_search toggle)",
    )
    p.add_argument("inputs", nargs="+", help="files, directories or s3:// URIs")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search-bib", help="print where a race number (BIB) was read in an event")
    p.add_argument("--org", type=int, required=True)
    p.add_argument("--event", type=int, required=True)
    p.add_argument("bib")
    p.set_defaults(func=cmd_search_bib)

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

    p = sub.add_parser("eval", help="coverage per identity on a labelled set (video_truth.csv, labels.csv)")
    p.add_argument("set", nargs="?", default="../shared/data/faces", help="the labelled set's folder")
    p.add_argument("--mode", choices=["faces", "tracks", "both"], default="both", help="matching to score")
    p.add_argument("--max-photos", type=int, default=3, help="reference photos per identity")
    p.add_argument("--exclude", action="append", help="glob of reference photos to skip (repeatable)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="synthetic event: index it, serve the API, search it with a selfie over HTTP")
    p.add_argument("--dir", default="demo-data", help="where the synthetic media and clips are written")
    p.add_argument("--keep-serving", action="store_true", help="keep the API running afterwards")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="run the API (serve run serve_config.yaml, proxy errors enveloped)")
    p.add_argument("serve_config", nargs="?", default="serve_config.yaml", help="Ray Serve config file")
    p.add_argument("serve_args", nargs=argparse.REMAINDER, help="more `serve run` options, after --")
    p.set_defaults(func=cmd_serve)

    org = sub.add_parser("org", help="organisations").add_subparsers(dest="action", required=True)
    p = org.add_parser("create")
    p.add_argument("--name", required=True)
    p.add_argument("--id", type=int, help="default: next free number")
    p.set_defaults(func=cmd_org_create)
    p = org.add_parser("webhook-secret", help="print the secret that signs the org's webhooks (made on first use)")
    p.add_argument("--org", type=int, required=True)
    p.add_argument("--rotate", action="store_true", help="replace it with a new secret")
    p.set_defaults(func=cmd_org_webhook_secret)

    event = sub.add_parser("event", help="events").add_subparsers(dest="action", required=True)
    p = event.add_parser("create")
    p.add_argument("--org", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--id", type=int, help="default: next free number in the org")
    p.add_argument("--no-video-search", action="store_true")
    p.add_argument("--no-video-selfie-search", action="store_true")
    p.add_argument("--no-face-search", action="store_true")
    p.add_argument("--bib-search", action="store_true")
    p.add_argument("--threshold", type=float, help="match threshold for this event (default: the pack's)")
    p.add_argument("--segments", help='segment rule overrides as JSON, e.g. \'{"min_hits": 3, "max_clip_s": 15}\'')
    p.add_argument("--source", help="where the event's media live (informational)")
    p.add_argument("--output", help="clip storage for this event (local path or s3://); default api.output_root")
    p.add_argument(
        "--retention-days",
        type=int,
        help="delete searches this many days after their last change (default: api.retention_days)",
    )
    p.set_defaults(func=cmd_event_create)
    p = event.add_parser("purge", help="remove everything stored for an event (searches, clips, face index)")
    p.add_argument("--org", type=int, required=True)
    p.add_argument("--event", type=int, required=True)
    p.add_argument("--delete-event", action="store_true", help="delete the event configuration too")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_event_purge)

    key = sub.add_parser("key", help="API keys").add_subparsers(dest="action", required=True)
    p = key.add_parser("create", help="create a key; it is printed once")
    p.add_argument("--org", type=int, required=True)
    p.add_argument("--event", type=int, help="limit the key to one event")
    p.add_argument("--name")
    p.set_defaults(func=cmd_key_create)
    p = key.add_parser("revoke")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_key_revoke)
    return parser


def quiet_ray() -> None:
    """Ray resets its loggers to INFO when imported: after the import, put them back to
    WARNING so that a user sees the command's own progress (``-v`` keeps them)."""
    import ray
    import ray.data
    import ray.serve

    assert ray and ray.data and ray.serve  # imported for what they do to their loggers
    for name in ("ray", "ray.serve", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Ray Data warns once that its progress bars are off: the command prints its own progress.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    # A new local cluster turns token auth on (Ray's default) and says so at every start.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    library_log = None
    if not args.verbose and args.func in (cmd_index, cmd_demo, cmd_eval):
        from app.obs.quiet import divert_native_stderr, divert_ray_notices, library_log_path

        library_log = library_log_path(_settings(args).data_dir, args.command)
        divert_native_stderr(library_log)
        divert_ray_notices(library_log)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # library chatter (Ray, HTTP clients) only with -v
        for name in ("ray", "httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if args.func in (cmd_index, cmd_demo, cmd_eval):
            quiet_ray()
    from pipelines.placement import ClusterError
    from pipelines.watchdog import StreamStalled

    try:
        code = args.func(args)
    except (FileNotFoundError, ValueError, ClusterError, StreamStalled) as exc:
        print(f"facereel: {exc}", file=sys.stderr)
        code = 2
    except BaseException:
        if library_log is not None:
            print(f"facereel: Ray's own output is in {library_log} (or run with -v)", file=sys.stderr)
        raise
    if code and library_log is not None:
        print(f"facereel: Ray's own output is in {library_log} (or run with -v)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
