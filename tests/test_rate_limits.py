"""Token buckets of the API keys' rate limits (app/features/ratelimit.py): refill, waits, whole tokens,
the shared buckets per key and kind, and one replica's leases. Time is a clock the test sets."""

from __future__ import annotations

import asyncio

import pytest

from app.features.ratelimit import Bucket, Buckets, TokenLeases, lease_size, take, take_up_to


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_refill_counts_from_the_last_update_not_from_zero():
    b = Bucket(tokens=0.0, updated=10.0)
    assert take(b, 11.5, rate_per_s=2.0, burst=5) == (True, 0.0)  # 1.5 s at 2/s: 3 tokens
    assert b.tokens == pytest.approx(2.0) and b.updated == 11.5
    b = Bucket(tokens=0.0, updated=10.0)
    assert take_up_to(b, 11.5, rate_per_s=2.0, burst=5, n=5) == (3, 0.0)
    assert b.tokens == pytest.approx(0.0) and b.updated == 11.5


def test_refill_never_passes_the_burst():
    b = Bucket(tokens=1.0, updated=0.0)
    assert take(b, 1000.0, rate_per_s=1.0, burst=3) == (True, 0.0)
    assert b.tokens == pytest.approx(2.0)
    b = Bucket(tokens=1.0, updated=0.0)
    assert take_up_to(b, 1000.0, rate_per_s=1.0, burst=3, n=10) == (3, 0.0)


def test_the_wait_is_the_time_to_earn_what_is_missing_of_one_token():
    b = Bucket(tokens=0.25, updated=0.0)
    allowed, wait = take(b, 0.0, rate_per_s=0.5, burst=4)
    assert not allowed and wait == pytest.approx(1.5)  # 0.75 token at 0.5/s
    b = Bucket(tokens=0.25, updated=0.0)
    granted, wait = take_up_to(b, 0.0, rate_per_s=0.5, burst=4, n=3)
    assert granted == 0 and wait == pytest.approx(1.5)
    assert b.tokens == pytest.approx(0.25)  # a refusal spends nothing


def test_exactly_one_token_is_granted():
    b = Bucket(tokens=1.0, updated=0.0)
    assert take(b, 0.0, rate_per_s=1.0, burst=4) == (True, 0.0)
    assert b.tokens == pytest.approx(0.0)
    b = Bucket(tokens=1.0, updated=0.0)
    assert take_up_to(b, 0.0, rate_per_s=1.0, burst=4, n=3) == (1, 0.0)
    assert b.tokens == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("per_minute", "burst", "lease_s", "expected"),
    [(600.0, 25, 10.0, 2), (600.0, 29, 10.0, 2), (150.0, 1000, 2.0, 5)],
    ids=["tenth-of-burst-floors", "tenth-of-burst-floors-29", "earned-in-lease-floors"],
)
def test_lease_size_counts_whole_tokens(per_minute: float, burst: int, lease_s: float, expected: int):
    assert lease_size(per_minute, burst, lease_s, max_lease=50) == expected


def test_shared_buckets_start_full_and_refill_at_the_rate_per_minute():
    clock = Clock()
    shared = Buckets(clock)
    assert [shared.take("k", "get", 30.0, 2)[0] for _ in range(3)] == [True, True, False]
    clock.now += 1.0  # half a token at 30 a minute
    allowed, wait = shared.take("k", "get", 30.0, 2)
    assert not allowed and wait == pytest.approx(1.0)
    clock.now += 1.0
    assert shared.take("k", "get", 30.0, 2) == (True, 0.0)


def test_shared_buckets_are_per_key_and_per_kind():
    shared = Buckets(Clock())
    assert shared.take_up_to("k", "get", 60.0, 3, 3) == (3, 0.0)
    granted, wait = shared.take_up_to("k", "get", 60.0, 3, 3)
    assert granted == 0 and wait == pytest.approx(1.0)  # one a second
    assert shared.take_up_to("k", "post", 60.0, 3, 3) == (3, 0.0)
    assert shared.take_up_to("other", "get", 60.0, 3, 3) == (3, 0.0)
    assert shared.take("k", "get", 60.0, 3)[0] is False
    assert shared.take("k2", "get", 60.0, 3) == (True, 0.0)


class Shared:
    """The shared buckets as a replica reaches them (an awaited call), counting the calls."""

    def __init__(self, clock: Clock) -> None:
        self.buckets = Buckets(clock)
        self.calls: list[tuple] = []

    async def take_up_to(self, *args: object) -> tuple[int, float]:
        self.calls.append(args)
        return self.buckets.take_up_to(*args)  # type: ignore[arg-type]


