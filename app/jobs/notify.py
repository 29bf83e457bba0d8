"""Webhook deliveries of final results: the org's signing secret, and a record of every
attempt in the ``webhook_deliveries`` control table (app/core/webhooks.py sends them)."""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from dataclasses import asdict
from datetime import UTC, datetime

from app.config import AppSettings
from app.store.control import ORGS, WEBHOOK_DELIVERIES, ControlStore
from pipelines.lance_tables import sql_str

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def org_secret(control: ControlStore, org_id: int, rotate: bool = False) -> str:
    """The org's webhook signing secret, made on first use (or anew with ``rotate``)."""
    for _ in range(3):
        rows = control.rows(ORGS, f"org_id = {int(org_id)}", 1)
        if not rows:
            raise KeyError(f"no org {org_id}")
        row = rows[0]
        if row.get("webhook_secret") and not rotate:
            return row["webhook_secret"]
        fresh = f"whsec_{secrets.token_urlsafe(32)}"
        only_if = (
            "target.webhook_secret IS NULL"
            if not row.get("webhook_secret")
            else f"target.webhook_secret = {sql_str(row['webhook_secret'])}"
        )
        if control.upsert(ORGS, [{**row, "webhook_secret": fresh}], only_if=only_if, insert=False):
            return fresh
        rotate = False  # another process set one meanwhile: use it
    raise RuntimeError(f"org {org_id}: the webhook secret kept changing")


def deliveries(control: ControlStore, subject_id: str) -> list[dict]:
    """Deliveries of one job's or search's result, oldest first, as the API shows them."""
    rows = control.rows(WEBHOOK_DELIVERIES, f"subject_id = {sql_str(subject_id)}")
    return [delivery_item(r) for r in sorted(rows, key=lambda r: r["created_at"])]


def delivery_item(row: dict) -> dict:
    attempts = json.loads(row["attempts_json"] or "[]")
    return {
        "delivery_id": row["delivery_id"],
        "event": row["event"],
        "status": row["status"],
        "attempts": attempts,
    }


def notify(
    settings: AppSettings,
    control: ControlStore,
    org_id: int,
    event_id: int,
    event: str,
    subject_id: str,
    url: str,
    payload: dict,
) -> str:
    """Deliver ``payload`` to ``url`` (signed, retried), recording each attempt; returns the
    delivery's final status. Never raises: a result is stored whether or not it was heard."""
    from app.core.webhooks import Delivery, deliver

    api = settings.api
    now = datetime.now(UTC)
    row = {
        "delivery_id": str(uuid.uuid4()),
        "org_id": org_id,
        "event_id": event_id,
        "event": event,
        "subject_id": subject_id,
        "url": url,
        "status": PENDING,
        "attempts_json": "[]",
        "created_at": now,
        "updated_at": now,
    }
    try:
        control.upsert(WEBHOOK_DELIVERIES, [row])

        def record(delivery: Delivery, status: str = PENDING) -> None:
            row["attempts_json"] = json.dumps([asdict(a) for a in delivery.attempts])
            row["status"], row["updated_at"] = status, datetime.now(UTC)
            control.upsert(WEBHOOK_DELIVERIES, [row])

        result = deliver(
            url,
            event,
            payload,
            org_secret(control, org_id),
            delivery_id=row["delivery_id"],
            attempts=api.webhook_attempts,
            first_backoff_s=api.webhook_first_backoff_s,
            timeout_s=api.webhook_timeout_s,
            allow_private=set(api.webhook_allow_addresses),
            on_attempt=record,
        )
        final = DELIVERED if result.delivered else FAILED
        record(result, final)
        if not result.delivered:
            log.warning(
                "webhook %s for %s was not delivered after %d attempts", event, subject_id, len(result.attempts)
            )
        return final
    except Exception:
        log.exception("webhook %s for %s failed", event, subject_id)
        try:  # never left pending
            row["status"], row["updated_at"] = FAILED, datetime.now(UTC)
            control.upsert(WEBHOOK_DELIVERIES, [row])
        except Exception:
            log.exception("recording the failed webhook %s for %s failed", event, subject_id)
        return FAILED
