"""Sending list membership (no consent) to Klaviyo, and judging it from the list read-back.

Spec revision 2026-07-15. Adding: people whose Klaviyo profile id the mirror knows go out with
``POST /api/lists/{id}/relationships/profiles`` (≤ 1000 ids, 204); the others in a bulk profile
import job with the list relationship (``POST /api/profile-bulk-import-jobs``, ≤ 10,000
profiles, 202), which creates or updates the profile (identifiers only, never consent) and
adds it. Removing: ``DELETE /api/lists/{id}/relationships/profiles`` (≤ 1000 ids; "will not
impact the profile's consent"), ids found first by ``GET /api/profiles``; someone Klaviyo does
not know is on no list (``applied`` at once). Both calls are limited to 10/s and 150/m; the
shared limiter (``ratelimit.py``) keeps every worker inside them.

The verdict comes from ``GET /api/lists/{id}/relationships/profiles?filter=any(email,[...])``
(or ``phone_number``): on the list (for an add) or off it (for a remove) is ``applied``; not yet
is read again after ``VERIFY_DELAY`` (doubling) until ``VERIFY_ATTEMPTS`` reads, then
``not_applied``. Every transition is one of ``services/outbox.py``'s.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.choices import DeliveryStatus, Membership
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import (
    ConfigurationError,
    KlaviyoAPIError,
    KlaviyoAuthenticationError,
    KlaviyoRateLimited,
    PushDeferred,
)
from klaviyo_consent.klaviyo import MAX_IMPORT_PROFILES, MAX_LIST_MEMBERS, MAX_PAGE_SIZE
from klaviyo_consent.models import MembershipDelivery, Profile
from klaviyo_consent.services import list_payloads, outbox
from klaviyo_consent.services.mirror import fetch, store_mirrors
from klaviyo_consent.services.reports import PullReport, SyncReport

logger = logging.getLogger("klaviyo_consent.sync")

CLAIM_SIZE = 5000
_ENTRY = "/data/attributes/profiles/data/"


def _chunks(rows: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _owned(rows: Sequence[MembershipDelivery]) -> Any:
    """Only the rows whose lease is still ours."""
    return MembershipDelivery.objects.filter(
        pk__in=[row.pk for row in rows], lease_token=rows[0].lease_token
    )


class _Deferred(Exception):
    """Sending now would mean waiting (``no_wait``): the rest stays in the outbox."""


class MembershipPusher:
    """Sends claimed membership rows; marks each pushed, retried, failed or applied."""

    def __init__(self, report: SyncReport) -> None:
        self.report = report
        self.backend = get_backend()

    def push(self, rows: Sequence[MembershipDelivery]) -> None:
        groups: dict[tuple[str, str], list[MembershipDelivery]] = defaultdict(list)
        for row in rows:
            groups[(row.list_id, row.action)].append(row)
        done: set[int] = set()
        try:
            for (list_id, action), group in groups.items():
                if action == Membership.REMOVE:
                    group = self._find_ids(group)
                known = [row for row in group if row.profile.klaviyo_id]
                unknown = [row for row in group if not row.profile.klaviyo_id]
                call = (
                    self.backend.add_profiles_to_list
                    if action == Membership.ADD
                    else self.backend.remove_profiles_from_list
                )
                for chunk in _chunks(known, MAX_LIST_MEMBERS):
                    self._relationship(list_id, action, chunk, call)
                    done.update(row.pk for row in chunk)
                if action == Membership.ADD:
                    for chunk in _chunks(unknown, MAX_IMPORT_PROFILES):
                        self._import(list_id, chunk)
                        done.update(row.pk for row in chunk)
        except _Deferred:
            pending = [row for row in rows if row.pk not in done]
            if pending:
                outbox.release(_owned(pending))

    def _find_ids(self, rows: list[MembershipDelivery]) -> list[MembershipDelivery]:
        """Klaviyo's ids of the people to remove; those Klaviyo does not know are on no list."""
        missing = [row for row in rows if not row.profile.klaviyo_id]
        if not missing:
            return rows
        profiles = list({row.profile_id: row.profile for row in missing}.values())
        try:
            found = fetch(profiles, PullReport())
        except PushDeferred as exc:
            raise _Deferred from exc
        except KlaviyoAPIError as error:
            self._failed_request(missing, error)
            return [row for row in rows if row.profile.klaviyo_id]
        store_mirrors(found)
        for row in missing:
            if row.profile_id in found:
                row.profile = found[row.profile_id][0]
        absent = [row for row in missing if row.profile_id not in found]
        if absent:
            outbox.record_verdict(
                _owned(absent),
                DeliveryStatus.APPLIED,
                "Klaviyo has no profile with these identifiers: they are on no list",
                next_attempt_at=None,
            )
            self.report.memberships_verified += len(absent)
        return [row for row in rows if row.profile.klaviyo_id]

    def _relationship(
        self,
        list_id: str,
        action: str,
        rows: Sequence[MembershipDelivery],
        call: Callable[[str, dict[str, Any]], Any],
    ) -> None:
        """Add or remove by Klaviyo id. Ids Klaviyo refuses by pointer (``/data/<i>/id``: it
        has no such profile any more, deleted or merged there) are forgotten: an add sends
        those people by identifiers in an import job, a removal is done (on no list); the
        others go again."""
        body = list_payloads.list_members([row.profile.klaviyo_id for row in rows])
        answer = self._send(rows, lambda: call(list_id, body), pointers="/data/", fail_named=False)
        if not (isinstance(answer, _Refused) and answer.entries):
            return
        stale = [row for index, row in enumerate(rows) if index in answer.entries]
        rest = [row for index, row in enumerate(rows) if index not in answer.entries]
        Profile.objects.filter(pk__in=[row.profile_id for row in stale]).update(klaviyo_id="")
        for row in stale:
            row.profile.klaviyo_id = ""
        if action == Membership.ADD:
            self._import(list_id, stale)
        else:
            outbox.record_verdict(
                _owned(stale),
                DeliveryStatus.APPLIED,
                "Klaviyo has no profile with this id: it is on no list",
                next_attempt_at=None,
            )
            self.report.memberships_verified += len(stale)
        if rest:
            self._relationship(list_id, action, rest, call)

    def _import(self, list_id: str, rows: Sequence[MembershipDelivery]) -> None:
        entries = [
            list_payloads.import_entry(
                email=row.profile.email,
                phone_number=row.profile.phone_number,
                external_id=row.profile.external_id,
            )
            for row in rows
        ]
        payload = list_payloads.import_job(entries, list_id=list_id)
        document = self._send(rows, lambda: self.backend.bulk_import_profiles(payload))
        if isinstance(document, _Refused):
            named = document.entries
            rest = [row for index, row in enumerate(rows) if index not in named]
            if rest and named:
                self._import(list_id, rest)

    def _send(
        self,
        rows: Sequence[MembershipDelivery],
        call: Callable[[], Any],
        *,
        pointers: str = _ENTRY,
        fail_named: bool = True,
    ) -> Any:
        """One request for ``rows``; Klaviyo's answer decides each row's next state.

        A 4xx whose pointers (``<pointers><index>``) name rows fails those rows, or with
        ``fail_named=False`` leaves them to the caller; either way a :class:`_Refused` naming
        them is returned, and the caller sends the others again.
        """
        try:
            answer = call()
        except PushDeferred as exc:
            raise _Deferred from exc
        except ConfigurationError as error:  # e.g. the client backend: no private key
            outbox.mark_failed(_owned(rows), str(error), [])
            self.report.failed += len(rows)
            return None
        except KlaviyoAPIError as error:
            self.report.requests += 1
            return self._failed_request(rows, error, pointers=pointers, fail_named=fail_named)
        self.report.requests += 1
        self.report.jobs += 1
        job_id = ((answer or {}).get("data") or {}).get("id") if isinstance(answer, dict) else None
        reason = f"bulk import job {job_id}" if job_id else ""
        outbox.mark_pushed(_owned(rows), reason=reason)
        self.report.memberships_pushed += len(rows)
        return answer

    def _failed_request(
        self,
        rows: Sequence[MembershipDelivery],
        error: KlaviyoAPIError,
        *,
        pointers: str = _ENTRY,
        fail_named: bool = True,
    ) -> Any:
        now = timezone.now()
        if isinstance(error, KlaviyoRateLimited) or isinstance(error, KlaviyoAuthenticationError):
            # About the account or the key, not these people: wait, never spend attempts.
            with transaction.atomic():
                for row in rows:
                    outbox.reschedule(
                        _owned([row]),
                        deferrals=row.deferrals + 1,
                        reason=f"Will retry: {error}",
                        errors=error.errors,
                        next_attempt_at=now
                        + timedelta(seconds=outbox.backoff(row.deferrals + 1, error.retry_after)),
                    )
            self.report.retried += len(rows)
            return None
        if error.retryable:
            with transaction.atomic():
                for row in rows:
                    attempts = row.attempts + 1
                    if attempts >= consent_settings.MAX_ATTEMPTS:
                        outbox.dead_letter(
                            _owned([row]),
                            attempts=attempts,
                            reason=f"Gave up after {attempts} attempts: {error}",
                            errors=error.errors,
                        )
                        self.report.failed += 1
                    else:
                        outbox.reschedule(
                            _owned([row]),
                            attempts=attempts,
                            reason=f"Will retry: {error}",
                            errors=error.errors,
                            next_attempt_at=now
                            + timedelta(seconds=outbox.backoff(attempts, error.retry_after)),
                        )
                        self.report.retried += 1
            return None
        named = _named_entries(error, len(rows), pointers)
        if named and not fail_named:
            return _Refused(named)
        failed = [row for index, row in enumerate(rows) if index in named] if named else rows
        outbox.mark_failed(_owned(failed), str(error)[:2000], error.errors)
        self.report.failed += len(failed)
        return _Refused(named)


