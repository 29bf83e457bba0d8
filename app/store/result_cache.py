"""Finished searches kept in each ingress replica, so that polling a result costs a
version check instead of two table queries.

A finished search can still change: a re-POST or "not me" feedback reruns it, a new clip
is asked for, consent deletion or retention removes it, and any ingress replica may do
that. So an entry is only served while neither control table it was read from
(search_requests, extra_clips) has a newer version than when it was read: any write
anywhere, by any process, makes the next read of it go to the tables again. That costs
about 1 ms per table against about 9 and 4.5 ms for the two queries (measured on this
2-core machine; BENCHMARKS.md), and serves GET-only traffic entirely from memory. Writes
elsewhere lower the hit rate, never the freshness.

Only entries with nothing left to change by themselves are kept: the search terminal and
none of its extra clips processing (those are finished by Ray workers, not by a request).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from app.core.contract import PROCESSING
from app.store.control import EXTRA_CLIPS, REQUESTS, ControlStore
from app.store.records import ExtraClip, SearchRecord


@dataclass(frozen=True)
class CachedResult:
    versions: tuple[int, int]  # of (search_requests, extra_clips) before the reads
    record: SearchRecord
    clips: tuple[ExtraClip, ...]


def is_settled(record: SearchRecord, clips: list[ExtraClip]) -> bool:
    """Nothing but a new request can change it: terminal, with no extra clip being cut.
    (A Face Search-only record has no video status and is not a result.)"""
    return record.status not in (None, PROCESSING) and all(c.status != PROCESSING for c in clips)


class ResultCache:
    """A bounded LRU of settled results by request_id, checked against table versions."""

    def __init__(self, control: ControlStore, max_entries: int) -> None:
        self.control = control
        self.max_entries = max_entries
        self.items: OrderedDict[str, CachedResult] = OrderedDict()
        self.lock = threading.Lock()  # read from the replica's io threads
        self.hits = self.misses = 0

    def versions(self) -> tuple[int, int]:
        """The latest version of each table (a manifest read each; no data is scanned)."""
        return self.control.table(REQUESTS).version, self.control.table(EXTRA_CLIPS).version

    def read(
        self, request_id: str, load: Callable[[], tuple[SearchRecord | None, list[ExtraClip]]]
    ) -> tuple[SearchRecord | None, list[ExtraClip]]:
        """The result from memory when nothing was written since it was cached; else
        ``load()`` (kept when settled). Blocking: call it from a thread."""
        if self.max_entries <= 0:
            return load()
        versions = self.versions()  # before the reads: a write after them changes it
        with self.lock:
            entry = self.items.get(request_id)
            if entry is not None and entry.versions == versions:
                self.items.move_to_end(request_id)
                self.hits += 1
                return entry.record, list(entry.clips)
            self.items.pop(request_id, None)
            self.misses += 1
        record, clips = load()
        if record is not None and is_settled(record, clips):
            with self.lock:
                self.items[request_id] = CachedResult(versions, record, tuple(clips))
                while len(self.items) > self.max_entries:
                    self.items.popitem(last=False)
        return record, clips
