"""Client-side rate limits: never more than N calls in any window, however the calls are spread.

Klaviyo counts each endpoint's calls in fixed 1 s and 60 s windows; our limiters keep a sliding
log, which is stricter: no span of the window's length may hold more than N calls, wherever
Klaviyo's window edges fall. The local limiter is checked on a virtual clock; the Redis one with
two instances (two "workers") sharing the suite's Redis database, against the real clock.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from klaviyo_consent.exceptions import ConfigurationError
from klaviyo_consent.ratelimit import (
    LIMITS,
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    get_limiter,
)
from tests.workers import REDIS_URL


def _busiest(times: Sequence[float], window: float) -> int:
    """Most calls within any span shorter than ``window`` (a call exactly W later is allowed)."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_the_local_limiter_lets_n_calls_through_then_waits_for_the_oldest_to_leave(
    virtual_time: Any,
) -> None:
    clock = virtual_time
    limiter = LocalRateLimiter({"op": ((3, 1.0),)}, margin=0, sleep=clock.sleep)
    for _ in range(3):
        limiter.acquire("op")
    assert clock.slept == []
    clock.now += 0.25
    limiter.acquire("op")
    # The fourth call waited until the first was a full window old.
    assert clock.slept == [pytest.approx(0.75, abs=1e-5)]
    assert clock.now == pytest.approx(1_001.0, abs=1e-5)


def test_the_local_limiter_never_allows_more_than_n_calls_in_any_burst_or_steady_window(
    virtual_time: Any,
) -> None:
    rng = random.Random(7)
    clock = virtual_time
    windows = ((5, 1.0), (20, 10.0))
    limiter = LocalRateLimiter({"op": windows}, sleep=clock.sleep)
    granted = []
    for _ in range(400):
        clock.now += rng.choice([0.0, 0.0, 0.01, 0.1, 0.5, 2.0])
        limiter.acquire("op")
        granted.append(clock.now)
    for limit, seconds in windows:
        assert _busiest(granted, seconds) == limit  # reached, never exceeded
    assert clock.slept, "the calls came faster than the limits: some had to wait"


def test_operations_without_a_published_limit_are_not_held_back(virtual_time: Any) -> None:
    clock = virtual_time
    limiter = LocalRateLimiter(sleep=clock.sleep)
    for _ in range(1000):
        limiter.acquire("create_webhook_not_limited_here")
    assert clock.slept == []


def test_time_scale_shrinks_every_window_alike() -> None:
    limiter = LocalRateLimiter(time_scale=4.0, margin=0)
    assert limiter.windows("bulk_subscribe_profiles") == ((75, 0.25), (750, 15.0))
    assert LIMITS["bulk_subscribe_profiles"] == ((75, 1.0), (750, 60.0))


def test_every_window_is_widened_by_the_transit_margin(settings) -> None:
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "RATE_LIMIT_MARGIN": 0.2}
    windows = LocalRateLimiter(time_scale=4.0).windows("bulk_subscribe_profiles")
    assert windows == (
        (75, pytest.approx(0.45)),
        (750, pytest.approx(15.2)),
    )


@pytest.mark.parametrize(
    ("spec", "kind"),
    [(None, type(None)), ("local", LocalRateLimiter), (REDIS_URL, RedisRateLimiter)],
)
def test_the_rate_limiter_setting_picks_the_limiter(settings: Any, spec: Any, kind: type) -> None:
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "RATE_LIMITER": spec}
    limiter = get_limiter()
    assert isinstance(limiter, kind)
    assert get_limiter() is limiter  # one per process, shared by its threads


def test_an_unknown_rate_limiter_setting_names_the_setting(settings: Any) -> None:
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "RATE_LIMITER": "memcached://x"}
    with pytest.raises(ConfigurationError, match="RATE_LIMITER"):
        get_limiter()


# --- Redis ---------------------------------------------------------------------------------


class _StampingTime:
    """``limits``' Redis storage stamps each call with ``time.time()``: remember this thread's
    last stamp (the score a granted call wrote to Redis)."""

    def __init__(self) -> None:
        self.last = threading.local()

    def time(self) -> float:
        now = time.time()
        if getattr(self.last, "value", None) is None:
            self.last.value = now  # the first stamp of a call: its shortest window's score
        return now


class RecordingRedisLimiter(RedisRateLimiter):
    """Remembers the timestamp of every call it let through (the score it wrote to Redis)."""

    def __init__(
        self,
        *args: Any,
        granted: list[float],
        lock: threading.Lock,
        stamps: _StampingTime,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.granted = granted
        self.lock = lock
        self._last = stamps.last

    def try_acquire(self, operation: str) -> float:
        self._last.value = None
        wait = super().try_acquire(operation)
        if wait <= 0:
            with self.lock:
                self.granted.append(self._last.value)
        return wait


def _hammer(limiters: Sequence[RateLimiter], operation: str, seconds: float) -> None:
    """Three threads per limiter call ``acquire`` as fast as they can for ``seconds``."""
    deadline = time.monotonic() + seconds

    def run(limiter: RateLimiter) -> None:
        while time.monotonic() < deadline:
            limiter.acquire(operation)

    threads = [threading.Thread(target=run, args=(lim,)) for lim in limiters for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.redis
def test_two_redis_limiters_sharing_redis_never_allow_more_than_n_calls_in_any_window(
    redis: None, monkeypatch: Any
) -> None:
    windows = ((10, 0.2), (30, 1.0))
    prefix = f"kc-test:{uuid.uuid4().hex}"
    granted: list[float] = []
    lock = threading.Lock()
    stamps = _StampingTime()
    monkeypatch.setattr("limits.storage.redis.time", stamps)
    first, second = (
        RecordingRedisLimiter(
            REDIS_URL,
            {"op": windows},
            margin=0,
            prefix=prefix,
            granted=granted,
            lock=lock,
            stamps=stamps,
        )
        for _ in range(2)
    )

    _hammer([first, second], "op", seconds=2.5)

    # 5 ms of slack: each worker stamps its call with its own reading of the clock.
    for limit, seconds in windows:
        assert _busiest(granted, seconds - 0.005) <= limit
    # Six threads would make thousands of calls; the shared log held them to the limits ...
    assert len(granted) <= 30 * 3 + 10
    # ... and let through about as many as the limits allow (30 a second), not a trickle.
    assert len(granted) >= 0.8 * 30 * 2.5


@pytest.mark.redis
def test_redis_limiters_with_different_prefixes_do_not_share_a_budget(redis: None) -> None:
    windows = ((5, 60.0),)
    sleeps: list[float] = []
    one = RedisRateLimiter(REDIS_URL, {"op": windows}, prefix="kc-test:a", sleep=sleeps.append)
    other = RedisRateLimiter(REDIS_URL, {"op": windows}, prefix="kc-test:b", sleep=sleeps.append)
    for _ in range(5):
        one.acquire("op")
        other.acquire("op")
    assert sleeps == []
    assert one.try_acquire("op") > 0
