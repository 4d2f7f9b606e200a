"""Verdicts: read pushed consents back from Klaviyo and judge each against Klaviyo's state.

``pull_profiles``/``pull_all`` refresh the mirror (``mirror``), record drift (``drift``) and
give every outstanding delivery its verdict (``verdicts``' pure judges) through ``outbox``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.choices import DeliveryStatus, Method
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import KlaviyoAPIError
from klaviyo_consent.models import ConsentEvent, Delivery, Profile
from klaviyo_consent.services import outbox, payloads
from klaviyo_consent.services.drift import record_drift
from klaviyo_consent.services.health import note_answer
from klaviyo_consent.services.lists import opt_in_processes
from klaviyo_consent.services.mirror import fetch, match_page, store_mirrors
from klaviyo_consent.services.outbox import claim
from klaviyo_consent.services.reports import PullReport, SyncReport
from klaviyo_consent.services.verdicts import (
    Verdict,
    history_entry,
    judge,
    judge_suppression,
)
from klaviyo_consent.signals import consent_applied, consent_not_applied

logger = logging.getLogger("klaviyo_consent.mirror")

#: The longest wait between two re-reads of a profile waiting for a double opt-in confirmation.
CONFIRMATION_RECHECK_MAX = timedelta(hours=12)
OUTSTANDING = (DeliveryStatus.PUSHED, DeliveryStatus.PENDING_CONFIRMATION)
#: Verdicts a later read-back may still change: Klaviyo's state is the evidence, and it moves.
REJUDGED = (*OUTSTANDING, DeliveryStatus.NOT_APPLIED)


def pull_profiles(
    profiles: Sequence[Profile],
    report: PullReport | None = None,
    *,
    deliveries: Sequence[Delivery] | None = None,
    source: str = "pull",
) -> PullReport:
    """Refresh the mirror of these profiles with as few ``GET /api/profiles`` calls as possible.

    ``deliveries``: the rows to judge (already claimed); by default every outstanding one and
    every ``not_applied`` one that is still its key's latest event. ``source`` names the
    read-back in each verdict's history (``pull``, ``webhook``, ``verify``).
    """
    report = report or PullReport()
    matched = fetch(profiles, report)
    store_mirrors(matched)
    report.profiles_mirrored += len(matched)
    missing = [p for p in profiles if p.pk not in matched]
    report.not_found += [p.pk for p in missing]
    judge_outstanding(matched, report, deliveries=deliveries, missing=missing, source=source)
    return report


def pull_all(
    report: PullReport | None = None, progress: Callable[[int], None] | None = None
) -> PullReport:
    """Page through every Klaviyo profile (100 a page) and refresh the local ones it matches."""
    report = report or PullReport()
    backend = get_backend()
    for page in backend.iter_profiles(payloads.profiles_query()):
        report.requests += 1
        rows = page.get("data") or []
        report.profiles_read += len(rows)
        matched = match_page(rows)
        store_mirrors(matched)
        report.profiles_mirrored += len(matched)
        judge_outstanding(matched, report)
        if progress is not None:
            progress(len(rows))
    return report


def judge_outstanding(
    matched: dict[int, tuple[Profile, dict[str, Any]]],
    report: PullReport,
    *,
    deliveries: Sequence[Delivery] | None = None,
    missing: Sequence[Profile] = (),
    source: str = "pull",
) -> None:
    """Give a verdict to every pushed, awaiting-confirmation or not-applied event of these
    profiles: any verdict but ``applied`` and ``failed`` follows Klaviyo's latest state."""
    profiles = {pid: profile for pid, (profile, _) in matched.items()}
    profiles.update({p.pk: p for p in missing})
    newest, latest = _newest_events(profiles)
    if deliveries is None:
        deliveries = [
            d
            for d in Delivery.objects.filter(profile_id__in=list(profiles), status__in=REJUDGED)
            .select_related("event", "event__personal_data")
            .order_by("event_id")
            # A not_applied event is re-judged while it is its key's latest word.
            if d.status != DeliveryStatus.NOT_APPLIED or d.pk in latest
        ]
    drifts, confirmed = record_drift(matched.values(), source=source)
    report.drifts += drifts
    deliveries = [d for d in deliveries if d.pk not in confirmed]
    # Lists are read before judging: no call to Klaviyo from inside the verdict loop.
    processes = opt_in_processes(
        d.event.list_id or consent_settings.DEFAULT_LIST_ID
        for d in deliveries
        if not d.event.suppression
        and newest.get((d.profile_id, d.channel, d.purpose, False), d.pk) == d.pk
    )
    now = timezone.now()
    window = timedelta(seconds=float(consent_settings.CONFIRMATION_WINDOW))
    verdicts = _Verdicts(report, source=source, now=now)
    for delivery in deliveries:
        event = delivery.event
        profile = profiles[delivery.profile_id]
        key = (delivery.profile_id, delivery.channel, delivery.purpose, bool(event.suppression))
        if newest.get(key, event.pk) != event.pk:
            if delivery.status == DeliveryStatus.NOT_APPLIED:
                continue
            verdicts.add(
                delivery, DeliveryStatus.PUSHED, f"superseded by event #{newest[key]}", None
            )
            continue
        attempts = delivery.verify_attempts + 1
        if event.suppression:
            verdict = judge_suppression(
                suppression=event.suppression,
                leaf=profile.klaviyo_leaf(event.channel, event.purpose),
                profile_found=delivery.profile_id in matched,
                last_try=attempts >= consent_settings.VERIFY_ATTEMPTS
                or delivery.status == DeliveryStatus.NOT_APPLIED,
            )
            delay = consent_settings.VERIFY_DELAY * 2 ** min(attempts, 6)
            next_at = (
                now + timedelta(seconds=max(delay, 1.0))
                if verdict.status == DeliveryStatus.PUSHED
                else None
            )
            delivery.verify_attempts = attempts
            verdicts.add(delivery, verdict.status, verdict.reason, next_at, event=event)
            continue
        verdict = judge(
            channel=event.channel,
            consent=event.consent,
            historical_import=event.historical_import,
            phone_number=event.phone_number,
            leaf=profile.klaviyo_leaf(event.channel, event.purpose),
            profile_found=delivery.profile_id in matched,
            opt_in_process=processes.get(event.list_id or consent_settings.DEFAULT_LIST_ID or ""),
            last_try=attempts >= consent_settings.VERIFY_ATTEMPTS
            or delivery.status == DeliveryStatus.NOT_APPLIED,
            pushed_at=delivery.pushed_at or event.recorded_at,
            now=now,
            confirmation_window=window,
        )
        if delivery.status == DeliveryStatus.NOT_APPLIED and verdict.status in OUTSTANDING:
            # Klaviyo had its chance and sends no confirmation for a job it did not take: only
            # evidence that the consent took effect moves a not_applied verdict.
            # The old cause may be gone (a bounce lifted): say only what Klaviyo shows now.
            shown = profile.klaviyo_leaf(event.channel, event.purpose).get("consent")
            verdict = Verdict(
                DeliveryStatus.NOT_APPLIED,
                f"Klaviyo shows {shown or 'no consent'}; the job was not applied when it was "
                "read back (see the verdict history)",
            )
        if verdict.status == DeliveryStatus.PUSHED:
            delay = consent_settings.VERIFY_DELAY * 2 ** min(attempts, 6)
            next_at = now + timedelta(seconds=max(delay, 1.0))
        elif verdict.status == DeliveryStatus.PENDING_CONFIRMATION:
            next_at = _next_confirmation_read(
                now, attempts, (delivery.pushed_at or event.recorded_at) + window
            )
        else:
            next_at = None
        delivery.verify_attempts = attempts
        verdicts.add(delivery, verdict.status, verdict.reason, next_at, event=event)
    verdicts.save()


