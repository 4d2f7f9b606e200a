"""Klaviyo's data-privacy deletion job for an erased person: the erasure outbox and its push.

An erasure (:func:`klaviyo_consent.services.erasure.erase_profile`) writes one
:class:`~klaviyo_consent.models.ErasureDelivery` per identifier Klaviyo knows the profile by,
in the same transaction. A sync run sends each as Request Profile Deletion
(``POST /api/data-privacy-deletion-jobs``, spec ``request_profile_deletion``: exactly one of
``id``, ``email``, ``phone_number``; Klaviyo answers 202 and deletes every matching profile
asynchronously). 202 → ``applied`` and the identifier the row kept for the request is blanked;
failures follow the consent outbox's rules (one state machine, ``services/outbox.py``): 429 and
401/403 wait without spending an attempt, 5xx and timeouts spend one up to ``MAX_ATTEMPTS``
then dead-letter, any other 4xx is ``failed`` with Klaviyo's errors.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.choices import DeliveryStatus
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import (
    KlaviyoAPIError,
    KlaviyoAuthenticationError,
    KlaviyoRateLimited,
    PushDeferred,
)
from klaviyo_consent.models import ErasureDelivery
from klaviyo_consent.services import outbox, payloads
from klaviyo_consent.services.erasure import redact
from klaviyo_consent.services.outbox import backoff
from klaviyo_consent.services.reports import SyncReport

logger = logging.getLogger("klaviyo_consent.sync")

CLAIM_SIZE = 50
#: The reason an applied deletion row keeps (its identifier is gone).
ACCEPTED = "Klaviyo accepted the data-privacy deletion job (202); it deletes asynchronously."


def _claim(limit: int) -> list[ErasureDelivery]:
    """Lease up to ``limit`` due deletion jobs: the outbox's one claim (``outbox.lease_rows``)."""
    return outbox.lease_rows(
        ErasureDelivery.objects.filter(status=DeliveryStatus.PENDING), limit=limit
    )


def push_erasures(report: SyncReport | None = None) -> int:
    """Send every due deletion job; returns how many Klaviyo accepted.

    A push that must not wait (``PushDeferred``) gives this row and the rest back unchanged.
    """
    report = report if report is not None else SyncReport()
    accepted = 0
    for row in _claim(CLAIM_SIZE):
        report.claimed += 1
        try:
            get_backend().request_profile_deletion(
                payloads.profile_deletion(row.target_field, row.target_value)
            )
        except PushDeferred:
            outbox.release(ErasureDelivery.objects.filter(lease_token=row.lease_token))
            break
        except KlaviyoAPIError as error:
            report.requests += 1
            _failed(row, error, report)
            continue
        report.requests += 1
        report.pushed += 1
        accepted += 1
        owned = _owned(row)
        outbox.mark_applied(owned, ACCEPTED)
        owned.update(target_value="")  # the identifier was kept only for this request
    return accepted


def retry_failed() -> int:
    """Put failed (and dead-lettered) deletion jobs back in the outbox."""
    return outbox.requeue(ErasureDelivery.objects.all(), erased_too=True)


def _owned(row: ErasureDelivery):  # noqa: ANN202 - a queryset
    return ErasureDelivery.objects.filter(pk=row.pk)


def _failed(row: ErasureDelivery, error: KlaviyoAPIError, report: SyncReport) -> None:
    """Klaviyo's reason and errors are kept with every address and number in them erased:
    they belong to a person already erased here (``target_value`` alone is kept, until
    Klaviyo accepts the job)."""
    now = timezone.now()
    patterns = [row.target_value] if row.target_value else []
    message = redact(str(error), patterns)
    errors = redact(error.errors, patterns)
    owned = ErasureDelivery.objects.filter(pk=row.pk, lease_token=row.lease_token)
    if isinstance(error, KlaviyoRateLimited | KlaviyoAuthenticationError):
        deferrals = row.deferrals + 1
        outbox.reschedule(
            owned,
            next_attempt_at=now
            + timedelta(seconds=backoff(row.attempts + deferrals, error.retry_after)),
            reason=f"Will retry: {message}",
            errors=errors,
            deferrals=deferrals,
        )
        report.retried += 1
        logger.info(
            "Klaviyo did not take a deletion job now (%s); it stays in the outbox.", message
        )
        return
    if not error.retryable:
        outbox.mark_failed(owned, message, errors)
        report.failed += 1
        logger.error("Klaviyo refused a data-privacy deletion job: %s", message)
        return
    attempts = row.attempts + 1
    if attempts >= consent_settings.MAX_ATTEMPTS:
        outbox.dead_letter(
            owned,
            attempts=attempts,
            reason=f"Gave up after {attempts} attempts: {message}",
            errors=errors,
        )
        report.failed += 1
        return
    outbox.reschedule(
        owned,
        next_attempt_at=now
        + timedelta(seconds=backoff(attempts + row.deferrals, error.retry_after)),
        reason=f"Will retry: {message}",
        errors=errors,
        attempts=attempts,
    )
    report.retried += 1
