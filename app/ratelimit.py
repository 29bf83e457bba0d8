"""Per-API-key token buckets, shared by every ingress replica through one named Ray actor."""

from __future__ import annotations

import time
from dataclasses import dataclass

import ray

ACTOR_NAME = "facereel-rate-limiter"


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


@ray.remote(num_cpus=0)
class RateLimiter:
    def __init__(self) -> None:
        self.buckets: dict[tuple[str, str], Bucket] = {}

    def take(self, key_id: str, kind: str, per_minute: float, burst: int) -> tuple[bool, float]:
        now = time.monotonic()
        bucket = self.buckets.setdefault((key_id, kind), Bucket(float(burst), now))
        return take(bucket, now, per_minute / 60.0, burst)


def limiter_actor():
    return RateLimiter.options(name=ACTOR_NAME, get_if_exists=True, lifetime="detached", namespace="facereel").remote()
