"""Receivers of the app's own signals. The outbox row is the truth; the task is only a nudge."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from klaviyo_consent.backends.base import no_wait
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.pushes import held, on_commit_once
from klaviyo_consent.signals import (
    bulk_recorded,
    consent_recorded,
    identity_changed,
    membership_recorded,
    profile_erased,
)
from klaviyo_consent.tasks import runs_inline, sync_task

logger = logging.getLogger("klaviyo_consent.receivers")


def enqueue_push() -> None:
    """Enqueue the push task; if the queue is down the outbox keeps the work for the next sync.

    On the immediate task backend the push runs right here, inside the signup's request: then
    it never waits on Klaviyo (no rate-limit sleeps, no Retry-After, at most
    ``PUSH_ON_COMMIT_MAX_REQUESTS`` requests); what it cannot send now stays in the outbox.
    """
    try:
        if consent_settings.ENQUEUE_PUSH is not None:
            consent_settings.ENQUEUE_PUSH()
        elif runs_inline():
            with no_wait(
                consent_settings.PUSH_ON_COMMIT_MAX_REQUESTS,
                consent_settings.PUSH_ON_COMMIT_MAX_SECONDS,
            ):
                sync_task().enqueue()
        else:
            sync_task().enqueue()
    except Exception:
        logger.exception("Could not enqueue the Klaviyo push; klaviyo_consent_sync will send it.")


@receiver(consent_recorded, dispatch_uid="klaviyo_consent.push_on_commit")
@receiver(identity_changed, dispatch_uid="klaviyo_consent.push_identity_on_commit")
@receiver(bulk_recorded, dispatch_uid="klaviyo_consent.push_bulk_on_commit")
@receiver(membership_recorded, dispatch_uid="klaviyo_consent.push_membership_on_commit")
@receiver(profile_erased, dispatch_uid="klaviyo_consent.push_erasure_on_commit")
def push_on_commit(sender: Any, **kwargs: Any) -> None:
    """A consent, an identity change or an erasure was recorded: push once its transaction
    commits (a new number and a deletion job go through the same run: services.identity_push,
    services.erasure_push).

    One push per transaction however many people it recorded, and none inside a bulk load
    (``pushes.one_push``), which sends ``bulk_recorded`` for one push when it ends.
    """
    if not consent_settings.PUSH_ON_COMMIT:
        return
    recorded = kwargs.get("events", kwargs.get("identity_events"))
    count = recorded if isinstance(recorded, int) else len(recorded or ())
    if held(max(count, 1)):
        return
    on_commit_once(enqueue_push)
