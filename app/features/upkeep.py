"""A replica's upkeep: the loops that end what nobody polls and keep the stores lean.

``sweep_forever`` fails searches, clips and index jobs past their deadlines or orphaned by a
lost supervisor, maintains the control tables, and runs retention and the orphaned-clip sweep;
``watch_jobs_forever`` fails within seconds the searches and index jobs whose worker died.
Both run on each ingress replica's event loop (app/http/api.py starts them).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from app.features.retention import sweep_orphans, sweep_retention
from app.features.services import Services

log = logging.getLogger(__name__)


async def sweep_forever(services: Services) -> None:
    """Fail searches whose worker vanished, even if nobody polls them; keep tables lean;
    delete searches past their event's retention and clip files no record references."""

    api = services.settings.api
    last_maintenance = time.monotonic()
    # Retention and orphans run on the first pass, then at their own (longer) intervals.
    last_retention = last_orphans = -math.inf
    while True:
        await asyncio.sleep(api.sweep_interval_s)
        try:
            if failed := await asyncio.to_thread(services.records.sweep_overdue):
                log.warning("failed %d overdue searches", len(failed))
                services.tell_webhooks([r.request_id for r in failed if r.webhook_url])
            if n := await asyncio.to_thread(services.extra_clips.sweep_overdue):
                log.warning("failed %d overdue clips", n)
            if n := await asyncio.to_thread(services.sweep_overdue_index_jobs):
                log.warning("ended %d overdue index jobs", n)
            if n := await services.sweep_lost_owners():
                log.warning("ended %d searches and index jobs whose supervisor died", n)
            if time.monotonic() - last_maintenance >= api.maintenance_interval_s:
                last_maintenance = time.monotonic()
                await services.maintain()
        except Exception:
            log.exception("overdue sweep or table maintenance failed")
        if time.monotonic() - last_retention >= api.retention_sweep_interval_s:
            last_retention = time.monotonic()
            try:
                if n := await asyncio.to_thread(sweep_retention, services):
                    log.info("deleted %d searches past their retention", n)
            except Exception:
                log.exception("retention sweep failed")
        if time.monotonic() - last_orphans >= api.orphan_sweep_interval_s:
            last_orphans = time.monotonic()
            try:
                if n := await asyncio.to_thread(sweep_orphans, services):
                    log.info("removed %d orphaned clip files", n)
            except Exception:
                log.exception("orphaned clip sweep failed")


async def watch_jobs_forever(services: Services) -> None:
    while True:
        await asyncio.sleep(services.settings.api.job_watch_interval_s)
        try:
            await asyncio.to_thread(services.check_jobs)
            await asyncio.to_thread(services.check_index_jobs)
        except Exception:
            log.exception("checking search and index jobs failed")
