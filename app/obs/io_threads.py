"""Threads for an ingress replica's blocking calls (LanceDB, files), by admission class.

``asyncio.to_thread`` runs on the event loop's default executor. With one pool, a search's
few writes (claim, record, dispatched) queued behind the readers' calls: under 200 readers
on 2 cores a POST's ``dispatched`` write waited up to 9 s (issue 10). So writes have
threads of their own. ``Admission`` puts each request's class in a context variable, and
the executor picks the pool when a call is submitted (asyncio submits from the request's
own context).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar

# "read" or "write" for the request being handled (app/http/admission.py), None outside one.
REQUEST_CLASS: ContextVar[str | None] = ContextVar("facereel_request_class", default=None)


class IoThreads(ThreadPoolExecutor):
    """The default executor: ``read_threads`` for reads and work outside a request,
    ``write_threads`` for writes."""

    def __init__(self, read_threads: int, write_threads: int) -> None:
        super().__init__(read_threads, thread_name_prefix="facereel-io")
        self.writes = ThreadPoolExecutor(write_threads, thread_name_prefix="facereel-io-write")

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if REQUEST_CLASS.get() == "write":
            return self.writes.submit(fn, *args, **kwargs)
        return super().submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.writes.shutdown(wait, cancel_futures=cancel_futures)
        super().shutdown(wait, cancel_futures=cancel_futures)
