"""Bring-your-own storage: an org's S3-compatible locations, used by its events for sources
and clip output.

A location is endpoint, bucket, prefix, region, and credentials or a profile. Everything goes
through fsspec/s3fs (and LanceDB's names for the same options, translated by
``pipelines.media.fsspec_options``). Secrets are kept in the control table and only ever
leave it as storage options for the tasks that read and write the location: no API answer,
``repr`` or log line carries them. Clip URLs of such an event are presigned GETs, signed
afresh on every read of the result, or ``<public_base_url>/<key>`` when the bucket is public.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from app.core.errors import DomainError
from app.store.control import STORAGE_LOCATIONS, ControlStore
from pipelines.lance_tables import sql_str

BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]{0,512}$")
REGION = re.compile(r"^[a-z0-9-]{1,32}$")
NAME = re.compile(r"^[A-Za-z0-9 ._-]{1,100}$")
MAX_TTL_S = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live


@dataclass(frozen=True)
class StorageLocation:
    org_id: int
    location_id: str
    name: str
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None  # None: AWS S3
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    profile: str | None = None
    public_base_url: str | None = None  # clips served from here instead of presigned URLs
    url_ttl_s: int = 3600

    @property
    def root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def sources_root(self) -> str:
        return f"{self.root}/sources"

    @property
    def outputs_root(self) -> str:
        return f"{self.root}/outputs"

    def holds(self, uri: str) -> bool:
        return uri == self.root or uri.startswith(self.root + "/")

    def storage_options(self) -> dict[str, str]:
        """Options in LanceDB's names (fsspec_options turns them into s3fs's)."""
        options: dict[str, str] = {}
        if self.endpoint_url:
            options["aws_endpoint"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                options["allow_http"] = "true"
        if self.region:
            options["aws_region"] = self.region
        if self.access_key_id and self.secret_access_key:
            options["aws_access_key_id"] = self.access_key_id
            options["aws_secret_access_key"] = self.secret_access_key
        if self.profile:
            options["profile"] = self.profile
        return options

    def public(self) -> dict:
        """The location as the API shows it: never a secret."""
        return {
            "location_id": self.location_id,
            "name": self.name,
            "endpoint_url": self.endpoint_url,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "region": self.region,
            "credentials": "keys" if self.access_key_id else ("profile" if self.profile else "environment"),
            "public_base_url": self.public_base_url,
            "url_ttl_s": self.url_ttl_s,
            "root": self.root,
        }

    def url(self, key: str) -> str:
        """A URL a client can download ``key`` (under the outputs root) from: public, or
        presigned for ``url_ttl_s``."""
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{key}"
        from pipelines.storage import OutputStorage

        return OutputStorage(self.outputs_root, self.storage_options()).presigned_url(key, self.url_ttl_s)

    def to_row(self) -> dict:
        return {
            "org_id": self.org_id,
            "location_id": self.location_id,
            "name": self.name,
            "endpoint_url": self.endpoint_url,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "profile": self.profile,
            "public_base_url": self.public_base_url,
            "url_ttl_s": self.url_ttl_s,
            "created_at": datetime.now(UTC),
        }

    @classmethod
    def from_row(cls, r: dict) -> StorageLocation:
        return cls(
            org_id=r["org_id"],
            location_id=r["location_id"],
            name=r["name"],
            bucket=r["bucket"],
            prefix=r["prefix"] or "",
            endpoint_url=r["endpoint_url"],
            region=r["region"],
            access_key_id=r["access_key_id"],
            secret_access_key=r["secret_access_key"],
            profile=r["profile"],
            public_base_url=r["public_base_url"],
            url_ttl_s=int(r["url_ttl_s"] or 3600),
        )


def _text(body: dict, name: str, pattern: re.Pattern | None = None, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise DomainError("invalid_storage_location", f"'{name}' is required.")
        return None
    if not isinstance(value, str) or len(value) > 2048 or (pattern is not None and not pattern.match(value)):
        raise DomainError("invalid_storage_location", f"'{name}' is not valid.")
    return value


def _http_url(value: str | None, name: str, allow: set[str]) -> str | None:
    """An http(s) URL whose host is public (or of an allowed kind): the server connects to an
    endpoint a client names, so it gets the webhooks' SSRF rules."""
    if value is None:
        return None
    from app.core.webhooks import WebhookUrlError, check_webhook_url

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or parts.query or parts.fragment:
        raise DomainError("invalid_storage_location", f"'{name}' must be an http(s) URL without query.")
    try:
        return check_webhook_url(value, allow).rstrip("/")
    except WebhookUrlError as exc:
        raise DomainError("invalid_storage_location", f"'{name}' refused: {exc}") from None


