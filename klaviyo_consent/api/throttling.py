"""Rate limits of the app's endpoints: DRF scoped throttles with defaults a site can raise.

Each view names a scope; the rate is read from DRF's own setting, as for any scoped throttle::

    REST_FRAMEWORK = {
        "DEFAULT_THROTTLE_RATES": {
            "klaviyo_consent_write": "600/min",   # subscribe, unsubscribe, suppress, ...
            "klaviyo_consent_check": "120/min",   # check/
            "klaviyo_consent_webhook": None,      # None: no limit
            "klaviyo_consent_public": "10/min",   # the drop-in form and public/subscribe/
        },
    }

A scope the setting does not name uses :data:`DEFAULT_RATES` (DRF's own ``ScopedRateThrottle``
would raise ``ImproperlyConfigured`` instead). Requests are counted per user when
authenticated, else per client IP (DRF's ``get_ident``: ``REMOTE_ADDR``, or
``X-Forwarded-For`` as far as ``NUM_PROXIES`` allows), in Django's default cache. The site's
own ``DEFAULT_THROTTLE_CLASSES`` still apply on top.
"""

from __future__ import annotations

from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

WRITE = "klaviyo_consent_write"
CHECK = "klaviyo_consent_check"
WEBHOOK = "klaviyo_consent_webhook"
#: The public signup paths (the drop-in form and ``public/subscribe/``): one budget per IP.
PUBLIC = "klaviyo_consent_public"

#: Rates when ``DEFAULT_THROTTLE_RATES`` names no rate for the scope: enough for a signup form
#: and a support desk, low enough that a script cannot enumerate people or flood the outbox.
#: Webhooks come from Klaviyo's few servers in bursts, so their limit is higher.
DEFAULT_RATES: dict[str, str | None] = {
    WRITE: "60/min",
    CHECK: "30/min",
    WEBHOOK: "600/min",
    PUBLIC: "10/min",
}


class ConsentRateThrottle(ScopedRateThrottle):
    """``ScopedRateThrottle`` reading the rate live from ``DEFAULT_THROTTLE_RATES`` (so
    ``override_settings`` works), falling back to :data:`DEFAULT_RATES`."""

    def get_rate(self) -> str | None:
        rates = api_settings.DEFAULT_THROTTLE_RATES or {}
        if self.scope in rates:
            return rates[self.scope]
        return DEFAULT_RATES.get(self.scope)


class ThrottledMixin:
    """For the app's APIViews: the site's throttles, then the view's ``throttle_scope``."""

    throttle_scope: str = WRITE

    def get_throttles(self) -> list[Any]:
        return [*super().get_throttles(), ConsentRateThrottle()]  # type: ignore[misc]


class PublicSignupThrottle(ConsentRateThrottle):
    """The :data:`PUBLIC` scope, counted per client IP even for a logged-in visitor; usable on
    a Django view too (``allow_request(request, None)``), so the drop-in form and the JSON
    endpoint spend one budget."""

    scope = PUBLIC

    def allow_request(self, request: Any, view: Any) -> bool:
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super(ScopedRateThrottle, self).allow_request(request, view)

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
