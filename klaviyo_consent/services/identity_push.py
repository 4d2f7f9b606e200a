"""Telling Klaviyo a profile's new phone number: the identity outbox and its push.

A number change (:func:`klaviyo_consent.services.identity.replace_phone_number`) writes an
:class:`~klaviyo_consent.models.IdentityDelivery` beside its ``IdentityEvent``, in the same
transaction. A sync run pushes it with Klaviyo's Create or Update Profile
(``POST /api/profile-import``) once the old number's closing withdrawals have left the outbox:
Klaviyo resets SMS consent on a number change (help centre, "How SMS affects profiles"), so the
withdrawal must name the old number while Klaviyo's profile still holds it. SMS events of the
profile recorded after the change wait for it in turn, so a consent for the new number goes to
a profile that has it. Failures follow the consent outbox's rules (``services.sync``): one
state machine, the same backoff and leases.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.choices import Channel, DeliveryStatus
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import (
    KlaviyoAPIError,
    KlaviyoAuthenticationError,
    KlaviyoRateLimited,
    PushDeferred,
)
from klaviyo_consent.models import (
    ConsentEvent,
    Delivery,
    IdentityChange,
    IdentityDelivery,
    IdentityEvent,
    Profile,
)
from klaviyo_consent.services import outbox, payloads
from klaviyo_consent.services.outbox import backoff, free_condition
from klaviyo_consent.services.reports import SyncReport

logger = logging.getLogger("klaviyo_consent.sync")

#: Identity changes Klaviyo is told about: a number set on a profile by the phone-number
#: operation. (A number a consent request adds goes out in that consent's own job entry.)
_PUSHED_CHANGES = (IdentityChange.PHONE_NUMBER_REPLACED, IdentityChange.IDENTIFIER_ADDED)
CLAIM_SIZE = 100


def record_identity_push(record: IdentityEvent) -> IdentityDelivery | None:
    """Write the outbox row that tells Klaviyo ``record``'s new phone number.

    Call it inside the transaction that writes ``record``; a push is scheduled on commit.
    Returns None for a change Klaviyo need not hear about (not a phone number).
    """
    if record.field != "phone_number" or record.change not in _PUSHED_CHANGES:
        return None
    newest = (
        ConsentEvent.objects.filter(profile_id=record.profile_id)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    row = IdentityDelivery.objects.create(
        identity_event=record,
        profile_id=record.profile_id,
        after_event_id=newest or 0,
        next_attempt_at=record.recorded_at,
    )
    # The push is scheduled on commit by the ``identity_changed`` receiver (receivers.py).
    return row


def _claim(limit: int) -> list[IdentityDelivery]:
    """Lease up to ``limit`` due rows whose old number's withdrawals have been pushed."""
    now = timezone.now()
    token = uuid.uuid4().hex
    until = now + timedelta(seconds=consent_settings.LEASE_SECONDS)
    closing_unsent = Delivery.objects.filter(
        profile_id=OuterRef("profile_id"),
        channel=Channel.SMS,
        status=DeliveryStatus.PENDING,
        event_id__lte=OuterRef("after_event_id"),
    )
    with transaction.atomic():
        due = (
            IdentityDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            .filter(free_condition(now))
            .exclude(Exists(closing_unsent))
            .order_by("identity_event_id")
        )
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        ids = list(due.values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        IdentityDelivery.objects.filter(pk__in=ids).filter(free_condition(now)).update(
            lease_token=token, lease_expires_at=until
        )
    return list(
        IdentityDelivery.objects.filter(lease_token=token)
        .select_related("identity_event", "identity_event__personal_data", "profile")
        .order_by("identity_event_id")
    )


def push_identity_changes(report: SyncReport | None = None) -> int:
    """Tell Klaviyo every due number change; returns how many Klaviyo applied.

    200/201 → ``applied`` (the profile's Klaviyo id is kept); 429 and 401/403 → retried
    later without spending an attempt (Retry-After a floor under the backoff); other
    retryable failures (5xx, timeouts) spend one, up to ``MAX_ATTEMPTS``, then dead-letter;
    any other 4xx (e.g. 409 ``duplicate_profile``: another Klaviyo profile holds the number)
    → ``failed`` with Klaviyo's errors and detail. A push that must not wait leaves the rest.
    """
    report = report if report is not None else SyncReport()
    applied = 0
    for row in _claim(CLAIM_SIZE):
        report.claimed += 1
        try:
            document = get_backend().create_or_update_profile(_payload(row, report))
        except PushDeferred:
            _release_rest(row)  # this row and the rest of the claim, unchanged
            break
        except KlaviyoAPIError as error:
            report.requests += 1
            _failed(row, error, report)
            continue
        report.requests += 1
        report.pushed += 1
        applied += 1
        klaviyo_id = (document.get("data") or {}).get("id")
        if isinstance(klaviyo_id, str) and klaviyo_id and not row.profile.klaviyo_id:
            Profile.objects.filter(pk=row.profile_id, klaviyo_id="").update(klaviyo_id=klaviyo_id)
        outbox.mark_applied(_owned(row), "Klaviyo's profile holds the new phone number.")
    return applied


def retry_failed() -> int:
    """Put failed (and dead-lettered) number changes back in the outbox, e.g. once the
    Klaviyo profile that held the number (409 ``duplicate_profile``) was merged or deleted."""
    return outbox.requeue(IdentityDelivery.objects.all())


def _payload(row: IdentityDelivery, report: SyncReport) -> dict[str, Any]:
    """The import naming the profile; a phone-only profile whose Klaviyo id is not known yet
    is found in Klaviyo by its old number (the number the closing withdrawal named)."""
    record, profile = row.identity_event, row.profile
    klaviyo_id = profile.klaviyo_id or None
    if not (klaviyo_id or profile.email or profile.external_id) and record.old_value:
        query = payloads.profiles_query(payloads.profile_filter("phone_number", [record.old_value]))
        found = get_backend().get_profiles(query)["data"]
        report.requests += 1
        klaviyo_id = found[0].get("id") if found else None
    return payloads.profile_import(
        phone_number=record.new_value,
        klaviyo_id=klaviyo_id,
        email=profile.email,
        external_id=profile.external_id,
    )


def _owned(row: IdentityDelivery):  # noqa: ANN202 - a queryset
    return IdentityDelivery.objects.filter(pk=row.pk, lease_token=row.lease_token)


def _release_rest(row: IdentityDelivery) -> None:
    outbox.release(IdentityDelivery.objects.filter(lease_token=row.lease_token))


def _failed(row: IdentityDelivery, error: KlaviyoAPIError, report: SyncReport) -> None:
    now = timezone.now()
    if isinstance(error, KlaviyoRateLimited | KlaviyoAuthenticationError):
        # About the account or the request, not this change: wait, spend no attempt.
        deferrals = row.deferrals + 1
        outbox.reschedule(
            _owned(row),
            next_attempt_at=now
            + timedelta(seconds=backoff(row.attempts + deferrals, error.retry_after)),
            reason=f"Will retry: {error}",
            errors=error.errors,
            deferrals=deferrals,
        )
        report.retried += 1
        log = logger.info if isinstance(error, KlaviyoRateLimited) else logger.error
        log("Klaviyo did not take a phone-number change now (%s); it stays in the outbox.", error)
        return
    if not error.retryable:
        outbox.mark_failed(_owned(row), str(error), error.errors)
        report.failed += 1
        logger.error("Klaviyo refused a phone-number change: %s", error)
        return
    attempts = row.attempts + 1
    if attempts >= consent_settings.MAX_ATTEMPTS:
        outbox.dead_letter(
            _owned(row),
            attempts=attempts,
            reason=f"Gave up after {attempts} attempts: {error}",
            errors=error.errors,
        )
        report.failed += 1
        return
    outbox.reschedule(
        _owned(row),
        next_attempt_at=now
        + timedelta(seconds=backoff(attempts + row.deferrals, error.retry_after)),
        reason=f"Will retry: {error}",
        errors=error.errors,
        attempts=attempts,
    )
    report.retried += 1