class _Refused:
    """A 4xx: ``entries`` are the indexes its pointers named (failed); the rest go again."""

    def __init__(self, entries: set[int]) -> None:
        self.entries = entries


def _named_entries(error: KlaviyoAPIError, count: int, prefix: str = _ENTRY) -> set[int]:
    """Indexes of the entries Klaviyo's pointers name (``<prefix><index>[/...]``)."""
    named = set()
    for err in error.errors:
        pointer = ((err.get("source") or {}) if isinstance(err, dict) else {}).get("pointer") or ""
        if pointer.startswith(prefix):
            index = pointer[len(prefix) :].split("/", 1)[0]
            if index.isdigit() and int(index) < count:
                named.add(int(index))
    return named


def push_memberships(report: SyncReport | None = None) -> SyncReport:
    """Send every due membership row, claim after claim."""
    report = report or SyncReport()
    pusher = MembershipPusher(report)
    while True:
        rows = outbox.lease_rows(
            MembershipDelivery.objects.filter(status=DeliveryStatus.PENDING).select_related(
                "profile"
            ),
            limit=CLAIM_SIZE,
            in_order=("profile_id", "list_id"),
        )
        if not rows:
            return report
        report.claimed += len(rows)
        rows = _with_profiles(rows)
        pusher.push(rows)
        if len(rows) < CLAIM_SIZE:
            return report


