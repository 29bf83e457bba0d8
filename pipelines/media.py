"""Media sources: expand paths, directories and fsspec URIs into a list of media."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import fsspec


@dataclass(frozen=True)
class MediaSource:
    uri: str  # absolute local path or fsspec URI (s3://bucket/key)
    # Key of this source within its event, as clients see it (``source_video_key``):
    # the path relative to the directory or prefix given, or the file name.
    media_key: str
    media_type: str  # video | photo
    size_bytes: int


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def media_type_of(name: str, photo_ext: list[str], video_ext: list[str]) -> str | None:
    ext = os.path.splitext(name)[1].lower()
    if ext in photo_ext:
        return "photo"
    if ext in video_ext:
        return "video"
    return None


def list_media(
    inputs: list[str], photo_ext: list[str], video_ext: list[str], storage_options: dict | None = None
) -> list[MediaSource]:
    """Files named directly are taken whatever their extension (photo if it looks like one);
    directories and URI prefixes are walked for known photo/video extensions.

    Two different sources with the same key in one listing are an error: the key is
    what identifies a source within its event.
    """
    found: dict[str, MediaSource] = {}

    def add(source: MediaSource) -> None:
        prior = found.get(source.media_key)
        if prior is not None and prior.uri != source.uri:
            raise ValueError(f"two sources share the key {source.media_key!r}: {prior.uri} and {source.uri}")
        found[source.media_key] = source

    for raw in inputs:
        if is_remote(raw):
            fs, root = fsspec.core.url_to_fs(raw, **(storage_options or {}))
            protocol = raw.split("://", 1)[0]
            explicit = not fs.isdir(root)
            entries = {root: fs.info(root)} if explicit else fs.find(root, detail=True)
            for path, info in sorted(entries.items()):
                kind = media_type_of(path, photo_ext, video_ext) or ("video" if explicit else None)
                if kind:
                    key = path.rsplit("/", 1)[-1] if explicit else path[len(root.rstrip("/")) + 1 :]
                    add(MediaSource(f"{protocol}://{path}", key, kind, int(info.get("size") or 0)))
            continue
        path = Path(raw.removeprefix("file://")).expanduser().resolve()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and media_type_of(p.name, photo_ext, video_ext))
            base = path
        elif path.is_file():
            files, base = [path], path.parent
        else:
            raise FileNotFoundError(f"no such file or directory: {raw}")
        for p in files:
            kind = media_type_of(p.name, photo_ext, video_ext) or "video"
            add(MediaSource(str(p), p.relative_to(base).as_posix(), kind, p.stat().st_size))
    return list(found.values())


def open_binary(uri: str, storage_options: dict | None = None):
    """A readable binary file object for a local path or fsspec URI."""
    if is_remote(uri):
        return fsspec.open(uri, "rb", **(storage_options or {})).open()
    return open(uri.removeprefix("file://"), "rb")
