"""One lock per key among the threads of a process (a request_id's record writes).

Concurrent writes of one LanceDB row conflict and retry with backoff: twenty POSTs of one
request_id took seconds per write that way, long enough to pass a dispatch deadline counted
from before the write. Writes of one key made in one process queue here instead. A key's
lock exists only while a thread holds or waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class KeyLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.RLock, int]] = {}  # key -> (lock, holders + waiters)

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold ``key``'s lock (re-entrant: a thread holding it may take it again)."""
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            lock = lock or threading.RLock()
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        """Keys held or waited for now."""
        with self._guard:
            return len(self._locks)
