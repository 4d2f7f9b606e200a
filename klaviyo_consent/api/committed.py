"""What a 201 shows: a recording as the database has it once its transaction committed.

The API layer asks the task layer whether the push ran inline; the ledger never does.
"""

from __future__ import annotations

from dataclasses import replace

from django.db import transaction

from klaviyo_consent.conf import consent_settings
from klaviyo_consent.models import ConsentEvent, Profile
from klaviyo_consent.services.ledger import RecordResult, latest_events
from klaviyo_consent.tasks import runs_inline


def as_committed(result: RecordResult) -> RecordResult:
    """``result`` as the database has it after the recording committed, with its ledger events.

    With the immediate task backend the push and its read-back ran on commit, so the profile,
    the events and the ledger are read again. Otherwise the rows just written are current: a
    new profile's ledger is exactly its new events (no query), an existing profile's latest
    events are read once (not its whole history).
    """
    pushed = consent_settings.PUSH_ON_COMMIT and not transaction.get_connection().in_atomic_block
    if pushed:
        try:
            pushed = runs_inline()
        except Exception:  # noqa: BLE001 - a broken TASKS setting (check E003); the events are
            pushed = True  # committed, so answer 201 from a fresh read rather than fail
    pk = result.profile.pk
    if not pushed:
        return replace(result, latest=result.events if result.created else latest_events([pk])[pk])
    events = (
        ConsentEvent.objects.select_related("delivery", "recorded_by")
        .filter(pk__in=[event.pk for event in result.events])
        .order_by("id")
    )
    return replace(
        result,
        profile=Profile.objects.get(pk=pk),
        events=list(events),
        latest=latest_events([pk])[pk],
    )
