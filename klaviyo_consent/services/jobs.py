"""Grouping outbox rows into Klaviyo bulk jobs: pure, no database writes, no HTTP.

One job per operation (subscribe, unsubscribe, suppress, unsuppress), list, ``historical_import``
and ``custom_source``, chunked to Klaviyo's job sizes (``payloads.MAX_*_PROFILES``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from klaviyo_consent.choices import Consent
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.models import ConsentEvent, Delivery
from klaviyo_consent.services import payloads


class Row(NamedTuple):
    """What pushing one outbox row needs, read as plain values (no model instances)."""

    pk: int
    profile_id: int
    channel: str
    purpose: str
    attempts: int
    deferrals: int
    lease_token: str
    email: str
    phone_number: str
    consent: str
    consented_at: datetime | None
    list_id: str
    historical_import: bool
    custom_source: str
    klaviyo_id: str
    #: ``suppress``/``unsuppress`` for a suppression request, None for consent.
    suppression: str | None = None
    #: The event, when the caller already loaded it (``Pusher.push`` of claimed deliveries).
    event: ConsentEvent | None = None


ROW_COLUMNS = (
    "event_id",
    "profile_id",
    "channel",
    "purpose",
    "attempts",
    "deferrals",
    "lease_token",
    "event__personal_data__email",
    "event__personal_data__phone_number",
    "event__consent",
    "event__consented_at",
    "event__list_id",
    "event__historical_import",
    "event__custom_source",
    "profile__klaviyo_id",
    "event__suppression",
)


def row_of(delivery: Delivery | Row) -> Row:
    if isinstance(delivery, Row):
        return delivery
    event = delivery.event
    return Row(
        delivery.pk,
        delivery.profile_id,
        delivery.channel,
        delivery.purpose,
        delivery.attempts,
        delivery.deferrals,
        delivery.lease_token,
        event.email,
        event.phone_number,
        event.consent,
        event.consented_at,
        event.list_id,
        event.historical_import,
        event.custom_source,
        delivery.profile.klaviyo_id,
        event.suppression,
        event,
    )


@dataclass
class Job:
    operation: str
    list_id: str | None
    historical_import: bool = False
    custom_source: str = ""
    #: profile id -> its rows in this job
    members: dict[int, list[Row]] = field(default_factory=dict)
    #: profile id -> channels Klaviyo refused for it: left out (identifier too) when re-sent.
    dropped: dict[int, set[str]] = field(default_factory=dict)
    #: Profiles a subscribe request of this backend takes, if fewer than a bulk job's (the
    #: client backend's Create Client Subscription: one).
    limit: int | None = None

    @property
    def size(self) -> int:
        if self.operation == "subscribe":
            return min(
                payloads.MAX_SUBSCRIBE_PROFILES, self.limit or payloads.MAX_SUBSCRIBE_PROFILES
            )
        if self.operation in SUPPRESSION_JOBS:
            return payloads.MAX_SUPPRESS_PROFILES
        return payloads.MAX_UNSUBSCRIBE_PROFILES

    def payload(self, profile_ids: Sequence[int]) -> dict[str, Any]:
        if self.operation in SUPPRESSION_JOBS:
            emails = [self.members[pid][-1].email for pid in profile_ids]
            return SUPPRESSION_JOBS[self.operation](emails)
        entries = [
            self._entry(self.members[pid], self.dropped.get(pid, set())) for pid in profile_ids
        ]
        if self.operation == "subscribe":
            return payloads.subscribe_job(
                entries,
                list_id=self.list_id,
                historical_import=self.historical_import,
                custom_source=self.custom_source or None,
            )
        return payloads.unsubscribe_job(entries, list_id=self.list_id)

    @staticmethod
    def _entry(rows: list[Row], dropped: set[str]) -> dict[str, Any]:
        # Each event carries the identifiers its consent was given for (docs/identity.md):
        # the entry names the newest of each, so an email-only and an SMS-only event of one
        # person still send both channels with their own identifier. ``dropped``: the parts
        # Klaviyo refused in this entry, sent again without them.
        newest = rows[-1]
        email = next((r.email for r in reversed(rows) if r.email), None)
        phone_number = next((r.phone_number for r in reversed(rows) if r.phone_number), None)
        return payloads.profile_entry(
            email=None if "email" in dropped else email,
            phone_number=None if "sms" in dropped else phone_number,
            klaviyo_id=newest.klaviyo_id or None,
            consents=[(r.channel, r.purpose, r.consent, r.consented_at) for r in rows],
        )


#: Suppression requests go out as Klaviyo's email suppression jobs (≤ 100 emails, no list).
SUPPRESSION_JOBS: dict[str, Callable[[Sequence[str]], dict[str, Any]]] = {
    "suppress": payloads.suppress_job,
    "unsuppress": payloads.unsuppress_job,
}


def build_jobs(
    deliveries: Iterable[Delivery | Row], *, max_subscribe: int | None = None
) -> list[tuple[Job, list[list[int]]]]:
    """Group into one job per operation / list / historical_import / custom_source, chunked.

    ``max_subscribe``: profiles per subscribe request when the backend takes fewer than a bulk
    job (``BaseKlaviyoBackend.max_profiles_per_subscribe``).
    """
    jobs: dict[tuple[Any, ...], Job] = {}
    default_list = consent_settings.DEFAULT_LIST_ID or None
    for delivery in deliveries:
        row = row_of(delivery)
        if row.suppression:
            key: tuple[Any, ...] = (row.suppression, None)
        elif row.consent == Consent.SUBSCRIBED:
            list_id = row.list_id or default_list
            key = (
                "subscribe",
                list_id,
                row.historical_import,
                row.custom_source,
            )
        else:
            # A withdrawal names a list only when the request did: DEFAULT_LIST_ID is where
            # signups go, and an unsubscribe job with a list removes the person from it.
            key = ("unsubscribe", row.list_id or None)
        job = jobs.get(key)
        if job is None:
            job = jobs[key] = Job(*key)
            job.limit = max_subscribe
        members = job.members.get(row.profile_id)
        if members is None:
            job.members[row.profile_id] = [row]
        else:
            members.append(row)
    result = []
    for job in jobs.values():
        size = job.size
        ids = list(job.members)
        result.append((job, [ids[i : i + size] for i in range(0, len(ids), size)]))
    return result
