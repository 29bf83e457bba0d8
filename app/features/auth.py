"""Who may call: API keys and events read through a per-replica TTL cache, and the shared
rate limits taken as leases. Raises domain errors (401/403/404/429 in the HTTP layer)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from app.config import AppSettings
from app.core.errors import DomainError
from app.features.ratelimit import TokenLeases
from app.store.control import API_KEYS, EVENTS, STORAGE_LOCATIONS
from app.store.events import Event, EventStore
from app.store.keys import ApiKey, KeyStore
from app.store.result_cache import STAMP_SETTLE_S

log = logging.getLogger(__name__)

# The control tables each kind of entry is read from: while none of them changed, an entry
# is still current, whatever its age.
SOURCES = {"key": (API_KEYS,), "event": (EVENTS, STORAGE_LOCATIONS)}


def _log_failed_refresh(done: asyncio.Future) -> None:
    """A background re-read that failed: the entry expires as usual and the next request reads it."""
    if not done.cancelled() and done.exception() is not None:
        log.warning("re-reading an auth entry failed: %s", done.exception())


class TtlCache:
    """A tiny per-replica cache: auth reads repeat on every request and change rarely."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.items: dict[object, tuple[float, object]] = {}

    def peek(self, key: object) -> tuple[bool, object]:
        """(True, value) while ``key`` is cached and fresh, else (False, None)."""
        hit = self.items.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return True, hit[1]
        return False, None

    def ageing(self, key: object) -> bool:
        """Whether a fresh entry is past half its life: time to read it again ahead of need."""
        hit = self.items.get(key)
        return hit is not None and time.monotonic() - hit[0] >= self.ttl_s / 2

    def touch(self, key: object, at: float) -> None:
        """The entry is known current as of ``at`` (its tables did not change): renew its life."""
        hit = self.items.get(key)
        if hit is not None:
            self.items[key] = (at, hit[1])

    def reload(self, key: object, load):
        """Read ``key`` again, whatever the entry's age; the old entry is served meanwhile."""
        return self._store(key, time.monotonic(), load())

    def get_or_load(self, key: object, load):
        now = time.monotonic()
        hit = self.items.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        return self._store(key, now, load())

    def _store(self, key: object, read_at: float, value):
        """Keep ``value`` as read at ``read_at`` (taken before the read: its age is never understated)."""
        if self.ttl_s > 0:
            if len(self.items) > 10_000:
                self.items.clear()
            self.items[key] = (read_at, value)
        return value


