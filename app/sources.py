"""An event's media sources over HTTP: uploads and registered URIs, listed with their index
status, deleted with their rows.

Uploads are spooled to a local temporary file as they arrive (never held in memory), sniffed
by content (a photo Pillow can read, else a container PyAV can open with a video stream),
probed, then moved to the event's source location. URIs are accepted only under the allowed
roots, so a client can neither read nor register files elsewhere.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from app.config import AppSettings
from app.control import EVENT_MEDIA, ControlStore
from app.errors import ApiError
from app.events import Event
from pipelines.media import is_remote
from pipelines.store import sql_str

MAX_KEY_CHARS = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def source_location(settings: AppSettings, event: Event) -> str:
    """Where the event's uploads go: its ``source_uri``, else <api.source_root>/<org>/<event>."""
    return (event.source_uri or f"{settings.source_root}/{event.org_id}/{event.event_id}").rstrip("/")


def allowed_roots(settings: AppSettings, event: Event) -> list[str]:
    return [*settings.api.media_roots, source_location(settings, event)]


def media_key_for_upload(filename: str | None) -> str:
    """A safe media key from a client's file name: its last path part, in [A-Za-z0-9._-]
    (other runs of characters become ``_``), at most 200 characters, never hidden or empty."""
    name = unicodedata.normalize("NFKC", (filename or "").replace("\\", "/")).rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip("._") or "upload"
    if len(name) > MAX_KEY_CHARS:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: MAX_KEY_CHARS - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 else name[:MAX_KEY_CHARS]
    return name


def within_roots(uri: str, roots: list[str]) -> str | None:
    """The URI in canonical form when it lies under one of ``roots``, else None. Local paths
    are resolved (symlinks and ``..`` included) before the check; remote URIs are compared
    by prefix after ``..`` is refused."""
    if is_remote(uri):
        scheme, _, rest = uri.partition("://")
        parts = PurePosixPath(rest).parts
        if not rest or any(p in ("..", ".") for p in parts) or "\\" in rest:
            return None
        canonical = f"{scheme}://{'/'.join(parts)}"
        for root in roots:
            if is_remote(root):
                base = root.rstrip("/")
                if canonical == base or canonical.startswith(base + "/"):
                    return canonical
        return None
    try:
        path = Path(uri.removeprefix("file://")).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    for root in roots:
        if is_remote(root):
            continue
        base = Path(root).expanduser().resolve()
        if path == base or base in path.parents:
            return str(path)
    return None


@dataclass(frozen=True)
class Sniffed:
    media_type: str  # video | photo
    duration_s: float | None
    fps: float | None
    width: int | None
    height: int | None
    codec: str | None


def sniff(uri: str, storage_options: dict | None = None) -> Sniffed:
    """What a file is, by its content: a photo, or a video with a decodable frame (raises
    ValueError for anything else)."""
    from pipelines.decode import probe_photo, probe_video
    from pipelines.media import open_binary

    try:
        from PIL import Image

        with open_binary(uri, storage_options) as fh, Image.open(fh) as img:
            img.verify()
        photo = probe_photo(uri, storage_options)
        return Sniffed("photo", None, None, photo.width, photo.height, photo.codec)
    except Exception:  # not a picture Pillow knows: try it as a video
        pass
    try:
        video = probe_video(uri, storage_options)
    except Exception as exc:
        raise ValueError(f"not a photo or a video PyAV can decode ({type(exc).__name__})") from None
    return Sniffed("video", video.duration_s, video.fps, video.width, video.height, video.codec)


def media_row(event: Event, key: str, uri: str, origin: str, size: int, sniffed: Sniffed) -> dict:
    return {
        "org_id": event.org_id,
        "event_id": event.event_id,
        "media_key": key,
        "uri": uri,
        "media_type": sniffed.media_type,
        "origin": origin,
        "size_bytes": size,
        "duration_s": sniffed.duration_s,
        "fps": sniffed.fps,
        "width": sniffed.width,
        "height": sniffed.height,
        "codec": sniffed.codec,
        "created_at": datetime.now(UTC),
    }


def media_item(row: dict, index_row: dict | None, indexing: set[str]) -> dict:
    """One source as the API shows it, with its index status: ``pending`` (registered, not
    indexed), ``indexing`` (an active job has it), ``indexed`` or ``failed`` (with the error)."""
    status, error, faces = "pending", None, None
    if row["media_key"] in indexing:
        status = "indexing"
    elif index_row is not None:
        status, error, faces = index_row["status"], index_row.get("error"), index_row.get("face_count")
    return {
        "media_key": row["media_key"],
        "media_type": row["media_type"],
        "origin": row.get("origin") or "index",
        "uri": row["uri"],
        "metadata": {
            "duration_s": row.get("duration_s"),
            "fps": row.get("fps"),
            "width": row.get("width"),
            "height": row.get("height"),
            "codec": row.get("codec"),
            "size_bytes": row.get("size_bytes"),
        },
        "index_status": status,
        "index_error": error,
        "faces": faces,
    }


class SourceRegistry:
    """The ``event_media`` control table."""

    def __init__(self, control: ControlStore) -> None:
        self.control = control

    def rows(self, org_id: int, event_id: int) -> list[dict]:
        return self.control.rows(EVENT_MEDIA, f"org_id = {int(org_id)} AND event_id = {int(event_id)}")

    def get(self, org_id: int, event_id: int, media_key: str) -> dict | None:
        where = f"org_id = {int(org_id)} AND event_id = {int(event_id)} AND media_key = {sql_str(media_key)}"
        rows = self.control.rows(EVENT_MEDIA, where, 1)
        return rows[0] if rows else None

    def add(self, row: dict) -> bool:
        """Register a new source; False when its key is taken in the event."""
        return bool(self.control.upsert(EVENT_MEDIA, [row], only_if="false", insert=True))

    def delete(self, org_id: int, event_id: int, media_key: str) -> int:
        where = f"org_id = {int(org_id)} AND event_id = {int(event_id)} AND media_key = {sql_str(media_key)}"
        table = self.control.table(EVENT_MEDIA)
        before = table.count_rows(where)
        if before:
            table.delete(where)
        return before


def require_free_key(registry: SourceRegistry, event: Event, key: str) -> None:
    if registry.get(event.org_id, event.event_id, key) is not None:
        raise ApiError(409, f"The event already has a source named {key!r}; delete it first.", "media_exists")
