"""One exception tree. Messages quote Klaviyo's ``errors[].detail``; they never contain the key."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation


class KlaviyoConsentError(Exception):
    """Root of every error this app raises."""


class ConfigurationError(KlaviyoConsentError, ImproperlyConfigured):
    """A KLAVIYO_CONSENT setting is missing or wrong."""


class ConsentValidationError(KlaviyoConsentError, ValueError):
    """Input that cannot become a consent event; ``field`` names what is wrong."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidPhoneNumber(ConsentValidationError):
    """phonenumbers cannot turn the input into a valid E.164 number."""


class UnsupportedSMSCountry(ConsentValidationError):
    """Klaviyo does not send SMS to the number's country."""


class UnsupportedSMSNumber(ConsentValidationError):
    """The number cannot receive texts (a landline, toll-free, premium-rate number...)."""


class IdentityConflict(ConsentValidationError):
    """The identifiers given belong to different people, or differ from the profile's own.

    ``fields`` names every offending identifier (``profile.email``...); the API answers 409
    ``identity_conflict``. Messages never say who else holds an identifier.
    """

    def __init__(self, message: str, *, fields: list[str]) -> None:
        super().__init__(message, field=fields[0] if fields else None)
        self.fields = list(fields)


class WebhookRejected(KlaviyoConsentError, SuspiciousOperation):
    """A webhook delivery that failed verification; ``code`` names why. Nothing was stored.

    Also a ``SuspiciousOperation``: left uncaught, Django answers 400 and logs it to
    ``django.security``, as for a bad signed cookie or session.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MalformedWebhook(KlaviyoConsentError, ValueError):
    """A correctly signed delivery whose body is not the JSON envelope Klaviyo documents."""


class ImmutableConsentEvent(KlaviyoConsentError):
    """Consent events are append-only: record a new event instead of changing one."""


class PushDeferred(KlaviyoConsentError):
    """A request that could not go out now without waiting (a rate limit, Retry-After, or the
    request budget of a push that must not wait); nothing was sent, the work stays queued."""


class KlaviyoAPIError(KlaviyoConsentError):
    """Klaviyo answered with an error (or did not answer); ``errors`` is its JSON:API list."""

    #: Worth another try later (429, 5xx, timeouts, dropped connections).
    retryable = False

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.errors = list(errors or [])
        self.retry_after = retry_after
        super().__init__(message or self.describe())

    def describe(self) -> str:
        details = "; ".join(
            _describe_error(error) for error in self.errors if isinstance(error, dict)
        )
        head = f"Klaviyo answered {self.status}" if self.status else "Klaviyo did not answer"
        return f"{head}: {details}" if details else head

    def __str__(self) -> str:
        return self.describe() if not self.args or not self.args[0] else str(self.args[0])


def _describe_error(error: dict[str, Any]) -> str:
    text = str(error.get("detail") or error.get("title") or error.get("code") or "error")
    source = error.get("source")
    where = (source.get("pointer") or source.get("parameter")) if isinstance(source, dict) else None
    return f"{text} ({where})" if where else text


class KlaviyoClientError(KlaviyoAPIError):
    """A 4xx refusal: the request itself is wrong and repeating it will not help."""


class KlaviyoAuthenticationError(KlaviyoClientError):
    """401/403: the key is missing, wrong or lacks a scope."""


class KlaviyoRateLimited(KlaviyoAPIError):
    """429: wait ``retry_after`` seconds."""

    retryable = True


class KlaviyoServerError(KlaviyoAPIError):
    """5xx: Klaviyo's side failed; try again later."""

    retryable = True


class KlaviyoMalformedResponse(KlaviyoAPIError):
    """A 2xx whose body is not JSON, is cut short, or lacks the shape the operation reads.

    Retryable: the request may have been applied, and Klaviyo's next answer is usually whole.
    """

    retryable = True


class KlaviyoConnectionError(KlaviyoAPIError, ConnectionError):
    """Timeout or dropped connection: the request may or may not have arrived.

    Also the builtin ``ConnectionError``, so code that handles network failures catches it.
    """

    retryable = True


class LedgerError(KlaviyoConsentError):
    """The Merkle ledger cannot answer: an event not yet in a checkpoint, a busy checkpointer."""


class NotYetCheckpointed(LedgerError):
    """The event is recorded but no signed checkpoint covers it yet."""


class LedgerMismatch(LedgerError):
    """Verification found stored data that no longer matches the ledger; names what and where."""


class ErasureRefused(KlaviyoConsentError):
    """An erasure cannot run now; the message says why (already erased, events not yet in the
    ledger, a profile merged into another). The API answers 409 naming ``field``."""

    def __init__(self, message: str, *, field: str = "profile") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
