"""Pushing the outbox to Klaviyo: claim due rows with a lease, send them as jobs, mark each row.

Order per (profile, channel, purpose) is kept: only the oldest undelivered event of each key is
claimable, so a withdrawal can never overtake the subscription it withdraws. Every row ends a
push ``pushed``, rescheduled, ``failed`` or ``not_applied`` through ``outbox``'s transitions.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.backends.base import waiting_allowed
from klaviyo_consent.choices import DeliveryStatus
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import (
    KlaviyoAPIError,
    KlaviyoAuthenticationError,
    KlaviyoConnectionError,
    KlaviyoRateLimited,
    PushDeferred,
)
from klaviyo_consent.models import ConsentEvent, Delivery, Profile
from klaviyo_consent.services import outbox, payloads
from klaviyo_consent.services.health import note_answer
from klaviyo_consent.services.jobs import ROW_COLUMNS, Job, Row, build_jobs, row_of
from klaviyo_consent.services.mirror import fetch, store_mirrors
from klaviyo_consent.services.outbox import Lease, backoff, lease_due
from klaviyo_consent.services.reports import PullReport, SyncReport
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


def _leased_rows(token: str, lease_until: datetime) -> list[Row]:
    return [
        Row(*values)
        for values in Delivery.objects.filter(lease_token=token, lease_expires_at=lease_until)
        .order_by("event_id")
        .values_list(*ROW_COLUMNS)
    ]


def _events(rows: Sequence[Row]) -> list[ConsentEvent]:
    """The full events of these rows, for signal receivers (loaded only when someone listens)."""
    missing = [row.pk for row in rows if row.event is None]
    loaded = ConsentEvent.objects.in_bulk(missing) if missing else {}
    return [row.event if row.event is not None else loaded[row.pk] for row in rows]


def _announce(signal: Any, rows: Sequence[Row], **kwargs: Any) -> None:
    if signal.has_listeners(ConsentEvent):
        signal.send_robust(sender=ConsentEvent, events=_events(rows), **kwargs)


def _send(job: Job, payload: dict[str, Any]) -> Any:
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

    def __init__(self, report: SyncReport, send: Callable[[Job, dict[str, Any]], Any] = _send):
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

    def push(self, deliveries: Sequence[Delivery | Row]) -> None:
        self.push_rows([row_of(d) for d in deliveries], flush=True)

    def push_rows(
        self, rows: Sequence[Row], *, flush: bool, hold_at_most: int | None = None
    ) -> list[Row]:
        """Push ``rows``; unless ``flush``, hold back each group's last, partly filled job.

        Returns the rows held back: the caller adds the next claimed rows to them, so a backlog
        goes out in full jobs (fewer requests against Klaviyo's rate limits) however it was
        split into claims. ``hold_at_most`` bounds what stays held (so no worker sits on more
        than a claim of the backlog): past it, the fullest partial jobs go out now, as they
        waste the least.
        """
        tails: list[tuple[Job, list[int], list[Row]]] = []
        backend = get_backend()
        for job, chunks in build_jobs(rows, max_subscribe=backend.max_profiles_per_subscribe):
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

    def _push_chunk(self, job: Job, profile_ids: list[int]) -> None:
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
            if isinstance(error, KlaviyoConnectionError):
                self.report.unreachable += 1
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

    def _refused(self, job: Job, profile_ids: list[int], error: KlaviyoAPIError) -> None:
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
        self, job: Job, profile_ids: list[int], payload: dict[str, Any], ignored: tuple[str, ...]
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

    def _mark_not_applied(self, rows: Sequence[Row], reason: str) -> None:
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

    def _release(self, rows: Sequence[Row]) -> None:
        """Give rows back to the outbox unchanged (no attempt spent, due at once)."""
        if rows:
            outbox.release(self._owned(rows))

    def _still_ours(self, job: Job, profile_ids: list[int]) -> list[int]:
        """The profiles of this job, each with only its rows that still carry our lease."""
        owned = set(self._owned(self._rows(job, profile_ids)).values_list("pk", flat=True))
        kept = []
        for profile_id in profile_ids:
            mine = [row for row in job.members[profile_id] if row.pk in owned]
            if mine:
                job.members[profile_id] = mine
                kept.append(profile_id)
        return kept

    def _rows(self, job: Job, profile_ids: Sequence[int]) -> list[Row]:
        return [d for pid in profile_ids for d in job.members[pid]]

    @staticmethod
    def _owned(rows: Sequence[Row]) -> Any:
        """Only rows whose lease is still ours: a reclaimed row belongs to its new worker."""
        return Delivery.objects.filter(pk__in=[d.pk for d in rows], lease_token=rows[0].lease_token)

    def _mark_pushed(self, job: Job, profile_ids: list[int]) -> None:
        rows = self._rows(job, profile_ids)
        cannot_read = get_backend().cannot_read
        if cannot_read:
            # Nothing can read Klaviyo back (a public key only): the verdict stays ``pushed``,
            # with the reason, and no read-back is scheduled.
            outbox.mark_pushed(self._owned(rows), reason=cannot_read, read_back=False)
            self.report.pushed += len(rows)
        else:
            self.mark_rows_pushed(rows)
        _announce(consent_pushed, rows, operation=job.operation, list_id=job.list_id)

    def mark_rows_pushed(self, rows: Sequence[Row], reason: str = "") -> None:
        outbox.mark_pushed(self._owned(rows), reason=reason)
        self.report.pushed += len(rows)

    def recover_stranded(self, rows: Sequence[Row], claimed_at: dict[int, datetime]) -> list[Row]:
        """Rows a stopped worker may already have sent: skip those Klaviyo shows it applied.

        A worker killed between Klaviyo's 202 and its own UPDATE leaves rows whose job arrived.
        Klaviyo offers no job status and no idempotency key, so read the profiles back: a row
        whose consent Klaviyo shows with a timestamp after that worker's claim is marked pushed
        without a second job. The rest (Klaviyo slower, or the job never arrived) go out again,
        which is harmless in effect. Returns the rows still to send.
        """
        stranded = [row for row in rows if row.pk in claimed_at]
        if not stranded:
            return list(rows)
        profiles = Profile.objects.filter(pk__in={row.profile_id for row in stranded})
        try:
            found = fetch(list(profiles), PullReport(), on_page=self.keep_lease)
        except (KlaviyoAPIError, PushDeferred):
            return list(rows)
        store_mirrors(found)  # a fresh read of Klaviyo is worth keeping as the mirror
        recovered = []
        for row in stranded:
            if row.suppression:
                continue  # a suppression job is harmless to send again
            if row.profile_id in found:
                leaf = found[row.profile_id][0].klaviyo_leaf(row.channel, row.purpose)
                stamp = payloads.parse_klaviyo_datetime(leaf.get("consent_timestamp"))
                if leaf.get("consent") == row.consent and stamp and stamp >= claimed_at[row.pk]:
                    recovered.append(row)
        if recovered:
            self.mark_rows_pushed(
                recovered, reason="found applied in Klaviyo after a worker stopped mid-push"
            )
            self.report.recovered += len(recovered)
        done = {row.pk for row in recovered}
        return [row for row in rows if row.pk not in done]

    def _mark_rows_failed(self, rows: Sequence[Row], error: KlaviyoAPIError) -> None:
        if not rows:
            return
        outbox.mark_failed(self._owned(rows), str(error), error.errors)
        self.report.failed += len(rows)
        _announce(consent_push_failed, rows, error=error, final=True)

    def _refused_request(self, job: Job, profile_ids: list[int], error: KlaviyoAPIError) -> None:
        """Klaviyo refused the request itself: say so loudly, retry every row later.

        A 401/403 (key revoked, scope missing) or a refusal naming no profile says nothing
        about these consents: one request was spent, none is bisected or failed, and each row
        waits with a growing backoff (``deferrals``) until the site fixes what Klaviyo names.
        """
        rows = self._rows(job, profile_ids)
        note_answer(error, job.operation)
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

    def _defer(self, rows: Sequence[Row], error: KlaviyoAPIError, reason: str) -> datetime:
        """Reschedule rows without spending an attempt; returns the earliest next try."""
        now = timezone.now()
        groups: dict[tuple[int, int], list[Row]] = defaultdict(list)
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

    def _retry(self, job: Job, profile_ids: list[int], error: KlaviyoAPIError) -> None:
        rows = self._rows(job, profile_ids)
        if isinstance(error, KlaviyoRateLimited):
            # A 429 is about the account's rate, not these consents: it never spends the
            # attempt budget, so a burst of them can never dead-letter anything.
            note_answer(error, job.operation)
            self._defer(rows, error, f"Will retry (rate limited): {error}")
            logger.info("Klaviyo rate-limited a %s job: %s", job.operation, error)
            _announce(consent_push_failed, rows, error=error, final=False)
            return
        now = timezone.now()
        by_attempts: dict[int, list[Row]] = defaultdict(list)
        for row in rows:
            by_attempts[row.attempts + 1].append(row)
        dead: list[Row] = []
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
    held: list[Row] = []
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
            rows = pusher.recover_stranded(rows, stranded)
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
