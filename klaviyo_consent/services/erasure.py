"""Erasure that keeps the proof (GDPR Art. 17; docs/erasure.md).

:func:`erase_profile` removes a person's raw identifiers and evidence everywhere the app
keeps them (the events' and identity events' erasable rows, the profile and its mirrored
``subscriptions``, Klaviyo's error texts and verdict history, webhook bodies), records an
:class:`~klaviyo_consent.models.Erasure` (a Merkle-ledger leaf at the next checkpoint) and
queues Klaviyo's data-privacy deletion job (``services.erasure_push``). Every event keeps its
leaf, whose keyed digests stand in for the identifiers: ``klaviyo_consent_verify`` and every
receipt still verify. :func:`erase_expired_evidence` erases the evidence of events older than
``EVIDENCE_RETENTION_DAYS`` the same way, the consent itself kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps as django_apps
from django.db import transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from klaviyo_consent.choices import DeliveryStatus
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import ConfigurationError, ErasureRefused, LedgerError
from klaviyo_consent.models import (
    ConsentEvent,
    Delivery,
    ErasedIdentifier,
    Erasure,
    ErasureDelivery,
    ErasureScope,
    EventPersonalData,
    IdentityDelivery,
    IdentityPersonalData,
    KlaviyoHealth,
    MembershipDelivery,
    Profile,
    WebhookDelivery,
)
from klaviyo_consent.phone import normalize_phone_number, phone_numbers_in
from klaviyo_consent.services import outbox
from klaviyo_consent.services.checkpoints import checkpoint
from klaviyo_consent.services.erased import erased_on
from klaviyo_consent.services.leaves import digest, ledger_secret
from klaviyo_consent.services.ledger import clean_email
from klaviyo_consent.signals import profile_erased
from klaviyo_consent.validators import EMAIL_IN_TEXT, clean_reason

#: What replaces an erased identifier inside free text (Klaviyo's error detail, webhook bodies).
ERASED = "[erased]"
#: The identifiers an erasure keeps as keyed digests (its record, ``check/``).
IDENTIFIER_FIELDS = ("email", "phone_number", "external_id")
#: Why a consent not yet sent (or not yet read back) stops when its person is erased.
NOT_SENT = "Not sent: the person was erased before Klaviyo applied it."

_BLANK_EVENT = {
    "email": "",
    "phone_number": "",
    "external_id": None,
    "ip_address": None,
    "user_agent": "",
    "page_url": "",
}


@dataclass(frozen=True)
class ErasureRequest:
    """Who is to be erased (a profile id), who asks, how, and why (never an identifier)."""

    profile_id: int
    source: str
    requested_by: Any = None
    reason: str = ""


def erase_profile(request: ErasureRequest, *, now: datetime | None = None) -> Erasure:
    """Erase the person ``request.profile_id`` names (with the profiles merged into it).

    First every event of theirs gets its ledger leaf (a checkpoint runs if one lacks it), so
    the proof survives. Then, in one transaction: the raw values go, pending consent pushes
    stop (``failed``, :data:`NOT_SENT`), an :class:`Erasure` with the digests is written and
    one :class:`ErasureDelivery` per identifier Klaviyo knows the profile by is queued
    (pushed on commit). Returns the erasure. Raises :class:`ErasureRefused` (already erased,
    a profile merged into another, an event the ledger cannot take yet),
    :class:`ConsentValidationError` naming ``reason`` when it holds an e-mail address or a
    phone number, and :class:`Profile.DoesNotExist`.
    """
    clean_reason(request.reason, field="reason")  # kept on the erasure record, a ledger leaf
    profile = Profile.objects.get(pk=request.profile_id)
    if profile.merged_into_id is not None:
        raise ErasureRefused(
            f"Profile {profile.pk} was merged into profile {profile.merged_into_id}: erase that "
            "one (its erasure covers this one).",
        )
    if profile.erased_at is not None:
        raise ErasureRefused(
            f"Profile {profile.pk} was already erased on {profile.erased_at:%Y-%m-%d}."
        )
    _sequence_events(profile)
    now = now or timezone.now()
    with transaction.atomic():
        persons = list(
            Profile.objects.select_for_update()
            .filter(Q(pk=profile.pk) | Q(merged_into_id=profile.pk))
            .order_by("pk")
        )
        person = next(p for p in persons if p.pk == profile.pk)
        if person.erased_at is not None:  # another request erased them meanwhile
            raise ErasureRefused(f"Profile {person.pk} was already erased.")
        ids = [p.pk for p in persons]
        unsequenced = (
            ConsentEvent.objects.filter(profile_id__in=ids, ledger_entry__isnull=True)
            .values_list("pk", flat=True)
            .first()
        )
        if unsequenced is not None:
            raise ErasureRefused(
                f"Event {unsequenced} is not in the ledger yet, so erasing it now would lose its "
                "proof; try again once klaviyo_consent_checkpoint ran.",
            )
        values = _identifiers(persons)
        rows = EventPersonalData.objects.filter(event__profile_id__in=ids)
        erasure = Erasure.objects.create(
            scope=ErasureScope.PROFILE,
            profile=person,
            requested_at=now,
            source=request.source,
            reason=request.reason,
            recorded_by=request.requested_by,
            digests=_digests(values),
            events=rows.count(),
        )
        ErasedIdentifier.objects.bulk_create(
            ErasedIdentifier(erasure=erasure, field=field, digest=hexdigest)
            for field, hexdigests in erasure.digests.items()
            for hexdigest in hexdigests
        )
        ErasureDelivery.objects.bulk_create(
            ErasureDelivery(
                erasure=erasure,
                profile=person,
                target_field=field,
                target_value=value,
                next_attempt_at=now,
            )
            for field, value in _klaviyo_targets(persons)
        )
        rows.update(**_BLANK_EVENT, erased_at=now)
        IdentityPersonalData.objects.filter(
            Q(event__profile_id__in=ids) | Q(event__other_profile_id__in=ids)
        ).update(old_value="", new_value="", moved={}, reason=None, erased_at=now)
        _stop_deliveries(ids)
        _scrub_outbox(ids, values)
        _scrub_webhooks(values)
        _scrub_health(values)
        _scrub_admin_log(ids, values)
        Profile.objects.filter(pk__in=ids).update(
            email=None,
            phone_number=None,
            external_id=None,
            klaviyo_id="",
            subscriptions={},
            mirrored_at=None,
            erased_at=now,
            updated_at=now,
        )
        profile_erased.send(sender=Erasure, erasure=erasure)
    return erasure


def _sequence_events(profile: Profile) -> None:
    """Give every event of the person a ledger leaf before its raw values go."""
    ids = [
        profile.pk,
        *Profile.objects.filter(merged_into_id=profile.pk).values_list("pk", flat=True),
    ]
    # By profile id (the kc_event_key index), never a join: the ledger may hold millions.
    if not ConsentEvent.objects.filter(profile_id__in=ids, ledger_entry__isnull=True).exists():
        return
    for _ in range(3):
        try:
            result = checkpoint()
        except ConfigurationError as error:
            raise ErasureRefused(
                "Some of this person's events are not in the ledger yet and no checkpoint can "
                f"be made to add them ({error}); erasing them now would lose their proof."
            ) from error
        except LedgerError:
            continue
        if not result.busy:
            return


def _identifiers(persons: list[Profile]) -> dict[str, set[str]]:
    """Every raw identifier of these profiles: theirs now, and each their events were given
    or their identity changes named (old numbers, moved emails)."""
    ids = [p.pk for p in persons]
    found: dict[str, set[str]] = {field: set() for field in IDENTIFIER_FIELDS}
    for person in persons:
        for field in IDENTIFIER_FIELDS:
            if getattr(person, field):
                found[field].add(getattr(person, field))
    rows = (
        EventPersonalData.objects.filter(event__profile_id__in=ids)
        .values_list("email", "phone_number", "external_id")
        .distinct()
    )
    for email, phone, external_id in rows:
        for field, value in zip(IDENTIFIER_FIELDS, (email, phone, external_id), strict=True):
            if value:
                found[field].add(value)
    changes = IdentityPersonalData.objects.filter(
        Q(event__profile_id__in=ids) | Q(event__other_profile_id__in=ids)
    ).values_list("event__field", "old_value", "new_value", "moved")
    for field, old, new, moved in changes:
        for value in (old, new):
            if value and field in found:
                found[field].add(value)
        for name, value in (moved or {}).items():
            if value and name in found:
                found[name].add(str(value))
    return found


def _digests(values: dict[str, set[str]]) -> dict[str, list[str]]:
    secret = ledger_secret()
    return {
        field: sorted(digest(field, value, secret) for value in found)
        for field, found in values.items()
        if found
    }


def _klaviyo_targets(persons: list[Profile]) -> list[tuple[str, str]]:
    """One deletion per Klaviyo profile: by its Klaviyo id when the mirror knows it, else by
    each identifier the site gave Klaviyo (email, phone number)."""
    targets: list[tuple[str, str]] = []
    for person in persons:
        if person.klaviyo_id:
            targets.append(("id", person.klaviyo_id))
            continue
        targets += [
            (field, getattr(person, field))
            for field in ("email", "phone_number")
            if getattr(person, field)
        ]
    return targets


def _stop_deliveries(ids: list[int]) -> None:
    """Consent and number changes not yet applied would name blanked identifiers: they stop."""
    for rows in (
        Delivery.objects.filter(profile_id__in=ids),
        IdentityDelivery.objects.filter(profile_id__in=ids),
        MembershipDelivery.objects.filter(profile_id__in=ids),
    ):
        outbox.mark_failed(rows.filter(status=DeliveryStatus.PENDING), NOT_SENT, [])
    waiting = Delivery.objects.filter(
        profile_id__in=ids,
        status__in=[DeliveryStatus.PUSHED, DeliveryStatus.PENDING_CONFIRMATION],
    )
    for status in (DeliveryStatus.PUSHED, DeliveryStatus.PENDING_CONFIRMATION):
        # Their verdict is kept as it stands; nobody reads an erased profile back.
        outbox.record_verdict(waiting.filter(status=status), status, NOT_SENT, next_attempt_at=None)


def _patterns(values: dict[str, set[str]]) -> list[str]:
    """The strings to find: each value, and its JSON-escaped form (non-ASCII addresses)."""
    found = {value for group in values.values() for value in group if value}
    escaped = {json.dumps(value)[1:-1] for value in found}
    return sorted(found | escaped, key=len, reverse=True)


def scrub(value: Any, patterns: Iterable[str]) -> Any:
    """``value`` (text or JSON) with every pattern replaced by :data:`ERASED`, in strings,
    dictionary keys included; e-mail addresses match whatever their case."""
    patterns = list(patterns)
    if isinstance(value, str):
        text = value
        for pattern in patterns:
            if pattern.lower() in text.lower():
                start = 0
                lowered = text.lower()
                out = []
                needle = pattern.lower()
                while (hit := lowered.find(needle, start)) != -1:
                    out.append(text[start:hit])
                    out.append(ERASED)
                    start = hit + len(needle)
                out.append(text[start:])
                text = "".join(out)
        return text
    if isinstance(value, list):
        return [scrub(item, patterns) for item in value]
    if isinstance(value, dict):
        return {scrub(key, patterns): scrub(item, patterns) for key, item in value.items()}
    return value


def redact(value: Any, patterns: Iterable[str] = ()) -> Any:
    """:func:`scrub`, then every e-mail address and phone number left in the strings of
    ``value`` replaced by :data:`ERASED` too: for texts that belong to an erased person only
    (a deletion job's errors), where Klaviyo may quote an identifier the row no longer holds.
    """
    value = scrub(value, patterns)
    if isinstance(value, str):
        text = EMAIL_IN_TEXT.sub(ERASED, value)
        for number in sorted(set(phone_numbers_in(text)), key=len, reverse=True):
            text = text.replace(number, ERASED)
        return text
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, dict):
        return {redact(key): redact(item) for key, item in value.items()}
    return value


def _naming(patterns: list[str], *columns: str) -> Q:
    """Rows one of whose ``columns`` (text, or ``<name>_text``: JSON as text) holds a pattern."""
    condition = Q()
    for pattern in patterns:
        for column in columns:
            condition |= Q(**{f"{column}__icontains": pattern})
    return condition


def _scrub_outbox(ids: list[int], values: dict[str, set[str]]) -> None:
    """Klaviyo's error texts and the verdict history may quote an identifier: rewrite them.

    The person's own rows, and any other row whose reason or errors quote them: an error
    that names no profile of a bulk job is kept on every row of that job.
    """
    patterns = _patterns(values)
    if not patterns:
        return
    for model, fields in (
        (Delivery, ("reason", "errors", "history")),
        (IdentityDelivery, ("reason", "errors")),
        (MembershipDelivery, ("reason", "errors", "history")),
    ):
        quoting = (
            model.objects.exclude(profile_id__in=ids)
            .exclude(reason="")
            .annotate(errors_text=Cast("errors", TextField()))
            .filter(_naming(patterns, "reason", "errors_text"))
        )
        changed = []
        rows = model.objects.filter(profile_id__in=ids).only("pk", *fields)
        for row in [*rows, *quoting.only("pk", *fields)]:
            before = [getattr(row, field) for field in fields]
            after = [scrub(value, patterns) for value in before]
            if after != before:
                for field, value in zip(fields, after, strict=True):
                    setattr(row, field, value)
                changed.append(row)
        model.objects.bulk_update(changed, list(fields), batch_size=500)


def _scrub_health(values: dict[str, set[str]]) -> None:
    """Klaviyo's last 401/403/429 (``KlaviyoHealth.detail``) may quote the person's identifier."""
    patterns = _patterns(values)
    if not patterns:
        return
    for row in KlaviyoHealth.objects.filter(_naming(patterns, "detail")):
        KlaviyoHealth.objects.filter(pk=row.pk).update(detail=scrub(row.detail, patterns))


def _scrub_webhooks(values: dict[str, set[str]]) -> None:
    """Klaviyo's webhook bodies (and the errors their processing left) naming the person."""
    patterns = _patterns(values)
    if not patterns:
        return
    rows = WebhookDelivery.objects.annotate(body_text=Cast("body", TextField())).filter(
        _naming(patterns, "body_text", "error")
    )
    changed = []
    for row in rows:
        row.body = scrub(row.body, patterns)
        row.error = scrub(row.error, patterns)
        changed.append(row)
    WebhookDelivery.objects.bulk_update(changed, ["body", "error"], batch_size=500)


def find_person(*, email: str | None = None, phone_number: str | None = None) -> Profile:
    """The profile holding this email or phone number (normalised as stored), for an erasure.

    Raises :class:`ErasureRefused` naming the field when none does (saying when an erasure
    removed it, if one did), or :class:`ConsentValidationError` for a malformed value.
    """
    if email:
        field, value = "email", clean_email(email, field="email") or ""
    else:
        field = "phone_number"
        value = normalize_phone_number(phone_number or "", field=field)
    profile = Profile.objects.filter(**{field: value}).first()
    if profile is not None:
        return profile
    erased = erased_on(field, value)
    if erased is not None:
        raise ErasureRefused(f"This {field} was already erased on {erased:%Y-%m-%d}.", field=field)
    raise ErasureRefused(f"No profile has this {field}.", field=field)


def _scrub_admin_log(ids: list[int], values: dict[str, set[str]]) -> None:
    """Django's admin history: a profile is named by its ``str()`` (its email or phone
    number), and any row's change message (a reason, a changed field's value) or name may
    quote an identifier, whatever its content type."""
    if not django_apps.is_installed("django.contrib.admin"):
        return
    LogEntry = django_apps.get_model("admin", "LogEntry")  # noqa: N806 - a model class
    kind = django_apps.get_model("contenttypes", "ContentType").objects.get_for_model(Profile)
    for pk in ids:
        LogEntry.objects.filter(content_type=kind, object_id=str(pk)).update(
            object_repr=f"erased profile {pk}", change_message=""
        )
    patterns = _patterns(values)
    if not patterns:
        return
    for entry in LogEntry.objects.filter(_naming(patterns, "object_repr", "change_message")):
        LogEntry.objects.filter(pk=entry.pk).update(
            object_repr=scrub(entry.object_repr, patterns)[:200],
            change_message=scrub(entry.change_message, patterns),
        )


def erase_expired_evidence(
    *, now: datetime | None = None, source: str = "retention"
) -> Erasure | None:
    """Erase the evidence (IP address, user agent, page URL) of events recorded more than
    ``EVIDENCE_RETENTION_DAYS`` days ago, the consent itself kept; None when the setting is
    None or nothing was due.

    Only events already in the ledger (their leaves hold the digests); one still waiting for
    a checkpoint keeps its evidence until the next run. Records one :class:`Erasure`
    (scope ``evidence_retention``, ``evidence_before`` the cutoff, ``events`` how many).
    """
    days = consent_settings.EVIDENCE_RETENTION_DAYS
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigurationError(
            f"KLAVIYO_CONSENT['EVIDENCE_RETENTION_DAYS'] must be a whole number of days (1 or "
            f"more) or None, not {days!r}."
        )
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    with transaction.atomic():
        due = EventPersonalData.objects.filter(
            Q(ip_address__isnull=False) | ~Q(user_agent="") | ~Q(page_url=""),
            event__recorded_at__lt=cutoff,
            event__ledger_entry__isnull=False,
        )
        count = due.update(ip_address=None, user_agent="", page_url="", erased_at=now)
        if not count:
            return None
        return Erasure.objects.create(
            scope=ErasureScope.EVIDENCE_RETENTION,
            requested_at=now,
            source=source,
            evidence_before=cutoff,
            events=count,
        )