def _next_confirmation_read(now: Any, attempts: int, deadline: Any) -> Any:
    """When to read a pending confirmation again: doubling waits, at most 12 h apart, and one
    read at the end of the window, so the wait ends with a verdict."""
    delay = timedelta(seconds=max(consent_settings.VERIFY_DELAY, 1.0) * 2 ** min(attempts, 20))
    moment = now + min(delay, CONFIRMATION_RECHECK_MAX)
    return min(moment, deadline) if deadline > now else moment


def _newest_events(
    profiles: dict[int, Profile],
) -> tuple[dict[tuple[int, str, str, bool], int], set[int]]:
    """(newest site event per profile, channel, purpose and kind: consent or suppression;
    the ids of the newest event of any kind per profile, channel and purpose)."""
    newest: dict[tuple[int, str, str, bool], int] = {}
    latest: dict[tuple[int, str, str], int] = {}
    rows = ConsentEvent.objects.filter(profile_id__in=list(profiles)).values_list(
        "profile_id", "channel", "purpose", "pk", "method", "suppression"
    )
    for profile_id, channel, purpose, pk, method, suppression in rows:
        key = (profile_id, channel, purpose)
        latest[key] = max(pk, latest.get(key, 0))
        if method != Method.KLAVIYO:
            kind = (*key, bool(suppression))
            newest[kind] = max(pk, newest.get(kind, 0))
    return newest, set(latest.values())


