"""Client-side rate limits that follow Klaviyo's published per-endpoint limits.

Klaviyo counts requests per account in two fixed windows: burst (1 s) and steady (1 min). We keep
a sliding log instead, which never lets *any* 1 s or 60 s span exceed the limit, so however
Klaviyo's windows are aligned we stay inside them. ``RATE_LIMITER`` chooses where the log lives:
``"local"`` (this process) or a ``redis://`` URL (shared by every worker of the site).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import ConfigurationError

#: operation -> ((calls, seconds), ...) from the spec's x-klaviyo-ratelimit (revision 2026-07-15).
LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    "bulk_subscribe_profiles": ((75, 1.0), (750, 60.0)),
    "bulk_unsubscribe_profiles": ((75, 1.0), (750, 60.0)),
    "bulk_suppress_profiles": ((75, 1.0), (750, 60.0)),
    "bulk_unsuppress_profiles": ((75, 1.0), (750, 60.0)),
    "get_profiles": ((75, 1.0), (750, 60.0)),
    "get_list": ((75, 1.0), (750, 60.0)),
    "get_lists": ((75, 1.0), (750, 60.0)),
}


class RateLimiter:
    """Blocks in ``acquire`` until a call to ``operation`` fits every window."""

    def __init__(
        self,
        limits: dict[str, tuple[tuple[int, float], ...]] | None = None,
        *,
        time_scale: float = 1.0,
        margin: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = limits or LIMITS
        self.time_scale = time_scale
        if margin is None:
            margin = consent_settings.RATE_LIMIT_MARGIN
        self.margin = margin
        self.clock = clock
        self.sleep = sleep

    def windows(self, operation: str) -> tuple[tuple[int, float], ...]:
        """Each window in real seconds, widened by ``margin``: we count a request when it
        leaves, Klaviyo when it arrives, so one sent at the very end of our window could land
        at the start of Klaviyo's next one, or the other way round."""
        return tuple(
            (n, seconds / self.time_scale + self.margin)
            for n, seconds in self.limits.get(operation, ())
        )

    def acquire(self, operation: str) -> None:
        windows = self.windows(operation)
        if not windows:
            return
        while True:
            wait = self.try_acquire(operation, windows)
            if wait <= 0:
                return
            self.sleep(wait)

    def acquire_now(self, operation: str) -> bool:
        """Record a call if it fits every window now and return True; never wait."""
        windows = self.windows(operation)
        return not windows or self.try_acquire(operation, windows) <= 0

    def try_acquire(self, operation: str, windows: tuple[tuple[int, float], ...]) -> float:
        """Record a call and return 0, or return how long to wait before trying again."""
        raise NotImplementedError("subclasses of RateLimiter must provide try_acquire()")


class LocalRateLimiter(RateLimiter):
    """In-process sliding log; right for one worker process."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._logs: dict[str, deque[float]] = {}

    def try_acquire(self, operation: str, windows: tuple[tuple[int, float], ...]) -> float:
        longest = max(seconds for _, seconds in windows)
        with self._lock:
            now = self.clock()
            log = self._logs.setdefault(operation, deque())
            while log and log[0] <= now - longest:
                log.popleft()
            wait = 0.0
            for limit, seconds in windows:
                recent = [t for t in log if t > now - seconds] if seconds != longest else log
                if len(recent) >= limit:
                    wait = max(wait, recent[-limit] + seconds - now)
            if wait <= 0:
                log.append(now)
            return wait


_REDIS_SCRIPT = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local wait = 0
local n = (#ARGV - 2) / 2
for i = 1, n do
  local limit = tonumber(ARGV[1 + 2 * i])
  local window = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], -limit, -limit, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait then wait = w end
  end
end
if wait <= 0 then
  for i = 1, n do
    redis.call('ZADD', KEYS[i], now, member)
    redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[2 + 2 * i]) * 1000) + 1000)
  end
end
return tostring(wait)
"""


class RedisRateLimiter(RateLimiter):
    """Sliding log in Redis sorted sets, checked and written atomically by one Lua script."""

    def __init__(self, url: str, *args, prefix: str = "klaviyo_consent:rl", **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        import redis

        self.redis = redis.Redis.from_url(url)
        self.prefix = prefix
        self._script = self.redis.register_script(_REDIS_SCRIPT)

    def try_acquire(self, operation: str, windows: tuple[tuple[int, float], ...]) -> float:
        keys = [f"{self.prefix}:{operation}:{seconds:g}" for _, seconds in windows]
        args: list[object] = [repr(self.clock()), uuid.uuid4().hex]
        for limit, seconds in windows:
            args += [limit, repr(seconds)]
        return float(self._script(keys=keys, args=args))


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
