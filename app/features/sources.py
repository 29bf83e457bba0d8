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
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from app.config import AppSettings
from app.core.errors import DomainError
from app.core.uploads import Upload
from app.store.events import Event
from pipelines.media import MediaSource, is_remote, list_media
from pipelines.storage import OutputStorage, StorageError

if TYPE_CHECKING:
    from app.features.services import Services

MAX_KEY_CHARS = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Roots:
    """Where an event's registered URIs may lie."""

    allowed: list[str]
    refused: list[str]  # folders inside ``allowed`` that stay off limits ...
    own: list[str]  # ... except these, inside them


def allowed_roots(settings: AppSettings, event: Event) -> Roots:
    """api.media_roots (``{org_id}``/``{event_id}`` in them name the caller's own folder), the
    event's source location, and the org's own storage location when the event has one:
    there, its clip outputs and other events' uploads stay off limits."""
    ids = {"org_id": event.org_id, "event_id": event.event_id}
    allowed = [root.format(**ids) for root in settings.api.media_roots] + [event.source_location(settings)]
    if event.storage is None:
        return Roots(allowed, [], [])
    return Roots(
        [*allowed, event.storage.root],
        [event.storage.outputs_root, event.storage.sources_root],
        [event.source_location(settings)],
    )


def permitted(uri: str, roots: Roots) -> str | None:
    """The URI in canonical form when ``roots`` let it be registered, else None."""
    canonical = within_roots(uri, roots.allowed)
    if canonical is None or within_roots(canonical, roots.own) is not None:
        return canonical
    return None if within_roots(canonical, roots.refused) is not None else canonical


def media_key_for_upload(filename: str | None) -> str:
    """A safe media key from a client's file name: its last path part in [A-Za-z0-9._-]
    (other runs of characters become ``_``), its extension kept, at most 200 characters,
    never hidden or empty (``upload``)."""
    name = unicodedata.normalize("NFKC", (filename or "").replace("\\", "/")).rsplit("/", 1)[-1]
    stem, dot, ext = _UNSAFE.sub("_", name).rpartition(".")
    if not dot:
        stem, ext = ext, ""
    stem, ext = stem.strip("._") or "upload", ext.strip("._")[:10]
    stem = stem[: MAX_KEY_CHARS - len(ext) - 1]
    return f"{stem}.{ext}" if ext else stem


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


# ---- the service the routes call ------------------------------------------------------


def store_uploads(services: Services, event: Event, uploads: list[Upload]) -> dict:
    """Sniff every file first (one that is not media refuses the whole request, storing
    nothing), then move each to the event's source location and register it."""
    keys: list[str] = []
    sniffed: list[Sniffed] = []
    for up in uploads:
        key = media_key_for_upload(up.filename)
        n = 1
        while key in keys:  # two files of one request with the same name
            n += 1
            stem, dot, ext = key.rpartition(".")
            key = f"{stem}-{n}.{ext}" if dot else f"{key}-{n}"
        try:
            sniffed.append(sniff(str(up.path)))
        except ValueError as exc:
            raise DomainError("unsupported_media", f"{up.filename or key!r} is not a photo or video: {exc}.") from None
        if services.sources.get(event.org_id, event.event_id, key) is not None:
            raise DomainError("media_exists", f"The event already has a source named {key!r}; delete it first.")
        keys.append(key)
    location = event.source_location(services.settings)
    storage = OutputStorage(location, event.storage_options(services.settings))
    items: list[dict] = []
    done: list[tuple[str, str]] = []  # (key, stored) of this request, undone if a later file fails
    try:
        for up, key, found in zip(uploads, keys, sniffed, strict=True):
            # A folder of its own per upload: two uploads of one name can never overwrite each other.
            stored = f"uploads/{uuid.uuid4().hex}/{key}"
            try:
                storage.put(up.path, stored)
            except (OSError, StorageError) as exc:
                raise DomainError("storage_error", f"The event's source storage refused the upload: {exc}") from None
            uri = f"{storage.root}/{stored}" if storage.remote else str(storage.local_path(stored))
            row = media_row(event, key, uri, "upload", up.size, found)
            if not services.sources.add(row):  # the same name registered meanwhile
                storage.remove([stored])
                raise DomainError("media_exists", f"The event already has a source named {key!r}; delete it first.")
            done.append((key, stored))
            items.append(media_item(row, None, set()))
    except Exception:  # all or nothing: the files stored before the failure go again
        for key, stored in done:
            services.sources.delete(event.org_id, event.event_id, key)
            storage.remove([stored])
            storage.remove_empty_folder(stored.rsplit("/", 1)[0])
        raise
    return {"media": items, "errors": []}


