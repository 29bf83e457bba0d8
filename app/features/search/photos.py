"""Ranked photos as pages of the contract's photo items (Face Search and BIB search).

A search stores its ranking as plain rows (photo_key, similarity, bbox, match_count);
URLs and capture times come from the media table when a page is read, so a photo
re-indexed since still resolves and one removed since drops out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.config import AppSettings
from app.core.contract import photo_item
from app.core.errors import DomainError
from pipelines.store import FaceStore


@dataclass(frozen=True)
class Page:
    number: int  # 1-based
    size: int

    def slice(self, items: list) -> list:
        start = (self.number - 1) * self.size
        return items[start : start + self.size]


def parse_page(page: str | None, page_size: str | None, settings: AppSettings) -> Page:
    """``page`` (default 1) and ``page_size`` (default api.page_size, at most api.max_page_size)."""
    api = settings.api

    def whole(value: str | None, name: str, default: int, high: int) -> int:
        if value is None or value == "":
            return default
        if not value.strip().isdigit() or not 1 <= int(value) <= high:
            raise DomainError("invalid_page", f"{name} must be a whole number from 1 to {high}.")
        return int(value)

    return Page(whole(page, "page", 1, 1_000_000), whole(page_size, "page_size", api.page_size, api.max_page_size))


def media_url(settings: AppSettings, org_id: int, event_id: int, media_id: str, suffix: str = "") -> str:
    return f"{settings.api.public_base_url.rstrip('/')}/media/{org_id}/{event_id}/photos/{media_id}{suffix}"


def iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def photo_items(
    settings: AppSettings, store: FaceStore, org_id: int, event_id: int, ranked: list[dict], page: Page
) -> list[dict]:
    """The page's photo items, in rank order."""
    rows = page.slice(ranked)
    media = store.media_by_keys(org_id, event_id, [r["photo_key"] for r in rows])
    items = []
    for r in rows:
        m = media.get(r["photo_key"])
        if m is None or not m.get("media_id"):
            continue
        items.append(
            photo_item(
                r["photo_key"],
                media_url(settings, org_id, event_id, m["media_id"]),
                media_url(settings, org_id, event_id, m["media_id"], "/thumbnail.jpg"),
                r["similarity"],
                r["bbox"],
                iso(m.get("taken_at")),
                r["match_count"],
            )
        )
    return items
