"""Media sources: expand paths, directories and fsspec URIs into a list of media."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import fsspec


@dataclass(frozen=True)
class MediaSource:
    uri: str  # absolute local path or fsspec URI (s3://bucket/key)
    media_key: str  # stable key of this source within its event
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
    directories and URI prefixes are walked for known photo/video extensions."""
    found: dict[str, MediaSource] = {}
    for raw in inputs:
        if is_remote(raw):
            fs, root = fsspec.core.url_to_fs(raw, **(storage_options or {}))
            protocol = raw.split("://", 1)[0]
            explicit = not fs.isdir(root)
            entries = {root: fs.info(root)} if explicit else fs.find(root, detail=True)
            for path, info in sorted(entries.items()):
                kind = media_type_of(path, photo_ext, video_ext) or ("video" if explicit else None)
                if kind:
                    uri = f"{protocol}://{path}"
                    found[uri] = MediaSource(uri, uri, kind, int(info.get("size") or 0))
            continue
        path = Path(raw.removeprefix("file://")).expanduser().resolve()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and media_type_of(p.name, photo_ext, video_ext))
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"no such file or directory: {raw}")
        for p in files:
            kind = media_type_of(p.name, photo_ext, video_ext) or "video"
            found[str(p)] = MediaSource(str(p), str(p), kind, p.stat().st_size)
    return list(found.values())


def open_binary(uri: str, storage_options: dict | None = None):
    """A readable binary file object for a local path or fsspec URI."""
    if is_remote(uri):
        return fsspec.open(uri, "rb", **(storage_options or {})).open()
    return open(uri.removeprefix("file://"), "rb")