def takes(replica: TokenLeases, n: int, key: str = "key", per_minute: float = 600.0, burst: int = 100) -> list:
    async def run() -> list:
        return [await replica.take(key, "get", per_minute, burst) for _ in range(n)]

    return asyncio.run(run())


def test_a_lease_of_two_saves_one_call():
    clock = Clock()
    shared = Shared(clock)
    replica = TokenLeases(shared.take_up_to, lease_s=1.0, max_lease=2, clock=clock)
    assert takes(replica, 4, per_minute=600.0, burst=100) == [(True, 0.0)] * 4
    assert [c[4] for c in shared.calls] == [2, 2]  # two leases of two tokens


def test_small_rates_lease_one_token_at_a_time_and_keep_no_lease():
    clock = Clock()
    shared = Shared(clock)
    replica = TokenLeases(shared.take_up_to, lease_s=1.0, max_lease=50, clock=clock)
    assert takes(replica, 3, per_minute=60.0, burst=3) == [(True, 0.0)] * 3  # lease size 1
    assert len(shared.calls) == 3 and replica.leases == {}
    allowed, wait = takes(replica, 1, per_minute=60.0, burst=3)[0]
    assert not allowed and wait == pytest.approx(1.0)


def test_a_lease_expires_after_lease_s_and_its_tokens_are_lost():
    clock = Clock()
    shared = Shared(clock)
    replica = TokenLeases(shared.take_up_to, lease_s=2.0, max_lease=50, clock=clock)
    assert takes(replica, 1, per_minute=600.0, burst=100) == [(True, 0.0)]  # a lease of 10: 9 left
    clock.now += 1.5
    assert takes(replica, 1) == [(True, 0.0)] and len(shared.calls) == 1
    clock.now += 0.5  # exactly lease_s after it was taken
    assert takes(replica, 1) == [(True, 0.0)] and len(shared.calls) == 2


def test_a_single_token_grant_or_a_refusal_forgets_the_keys_spent_lease():
    clock = Clock()
    shared = Shared(clock)
    replica = TokenLeases(shared.take_up_to, lease_s=3600.0, max_lease=50, clock=clock)
    # 6 a minute, burst 21: ten leases of 2 tokens, then the last token alone.
    assert [ok for ok, _ in takes(replica, 21, per_minute=6.0, burst=21)] == [True] * 21
    assert len(shared.calls) == 11 and ("key", "get") not in replica.leases
    allowed, wait = takes(replica, 1, per_minute=6.0, burst=21)[0]
    assert not allowed and wait == pytest.approx(10.0)
    assert len(shared.calls) == 12 and ("key", "get") not in replica.leases
    # Burst 20: the tenth lease is spent when the refusal comes.
    assert [ok for ok, _ in takes(replica, 21, key="k2", per_minute=6.0, burst=20)] == [True] * 20 + [False]
    assert ("k2", "get") not in replica.leases


def test_a_replica_leases_each_kind_of_a_key_from_its_own_bucket():
    clock = Clock()
    shared = Shared(clock)
    replica = TokenLeases(shared.take_up_to, lease_s=3600.0, max_lease=50, clock=clock)

    async def run(kind: str, n: int) -> list[bool]:
        return [(await replica.take("key", kind, 6.0, 20))[0] for _ in range(n)]

    assert asyncio.run(run("get", 21)) == [True] * 20 + [False]
    assert asyncio.run(run("post", 20)) == [True] * 20
    assert {c[1] for c in shared.calls} == {"get", "post"}


def test_many_keys_drop_spent_and_expired_leases_and_keep_live_ones():
    clock = Clock()
    shared = Shared(clock)
    replica = TokenLeases(shared.take_up_to, lease_s=10.0, max_lease=2, clock=clock)

    async def run() -> None:
        for i in range(5000):  # expired before the prune
            await replica.take(f"old{i}", "get", 600.0, 100)
        clock.now += 5.0
        for i in range(5000):  # spent: both tokens of the lease used, not expired
            await replica.take(f"spent{i}", "get", 600.0, 100)
            await replica.take(f"spent{i}", "get", 600.0, 100)
        await replica.take("live", "get", 600.0, 100)  # one token left on its lease
        clock.now += 5.0  # the "old" leases expire now; "live" and "spent" have 5 s left
        await replica.take("new", "get", 600.0, 100)  # more than 10 000 leases: prune

    asyncio.run(run())
    assert set(replica.leases) == {("live", "get"), ("new", "get")}
    calls = len(shared.calls)
    assert takes(replica, 1, key="live") == [(True, 0.0)] and len(shared.calls) == calls