@dataclass(kw_only=True)
class Auth:
    settings: AppSettings
    keys: KeyStore
    events: EventStore
    limiter: TokenLeases | None  # this replica's leases on the shared RateLimiter actor
    cache: TtlCache
    loading: dict = field(default_factory=dict)  # reads in flight: key -> future
    stamps: dict = field(default_factory=dict)  # key -> its tables' change stamp, taken before its read
    settle_ns: int = int(STAMP_SETTLE_S * 1e9)  # the result cache's: a newer directory proves nothing

    @classmethod
    def create(cls, settings: AppSettings, keys: KeyStore, events: EventStore, limiter) -> Auth:
        """``limiter``: the shared RateLimiter actor's handle, or None (no rate limits)."""
        leases = None
        if limiter is not None:
            api = settings.api
            leases = TokenLeases(lambda *args: limiter.take_up_to.remote(*args), api.rate_lease_s, api.rate_lease_max)
        return cls(
            settings=settings, keys=keys, events=events, limiter=leases, cache=TtlCache(settings.api.auth_cache_s)
        )

    async def event(self, org_id: int, event_id: int) -> Event | None:
        return await self.cached(("event", org_id, event_id), lambda: self.events.get(org_id, event_id))

    def forget_event(self, org_id: int, event_id: int) -> None:
        """Drop this replica's cached copy of an event that was just changed here."""
        self.cache.items.pop(("event", org_id, event_id), None)

    async def cached(self, key: object, load):
        """A TTL-cached auth read: from memory on the event loop when fresh, else loaded in a
        thread (a thread hop per request costs more than the lookup itself).

        An entry past half its life is read again in the background while it is still served:
        a key in steady use never expires, so no request waits on its read (nor yields, which
        costs a Serve replica a round trip to the proxy), and a revoked key still stops
        working within ``auth_cache_s``."""
        hit, value = self.cache.peek(key)
        if hit:
            if self.cache.ageing(key) and key not in self.loading:
                now = time.monotonic()
                stamp = self._stamp(key)
                if stamp is not None and self.stamps.get(key) == stamp:
                    # Its tables did not change since it was read (a stat each, no read and
                    # no thread): 50 pollers' keys otherwise re-read 20 times a second.
                    self.cache.touch(key, now)
                else:
                    self._load(key, self.cache.reload, load).add_done_callback(_log_failed_refresh)
            return value
        # One load per key at a time: when an entry expires under 50 concurrent clients,
        # they would otherwise all read the table at once (12 % of the ingress's samples).
        pending = self.loading.get(key) or self._load(key, self.cache.get_or_load, load)
        return await asyncio.shield(pending)  # a client that goes away does not cancel the others' load

    def _stamp(self, key: object) -> tuple[int, ...] | None:
        """The change stamp of the tables ``key``'s entry is read from; None where it proves nothing."""
        return self.keys.control.change_stamp(SOURCES[key[0]], time.time_ns(), self.settle_ns)

    def _load(self, key: object, how, load) -> asyncio.Future:
        stamp = self._stamp(key)  # before the read: a change during it shows as a new stamp later

        def read():
            value = how(key, load)
            if stamp is None:
                self.stamps.pop(key, None)
            else:
                if len(self.stamps) > 10_000:  # bounded like the cache itself
                    self.stamps.clear()
                self.stamps[key] = stamp
            return value

        pending = asyncio.ensure_future(asyncio.to_thread(read))
        self.loading[key] = pending
        pending.add_done_callback(lambda _: self.loading.pop(key, None))
        return pending

    async def authorize(self, api_key: str | None, org_id: int, event_id: int, kind: str) -> tuple[ApiKey, Event]:
        """401 without a key; 403 for a bad, inactive or foreign key; 429 over the rate; 404 without the event."""
        key = await self.authorize_key(api_key, org_id, event_id, kind)
        event = await self.event(org_id, event_id)
        if event is None:
            raise DomainError("event_not_found", "Event configuration not found.")
        return key, event

    async def authorize_org(self, api_key: str | None, org_id: int, kind: str) -> ApiKey:
        """``authorize`` for the org's own settings: only a key for every event of the org may."""
        key = await self.authorize_key(api_key, org_id, None, kind)
        if key.event_id is not None:
            raise DomainError("org_key_required", "Only an API key for the whole organisation may do this.")
        return key

    async def authorize_key(self, api_key: str | None, org_id: int, event_id: int | None, kind: str) -> ApiKey:
        if not api_key:
            raise DomainError("missing_api_key", "API key is missing: send it in the X-API-Key header.")
        key = await self.cached(("key", api_key), lambda: self.keys.lookup(api_key))
        if key is None or not key.active:
            raise DomainError("invalid_api_key", "API key is invalid or inactive.")
        if key.org_id != org_id or (event_id is not None and key.event_id is not None and key.event_id != event_id):
            raise DomainError("forbidden_event", "This API key does not grant access to this organisation or event.")
        api = self.settings.api
        per_minute, burst = (
            (api.post_per_minute, api.post_burst) if kind == "post" else (api.get_per_minute, api.get_burst)
        )
        allowed, retry_after = await self.limiter.take(key.key_id, kind, per_minute, burst)
        if not allowed:
            raise DomainError(
                "rate_limited", "Rate limit exceeded. Back off and retry with the same request_id.", retry_after
            )
        return key
