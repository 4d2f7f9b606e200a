"""The outbox: claiming due delivery rows under a lease, and the delivery state machine.

Every change of a delivery's state goes through one of the transitions below. Each is one
UPDATE of the rows a caller still holds that releases their lease (``lease_token`` "",
``lease_expires_at`` NULL) and stamps ``updated_at``, so no caller can forget either::

    claim (lease) ─► mark_pushed ─► record_verdict (applied / pending_confirmation / not_applied)
        │             (202)           ▲ reschedule (read-back failed)
        ├─► reschedule / defer (5xx, 429, a refused request: back to pending, later)
        ├─► mark_failed / dead_letter (4xx naming the consent; attempts ran out)
        ├─► mark_not_applied (Klaviyo accepted the job and ignored the identifier)
        ├─► mark_history (an imported consent older than its key's latest event: never sent)
        └─► release (given back unchanged: a push that must not wait)
    requeue: failed ─► pending (an operator's retry)
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from klaviyo_consent.choices import Channel, DeliveryStatus
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.models import Delivery, IdentityDelivery


def waits_for_identity_push() -> Q:
    """Consent outbox rows that must wait: SMS events recorded after a number change that
    Klaviyo has not been told yet (the claim skips them until services.identity_push has)."""
    return Q(channel=Channel.SMS) & Exists(
        IdentityDelivery.objects.filter(
            profile_id=OuterRef("profile_id"),
            status=DeliveryStatus.PENDING,
            after_event_id__lt=OuterRef("event_id"),
        )
    )


def free_condition(now: datetime) -> Q:
    return Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)


def claim(
    status: str,
    *,
    limit: int,
    due_before: datetime | None = None,
    profile_ids: Sequence[int] | None = None,
) -> list[Delivery]:
    """Lease up to ``limit`` due rows in ``status``; no other worker can claim them meanwhile.

    PostgreSQL skips rows another worker has locked; everywhere the lease is set by a conditional
    UPDATE, so two workers can never both win a row.
    """
    lease = lease_due(status, limit=limit, due_before=due_before, profile_ids=profile_ids)
    if lease is None:
        return []
    token, lease_until, _, _ = lease
    return list(
        Delivery.objects.filter(lease_token=token, lease_expires_at=lease_until)
        .select_related("event", "event__personal_data", "profile")
        .order_by("event_id")
    )


def lease_due(
    status: str,
    *,
    limit: int,
    due_before: datetime | None = None,
    profile_ids: Sequence[int] | None = None,
    keep: tuple[str, Sequence[int]] | None = None,
) -> tuple[str, datetime, int, dict[int, datetime]] | None:
    """Set a new lease on up to ``limit`` due rows, or return None.

    Returns (token, lease end, rows kept, stranded): ``stranded`` maps the rows whose previous
    lease had expired (a worker stopped while holding them, maybe mid-push) to when that
    worker claimed them. ``keep`` = (token, pks): rows this worker already holds under
    ``token`` move to the new lease too (and have it renewed); a row whose lease another
    worker took over stays theirs.
    """
    now = timezone.now()
    token = uuid.uuid4().hex
    lease_until = now + timedelta(seconds=consent_settings.LEASE_SECONDS)
    ids: list[int] = []
    kept = 0
    stranded: dict[int, datetime] = {}
    lease_length = timedelta(seconds=consent_settings.LEASE_SECONDS)
    with transaction.atomic():
        if limit > 0:
            due = Delivery.objects.filter(status=status, next_attempt_at__lte=due_before or now)
            due = due.filter(free_condition(now))
            if profile_ids is not None:
                due = due.filter(profile_id__in=list(profile_ids))
            if status == DeliveryStatus.PENDING:
                older = Delivery.objects.filter(
                    profile_id=OuterRef("profile_id"),
                    channel=OuterRef("channel"),
                    purpose=OuterRef("purpose"),
                    status=DeliveryStatus.PENDING,
                    event_id__lt=OuterRef("event_id"),
                )
                due = due.exclude(Exists(older))
                due = due.exclude(waits_for_identity_push())
            candidates = due.order_by("event_id")
            if connection.features.has_select_for_update_skip_locked:
                candidates = candidates.select_for_update(skip_locked=True, of=("self",))
            picked = list(candidates.values_list("pk", "lease_token", "lease_expires_at")[:limit])
            ids = [pk for pk, _, _ in picked]
            stranded = {pk: ends - lease_length for pk, old, ends in picked if old and ends}
            if ids:
                Delivery.objects.filter(pk__in=ids).filter(free_condition(now)).update(
                    lease_token=token, lease_expires_at=lease_until
                )
        if keep is not None and keep[1]:
            kept = Delivery.objects.filter(
                pk__in=list(keep[1]), lease_token=keep[0], status=status
            ).update(lease_token=token, lease_expires_at=lease_until)
    if not ids and not kept:
        return None
    return token, lease_until, kept, stranded


def lease_rows(
    rows: QuerySet[Any],
    *,
    limit: int,
    in_order: tuple[str, ...] = (),
    now: datetime | None = None,
) -> list[Any]:
    """Lease up to ``limit`` due, free rows of ``rows`` (any outbox queryset) and return them.

    The same claim as :func:`lease_due` for the outbox tables beside consent's (list
    membership): due (``next_attempt_at`` passed), no live lease, PostgreSQL skipping rows
    another worker has locked, the lease set by a conditional UPDATE so two workers never
    both win a row. ``in_order``: fields naming a key (e.g. profile and list) of which only
    the oldest row of the same status is claimable, so a removal never overtakes its add.
    """
    now = now or timezone.now()
    token = uuid.uuid4().hex
    lease_until = now + timedelta(seconds=consent_settings.LEASE_SECONDS)
    model = rows.model
    with transaction.atomic():
        due = rows.filter(next_attempt_at__lte=now).filter(free_condition(now))
        if in_order:
            older = model.objects.filter(
                **{name: OuterRef(name) for name in in_order},
                status=OuterRef("status"),
                pk__lt=OuterRef("pk"),
            )
            due = due.exclude(Exists(older))
        candidates = due.order_by("pk")
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        ids = list(candidates.values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        model.objects.filter(pk__in=ids).filter(free_condition(now)).update(
            lease_token=token, lease_expires_at=lease_until
        )
    return list(
        model.objects.filter(lease_token=token, lease_expires_at=lease_until).order_by("pk")
    )


@dataclass
class Lease:
    """A worker's hold on the rows it claimed, renewed while the worker is still working.

    A slow Klaviyo, a rate-limit wait or a long read-back must not let another worker take over
    rows this one is about to send (that would send them twice); only a stopped or hung worker's
    rows run out and are reclaimed. Renewal is one UPDATE each time a third of the lease passed.
    """

    token: str
    until: datetime
    #: The lease ran out before a renewal (the worker stalled): another worker may have taken
    #: some rows over meanwhile, so from then on each job is checked against what is still ours.
    lapsed: bool = False

    def keep(self) -> None:
        now = timezone.now()
        length = timedelta(seconds=consent_settings.LEASE_SECONDS)
        if self.until - now > length * 2 / 3:
            return
        self.lapsed = self.lapsed or self.until <= now
        self.until = now + length
        Delivery.objects.filter(lease_token=self.token, status=DeliveryStatus.PENDING).update(
            lease_expires_at=self.until
        )


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next try: exponential with full jitter, never less than Retry-After.

    ``attempts`` is how many tries (and waits) came before; the wait is a random time in
    [b·2ⁿ/2, b·2ⁿ] capped at ``RETRY_BACKOFF_MAX``. Klaviyo's ``Retry-After`` (seconds, 0
    included) is a floor under it, not a replacement: a burst of 429s still backs off.
    """
    ceiling = min(
        consent_settings.RETRY_BACKOFF_MAX, consent_settings.RETRY_BACKOFF_BASE * 2**attempts
    )
    wait = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return wait


