"""One settings door for the app, in the manner of DRF's ``api_settings``.

Settings live in one dict::

    KLAVIYO_CONSENT = {
        "API_KEY": env("KLAVIYO_PRIVATE_API_KEY"),
        "DEFAULT_LIST_ID": "Y6nRLr",
    }

and are read as ``consent_settings.API_KEY``. ``DEFAULTS`` below is the documentation: every key,
its default and why. Unknown keys raise, dotted paths are imported lazily, and the object reloads
when a test overrides ``KLAVIYO_CONSENT``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from klaviyo_consent import klaviyo
from klaviyo_consent.exceptions import ConfigurationError

DEFAULTS: dict[str, Any] = {
    # Private API key (``pk_…``). Sent only in the Authorization header, never logged.
    "API_KEY": None,
    # Public API key (site id, "company id") for the client backend
    # (klaviyo_consent.backends.client.ClientBackend): Create Client Subscription only.
    "PUBLIC_API_KEY": None,
    # Klaviyo's base URL; point it at ``manage.py klaviyo_consent_fake_server`` to test over
    # real HTTP.
    "API_URL": klaviyo.BASE_URL,
    # The API revision every request pins; bump deliberately, after reading Klaviyo's changelog.
    "REVISION": klaviyo.REVISION,
    # List every subscribe job adds profiles to when the caller names none (None: no list).
    "DEFAULT_LIST_ID": None,
    # Dotted path to the backend, like EMAIL_BACKEND. The fake answers in-process, offline.
    "BACKEND": "klaviyo_consent.backends.http.KlaviyoBackend",
    # Keyword arguments for the backend's constructor (e.g. the fake's ``sms_countries``).
    "BACKEND_OPTIONS": {},
    # Seconds for connect and read on each HTTP request.
    "TIMEOUT": 10.0,
    # ISO codes where Klaviyo texts; SMS consent elsewhere is refused with a 400.
    "SMS_COUNTRIES": klaviyo.SMS_COUNTRIES,
    # ISO codes where THIS account has an SMS sending number (a subset of SMS_COUNTRIES, which
    # is where Klaviyo texts at all). None: assume a number in every SMS_COUNTRIES country.
    # SMS consent for a country without one is refused with a 400: Klaviyo refuses it too
    # (revision 2024-05-15 on) or drops it silently (older revisions).
    "SMS_SENDING_COUNTRIES": None,
    # Region used to parse national-format phone numbers when the input gives no country
    # (``profile.country``, the CSV ``country`` column); None: only +E.164 input is accepted.
    "DEFAULT_PHONE_REGION": None,
    # DRF permission classes guarding the write endpoints (subscribe/unsubscribe).
    "WRITE_PERMISSION_CLASSES": ("rest_framework.permissions.IsAuthenticated",),
    # Seconds to wait after Klaviyo accepts a job before reading the profiles back.
    "VERIFY_DELAY": 30.0,
    # How many times a pushed event is re-read before its verdict becomes not_applied/unknown.
    "VERIFY_ATTEMPTS": 5,
    # Seconds a double opt-in may wait for the person to confirm (default 3 days). Re-reads
    # back off (VERIFY_DELAY doubling, at most 12 h apart); past the window the verdict is
    # not_applied "the person never confirmed" (a later read-back showing consent applies it).
    "CONFIRMATION_WINDOW": 3 * 24 * 3600.0,
    # Attempts (5xx, timeouts, dropped connections) before an event goes dead-letter; 429s and
    # refusals of the request itself (401/403, no profile named) never count.
    "MAX_ATTEMPTS": 10,
    # Retry n waits a random time in [b·2ⁿ/2, b·2ⁿ] seconds (full jitter), capped; a 429's
    # Retry-After is a floor under it. 429s and refusals of the request itself (401/403, no
    # profile named) count as n too but never spend MAX_ATTEMPTS.
    "RETRY_BACKOFF_BASE": 2.0,
    "RETRY_BACKOFF_MAX": 900.0,
    # Seconds a worker owns the rows it claimed; a crashed worker's rows are reclaimed after it.
    "LEASE_SECONDS": 300.0,
    # Push through the Django Tasks framework on commit (False: only klaviyo_consent_sync pushes).
    "PUSH_ON_COMMIT": True,
    # Requests a push may make when it runs inside the signup (the immediate task backend):
    # such a push never waits for rate limits or Retry-After either; the rest stays queued.
    "PUSH_ON_COMMIT_MAX_REQUESTS": 4,
    # Seconds such a push may spend on Klaviyo in all; each request gets only what is left as
    # its timeout, so a Klaviyo that hangs does not hold the signup for TIMEOUT per request.
    "PUSH_ON_COMMIT_MAX_SECONDS": 1.0,
    # Task backend alias in TASKS used to enqueue pushes.
    "TASK_BACKEND": "default",
    # Dotted path to a function of no arguments that enqueues the push after a commit, for a
    # site whose workers are not Django Tasks': "klaviyo_consent.celery.enqueue_push" (Celery).
    # None: tasks.sync_outbox on the Tasks backend TASK_BACKEND.
    "ENQUEUE_PUSH": None,
    # Client-side rate limiter: None (off), "local" (this process) or a redis:// URL (shared by
    # every worker of the site, so together they stay inside the account's limits).
    "RATE_LIMITER": "local",
    # Real seconds added to each rate window, for the time a request takes to reach Klaviyo.
    "RATE_LIMIT_MARGIN": 0.1,
    # Shared secret Klaviyo signs webhooks with (the webhook's secret_key).
    "WEBHOOK_SECRET": None,
    # Seconds a webhook's Klaviyo-Timestamp may be old before it counts as a replay.
    "WEBHOOK_TOLERANCE": 300,
    # The ledger's Ed25519 signing key for checkpoints (docs/receipts.md): a PEM PKCS#8 private
    # key, or the base64 of its raw 32-byte seed. Required in production (check E010).
    "LEDGER_SIGNING_KEY": None,
    # Base64 public keys of retired signing keys: checkpoints they signed stay verifiable.
    "LEDGER_VERIFY_KEYS": (),
    # Secret keying the HMAC-SHA256 digests of identifiers in the ledger. None: derived from
    # SECRET_KEY (rotating SECRET_KEY then makes old digests uncheckable: set this instead).
    "LEDGER_SECRET": None,
    # Seconds between the checkpoints klaviyo_consent_sync --loop makes when events were added
    # (None: the loop makes none).
    "CHECKPOINT_INTERVAL": 300.0,
    # Seconds a transaction recording consent may stay open. The checkpointer searches for
    # newly committed events among ids above the largest id it saw this long ago; an event
    # committing later than this after its insert would be missed (klaviyo_consent_verify
    # names any such event).
    "LEDGER_COMMIT_HORIZON": 3600.0,
    # Days evidence (IP address, user agent, page URL) is kept: older evidence is erased by
    # `klaviyo_consent_erase --expired-evidence` and each `klaviyo_consent_sync --loop`
    # checkpoint round, the consent and its proof kept (docs/erasure.md). None: kept forever.
    "EVIDENCE_RETENTION_DAYS": None,
    # The data controller named on every receipt (ISO/IEC TS 27560 / Kantara piiControllers).
    "CONTROLLER": {"name": "", "contact": "", "address": "", "url": ""},
}

IMPORT_STRINGS = ("BACKEND", "WRITE_PERMISSION_CLASSES", "ENQUEUE_PUSH")


def _import(value: Any, setting: str) -> Any:
    if isinstance(value, str):
        try:
            return import_string(value)
        except ImportError as exc:
            raise ConfigurationError(
                f"Could not import {value!r} for KLAVIYO_CONSENT[{setting!r}]: {exc}"
            ) from exc
    if isinstance(value, (list, tuple)):
        return [_import(item, setting) for item in value]
    return value


class ConsentSettings:
    """Lazy, cached view over ``settings.KLAVIYO_CONSENT`` with validated keys."""

    def __init__(self, user_settings: dict[str, Any] | None = None) -> None:
        self._explicit = user_settings
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        if not hasattr(self, "_user_settings"):
            # The dict (and its API_KEY) is never a local variable of a frame that raises: the
            # DEBUG=True error page prints every local.
            unknown = sorted(set(self._given()) - set(DEFAULTS))
            if unknown:
                raise ConfigurationError(
                    f"Unknown KLAVIYO_CONSENT setting(s): {', '.join(unknown)}. "
                    f"Known settings: {', '.join(sorted(DEFAULTS))}."
                )
            self._user_settings = dict(self._given())
        return self._user_settings

    def _given(self) -> dict[str, Any]:
        if self._explicit is not None:
            return self._explicit
        return getattr(settings, "KLAVIYO_CONSENT", {}) or {}

    def __getattr__(self, attr: str) -> Any:
        if attr not in DEFAULTS:
            raise AttributeError(f"Invalid KLAVIYO_CONSENT setting: {attr!r}")
        value = self.user_settings.get(attr, DEFAULTS[attr])
        if attr in IMPORT_STRINGS:
            value = _import(value, attr)
        if attr == "SMS_COUNTRIES" or (attr == "SMS_SENDING_COUNTRIES" and value is not None):
            value = frozenset(code.upper() for code in value)
        self._cached.add(attr)
        setattr(self, attr, value)
        return value

    def reload(self) -> None:
        for attr in self._cached:
            delattr(self, attr)
        self._cached.clear()
        if hasattr(self, "_user_settings"):
            delattr(self, "_user_settings")


consent_settings = ConsentSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "KLAVIYO_CONSENT":
        consent_settings.reload()


setting_changed.connect(_reload)