class _Verdicts:
    """Collects verdicts, then writes them with one UPDATE per distinct outcome, then signals.

    Rows judged alike (same status, reason, next attempt and count) share a statement: a
    reconcile page or a verify batch costs a handful of queries instead of one per event.
    """

    def __init__(self, report: PullReport, *, source: str = "pull", now: Any = None) -> None:
        self.report = report
        self.source = source
        self.now = now or timezone.now()
        self.groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        self.announcements: list[tuple[ConsentEvent, Delivery, str, str]] = []
        #: Rows whose verdict changed get their history line, one UPDATE each.
        self.histories: dict[int, list[dict[str, Any]]] = {}

    def add(
        self,
        delivery: Delivery,
        status: str,
        reason: str,
        next_at: Any,
        *,
        event: ConsentEvent | None = None,
    ) -> None:
        self.groups[(status, reason, next_at, delivery.verify_attempts)].append(delivery.pk)
        if (status, reason) != (delivery.status, delivery.reason) and status != (
            DeliveryStatus.PUSHED
        ):
            delivery.history = [
                *(delivery.history or []),
                history_entry(
                    at=self.now,
                    previous=delivery.status,
                    status=status,
                    reason=reason,
                    source=self.source,
                ),
            ]
            self.histories[delivery.pk] = delivery.history
        if status == delivery.status:
            delivery.reason = reason
            return
        self.report.verdicts_changed += 1
        delivery.status, delivery.reason = status, reason
        if event is not None:
            self.announcements.append((event, delivery, status, reason))

    def save(self) -> None:
        now = timezone.now()
        for (status, reason, next_at, verify_attempts), pks in self.groups.items():
            outbox.record_verdict(
                Delivery.objects.filter(pk__in=pks),
                status,
                reason,
                next_attempt_at=next_at,
                verify_attempts=verify_attempts,
                now=now,
            )
        for pk, history in self.histories.items():
            outbox.write_history(Delivery.objects.filter(pk=pk), history)
        for event, delivery, status, reason in self.announcements:
            if status == DeliveryStatus.APPLIED:
                consent_applied.send_robust(sender=ConsentEvent, event=event, delivery=delivery)
            elif status == DeliveryStatus.NOT_APPLIED:
                consent_not_applied.send_robust(
                    sender=ConsentEvent, event=event, delivery=delivery, reason=reason
                )


def verify_pushed(*, limit: int | None = None) -> SyncReport:
    """Re-read the profiles of due pushed events and record each verdict."""
    report = SyncReport()
    while limit is None or report.verified < limit:
        batch = claim(DeliveryStatus.PUSHED, limit=1000) + claim(
            DeliveryStatus.PENDING_CONFIRMATION, limit=1000
        )
        if not batch:
            break
        profiles = list({d.profile_id: d.profile for d in batch}.values())
        try:
            pull = pull_profiles(profiles, deliveries=batch, source="verify")
        except KlaviyoAPIError as error:
            _read_back_failed(batch, error)
            report.retried += len(batch)
            break
        except Exception:
            # Unread rows go back to be read by the next run, not after a lease runs out
            # (a push that must not wait defers its read-back this way).
            outbox.release(
                Delivery.objects.filter(
                    pk__in=[d.pk for d in batch], lease_token__in={d.lease_token for d in batch}
                )
            )
            raise
        report.verified += len(batch)
        report.requests += pull.requests
        for delivery in batch:
            report.verdicts[delivery.status] += 1
    return report


def _read_back_failed(batch: Sequence[Delivery], error: KlaviyoAPIError) -> None:
    """A read-back Klaviyo could not answer (an error, a 2xx that is not its JSON): each row
    keeps its status, counts the attempt, says why and is due again after a backoff."""
    note_answer(error, "get_profiles")
    now = timezone.now()
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for delivery in batch:
        groups[(delivery.verify_attempts + 1, delivery.lease_token)].append(delivery.pk)
    for (attempts, token), pks in groups.items():
        outbox.reschedule(
            Delivery.objects.filter(pk__in=pks, lease_token=token),
            verify_attempts=attempts,
            reason=f"Read-back failed: {error}"[:2000],
            next_attempt_at=now + timedelta(seconds=outbox.backoff(attempts, error.retry_after)),
        )
