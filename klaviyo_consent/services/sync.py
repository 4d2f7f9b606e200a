"""The pipeline's one orchestrator: push what is due, then read back what is due.

Each stage lives in its own module (docs/architecture.md): ``outbox`` (claim, transitions),
``jobs`` (grouping), ``push`` (sending), ``mirror`` (reading Klaviyo back), ``verify`` (verdicts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.backends.base import waiting_allowed
from klaviyo_consent.choices import DeliveryStatus
from klaviyo_consent.exceptions import KlaviyoAPIError, PushDeferred
from klaviyo_consent.models import Delivery, MembershipDelivery
from klaviyo_consent.services import outbox
from klaviyo_consent.services.erasure_push import push_erasures
from klaviyo_consent.services.identity_push import push_identity_changes
from klaviyo_consent.services.membership_push import push_memberships, verify_memberships
from klaviyo_consent.services.push import push_pending
from klaviyo_consent.services.reports import SyncReport, Waiting
from klaviyo_consent.services.verify import verify_pushed

logger = logging.getLogger("klaviyo_consent.sync")


def sync(
    *,
    verify: bool = True,
    wait: bool = False,
    max_wait: float = 300.0,
    on_pass: Callable[[SyncReport], None] | None = None,
    on_wait: Callable[[Waiting], None] | None = None,
) -> SyncReport:
    """Push what is pending, then verify what is due.

    With ``wait``, keep going while pending rows fall due within ``max_wait`` seconds; a row
    whose next try lies beyond that (a long backoff, a request Klaviyo keeps refusing) is left
    to the next run, so the command returns instead of sleeping out its budget.

    ``on_pass(report)`` hears what each pass did (the run's totals so far); ``on_wait(waiting)``
    hears, before each sleep, what it waits for (:class:`~.reports.Waiting`: how long, how many
    rows, why, and whether Klaviyo could be reached), so a caller is never silent.
    """
    report = SyncReport()
    deadline = time.monotonic() + max_wait
    unreachable = False  # whether the last request of this run failed to reach Klaviyo
    last_said: tuple[Any, ...] = ()
    while True:
        before = (report.requests, report.unreachable)
        report.merge(push_pending())
        if push_identity_changes(report):  # new numbers told: their SMS consent may go now
            report.merge(push_pending())
        push_memberships(report)  # list membership without consent, same limits and outbox
        push_erasures(report)  # data-privacy deletion jobs of erased people
        if verify and get_backend().cannot_read is None:
            try:
                report.merge(verify_pushed())
                verify_memberships(report)
            except (KlaviyoAPIError, PushDeferred) as exc:
                if waiting_allowed():
                    raise
                # A push inside a signup reads back only what it can without waiting.
                logger.info("Read-back left for the next run: %s", exc)
        if report.requests > before[0]:
            unreachable = report.unreachable > before[1]
        if on_pass is not None:
            on_pass(report)
        if not wait:
            return report
        pending = Delivery.objects.filter(status=DeliveryStatus.PENDING)
        upcoming = (
            pending.order_by("next_attempt_at")
            .values("next_attempt_at", "reason", "attempts", "deferrals")
            .first()
        )
        left = deadline - time.monotonic()
        if upcoming is None:
            return report
        due_in = (upcoming["next_attempt_at"] - timezone.now()).total_seconds()
        if due_in > left:
            return report
        seconds = min(max(due_in, 0.05), 5.0)
        said = (upcoming["attempts"], upcoming["deferrals"], upcoming["reason"])
        if on_wait is not None and said != last_said:  # once per wait, not per 5 s nap
            last_said = said
            on_wait(
                Waiting(
                    seconds=max(due_in, 0.0),
                    due_at=upcoming["next_attempt_at"],
                    gives_up_at=timezone.now() + timedelta(seconds=left),
                    pending=pending.count(),
                    attempts=upcoming["attempts"] + upcoming["deferrals"],
                    reason=upcoming["reason"],
                    unreachable=unreachable,
                )
            )
        time.sleep(seconds)


def pending_count() -> int:
    """Events still waiting in the outbox for a push (their next try may lie ahead)."""
    return Delivery.objects.filter(status=DeliveryStatus.PENDING).count()


def retry_failed(*, event_ids: Sequence[int] | None = None) -> int:
    """Put failed (and dead-lettered) events back in the outbox for another round of attempts.

    Without ``event_ids``, failed list memberships too (``MembershipDelivery``)."""
    rows = Delivery.objects.filter(status=DeliveryStatus.FAILED)
    if event_ids is not None:
        return outbox.requeue(rows.filter(event_id__in=list(event_ids)))
    memberships = MembershipDelivery.objects.filter(status=DeliveryStatus.FAILED)
    return outbox.requeue(rows) + outbox.requeue(memberships)
