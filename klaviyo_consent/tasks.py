"""Task wrappers over the services, on Django's Tasks framework.

``django.tasks`` on Django 6.x, the ``django-tasks`` backport on 5.2 (``compat``). Which backend
runs them (immediate for the demo, or the database worker) is the site's ``TASKS`` setting.
Celery sites use :mod:`klaviyo_consent.celery` instead, which calls the same service.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from klaviyo_consent.choices import DeliveryStatus
from klaviyo_consent.compat import ImmediateBackend, task
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.models import Delivery
from klaviyo_consent.services.sync import sync


@task()
def sync_outbox() -> dict[str, Any]:
    """Push what is due, then verify what is due (``services.sync.sync``); safe to run any
    number of times.

    When it pushed something and the task backend can defer, it schedules itself again for when
    the read-back is due, so verdicts arrive without a separate worker loop.
    """
    report = sync()
    if report.pushed or report.retried:
        schedule_follow_up()
    return report.as_dict()


def sync_task() -> Any:
    """``sync_outbox`` on the task backend ``TASK_BACKEND`` names: the one the app enqueues to."""
    return sync_outbox.using(backend=consent_settings.TASK_BACKEND)


def runs_inline() -> bool:
    """Whether the task backend runs ``sync_outbox`` inside ``enqueue`` (the immediate backend).

    Then a push, and its read-back, have already happened when a recording transaction has
    committed, and whoever shows the result must read it again. A site that enqueues through
    ``ENQUEUE_PUSH`` (Celery) runs it elsewhere.
    """
    if consent_settings.ENQUEUE_PUSH is not None:
        return False
    return isinstance(sync_task().get_backend(), ImmediateBackend)


def schedule_follow_up() -> bool:
    """Enqueue ``sync_outbox`` for when the next retry or read-back is due, if the backend can.

    Only a run that pushed or scheduled a retry calls this, so follow-ups form one short chain
    per burst of work; long waits (double opt-in confirmations) are left to
    ``klaviyo_consent_sync --loop`` or a periodic job.
    """
    deferred = sync_task()
    if not deferred.get_backend().supports_defer:
        return False
    due = next_sync_due()
    if due is None:
        return False
    deferred.using(run_after=due).enqueue()
    return True


def next_sync_due() -> datetime | None:
    """When the next retry or read-back of the outbox falls due (never in the past), or None
    when nothing waits: the time a follow-up ``sync_outbox`` should run (here and in
    :mod:`klaviyo_consent.celery`)."""
    due = (
        Delivery.objects.filter(
            status__in=(DeliveryStatus.PENDING, DeliveryStatus.PUSHED),
            next_attempt_at__isnull=False,
        )
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    return None if due is None else max(due, timezone.now())
