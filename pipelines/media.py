"""Media sources: expand paths, directories and fsspec URIs into a list of media."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    # Options to read this source when they differ from the store's (an org's own storage).
    storage_options: dict | None = field(default=None, compare=False, hash=False, repr=False)


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def media_type_of(name: str, photo_ext: list[str], video_ext: list[str]) -> str | None:
    ext = os.path.splitext(name)[1].lower()
    if ext in photo_ext:
        return "photo"
    if ext in video_ext:
        return "video"
    return None


# LanceDB (object_store) option names and the s3fs argument each becomes, so one
# ``store.storage_options`` dict serves both LanceDB and media/object I/O over fsspec.
_S3FS_KEYS = {
    "aws_access_key_id": "key",
    "access_key_id": "key",
    "aws_secret_access_key": "secret",
    "secret_access_key": "secret",
    "aws_session_token": "token",
    "aws_token": "token",
    "session_token": "token",
    "aws_endpoint": "endpoint_url",
    "aws_endpoint_url": "endpoint_url",
    "endpoint": "endpoint_url",
}
_S3FS_REGION_KEYS = {"aws_region", "region", "aws_default_region", "default_region"}
_S3FS_DROPPED_KEYS = {"allow_http", "aws_allow_http"}  # botocore follows the endpoint's scheme


def fsspec_options(uri: str, storage_options: dict | None) -> dict:
    """fsspec arguments for ``uri`` from options that may be written for LanceDB.

    For s3:// the LanceDB names (``aws_endpoint``, ``aws_access_key_id``, ``aws_region``,
    ``allow_http``, ...) become s3fs's (``endpoint_url``, ``key``, ``client_kwargs``);
    names s3fs already knows pass through unchanged. Other protocols get the dict as is.
    """
    opts = dict(storage_options or {})
    if uri.split("://", 1)[0] not in ("s3", "s3a"):
        return opts
    # No listings cache: other processes (clip tasks on any node) write under folders this
    # one has listed, and s3fs answers exists() from a stale listing (a fresh clip 404'd).
    out: dict = {"use_listings_cache": False}
    client_kwargs = dict(opts.pop("client_kwargs", None) or {})
    for name, value in opts.items():
        low = name.lower()
        if low in _S3FS_KEYS:
            out[_S3FS_KEYS[low]] = value
        elif low in _S3FS_REGION_KEYS:
            client_kwargs.setdefault("region_name", value)
        elif low not in _S3FS_DROPPED_KEYS:
            out[name] = value
    if client_kwargs:
        out["client_kwargs"] = client_kwargs
    return out


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
            fs, root = fsspec.core.url_to_fs(raw, **fsspec_options(raw, storage_options))
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
        return fsspec.open(uri, "rb", **fsspec_options(uri, storage_options)).open()
    return open(uri.removeprefix("file://"), "rb")
