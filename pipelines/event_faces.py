"""Events' faces held in memory, for exact search at memory speed.

A long-lived searcher (the Serve ``SearchMatcher``) keeps, per event, the face rows it
answers from: a unit-vector matrix and the columns a hit carries. A search is then one
matrix-vector product (a 100k-face event: ~3 ms on two cores, against ~75 ms reading the
vectors from LanceDB each time, bench/search.py).

The copy is never served stale. Face rows are only ever added and deleted, never updated
(``pipelines.store``), and Lance gives every added row a row id above every row id already
in the table (new fragments take new, higher fragment ids; compaction moves rows into new
fragments too). So, for a copy holding ``n`` rows of the event whose highest row id is
``m``, two index-only counts tell what changed since:
    count(event)                == n  and  count(event AND _rowid > m) == 0  -> unchanged
    count(event) - count(... > m) == n                                     -> rows were only
                                                          added: read just those and append
    anything else (deletes, compaction)                                    -> read it again
The counts run only when the table's version moved since the copy was last checked.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

ROW_ID = "_rowid"
# What a row's columns other than the vector cost in memory, roughly (ids, key, box, ...).
ROW_OVERHEAD_BYTES = 160


@dataclass
class EventFaces:
    """One event's faces: ``columns`` (no vector) and ``vectors`` (unit rows, float32)
    share row order. ``version`` is the table version they were last checked against."""

    columns: pa.Table
    vectors: np.ndarray
    max_row_id: int
    version: int

    @property
    def rows(self) -> int:
        return self.columns.num_rows

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes + self.columns.nbytes)

    def extended(self, more: EventFaces) -> EventFaces:
        return EventFaces(
            pa.concat_tables([self.columns, more.columns]),
            np.concatenate([self.vectors, more.vectors]),
            max(self.max_row_id, more.max_row_id),
            more.version,
        )


def event_faces(table: pa.Table, dim: int, version: int) -> EventFaces:
    """From rows read with their vectors and row ids."""
    if table.num_rows:
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = np.asarray(flat, np.float32).reshape(-1, dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
        max_row_id = int(table.column(ROW_ID).to_numpy().max())
    else:
        vectors, max_row_id = np.zeros((0, dim), np.float32), -1
    columns = table.drop_columns([c for c in ("vector", ROW_ID) if c in table.column_names])
    return EventFaces(columns, np.ascontiguousarray(vectors, np.float32), max_row_id, version)


def estimated_bytes(rows: int, dim: int) -> int:
    return rows * (dim * 4 + ROW_OVERHEAD_BYTES)


def best_matches(
    faces: EventFaces,
    query: np.ndarray,
    min_similarity: float | None,
    limit: int | None,
    media_type: str | None = None,
) -> list[tuple[int, float]]:
    """(row, cosine similarity) of the faces at or above ``min_similarity`` (all rows when
    None), best first, at most ``limit``: what ``FaceStore.search`` answers from the table,
    with the same 1e-6 tolerance at the threshold."""
    q = np.asarray(query, np.float32).reshape(-1)
    q = q / (np.linalg.norm(q) or 1.0)
    sims = faces.vectors @ q
    keep = np.ones(len(sims), bool)
    if min_similarity is not None:
        keep &= sims > min_similarity - 1e-6
    if media_type is not None:
        keep &= np.asarray(faces.columns.column("media_type").to_numpy(zero_copy_only=False) == media_type)
    rows = np.flatnonzero(keep)
    order = rows[np.argsort(-sims[rows], kind="stable")]
    if limit is not None:
        order = order[:limit]
    return [(int(i), float(sims[i])) for i in order]


class EventFacesCache:
    """Events' faces, least recently used first out, within ``max_bytes``. Thread-safe; one
    thread at a time reads a given event in (the others wait for its copy)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, int], EventFaces] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[int, int], threading.Lock] = {}

    @contextmanager
    def loading(self, key: tuple[int, int]) -> Iterator[None]:
        with self._lock:
            lock = self._loading.setdefault(key, threading.Lock())
        with lock:
            yield

    def get(self, key: tuple[int, int]) -> EventFaces | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[int, int], entry: EventFaces) -> bool:
        """Keep ``entry`` (evicting the least recently used); False, and nothing kept for
        the event, when it alone is over the budget."""
        with self._lock:
            self._entries.pop(key, None)
            if entry.nbytes > self.max_bytes:
                return False
            self._entries[key] = entry
            total = sum(e.nbytes for e in self._entries.values())
            while total > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                total -= evicted.nbytes
            return True

    def drop(self, key: tuple[int, int]) -> None:
        with self._lock:
            self._entries.pop(key, None)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())
