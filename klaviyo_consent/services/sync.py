"""Pushing the outbox to Klaviyo: claim due rows with a lease, batch them into jobs, mark them.

Order per (profile, channel, purpose) is kept: only the oldest undelivered event of each key is
claimable, so a withdrawal can never overtake the subscription it withdraws.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.backends.base import waiting_allowed
from klaviyo_consent.choices import Consent, DeliveryStatus
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import (
    KlaviyoAPIError,
    KlaviyoAuthenticationError,
    KlaviyoRateLimited,
    PushDeferred,
)
from klaviyo_consent.models import ConsentEvent, Delivery, Profile
from klaviyo_consent.services import outbox, payloads
from klaviyo_consent.services.outbox import Lease, backoff, lease_due
from klaviyo_consent.signals import (
    consent_not_applied,
    consent_push_failed,
    consent_pushed,
    klaviyo_request_refused,
)

logger = logging.getLogger("klaviyo_consent.sync")

CLAIM_SIZE = 5000
#: Rows a push that must not wait (inside a signup) claims at most: its cost must not grow
#: with the backlog; a worker sends the rest.
NO_WAIT_CLAIM_SIZE = 200
_PROFILE_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(/.*)?$")
#: Where a pointer inside one profile entry lands -> the channel (part of the entry) it names.
_PARTS = (
    ("/attributes/phone_number", "sms"),
    ("/attributes/subscriptions/sms", "sms"),
    ("/attributes/email", "email"),
    ("/attributes/subscriptions/email", "email"),
)
#: ``X-Klaviyo-Partial-Failure`` names an identifier Klaviyo ignored -> the channel it carries.
_PARTIAL_FAILURE_PARTS = {"phone_number": "sms", "email": "email"}


def _part_of(rest: str | None) -> str | None:
    """The channel a pointer below ``/data/attributes/profiles/data/N`` names; None: the entry."""
    for prefix, channel in _PARTS:
        if rest and (rest == prefix or rest.startswith(prefix + "/")):
            return channel
    return None


@dataclass
class SyncReport:
    """What one run did; commands print it and benchmarks read it."""

    claimed: int = 0
    pushed: int = 0
    failed: int = 0
    retried: int = 0
    jobs: int = 0
    requests: int = 0
    verified: int = 0
    #: Rows a stopped worker had sent: found applied in Klaviyo and not sent again.
    settled: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def merge(self, other: SyncReport) -> None:
        for name in self._counters():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, value in other.verdicts.items():
            self.verdicts[key] += value

    def as_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in self._counters()},
            "verdicts": dict(self.verdicts),
        }

    @classmethod
    def _counters(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "verdicts"]


class _Row(NamedTuple):
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


_ROW_COLUMNS = (
    "event_id",
    "profile_id",
    "channel",
    "purpose",
    "attempts",
    "deferrals",
    "lease_token",
    "event__email",
    "event__phone_number",
    "event__consent",
    "event__consented_at",
    "event__list_id",
    "event__historical_import",
    "event__custom_source",
    "profile__klaviyo_id",
    "event__suppression",
)


def _row_of(delivery: Delivery | _Row) -> _Row:
    if isinstance(delivery, _Row):
        return delivery
    event = delivery.event
    return _Row(
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


def _leased_rows(token: str, lease_until: datetime) -> list[_Row]:
    return [
        _Row(*values)
        for values in Delivery.objects.filter(lease_token=token, lease_expires_at=lease_until)
        .order_by("event_id")
        .values_list(*_ROW_COLUMNS)
    ]


def _events(rows: Sequence[_Row]) -> list[ConsentEvent]:
    """The full events of these rows, for signal receivers (loaded only when someone listens)."""
    missing = [row.pk for row in rows if row.event is None]
    loaded = ConsentEvent.objects.in_bulk(missing) if missing else {}
    return [row.event if row.event is not None else loaded[row.pk] for row in rows]


def _announce(signal: Any, rows: Sequence[_Row], **kwargs: Any) -> None:
    if signal.has_listeners(ConsentEvent):
        signal.send_robust(sender=ConsentEvent, events=_events(rows), **kwargs)


@dataclass
class _Job:
    operation: str
    list_id: str | None
    historical_import: bool = False
    custom_source: str = ""
    #: profile id -> its rows in this job
    members: dict[int, list[_Row]] = field(default_factory=dict)
    #: profile id -> channels Klaviyo refused for it: left out (identifier too) when re-sent.
    dropped: dict[int, set[str]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        if self.operation == "subscribe":
            return payloads.MAX_SUBSCRIBE_PROFILES
        if self.operation in _SUPPRESSION_JOBS:
            return payloads.MAX_SUPPRESS_PROFILES
        return payloads.MAX_UNSUBSCRIBE_PROFILES

    def payload(self, profile_ids: Sequence[int]) -> dict[str, Any]:
        if self.operation in _SUPPRESSION_JOBS:
            emails = [self.members[pid][-1].email for pid in profile_ids]
            return _SUPPRESSION_JOBS[self.operation](emails)
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
    def _entry(rows: list[_Row], dropped: set[str]) -> dict[str, Any]:
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
_SUPPRESSION_JOBS: dict[str, Callable[[Sequence[str]], dict[str, Any]]] = {
    "suppress": payloads.suppress_job,
    "unsuppress": payloads.unsuppress_job,
}


def build_jobs(deliveries: Iterable[Delivery | _Row]) -> list[tuple[_Job, list[list[int]]]]:
    """Group into one job per operation / list / historical_import / custom_source, chunked."""
    jobs: dict[tuple[Any, ...], _Job] = {}
    default_list = consent_settings.DEFAULT_LIST_ID or None
    for delivery in deliveries:
        row = _row_of(delivery)
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
            job = jobs[key] = _Job(*key)
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


def _send(job: _Job, payload: dict[str, Any]) -> Any:
    backend = get_backend()
    if job.operation == "subscribe":
        return backend.bulk_subscribe_profiles(payload)
    if job.operation == "suppress":
        return backend.bulk_suppress_profiles(payload)
    if job.operation == "unsuppress":
        return backend.bulk_unsuppress_profiles(payload)
    return backend.bulk_unsubscribe_profiles(payload)


class Pusher:
    """Sends one claimed batch; marks each row pushed, retried or failed, never silently."""

    def __init__(self, report: SyncReport, send: Callable[[_Job, dict[str, Any]], Any] = _send):
        self.report = report
        self.send = send
        #: The lease the pushed rows are held under, kept alive between requests.
        self.lease: Lease | None = None
        #: Set when a request could not go out without waiting (``no_wait`` pushes): the rest
        #: stays in the outbox for the next run.
        self.deferred = False

    def keep_lease(self) -> None:
        if self.lease is not None:
            self.lease.keep()

    def push(self, deliveries: Sequence[Delivery | _Row]) -> None:
        self.push_rows([_row_of(d) for d in deliveries], flush=True)

    def push_rows(
        self, rows: Sequence[_Row], *, flush: bool, hold_at_most: int | None = None
    ) -> list[_Row]:
        """Push ``rows``; unless ``flush``, hold back each group's last, partly filled job.

        Returns the rows held back: the caller adds the next claimed rows to them, so a backlog
        goes out in full jobs (fewer requests against Klaviyo's rate limits) however it was
        split into claims. ``hold_at_most`` bounds what stays held (so no worker sits on more
        than a claim of the backlog): past it, the fullest partial jobs go out now, as they
        waste the least.
        """
        tails: list[tuple[_Job, list[int], list[_Row]]] = []
        for job, chunks in build_jobs(rows):
            if not flush and chunks and len(chunks[-1]) < job.size:
                tail = chunks.pop()
                tails.append((job, tail, self._rows(job, tail)))
            for profile_ids in chunks:
                self._push_chunk(job, profile_ids)
        if hold_at_most is not None:
            tails.sort(key=lambda tail: len(tail[1]) / tail[0].size)
            count = sum(len(tail_rows) for _, _, tail_rows in tails)
            while tails and count > hold_at_most:
                job, profile_ids, tail_rows = tails.pop()
                self._push_chunk(job, profile_ids)
                count -= len(tail_rows)
        return [row for _, _, tail_rows in tails for row in tail_rows]

    def _push_chunk(self, job: _Job, profile_ids: list[int]) -> None:
        self.keep_lease()
        if self.lease is not None and self.lease.lapsed:
            profile_ids = self._still_ours(job, profile_ids)
            if not profile_ids:
                return
        if self.deferred:
            self._release(self._rows(job, profile_ids))
            return
        payload = job.payload(profile_ids)
        try:
            accepted = self.send(job, payload)
        except PushDeferred:
            # Sending now would mean waiting (a rate limit, the request budget): the rows stay
            # pending, untouched, for the next run; no request was made.
            self.deferred = True
            self._release(self._rows(job, profile_ids))
            return
        except KlaviyoAPIError as error:
            self.report.requests += 1
            if error.retryable:
                self._retry(job, profile_ids, error)
            else:
                self._refused(job, profile_ids, error)
            return
        self.report.requests += 1
        self.report.jobs += 1
        ignored = tuple(getattr(accepted, "partial_failure", ()) or ())
        if ignored:
            profile_ids = self._partially_failed(job, profile_ids, payload, ignored)
        if profile_ids:
            self._mark_pushed(job, profile_ids)

    def _refused(self, job: _Job, profile_ids: list[int], error: KlaviyoAPIError) -> None:
        """A 4xx: fail only the entries, or parts of entries, Klaviyo's pointers name.

        A pointer at an entry's ``phone_number`` or ``subscriptions.sms`` fails that entry's
        SMS events (``email`` / ``subscriptions.email``: its email events); the rest of the
        entry, without the refused identifier, goes out again with the other entries. A
        refusal that names no profile (401/403, a non-JSON body, an error about the request)
        judged nobody: it is never bisected and is retried later (``_refused_request``).
        """
        if isinstance(error, KlaviyoAuthenticationError):
            self._refused_request(job, profile_ids, error)
            return
        named: dict[int, dict[str | None, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for err in error.errors:
            source = err.get("source") if isinstance(err, dict) else None
            pointer = source.get("pointer") if isinstance(source, dict) else None
            match = _PROFILE_POINTER.match(pointer or "")
            if match and int(match.group(1)) < len(profile_ids):
                named[int(match.group(1))][_part_of(match.group(2))].append(err)
        if not named:
            self._refused_request(job, profile_ids, error)
            return
        for index, parts in named.items():
            profile_id = profile_ids[index]
            dropped = job.dropped.setdefault(profile_id, set())
            rows = job.members[profile_id]
            whole = None in parts or len(parts) > 1 or bool(dropped & set(parts))
            if not whole:
                [channel] = parts
                refused = [row for row in rows if row.channel == channel]
                kept = [row for row in rows if row.channel != channel]
                whole = not kept
            if whole:
                errs = [err for group in parts.values() for err in group]
                self._mark_rows_failed(rows, type(error)(status=error.status, errors=errs))
                job.members[profile_id] = []
                continue
            dropped.add(channel)
            job.members[profile_id] = kept
            if refused:
                self._mark_rows_failed(
                    refused, type(error)(status=error.status, errors=parts[channel])
                )
        rest = [pid for pid in profile_ids if job.members.get(pid)]
        if rest:
            self._push_chunk(job, rest)

    def _partially_failed(
        self, job: _Job, profile_ids: list[int], payload: dict[str, Any], ignored: tuple[str, ...]
    ) -> list[int]:
        """Klaviyo accepted the job but ignored an identifier (``X-Klaviyo-Partial-Failure``).

        The header names the field, not the entry: when one entry of the job carries it, that
        entry's events of the field's channel are ``not_applied`` with the reason now. When
        several do, nobody can tell which one Klaviyo ignored: they stay ``pushed`` and the
        read-back gives each its verdict. Returns the profiles still to mark pushed (all).
        """
        entries = payload["data"]["attributes"]["profiles"]["data"]
        for name in ignored:
            channel = _PARTIAL_FAILURE_PARTS.get(name)
            carriers = [
                pid
                for pid, entry in zip(profile_ids, entries, strict=True)
                if entry["attributes"].get(name)
            ]
            if channel is None or len(carriers) != 1:
                logger.warning(
                    "Klaviyo accepted a %s job but ignored %s on one of its %d entries "
                    "(X-Klaviyo-Partial-Failure); the read-back will tell which.",
                    job.operation,
                    name,
                    len(carriers),
                )
                continue
            [profile_id] = carriers
            refused = [row for row in job.members[profile_id] if row.channel == channel]
            job.members[profile_id] = [
                row for row in job.members[profile_id] if row.channel != channel
            ]
            if refused:
                self._mark_not_applied(
                    refused,
                    f"Klaviyo ignored the {name} (X-Klaviyo-Partial-Failure: {name}): "
                    f"the {channel} consent was not applied",
                )
        return [pid for pid in profile_ids if job.members.get(pid)]

    def _mark_not_applied(self, rows: Sequence[_Row], reason: str) -> None:
        outbox.mark_not_applied(self._owned(rows), reason)
        self.report.verdicts[DeliveryStatus.NOT_APPLIED] += len(rows)
        if consent_not_applied.has_listeners(ConsentEvent):
            deliveries = Delivery.objects.in_bulk([row.pk for row in rows])
            for event in _events(rows):
                consent_not_applied.send_robust(
                    sender=ConsentEvent,
                    event=event,
                    delivery=deliveries[event.pk],
                    reason=reason,
                )

    def _release(self, rows: Sequence[_Row]) -> None:
        """Give rows back to the outbox unchanged (no attempt spent, due at once)."""
        if rows:
            outbox.release(self._owned(rows))

    def _still_ours(self, job: _Job, profile_ids: list[int]) -> list[int]:
        """The profiles of this job, each with only its rows that still carry our lease."""
        owned = set(self._owned(self._rows(job, profile_ids)).values_list("pk", flat=True))
        kept = []
        for profile_id in profile_ids:
            mine = [row for row in job.members[profile_id] if row.pk in owned]
            if mine:
                job.members[profile_id] = mine
                kept.append(profile_id)
        return kept

    def _rows(self, job: _Job, profile_ids: Sequence[int]) -> list[_Row]:
        return [d for pid in profile_ids for d in job.members[pid]]

    @staticmethod
    def _owned(rows: Sequence[_Row]) -> Any:
        """Only rows whose lease is still ours: a reclaimed row belongs to its new worker."""
        return Delivery.objects.filter(pk__in=[d.pk for d in rows], lease_token=rows[0].lease_token)

    def _mark_pushed(self, job: _Job, profile_ids: list[int]) -> None:
        rows = self._rows(job, profile_ids)
        self.mark_rows_pushed(rows)
        _announce(consent_pushed, rows, operation=job.operation, list_id=job.list_id)

    def mark_rows_pushed(self, rows: Sequence[_Row], reason: str = "") -> None:
        outbox.mark_pushed(self._owned(rows), reason=reason)
        self.report.pushed += len(rows)

    def settle_stranded(self, rows: Sequence[_Row], claimed_at: dict[int, datetime]) -> list[_Row]:
        """Rows a stopped worker may already have sent: skip those Klaviyo shows it applied.

        A worker killed between Klaviyo's 202 and its own UPDATE leaves rows whose job arrived.
        Klaviyo offers no job status and no idempotency key, so read the profiles back: a row
        whose consent Klaviyo shows with a timestamp after that worker's claim is marked pushed
        without a second job. The rest (Klaviyo slower, or the job never arrived) go out again,
        which is harmless in effect. Returns the rows still to send.
        """
        from klaviyo_consent.services.mirror import PullReport, _fetch, store_mirrors

        stranded = [row for row in rows if row.pk in claimed_at]
        if not stranded:
            return list(rows)
        profiles = Profile.objects.filter(pk__in={row.profile_id for row in stranded})
        try:
            found = _fetch(list(profiles), PullReport(), on_page=self.keep_lease)
        except (KlaviyoAPIError, PushDeferred):
            return list(rows)
        store_mirrors(found)  # a fresh read of Klaviyo is worth keeping as the mirror
        settled = []
        for row in stranded:
            if row.suppression:
                continue  # a suppression job is harmless to send again
            if row.profile_id in found:
                leaf = found[row.profile_id][0].klaviyo_leaf(row.channel, row.purpose)
                stamp = payloads.parse_klaviyo_datetime(leaf.get("consent_timestamp"))
                if leaf.get("consent") == row.consent and stamp and stamp >= claimed_at[row.pk]:
                    settled.append(row)
        if settled:
            self.mark_rows_pushed(
                settled, reason="found applied in Klaviyo after a worker stopped mid-push"
            )
            self.report.settled += len(settled)
        done = {row.pk for row in settled}
        return [row for row in rows if row.pk not in done]

    def _mark_rows_failed(self, rows: Sequence[_Row], error: KlaviyoAPIError) -> None:
        if not rows:
            return
        outbox.mark_failed(self._owned(rows), str(error), error.errors)
        self.report.failed += len(rows)
        _announce(consent_push_failed, rows, error=error, final=True)

    def _refused_request(self, job: _Job, profile_ids: list[int], error: KlaviyoAPIError) -> None:
        """Klaviyo refused the request itself: say so loudly, retry every row later.

        A 401/403 (key revoked, scope missing) or a refusal naming no profile says nothing
        about these consents: one request was spent, none is bisected or failed, and each row
        waits with a growing backoff (``deferrals``) until the site fixes what Klaviyo names.
        """
        rows = self._rows(job, profile_ids)
        retry_at = self._defer(
            rows,
            error,
            f"Klaviyo refused the {job.operation} request itself, not this consent; "
            f"will retry: {error}",
        )
        logger.error(
            "Klaviyo refused a %s request as a whole (%s); %d consent event(s) stay in the "
            "outbox and are retried from %s. Fix what Klaviyo names (key, scopes, revision).",
            job.operation,
            error,
            len(rows),
            retry_at.isoformat(),
        )
        if klaviyo_request_refused.has_listeners(ConsentEvent):
            klaviyo_request_refused.send_robust(
                sender=ConsentEvent,
                events=_events(rows),
                error=error,
                operation=job.operation,
                retry_at=retry_at,
            )
        _announce(consent_push_failed, rows, error=error, final=False)

    def _defer(self, rows: Sequence[_Row], error: KlaviyoAPIError, reason: str) -> datetime:
        """Reschedule rows without spending an attempt; returns the earliest next try."""
        now = timezone.now()
        groups: dict[tuple[int, int], list[_Row]] = defaultdict(list)
        for row in rows:
            groups[(row.attempts, row.deferrals + 1)].append(row)
        earliest: datetime | None = None
        for (attempts, deferrals), group in groups.items():
            next_at = now + timedelta(seconds=backoff(attempts + deferrals, error.retry_after))
            earliest = next_at if earliest is None else min(earliest, next_at)
            outbox.reschedule(
                self._owned(group),
                deferrals=deferrals,
                reason=reason,
                errors=error.errors,
                next_attempt_at=next_at,
            )
        self.report.retried += len(rows)
        return earliest or now

    def _retry(self, job: _Job, profile_ids: list[int], error: KlaviyoAPIError) -> None:
        rows = self._rows(job, profile_ids)
        if isinstance(error, KlaviyoRateLimited):
            # A 429 is about the account's rate, not these consents: it never spends the
            # attempt budget, so a burst of them can never dead-letter anything.
            self._defer(rows, error, f"Will retry (rate limited): {error}")
            logger.info("Klaviyo rate-limited a %s job: %s", job.operation, error)
            _announce(consent_push_failed, rows, error=error, final=False)
            return
        now = timezone.now()
        by_attempts: dict[int, list[_Row]] = defaultdict(list)
        for row in rows:
            by_attempts[row.attempts + 1].append(row)
        dead: list[_Row] = []
        for attempts, group in by_attempts.items():
            if attempts >= consent_settings.MAX_ATTEMPTS:
                outbox.dead_letter(
                    self._owned(group),
                    attempts=attempts,
                    reason=f"Gave up after {attempts} attempts: {error}",
                    errors=error.errors,
                )
                dead += group
            else:
                outbox.reschedule(
                    self._owned(group),
                    attempts=attempts,
                    reason=f"Will retry: {error}",
                    errors=error.errors,
                    next_attempt_at=now
                    + timedelta(seconds=backoff(attempts + group[0].deferrals, error.retry_after)),
                )
        self.report.retried += len(rows) - len(dead)
        self.report.failed += len(dead)
        _announce(consent_push_failed, rows, error=error, final=False)
        if dead:
            _announce(consent_push_failed, dead, error=error, final=True)


def push_pending(
    *,
    limit: int | None = None,
    claim_size: int = CLAIM_SIZE,
    profile_ids: Sequence[int] | None = None,
    include_scheduled: bool = False,
) -> SyncReport:
    """Push every due pending event, batch after batch, until none is due (or ``limit``).

    ``include_scheduled`` also takes rows waiting for a retry (an operator's "push now").
    """
    report = SyncReport()
    pusher = Pusher(report)
    held: list[_Row] = []
    if not waiting_allowed():
        claim_size = min(claim_size, NO_WAIT_CLAIM_SIZE)
        limit = claim_size if limit is None else min(limit, claim_size)
    while True:
        room = claim_size if limit is None else min(claim_size, limit - report.claimed)
        lease = lease_due(
            DeliveryStatus.PENDING,
            limit=max(room, 0),
            profile_ids=profile_ids,
            due_before=_far_future() if include_scheduled else None,
            keep=(held[0].lease_token, [row.pk for row in held]) if held else None,
        )
        if lease is None:
            break
        token, lease_until, kept, stranded = lease
        pusher.lease = Lease(token, lease_until)
        rows = _leased_rows(token, lease_until)
        fresh = len(rows) - kept
        report.claimed += fresh
        if stranded:
            rows = pusher.settle_stranded(rows, stranded)
        # A short claim means nothing more is due now; then, or at the limit, send it all. At
        # most a claim's worth stays held, so no worker sits on a share of the backlog.
        done = limit is not None and report.claimed >= limit
        held = pusher.push_rows(rows, flush=fresh < room or done, hold_at_most=claim_size)
        if pusher.deferred:
            # The rest would have to wait (``no_wait``): it stays in the outbox, due now.
            pusher._release(held)
            break
    return report


def _far_future() -> datetime:
    return timezone.now() + timedelta(days=3650)


def sync(*, verify: bool = True, wait: bool = False, max_wait: float = 300.0) -> SyncReport:
    """Push what is pending, then verify what is due; with ``wait``, until nothing is pending."""
    from klaviyo_consent.services.mirror import verify_pushed

    report = SyncReport()
    deadline = time.monotonic() + max_wait
    while True:
        report.merge(push_pending())
        if verify:
            try:
                report.merge(verify_pushed())
            except (KlaviyoAPIError, PushDeferred) as exc:
                if waiting_allowed():
                    raise
                # A push inside a signup reads back only what it can without waiting.
                logger.info("Read-back left for the next run: %s", exc)
        if not wait:
            return report
        upcoming = (
            Delivery.objects.filter(status=DeliveryStatus.PENDING)
            .order_by("next_attempt_at")
            .values_list("next_attempt_at", flat=True)
            .first()
        )
        if upcoming is None or time.monotonic() >= deadline:
            return report
        time.sleep(min(max((upcoming - timezone.now()).total_seconds(), 0.05), 5.0))


def retry_failed(*, event_ids: Sequence[int] | None = None) -> int:
    """Put failed (and dead-lettered) events back in the outbox for another round of attempts."""
    rows = Delivery.objects.filter(status=DeliveryStatus.FAILED)
    if event_ids is not None:
        rows = rows.filter(event_id__in=list(event_ids))
    return outbox.requeue(rows)
