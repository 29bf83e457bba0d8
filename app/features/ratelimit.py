"""Per-API-key token buckets, shared by every ingress replica through one named Ray actor.

A replica takes tokens from the shared bucket a few at a time (a lease it spends locally for
up to ``api.rate_lease_s``), so a busy key costs one actor call per lease rather than one per
request. Tokens only ever come from the shared bucket, so no key gets more than its rate and
burst across all replicas; tokens a replica leased and did not spend in time are lost, which
can only refuse a request early, by at most a lease per replica. Keys with small rates (the
POST defaults) lease one token at a time, exactly as without leases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import ray

# The name changes with the actor's methods: the actor is detached, so one started by an
# older release would otherwise be found by name and lack them.
ACTOR_NAME = "facereel-rate-limiter-2"


@dataclass
class Bucket:
    tokens: float
    updated: float


def take(bucket: Bucket, now: float, rate_per_s: float, burst: int) -> tuple[bool, float]:
    """Spend one token; (allowed, seconds until one is available). Pure."""
    bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate_per_s)
    bucket.updated = now
    if bucket.tokens >= 1.0:
        bucket.tokens -= 1.0
        return True, 0.0
    return False, (1.0 - bucket.tokens) / rate_per_s


def take_up_to(bucket: Bucket, now: float, rate_per_s: float, burst: int, n: int) -> tuple[int, float]:
    """Spend up to ``n`` whole tokens; (how many, seconds until one is available when none
    was). Pure."""
    bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate_per_s)
    bucket.updated = now
    granted = min(n, math.floor(bucket.tokens))
    if granted >= 1:
        bucket.tokens -= granted
        return granted, 0.0
    return 0, (1.0 - bucket.tokens) / rate_per_s


def lease_size(per_minute: float, burst: int, lease_s: float, max_lease: int) -> int:
    """Tokens a replica takes at once: what the key earns in ``lease_s``, at most a tenth of
    its burst and ``max_lease``, at least one. Pure."""
    return max(1, min(max_lease, burst // 10, math.floor(per_minute / 60.0 * lease_s)))


class Buckets:
    """Every key's buckets (the shared actor's state; plain, so it can run in-process too)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[tuple[str, str], Bucket] = {}

    def _bucket(self, key_id: str, kind: str, burst: int, now: float) -> Bucket:
        return self.buckets.setdefault((key_id, kind), Bucket(float(burst), now))

    def take(self, key_id: str, kind: str, per_minute: float, burst: int) -> tuple[bool, float]:
        now = self.clock()
        return take(self._bucket(key_id, kind, burst, now), now, per_minute / 60.0, burst)

    def take_up_to(self, key_id: str, kind: str, per_minute: float, burst: int, n: int) -> tuple[int, float]:
        now = self.clock()
        return take_up_to(self._bucket(key_id, kind, burst, now), now, per_minute / 60.0, burst, n)


RateLimiter = ray.remote(num_cpus=0)(Buckets)


@dataclass
class Lease:
    tokens: int
    expires: float


class TokenLeases:
    """One replica's leased tokens, in front of the shared buckets.

    ``take_up_to`` is the shared buckets' method (an actor call in the app)."""

    def __init__(
        self,
        take_up_to: Callable[..., Awaitable[tuple[int, float]]],
        lease_s: float,
        max_lease: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.take_up_to = take_up_to
        self.clock = clock
        self.lease_s = lease_s
        self.max_lease = max_lease
        self.leases: dict[tuple[str, str], Lease] = {}

    async def take(self, key_id: str, kind: str, per_minute: float, burst: int) -> tuple[bool, float]:
        """(allowed, seconds until a token is available when not)."""
        now = self.clock()
        lease = self.leases.get((key_id, kind))
        if lease is not None and lease.tokens > 0 and lease.expires > now:
            lease.tokens -= 1
            return True, 0.0
        n = lease_size(per_minute, burst, self.lease_s, self.max_lease)
        granted, retry_after = await self.take_up_to(key_id, kind, per_minute, burst, n)
        if granted <= 0:
            self.leases.pop((key_id, kind), None)
            return False, retry_after
        if granted > 1:
            # Drop spent and expired leases now and then. Equivalent mutants: the bound is only
            # how much memory stale entries may hold, 10 000 or 10 001 is not behaviour.
            if len(self.leases) > 10_000:  # pragma: no mutate
                self.leases = {k: v for k, v in self.leases.items() if v.tokens > 0 and v.expires > now}
            self.leases[(key_id, kind)] = Lease(granted - 1, now + self.lease_s)
        else:
            self.leases.pop((key_id, kind), None)
        return True, 0.0


def limiter_actor():
    # Ray plumbing, run by the Ray suite (tests/test_api.py), not by the unit tests mutmut runs.
    # pragma: no mutate start
    return RateLimiter.options(name=ACTOR_NAME, get_if_exists=True, lifetime="detached", namespace="facereel").remote()
    # pragma: no mutate end
