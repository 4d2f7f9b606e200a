"""Client-side rate limits that follow Klaviyo's published per-endpoint limits.

Klaviyo counts requests per account in two fixed windows: burst (1 s) and steady (1 min). We use
the ``limits`` library's moving window instead, which never lets *any* 1 s or 60 s span exceed the
limit, so however Klaviyo's windows are aligned we stay inside them. ``RATE_LIMITER`` chooses the
storage: ``"local"`` (``limits``' memory storage: this process) or a ``redis://`` URL (its Redis
storage: shared by every worker of the site). The limits themselves are Klaviyo's, kept as data
in ``LIMITS``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from limits import RateLimitItem
from limits.limits import Granularity
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from klaviyo_consent import klaviyo
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import ConfigurationError

#: operation -> ((calls, seconds), ...): Klaviyo's published limits (klaviyo.RATE_LIMITS).
LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    operation: limit.windows()
    for operation, limit in {**klaviyo.RATE_LIMITS, **klaviyo.ADDITIONAL_FIELD_RATE_LIMITS}.items()
}

#: Added to a computed wait: ``limits`` counts a call exactly one window old as still inside it.
_EDGE = 1e-6
#: The shortest wait reported when a window refused a call it had room for (another worker
#: took the slot between the check and the hit): try again almost at once.
_RETRY_SOON = 0.001


class _Window(RateLimitItem):
    """``amount`` calls per ``multiples`` seconds, fractions allowed (scaled or widened)."""

    GRANULARITY = Granularity(1, "klaviyo-consent-second")

    def __init__(self, amount: int, seconds: float, namespace: str) -> None:
        super().__init__(amount, 1, namespace)
        self.multiples = seconds  # type: ignore[assignment] # limits would round it to an int


class _RedisStorage(RedisStorage):
    """``limits``' Redis storage, its own moving-window script with the key's lifetime set in
    milliseconds (``PEXPIRE``): ``EXPIRE`` takes whole seconds, and our windows are widened by
    ``RATE_LIMIT_MARGIN`` (1.1 s, 60.1 s) or scaled for benchmarks."""

    SCRIPT_ACQUIRE_MOVING_WINDOW = RedisStorage.SCRIPT_ACQUIRE_MOVING_WINDOW.replace(
        b"redis.call('expire', KEYS[1], expiry)",
        b"redis.call('pexpire', KEYS[1], math.ceil(expiry * 1000))",
    )


class _MemoryStorage(MemoryStorage):
    """``limits``' memory storage, dropping expired entries in the calling thread at most once a
    second, instead of starting a timer thread every 10 ms: a thread start per request slowed a
    pushing worker to a third of the steady limit (benchmarks/README.md, sustained_rate)."""

    _expired_at = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.time()
        if now - self._expired_at >= 1.0:
            self._expired_at = now
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


if b"pexpire" not in _RedisStorage.SCRIPT_ACQUIRE_MOVING_WINDOW or not hasattr(
    MemoryStorage, "_MemoryStorage__schedule_expiry"
):  # pragma: no cover
    raise ImportError("limits' storages changed: review klaviyo_consent.ratelimit")


class RateLimiter:
    """Blocks in ``acquire`` until a call to ``operation`` fits every window.

    ``storage`` is a ``limits`` storage; the waiting (``sleep``) is ours, so a push that must not
    wait uses ``acquire_now`` instead (``limits``' hit never blocks).
    """

    def __init__(
        self,
        storage: Storage,
        limits: dict[str, tuple[tuple[int, float], ...]] | None = None,
        *,
        time_scale: float = 1.0,
        margin: float | None = None,
        namespace: str = "klaviyo_consent",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = limits or LIMITS
        self.time_scale = time_scale
        self.margin = consent_settings.RATE_LIMIT_MARGIN if margin is None else margin
        self.namespace = namespace
        self.sleep = sleep
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self._items: dict[str, list[_Window]] = {}

    def windows(self, operation: str) -> tuple[tuple[int, float], ...]:
        """Each window in real seconds, widened by ``margin``: we count a request when it
        leaves, Klaviyo when it arrives, so one sent at the very end of our window could land
        at the start of Klaviyo's next one, or the other way round."""
        return tuple(
            (n, seconds / self.time_scale + self.margin)
            for n, seconds in self.limits.get(operation, ())
        )

    def acquire(self, operation: str) -> None:
        while True:
            wait = self.try_acquire(operation)
            if wait <= 0:
                return
            self.sleep(wait)

    def acquire_now(self, operation: str) -> bool:
        """Record a call if it fits every window now and return True; never wait."""
        return self.try_acquire(operation) <= 0

    def try_acquire(self, operation: str) -> float:
        """Record a call and return 0, or return how long to wait before trying again.

        The shortest window is hit first: a call it refuses spends nothing in the longer ones
        (the steady minute is what bounds a sustained push). A longer window's refusal leaves
        the slot taken in the shorter one, which only errs on the safe side; testing every
        window before hitting it would double the round trips to Redis.
        """
        items = self._items.get(operation)
        if items is None:
            items = self._items[operation] = [
                _Window(n, seconds, namespace=self.namespace)
                for n, seconds in sorted(self.windows(operation), key=lambda w: w[1])
            ]
        for item in items:
            if not self.strategy.hit(item, operation):
                return self._wait(item, operation)
        return 0.0

    def _wait(self, item: _Window, operation: str) -> float:
        stats = self.strategy.get_window_stats(item, operation)
        if stats.remaining > 0:
            return _RETRY_SOON
        return max(stats.reset_time - time.time() + _EDGE, _RETRY_SOON)


class LocalRateLimiter(RateLimiter):
    """``limits``' memory storage: one process, shared by its threads."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(_MemoryStorage(), *args, **kwargs)


class RedisRateLimiter(RateLimiter):
    """``limits``' Redis storage: one budget shared by every worker that names the same Redis."""

    def __init__(self, url: str, *args, prefix: str = "klaviyo_consent:rl", **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(_RedisStorage(url, key_prefix=prefix), *args, **kwargs)


_limiter_lock = threading.Lock()
_limiters: dict[object, RateLimiter | None] = {}


def get_limiter() -> RateLimiter | None:
    """The limiter ``RATE_LIMITER`` names, one per process (it is shared by its threads)."""
    spec = consent_settings.RATE_LIMITER
    with _limiter_lock:
        if spec not in _limiters:
            _limiters[spec] = _build(spec)
        return _limiters[spec]


def reset_limiters() -> None:
    """Forget every process-wide limiter, so the next call builds a fresh one.

    The ``klaviyo_fake`` fixture calls it: each test's fake starts with an empty quota, and so
    must the client's limiter, or one test's requests make another test's push wait.
    """
    with _limiter_lock:
        _limiters.clear()


def _build(spec: object) -> RateLimiter | None:
    if spec is None:
        return None
    if isinstance(spec, RateLimiter):
        return spec
    if spec == "local":
        return LocalRateLimiter()
    if isinstance(spec, str) and spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisRateLimiter(spec)
    raise ConfigurationError(
        f'KLAVIYO_CONSENT["RATE_LIMITER"] must be None, "local" or a redis:// URL, not {spec!r}.'
    )