# -- the state machine -------------------------------------------------------------------------
def _transition(rows: QuerySet[Any], now: datetime | None = None, **changes: Any) -> int:
    """One UPDATE of ``rows``: ``changes``, the lease released, ``updated_at`` stamped.

    ``rows`` is an outbox queryset: consent deliveries (``Delivery``) or number changes told to
    Klaviyo (``IdentityDelivery``), which share the fields and so this state machine.
    """
    return rows.update(
        **changes, lease_token="", lease_expires_at=None, updated_at=now or timezone.now()
    )


def release(rows: QuerySet[Any]) -> int:
    """Give claimed rows back unchanged: no attempt spent, due as they were."""
    return _transition(rows)


def mark_pushed(
    rows: QuerySet[Any],
    *,
    reason: str = "",
    now: datetime | None = None,
    read_back: bool = True,
) -> int:
    """Klaviyo accepted the job (202): ``pushed``, read back after ``VERIFY_DELAY``.

    ``read_back=False``: nothing can read Klaviyo back (the client backend); the row stays
    ``pushed`` with ``reason`` and no read-back is scheduled.
    """
    now = now or timezone.now()
    return _transition(
        rows,
        now,
        status=DeliveryStatus.PUSHED,
        pushed_at=now,
        next_attempt_at=(
            now + timedelta(seconds=consent_settings.VERIFY_DELAY) if read_back else None
        ),
        reason=reason,
        errors=[],
    )


