"""The README's first command: a synthetic event, indexed and searched end to end."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from pipelines.config import Settings

log = logging.getLogger(__name__)

DEMO_ORG, DEMO_EVENT = 1, 1


def build_demo_media(out: Path, settings: Settings) -> tuple[Path, tuple[float, float]]:
    """Write the demo event's media into ``out``; returns the selfie path and its person's interval."""
    from pipelines.models import load_pack
    from pipelines.synthetic import (
        distractor_faces,
        insightface_image,
        make_pan_video,
        make_still_video,
        read_bgr,
        selfie_of,
    )

    out.mkdir(parents=True, exist_ok=True)
    pack = load_pack(settings.models.model_copy(update={"det_size": 1280}))
    faces = pack.detector.detect(read_bgr(insightface_image("t1.jpg")))
    event = out / "event"
    event.mkdir(exist_ok=True)
    pan = make_pan_video(event / "stage_pan.mp4", faces)
    make_still_video(event / "finish_line.mp4", distractor_faces())
    cv2.imwrite(str(event / "group_photo.jpg"), read_bgr(insightface_image("t1.jpg")))
    person = 4
    selfie = out / "selfie.jpg"
    cv2.imwrite(str(selfie), selfie_of(pan.face_boxes[person] / pan.scale))
    return selfie, pan.visible_interval(person)


def run_demo(settings: Settings, out: Path) -> int:
    from app.cli import search_selfie
    from pipelines.index import index_event

    print(f"1/3 building a synthetic event in {out}/ from face photos shipped in pip packages")
    selfie, (start, end) = build_demo_media(out, settings)
    print(f"2/3 indexing it (store: {settings.store_uri})")
    report = index_event(settings, DEMO_ORG, DEMO_EVENT, [str(out / "event")])
    print(
        f"    {len(report.indexed)} media indexed, {report.skipped} already indexed, {len(report.failed)} failed, {report.faces} faces, {report.seconds:.1f} s"
    )
    print(f"3/3 searching with {selfie} (this person is in the pan video from {start:.1f} s to {end:.1f} s)")
    hits, thr, _ = search_selfie(settings, DEMO_ORG, DEMO_EVENT, selfie, top=1000, threshold=None)
    by_media: dict[str, list] = {}
    for h in hits:
        by_media.setdefault(h.media_key, []).append(h)
    if not by_media:
        print("    no matches above the threshold")
        return 1
    for key, rows in by_media.items():
        times = sorted(h.timestamp_s for h in rows)
        best = max(h.similarity for h in rows)
        span = f"{times[0]:.1f}-{times[-1]:.1f} s" if rows[0].media_type == "video" else "photo"
        print(
            f"    {Path(key).name}: {len(rows)} matching faces, {span}, best similarity {best:.3f} (threshold {thr:.3f})"
        )
    return 0
