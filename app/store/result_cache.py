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

On a local control store there is a cheaper proof still: ``fresh()`` compares the tables'
version directories' times (two ``stat`` calls, microseconds), so a poll is answered on the
event loop without a thread hop, and without yielding at all (a handler that yields also
pays Serve a round trip to the proxy per request). Until a directory's time is older than
``STAMP_SETTLE_S``, it proves nothing and the version check decides.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from app.core.contract import PROCESSING
from app.store.control import EXTRA_CLIPS, REQUESTS, ControlStore
from app.store.records import ExtraClip, SearchRecord

# How old a version directory's time must be before it proves that nothing was written:
# far above a filesystem's timestamp tick, and above the clock skew of an NTP-synced network
# filesystem. Within it (after any write), polls take the version check.
STAMP_SETTLE_S = 1.0
TABLES = (REQUESTS, EXTRA_CLIPS)


@dataclass(frozen=True)
class CachedResult:
    versions: tuple[int, int]  # of (search_requests, extra_clips) before the reads
    stamp: tuple[int, ...] | None  # their directories' times before the reads (ControlStore.change_stamp)
    record: SearchRecord
    clips: tuple[ExtraClip, ...]


def is_settled(record: SearchRecord, clips: list[ExtraClip]) -> bool:
    """Nothing but a new request can change it: terminal, with no extra clip being cut.
    (A Face Search-only record has no video status and is not a result.)"""
    return record.status not in (None, PROCESSING) and all(c.status != PROCESSING for c in clips)


class ResultCache:
    """A bounded LRU of settled results by request_id, checked against table versions."""

    def __init__(
        self, control: ControlStore, max_entries: int, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.control = control
        self.max_entries = max_entries
        self.clock = clock  # wall-clock ns, as file times are
        self.items: OrderedDict[str, CachedResult] = OrderedDict()
        self.lock = threading.Lock()  # read from the replica's io threads
        self.hits = self.misses = 0

    def versions(self) -> tuple[int, int]:
        """The latest version of each table (a manifest read each; no data is scanned)."""
        return self.control.table(REQUESTS).version, self.control.table(EXTRA_CLIPS).version

    def stamp(self) -> tuple[int, ...] | None:
        return self.control.change_stamp(TABLES, self.clock(), int(STAMP_SETTLE_S * 1e9))

    def fresh(self, request_id: str) -> tuple[SearchRecord, list[ExtraClip]] | None:
        """The cached result when the tables' directory times prove it current, else None
        (then ``read``). Non-blocking: two ``stat`` calls, safe on the event loop."""
        if self.max_entries <= 0:
            return None
        entry = self.items.get(request_id)
        if entry is None or entry.stamp is None:
            return None
        stamp = self.stamp()
        with self.lock:
            if stamp != entry.stamp or self.items.get(request_id) is not entry:
                return None
            self.items.move_to_end(request_id)
            self.hits += 1
            return entry.record, list(entry.clips)

    def read(
        self, request_id: str, load: Callable[[], tuple[SearchRecord | None, list[ExtraClip]]]
    ) -> tuple[SearchRecord | None, list[ExtraClip]]:
        """The result from memory when nothing was written since it was cached; else
        ``load()`` (kept when settled). Blocking: call it from a thread."""
        if self.max_entries <= 0:
            return load()
        stamp = self.stamp()  # both before the reads: a write after them changes them
        versions = self.versions()
        with self.lock:
            entry = self.items.get(request_id)
            if entry is not None and entry.versions == versions:
                if entry.stamp != stamp:  # unchanged since the stamp: later polls may skip the check
                    entry = self.items[request_id] = CachedResult(versions, stamp, entry.record, entry.clips)
                self.items.move_to_end(request_id)
                self.hits += 1
                return entry.record, list(entry.clips)
            self.items.pop(request_id, None)
            self.misses += 1
        record, clips = load()
        if record is not None and is_settled(record, clips):
            with self.lock:
                self.items[request_id] = CachedResult(versions, stamp, record, tuple(clips))
                while len(self.items) > self.max_entries:
                    self.items.popitem(last=False)
        return record, clips