def register_uris(services: Services, event: Event, uris: list[str]) -> dict:
    """Register media already in storage. A URI outside the allowed roots refuses the whole
    request; one that cannot be read or is not media is a per-item error."""
    settings = services.settings
    roots = allowed_roots(settings, event)
    canonical = []
    for uri in uris:
        inside = permitted(uri, roots)
        if inside is None:
            raise DomainError("uri_not_allowed", f"{uri!r} is outside the allowed media roots.")
        canonical.append(inside)
    items, errors = [], []
    for uri in canonical:
        options = event.options_for(uri, settings) or None
        try:
            sources = list_media([uri], settings.index.photo_extensions, settings.index.video_extensions, options)
        except (OSError, ValueError) as exc:
            errors.append({"uri": uri, "error": f"cannot list: {exc}"})
            continue
        if not sources:
            errors.append({"uri": uri, "error": "no photos or videos there"})
        for source in sources:
            if permitted(source.uri, roots) is None:  # a symlink in a folder pointing out
                errors.append({"uri": source.uri, "error": "outside the allowed media roots"})
                continue
            item = register_source(services, event, source, options)
            if "error" in item:
                errors.append(item)
            else:
                items.append(item)
    if not items:
        raise DomainError("no_media", "None of the URIs could be registered: " + "; ".join(e["error"] for e in errors))
    return {"media": items, "errors": errors}


def register_source(services: Services, event: Event, source: MediaSource, options: dict | None) -> dict:
    try:
        found = sniff(source.uri, options)
    except ValueError as exc:
        return {"uri": source.uri, "error": str(exc)}
    except OSError as exc:
        return {"uri": source.uri, "error": f"cannot read: {exc}"}
    row = media_row(event, source.media_key, source.uri, "uri", source.size_bytes, found)
    if not services.sources.add(row):
        return {"uri": source.uri, "error": f"the event already has a source named {source.media_key!r}"}
    return media_item(row, None, set())


def event_media(services: Services, event: Event) -> list[dict]:
    """Registered sources and media indexed otherwise (the CLI), by key, with index status."""
    registered = {r["media_key"]: r for r in services.sources.rows(event.org_id, event.event_id)}
    indexed = {r["media_key"]: r for r in services.face_store().media_rows(event.org_id, event.event_id)}
    indexing: set[str] = set()
    from app.store.index_jobs import ACTIVE

    for job in services.index_jobs.of_event(event.org_id, event.event_id, ACTIVE):
        indexing |= set(job.media_keys) - set(job.indexed) - set(job.media_errors)
    items = []
    for key in sorted(set(registered) | set(indexed)):
        row = registered.get(key) or {**indexed[key], "origin": "index"}
        index_row = indexed.get(key)
        if index_row is not None and row is not index_row and index_row["uri"] != row["uri"]:
            index_row = None  # indexed from another location: this source is not indexed yet
        items.append(media_item(row, index_row, indexing))
    return items


def remove_source(services: Services, event: Event, key: str) -> dict:
    org_id, event_id = event.org_id, event.event_id
    _known_or_404(services, event, key)  # before the lock: an unknown key writes nothing
    holder = f"delete-{uuid.uuid4()}"
    if services.index_jobs.acquire(org_id, event_id, holder) is not None:
        raise DomainError("index_job_running", "An index job of this event is running; cancel it or wait for it.")
    try:
        return _remove_source(services, event, key)
    finally:
        services.index_jobs.release(org_id, event_id, holder)


def _known_or_404(services: Services, event: Event, key: str) -> tuple[dict | None, dict[str, int]]:
    """The key's registration and its stored rows; 404 when it has neither."""
    registered = services.sources.get(event.org_id, event.event_id, key)
    counts = services.face_store().count_media_rows(event.org_id, event.event_id, key)
    if registered is None and not any(counts.values()):
        raise DomainError("media_not_found", "No such media in this event.")
    return registered, counts


def _remove_source(services: Services, event: Event, key: str) -> dict:
    org_id, event_id = event.org_id, event.event_id
    store = services.face_store()
    registered, counts = _known_or_404(services, event, key)  # again, under the lock
    store.delete_media_faces(org_id, event_id, [key])
    store.delete_media_rows(org_id, event_id, [key])
    files: list[str] = []
    if registered is not None and registered.get("origin") == "upload":
        files = remove_upload(services.settings, event, registered["uri"])
    registration = services.sources.delete(org_id, event_id, key)
    return {
        "faces": counts["faces"],
        "tracks": counts["tracks"],
        "bibs": counts["bibs"],
        "media": counts["media"],
        "registration": registration,
        "files": files,
    }


def remove_upload(settings: AppSettings, event: Event, uri: str) -> list[str]:
    """Delete an uploaded file (only ever under the event's source location)."""
    location = event.source_location(settings)
    storage = OutputStorage(location, event.storage_options(settings))
    root = storage.root if storage.remote else str(Path(location).expanduser().resolve())
    if not uri.startswith(root + "/"):
        return []
    stored = uri[len(root) + 1 :]
    storage.remove([stored])
    if not is_remote(location):
        storage.remove_empty_folder(stored.rsplit("/", 1)[0])
    return [stored]
