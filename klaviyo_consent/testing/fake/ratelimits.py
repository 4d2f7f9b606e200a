"""The fake's rate limits: Klaviyo's published per-operation limits, enforced as Klaviyo does."""

from __future__ import annotations

import math
from collections.abc import Callable

from klaviyo_consent import klaviyo
from klaviyo_consent.testing.fake.errors import _Problem, error_object

RateLimit = klaviyo.RateLimit
#: Published limits of each operation the fake serves (:data:`klaviyo_consent.klaviyo.RATE_LIMITS`).
RATE_LIMITS: dict[str, RateLimit] = klaviyo.RATE_LIMITS

_WINDOWS = ((klaviyo.BURST_SECONDS, "burst"), (klaviyo.STEADY_SECONDS, "steady"))


class RateLimited:
    """Klaviyo's fixed burst and steady windows per operation, counted in simulated seconds."""

    rate_limits: dict[str, RateLimit]
    enforce_rate_limits: bool
    time_scale: float
    clock: Callable[[], float]
    throttled: int
    _windows: dict[tuple[str, float], list[float]]

    def _take_quota(self, operation: str) -> dict[str, str]:
        """Count one request against the operation's fixed windows, or raise a 429.

        Windows are measured in simulated seconds, ``clock() * time_scale``. Header values
        (``Retry-After``, ``RateLimit-Reset``) are real seconds: the simulated time left in
        the window divided by ``time_scale``, rounded up, and at least 1, so a client that
        sleeps for them lands in the next window.
        """
        limits = self.rate_limits.get(operation)
        if not self.enforce_rate_limits or limits is None:
            return {}
        moment = self.clock() * self.time_scale
        windows = []
        for seconds, name in _WINDOWS:
            index = moment // seconds
            key = (operation, seconds)
            window = self._windows.get(key)
            if window is None or window[0] != index:
                window = self._windows[key] = [index, 0]
            reset = max(1, math.ceil(((index + 1) * seconds - moment) / self.time_scale))
            windows.append((window, getattr(limits, name), reset))
        full = [reset for window, limit, reset in windows if window[1] >= limit]
        if full:
            self.throttled += 1
            retry_after = max(full)
            plural = "" if retry_after == 1 else "s"
            detail = f"Request was throttled. Expected available in {retry_after} second{plural}."
            raise _Problem(429, [error_object(429, detail)], {"Retry-After": str(retry_after)})
        for window, _limit, _reset in windows:
            window[1] += 1
        window, limit, reset = min(windows, key=lambda item: item[1] - item[0][1])
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(limit - int(window[1])),
            "RateLimit-Reset": str(reset),
        }
