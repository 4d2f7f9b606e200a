"""Celery: plain tasks to route and schedule, calling the same services as the Tasks path.

For sites whose workers are Celery's (``pip install "django-klaviyo-consent[celery]"``)::

    # settings.py
    from klaviyo_consent.celery import BEAT_SCHEDULE

    KLAVIYO_CONSENT = {..., "ENQUEUE_PUSH": "klaviyo_consent.celery.enqueue_push"}
    CELERY_IMPORTS = ["klaviyo_consent.celery"]      # the worker registers these tasks
    CELERY_TASK_ACKS_LATE = True                     # a worker that dies leaves the task queued
    CELERY_BEAT_SCHEDULE = {**BEAT_SCHEDULE}         # with `celery beat`: the safety net

A recorded consent enqueues :func:`sync_outbox` once its transaction commits
(``ENQUEUE_PUSH``); the task pushes what is due and reads back what is due
(:func:`klaviyo_consent.services.sync.sync`, as ``klaviyo_consent.tasks.sync_outbox`` does on
Django's Tasks framework), then schedules itself for the next retry or read-back. The beat
schedule runs it every minute anyway (double opt-in confirmations arrive days later, and a lost
message is found by the next run) and signs a checkpoint every five minutes. Route them like
any Celery task: ``CELERY_TASK_ROUTES = {"klaviyo_consent.*": {"queue": "consent"}}``.

Every task is safe to run any number of times, anywhere: the outbox row is the truth, workers
claim rows under a lease (docs/delivery.md).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from klaviyo_consent.services import checkpoints
from klaviyo_consent.services.sync import sync
from klaviyo_consent.tasks import next_sync_due

#: The tasks' names, for routes and schedules.
SYNC_OUTBOX = "klaviyo_consent.sync_outbox"
CHECKPOINT = "klaviyo_consent.checkpoint"

#: A ``CELERY_BEAT_SCHEDULE`` (``beat_schedule``) snippet; intervals in seconds.
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "klaviyo-consent-sync": {"task": SYNC_OUTBOX, "schedule": 60.0},
    "klaviyo-consent-checkpoint": {"task": CHECKPOINT, "schedule": 300.0},
}


@shared_task(name=SYNC_OUTBOX, acks_late=True)
def sync_outbox() -> dict[str, Any]:
    """Push what is due, then verify what is due; returns the run's ``SyncReport.as_dict()``
    (counts: pushed, retried, failed, jobs, verified, ... and ``verdicts``).

    When it pushed something or scheduled a retry it enqueues itself again for when the next
    retry or read-back falls due (``eta``), so verdicts arrive without waiting for beat.
    """
    report = sync()
    if report.pushed or report.retried:
        due = next_sync_due()
        if due is not None:
            sync_outbox.apply_async(eta=due)
    return report.as_dict()


@shared_task(name=CHECKPOINT, acks_late=True)
def checkpoint() -> dict[str, Any] | None:
    """Sign a checkpoint of the ledger when ``CHECKPOINT_INTERVAL`` has passed and events were
    added (as ``klaviyo_consent_sync --loop`` does); returns its ``tree_size`` and
    ``root_hash``, or None when none was due."""
    if not checkpoints.checkpoint_due():
        return None
    made = checkpoints.checkpoint().checkpoint
    return None if made is None else {"tree_size": made.tree_size, "root_hash": made.root_hash}


def enqueue_push() -> None:
    """``KLAVIYO_CONSENT["ENQUEUE_PUSH"]`` for Celery sites: send :func:`sync_outbox` to the
    broker. Called after the recording transaction commits; if the broker is down the error is
    logged and the outbox keeps the work for the next run."""
    sync_outbox.delay()