def _with_profiles(rows: list[MembershipDelivery]) -> list[MembershipDelivery]:
    profiles = Profile.objects.in_bulk({row.profile_id for row in rows})
    for row in rows:
        row.profile = profiles[row.profile_id]
    return rows


def verify_memberships(report: SyncReport | None = None) -> SyncReport:
    """Read the lists back for due pushed membership rows and give each its verdict."""
    report = report or SyncReport()
    backend = get_backend()
    if backend.cannot_read:
        return report
    while True:
        rows = outbox.lease_rows(
            MembershipDelivery.objects.filter(status=DeliveryStatus.PUSHED), limit=1000
        )
        if not rows:
            return report
        rows = _with_profiles(rows)
        by_list: dict[str, list[MembershipDelivery]] = defaultdict(list)
        for row in rows:
            by_list[row.list_id].append(row)
        for list_id, group in by_list.items():
            try:
                members = _members(backend, list_id, group, report)
            except PushDeferred:
                outbox.release(_owned(group))  # a push that must not wait: read next run
                return report
            except KlaviyoAPIError as error:
                logger.warning("Could not read list %s back: %s", list_id, error)
                _read_back_failed(group, error)
                report.retried += len(group)
                continue
            _judge(group, members, report)
        if len(rows) < 1000:
            return report