def mark_not_applied(rows: QuerySet[Delivery], reason: str) -> int:
    """Klaviyo accepted the job but said it ignored this consent: ``not_applied`` now."""
    now = timezone.now()
    return _transition(
        rows,
        now,
        status=DeliveryStatus.NOT_APPLIED,
        pushed_at=now,
        reason=reason,
        errors=[],
        next_attempt_at=None,
    )


def mark_history(rows: QuerySet[Delivery], reason: str) -> int:
    """Pending rows recorded as history (terminal, never pushed): an imported consent older
    than the ledger's latest event for its person, channel and purpose (``reason`` names it).

    Called in the transaction that appended the rows, so no worker ever sees them pending.
    """
    return _transition(
        rows.filter(status=DeliveryStatus.PENDING),
        status=DeliveryStatus.HISTORY,
        reason=reason,
        next_attempt_at=None,
    )


def mark_applied(rows: QuerySet[Any], reason: str) -> int:
    """Klaviyo applied the request as it answered (Create or Update Profile's 200/201, no
    read-back needed): ``applied`` now."""
    now = timezone.now()
    return _transition(
        rows,
        now,
        status=DeliveryStatus.APPLIED,
        pushed_at=now,
        reason=reason,
        errors=[],
        next_attempt_at=None,
    )


def mark_failed(rows: QuerySet[Any], reason: str, errors: list[Any]) -> int:
    """Klaviyo refused this consent (a 4xx naming it): ``failed``, Klaviyo's errors kept."""
    return _transition(
        rows, status=DeliveryStatus.FAILED, reason=reason, errors=errors, next_attempt_at=None
    )


def dead_letter(rows: QuerySet[Any], *, attempts: int, reason: str, errors: list[Any]) -> int:
    """Retries ran out: ``failed`` with ``dead_lettered_at``, until an operator requeues it."""
    now = timezone.now()
    return _transition(
        rows,
        now,
        status=DeliveryStatus.FAILED,
        attempts=attempts,
        reason=reason,
        errors=errors,
        next_attempt_at=None,
        dead_lettered_at=now,
    )


def reschedule(
    rows: QuerySet[Any],
    *,
    next_attempt_at: datetime,
    reason: str,
    errors: list[Any] | None = None,
    attempts: int | None = None,
    deferrals: int | None = None,
    verify_attempts: int | None = None,
) -> int:
    """Try again at ``next_attempt_at``, status unchanged; the counters given are set.

    ``attempts`` for a retry that spends the budget, ``deferrals`` for one that does not (a
    429, a refused request), ``verify_attempts`` for a read-back that failed.
    """
    counters = {
        name: value
        for name, value in (
            ("attempts", attempts),
            ("deferrals", deferrals),
            ("verify_attempts", verify_attempts),
            ("errors", errors),
        )
        if value is not None
    }
    return _transition(rows, next_attempt_at=next_attempt_at, reason=reason, **counters)


def record_verdict(
    rows: QuerySet[Delivery],
    status: str,
    reason: str,
    *,
    next_attempt_at: datetime | None,
    verify_attempts: int | None = None,
    history: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> int:
    """What the read-back showed: ``status`` and why, stamped ``verified_at``.

    ``next_attempt_at``: when to read again (None: the verdict is final for now).
    """
    now = now or timezone.now()
    extra: dict[str, Any] = {}
    if verify_attempts is not None:
        extra["verify_attempts"] = verify_attempts
    if history is not None:
        extra["history"] = history
    return _transition(
        rows,
        now,
        status=status,
        reason=reason,
        next_attempt_at=next_attempt_at,
        verified_at=now,
        **extra,
    )


def write_history(rows: QuerySet[Delivery], history: list[dict[str, Any]]) -> int:
    """Store a row's verdict history (entries from ``verdicts.history_entry``, oldest first)."""
    return rows.update(history=history)


def requeue(rows: QuerySet[Any], *, erased_too: bool = False) -> int:
    """Failed (and dead-lettered) rows back to ``pending`` with a fresh attempt budget.

    Rows of an erased person stay failed (the erasure stopped them: they would name blanked
    identifiers, or bring the person back to Klaviyo); only the erasure's own deletion jobs
    (``erased_too=True``) are requeued for an erased profile.
    """
    now = timezone.now()
    rows = rows.filter(status=DeliveryStatus.FAILED)
    if not erased_too:
        rows = rows.exclude(profile__erased_at__isnull=False)
    return _transition(
        rows,
        now,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        dead_lettered_at=None,
    )
