"""The ``event_media`` control table: the media registered to each event (uploads and URIs)."""

from __future__ import annotations

from app.store.control import EVENT_MEDIA, ControlStore
from pipelines.lance_tables import sql_str


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

    def delete_of_event(self, org_id: int, event_id: int) -> int:
        return self._delete(f"org_id = {int(org_id)} AND event_id = {int(event_id)}")

    def delete(self, org_id: int, event_id: int, media_key: str) -> int:
        return self._delete(
            f"org_id = {int(org_id)} AND event_id = {int(event_id)} AND media_key = {sql_str(media_key)}"
        )

    def _delete(self, where: str) -> int:
        """Remove the rows ``where`` holds; returns how many."""
        table = self.control.table(EVENT_MEDIA)
        before = table.count_rows(where)
        if before:
            table.delete(where)
        return before