FIELDS = {
    "name",
    "endpoint_url",
    "bucket",
    "prefix",
    "region",
    "access_key_id",
    "secret_access_key",
    "profile",
    "public_base_url",
    "url_ttl_s",
}


def parse_location(
    org_id: int, body: object, allow_addresses: set[str], server_credentials: bool = False
) -> StorageLocation:
    """A location from a client's JSON (400 ``invalid_storage_location`` for anything off).

    Without ``server_credentials`` a location must bring its own keys: a profile or the
    servers' environment would lend the service's own credentials to whoever names a bucket.
    """
    if not isinstance(body, dict) or set(body) - FIELDS:
        raise DomainError("invalid_storage_location", f"Send a JSON object with: {', '.join(sorted(FIELDS))}.")
    key_id, secret = _text(body, "access_key_id"), _text(body, "secret_access_key")
    if bool(key_id) != bool(secret):
        raise DomainError("invalid_storage_location", "Send both access_key_id and secret_access_key, or neither.")
    profile = _text(body, "profile", NAME)
    if profile and key_id:
        raise DomainError("invalid_storage_location", "Send keys or a profile, not both.")
    if not key_id and not server_credentials:
        raise DomainError(
            "invalid_storage_location",
            "Send access_key_id and secret_access_key: this server lends no credentials of its own.",
        )
    ttl = body.get("url_ttl_s", 3600)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 60 <= ttl <= MAX_TTL_S:
        raise DomainError("invalid_storage_location", f"url_ttl_s must be a whole number from 60 to {MAX_TTL_S}.")
    prefix = (_text(body, "prefix", PREFIX) or "").strip("/")
    if any(part in (".", "..") for part in prefix.split("/")):
        raise DomainError("invalid_storage_location", "'prefix' is not valid.")
    return StorageLocation(
        org_id=org_id,
        location_id=str(uuid.uuid4()),
        name=_text(body, "name", NAME, required=True) or "",
        bucket=_text(body, "bucket", BUCKET, required=True) or "",
        prefix=prefix,
        endpoint_url=_http_url(_text(body, "endpoint_url"), "endpoint_url", allow_addresses),
        region=_text(body, "region", REGION),
        access_key_id=key_id,
        secret_access_key=secret,
        profile=profile,
        public_base_url=_http_url(
            _text(body, "public_base_url"), "public_base_url", {"loopback", "private"} | allow_addresses
        ),
        url_ttl_s=ttl,
    )


class StorageLocations:
    def __init__(self, control: ControlStore) -> None:
        self.control = control

    def add(self, location: StorageLocation) -> StorageLocation:
        self.control.upsert(STORAGE_LOCATIONS, [location.to_row()])
        return location

    def get(self, org_id: int, location_id: str) -> StorageLocation | None:
        where = f"org_id = {int(org_id)} AND location_id = {sql_str(location_id)}"
        rows = self.control.rows(STORAGE_LOCATIONS, where, 1)
        return StorageLocation.from_row(rows[0]) if rows else None

    def of_org(self, org_id: int) -> list[StorageLocation]:
        rows = self.control.rows(STORAGE_LOCATIONS, f"org_id = {int(org_id)}")
        return sorted((StorageLocation.from_row(r) for r in rows), key=lambda loc: (loc.name, loc.location_id))


def check_reachable(location: StorageLocation) -> None:
    """Prove the location takes a write and a delete (400 ``storage_unreachable`` otherwise);
    the message names the failure, never a credential."""
    from pipelines.storage import OutputStorage, StorageError

    # A registration answers in seconds: one attempt, short timeouts (botocore's defaults
    # retry for minutes against an endpoint that does not answer).
    quick = {"config_kwargs": {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 1}}}
    try:
        OutputStorage(location.root, {**location.storage_options(), **quick}).check_writable()
    except StorageError as exc:
        reason = str(exc.__cause__ or exc)
        for secret in (location.secret_access_key, location.access_key_id):
            if secret:
                reason = reason.replace(secret, "***")
        raise DomainError("storage_unreachable", f"The storage location is not writable: {reason[:300]}") from None


def fresh_urls(value: object, location: StorageLocation, folder: str) -> object:
    """``value`` (clip items, lists and dicts holding them) with every clip's ``video_url`` and
    ``poster_url`` signed now: presigned URLs expire, so a result read later gets new ones."""
    if isinstance(value, list):
        return [fresh_urls(v, location, folder) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: fresh_urls(v, location, folder) for k, v in value.items()}
    if isinstance(out.get("uuid"), str) and "video_url" in out:
        out["video_url"] = location.url(f"{folder}/{out['uuid']}.mp4")
        if "poster_url" in out:
            out["poster_url"] = location.url(f"{folder}/{out['uuid']}.jpg")
    return out
