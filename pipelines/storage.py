"""Output storage for clips and posters: a local directory or an fsspec URI (s3://...).

Keys are built by the caller from validated parts only; ``resolve`` still refuses any
key that would leave the root, so nothing can be written outside a storage root.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path, PurePosixPath

import fsspec

from pipelines.media import fsspec_options, is_remote


class StorageError(OSError):
    pass


def safe_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise StorageError(f"invalid storage key {key!r}")
    return "/".join(parts)


def modified_time(info: dict) -> float | None:
    """A file's modification time (POSIX seconds) from an fsspec info dict: local
    filesystems give ``mtime`` (seconds), s3 ``LastModified`` (a datetime)."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


class OutputStorage:
    def __init__(self, root: str, storage_options: dict | None = None) -> None:
        self.root = root.rstrip("/")
        self.remote = is_remote(root)
        self.storage_options = fsspec_options(root, storage_options)

    def local_path(self, key: str) -> Path:
        """Path of ``key`` under a local root (raises for remote roots or escaping keys)."""
        if self.remote:
            raise StorageError("remote storage has no local path")
        root = Path(self.root).expanduser().resolve()
        path = (root / safe_key(key)).resolve()
        if root not in path.parents:
            raise StorageError(f"key {key!r} leaves the storage root")
        return path

    def check_writable(self) -> None:
        """Create the root if needed and prove a write works (raises StorageError)."""
        probe = f".write-probe-{uuid.uuid4().hex}"
        try:
            if self.remote:
                fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
                fs.pipe_file(f"{path}/{probe}", b"ok")
                fs.rm_file(f"{path}/{probe}")
            else:
                root = Path(self.root).expanduser()
                root.mkdir(parents=True, exist_ok=True)
                (root / probe).write_bytes(b"ok")
                (root / probe).unlink()
        except Exception as exc:
            raise StorageError(f"output storage {self.root} is not writable: {exc}") from exc

    def put(self, local_file: Path, key: str) -> None:
        """Move a finished local file to ``key`` (atomic on local roots)."""
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
            fs.put_file(str(local_file), f"{path}/{safe_key(key)}")
            local_file.unlink(missing_ok=True)
            return
        target = self.local_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(local_file, target)
        except OSError:  # another filesystem: copy then rename within the target's
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            shutil.copyfile(local_file, tmp)
            os.replace(tmp, target)
            local_file.unlink(missing_ok=True)

    def open(self, key: str):
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
            return fs.open(f"{path}/{safe_key(key)}", "rb")
        return open(self.local_path(key), "rb")

    def presigned_url(self, key: str, expires_s: int) -> str:
        """A time-limited GET URL of ``key`` that needs no credentials (object stores only)."""
        if not self.remote:
            raise StorageError("a local root has no presigned URLs")
        fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
        return fs.sign(f"{path}/{safe_key(key)}", expiration=int(expires_s))

    def exists(self, key: str) -> bool:
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
            return fs.exists(f"{path}/{safe_key(key)}")
        return self.local_path(key).is_file()

    def list_folder(self, prefix: str) -> list[str]:
        """Keys of every file under ``prefix`` (a folder key)."""
        folder = safe_key(prefix)
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
            found = fs.find(f"{path}/{folder}")
            return sorted(f"{folder}/{f.removeprefix(f'{path}/{folder}/')}" for f in found)
        local = self.local_path(folder)
        if not local.is_dir():
            return []
        return sorted(f"{folder}/{p.relative_to(local).as_posix()}" for p in local.rglob("*") if p.is_file())

    def list_modified(self, prefix: str) -> dict[str, float]:
        """Key -> modification time (POSIX seconds) of every file under ``prefix`` (a folder
        key), so a caller can tell a file's age; a file whose time is unknown is left out."""
        folder = safe_key(prefix)
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
            found = fs.find(f"{path}/{folder}", detail=True)
            out = {}
            for name, info in found.items():
                mtime = modified_time(info)
                if mtime is not None and info.get("type", "file") == "file":
                    out[f"{folder}/{name.removeprefix(f'{path}/{folder}/')}"] = mtime
            return out
        local = self.local_path(folder)
        if not local.is_dir():
            return {}
        out = {}
        for p in local.rglob("*"):
            try:
                if p.is_file():
                    out[f"{folder}/{p.relative_to(local).as_posix()}"] = p.stat().st_mtime
            except FileNotFoundError:  # removed meanwhile (a sweep in another replica)
                continue
        return out

    def remove(self, keys: list[str]) -> None:
        """Delete the given files (missing ones are no error)."""
        if not keys:
            return
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
            targets = [f"{path}/{safe_key(k)}" for k in keys]
            fs.rm([t for t in targets if fs.exists(t)])
            return
        for key in keys:
            self.local_path(key).unlink(missing_ok=True)

    def remove_empty_folder(self, prefix: str) -> bool:
        """Remove the folder ``prefix`` if it is empty, on a local root (object stores have no
        folders); True when it was removed."""
        if self.remote:
            return False
        try:
            self.local_path(safe_key(prefix)).rmdir()
        except OSError:  # not empty, missing, or removed meanwhile
            return False
        return True

    def remove_folder(self, prefix: str) -> list[str]:
        """Delete every file under ``prefix`` (a folder key); returns the keys removed."""
        folder = safe_key(prefix)
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
            found = fs.find(f"{path}/{folder}")
            if found:
                fs.rm(found)
            return sorted(f"{folder}/{f.removeprefix(f'{path}/{folder}/')}" for f in found)
        local = self.local_path(folder)
        if not local.is_dir():
            return []
        keys = sorted(f"{folder}/{p.relative_to(local).as_posix()}" for p in local.rglob("*") if p.is_file())
        shutil.rmtree(local)
        return keys
