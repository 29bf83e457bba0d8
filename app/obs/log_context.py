"""Who a log line is about: the org, event and request_id of the request or job being
handled, added to every log record of the process (Ray's JSON log encoding writes them as
fields, its text encoding as ``key=value``), so one search can be followed across the
ingress, the search task and its clip tasks."""

from __future__ import annotations

import logging
from contextvars import ContextVar

_context: ContextVar[dict[str, object] | None] = ContextVar("facereel_log_context", default=None)
_installed = False


def bind(**fields: object) -> None:
    """Add fields (org_id, event_id, request_id) to this task's or request's log records."""
    _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def install() -> None:
    """Once per process: every LogRecord gets the bound fields as attributes."""
    global _installed
    if _installed:
        return
    _installed = True
    make_record = logging.getLogRecordFactory()

    def with_context(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return record

    logging.setLogRecordFactory(with_context)