def _read_back_failed(rows: list[MembershipDelivery], error: KlaviyoAPIError) -> None:
    """Klaviyo did not answer the read-back: each row counts the read, says why and is due
    again after a backoff (no verdict is guessed)."""
    now = timezone.now()
    with transaction.atomic():
        for row in rows:
            attempts = row.verify_attempts + 1
            outbox.reschedule(
                _owned([row]),
                verify_attempts=attempts,
                reason=f"Read-back failed: {error}"[:2000],
                next_attempt_at=now
                + timedelta(seconds=outbox.backoff(attempts, error.retry_after)),
            )


def _members(
    backend: Any, list_id: str, rows: list[MembershipDelivery], report: SyncReport
) -> set[str]:
    """Klaviyo ids on ``list_id`` among these rows' people (their ids found first if new)."""
    profiles = list({row.profile_id: row.profile for row in rows}.values())
    missing = [p for p in profiles if not p.klaviyo_id]
    if missing:
        found = fetch(missing, PullReport())
        store_mirrors(found)
        for profile in missing:
            if profile.pk in found:
                profile.klaviyo_id = found[profile.pk][0].klaviyo_id
    members: set[str] = set()
    by_email = [p.email for p in profiles if p.email]
    by_phone = [p.phone_number for p in profiles if not p.email and p.phone_number]
    for name, values in (("email", by_email), ("phone_number", by_phone)):
        for chunk in _chunks(values, MAX_PAGE_SIZE):
            members.update(
                backend.get_profile_ids_for_list(
                    list_id, list_payloads.list_members_query(name, chunk)
                )
            )
            report.requests += 1
    return members


def _judge(rows: list[MembershipDelivery], members: set[str], report: SyncReport) -> None:
    """Each row's verdict; rows with the same outcome share one UPDATE, all in one commit."""
    now = timezone.now()
    outcomes: dict[tuple[str, str, Any, int], list[MembershipDelivery]] = defaultdict(list)
    for row in rows:
        on_list = bool(row.profile.klaviyo_id) and row.profile.klaviyo_id in members
        wanted = row.action == Membership.ADD
        attempts = row.verify_attempts + 1
        if on_list == wanted:
            status = DeliveryStatus.APPLIED
            reason = "on the list in Klaviyo" if wanted else "not on the list in Klaviyo"
            next_at = None
        elif attempts < consent_settings.VERIFY_ATTEMPTS:
            status = DeliveryStatus.PUSHED
            reason = "Klaviyo's list does not show it yet; will read again"
            delay = consent_settings.VERIFY_DELAY * 2 ** (attempts - 1)
            next_at = now + timedelta(seconds=delay)
        else:
            status = DeliveryStatus.NOT_APPLIED
            reason = (
                "Klaviyo's list does not show the person after the import"
                if wanted
                else "Klaviyo's list still shows the person"
            )
            next_at = None
        outcomes[(status, reason, next_at, attempts)].append(row)
    with transaction.atomic():
        for (status, reason, next_at, attempts), group in outcomes.items():
            outbox.record_verdict(
                _owned(group), status, reason, next_attempt_at=next_at, verify_attempts=attempts
            )
            if status != DeliveryStatus.PUSHED:
                report.memberships_verified += len(group)
