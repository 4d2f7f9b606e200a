"""Recording consent: validate, find or create the profile, write events and outbox rows at once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from klaviyo_consent.choices import CHANNEL_PURPOSES, Channel, Consent, DeliveryStatus, Method
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import ConsentValidationError, IdentityConflict
from klaviyo_consent.models import ConsentEvent, Profile, normalize_email
from klaviyo_consent.phone import normalize_phone_number, require_sms_country
from klaviyo_consent.signals import consent_recorded

#: Stores the evidence IP as the database keeps it (IPv6 compressed), so a response built
#: from the new rows says what a later read says.
_IP_FIELD = ConsentEvent._meta.get_field("ip_address")


class _LostProfileRace(Exception):
    """Another transaction created this person's profile between our lookup and our INSERT."""


@dataclass(frozen=True)
class Evidence:
    """Proof of how the consent was given; views fill it from the request."""

    ip_address: str | None = None
    user_agent: str = ""
    page_url: str = ""


@dataclass(frozen=True)
class ConsentRequest:
    """Everything one subscribe or unsubscribe carries, in Klaviyo's words.

    ``subscriptions`` maps channel → purpose → bool: True records a change for that purpose.
    """

    consent: str
    subscriptions: Mapping[str, Mapping[str, bool]]
    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None
    list_id: str = ""
    method: str = Method.API
    method_detail: str = ""
    custom_source: str = ""
    consent_text: str = ""
    consented_at: datetime | None = None
    historical_import: bool = False
    evidence: Evidence = field(default_factory=Evidence)
    recorded_by: Any = None


@dataclass
class RecordResult:
    profile: Profile
    events: list[ConsentEvent]
    created: bool
    #: The profile's latest event per channel and purpose (its ledger), once :func:`settled`
    #: knows them.
    latest: list[ConsentEvent] | None = None


def _clean(request: ConsentRequest) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """Apply every rule before anything is written; raise naming the offending field."""
    email = clean_email(request.email) if request.email else None
    phone = None
    if request.phone_number:
        phone = normalize_phone_number(request.phone_number, field="profile.phone_number")
    if not (email or phone or request.external_id):
        raise ConsentValidationError(
            "Give an email, a phone_number or a known external_id.", field="profile"
        )

    changes: list[tuple[str, str]] = []
    for channel, purposes in (request.subscriptions or {}).items():
        if channel not in CHANNEL_PURPOSES:
            raise ConsentValidationError(
                f"Unknown channel {channel!r}; use email or sms.", field=f"subscriptions.{channel}"
            )
        for purpose, wanted in (purposes or {}).items():
            if purpose not in CHANNEL_PURPOSES[channel]:
                raise ConsentValidationError(
                    f"Klaviyo has no {channel}.{purpose} subscription.",
                    field=f"subscriptions.{channel}.{purpose}",
                )
            if wanted:
                changes.append((channel, purpose))
    if not changes:
        raise ConsentValidationError(
            'Name at least one channel and purpose, e.g. {"email": {"marketing": true}}.',
            field="subscriptions",
        )

    channels = {channel for channel, _ in changes}
    if Channel.EMAIL in channels and not email and not request.external_id:
        raise ConsentValidationError("Email consent needs an email.", field="profile.email")
    if Channel.SMS in channels and not phone and not request.external_id:
        raise ConsentValidationError(
            "SMS consent needs a phone_number.", field="profile.phone_number"
        )
    if Channel.SMS in channels and phone and request.consent == Consent.SUBSCRIBED:
        require_sms_country(phone, field="profile.phone_number")

    if request.historical_import and request.consented_at is None:
        raise ConsentValidationError(
            "historical_import needs consented_at: when the person agreed.", field="consented_at"
        )
    if request.consented_at is not None and not request.historical_import:
        raise ConsentValidationError(
            "consented_at is only accepted with historical_import: true (Klaviyo's rule); "
            "a live consent is timed when it is recorded.",
            field="historical_import",
        )
    if request.consented_at is not None and request.consented_at > timezone.now():
        raise ConsentValidationError("consented_at must be in the past.", field="consented_at")
    if request.historical_import and request.consent != Consent.SUBSCRIBED:
        raise ConsentValidationError(
            "historical_import applies to subscriptions only.", field="historical_import"
        )
    return email, phone, changes


#: RFC 5321 §4.5.3.1.3's path limit less the angle brackets; the column's length.
MAX_EMAIL_LENGTH = 254


def clean_email(raw: str, *, field: str = "profile.email") -> str | None:
    """The email normalised (None when blank), or raise naming ``field`` if malformed."""
    email = normalize_email(raw)
    if not email:
        return None
    if len(email) > MAX_EMAIL_LENGTH:
        # The stored form (punycode domain) can be longer than what was typed.
        raise ConsentValidationError(
            f"An email address has at most {MAX_EMAIL_LENGTH} characters once its domain is "
            f"in IDNA form; this one has {len(email)}.",
            field=field,
        )
    try:
        validate_email(email)
    except DjangoValidationError:
        raise ConsentValidationError(
            f"{raw!r} is not a valid email address.", field=field
        ) from None
    return email


def _find_profile(email: str | None, phone: str | None, external_id: str | None) -> Profile | None:
    """One profile for the identifiers given, or None; refuse ones that belong to two people."""
    given = [
        (name, value)
        for name, value in (("email", email), ("phone_number", phone), ("external_id", external_id))
        if value
    ]
    if not given:
        return None
    # One query for all identifiers (each is unique, so at most one row matches each).
    condition = Q()
    for name, value in given:
        condition |= Q(**{name: value})
    candidates = list(Profile.objects.select_for_update().filter(condition).order_by())
    found: dict[str, Profile] = {}
    for name, value in given:
        profile = next((p for p in candidates if getattr(p, name) == value), None)
        if profile is not None:
            found[name] = profile
    distinct = {p.pk: p for p in found.values()}
    if len(distinct) > 1:
        first = next(iter(found))
        clash = next(name for name, p in found.items() if p.pk != found[first].pk)
        raise IdentityConflict(
            f"This {clash} belongs to another profile than the {first} given.",
            field=f"profile.{clash}",
        )
    return next(iter(distinct.values()), None)


def _resolve_profile(
    email: str | None, phone: str | None, external_id: str | None
) -> tuple[Profile, bool]:
    profile = _find_profile(email, phone, external_id)
    if profile is None:
        if not (email or phone):
            raise ConsentValidationError(
                "No profile has this external_id; give an email or a phone_number.",
                field="profile.external_id",
            )
        # No savepoint: if another request creates this person first, the INSERT fails and
        # record_consent runs its transaction again, finding the profile this time.
        try:
            profile = Profile.objects.create(
                email=email, phone_number=phone, external_id=external_id
            )
        except IntegrityError as error:
            raise _LostProfileRace from error
        return profile, True
    changed = []
    for name, value in (("email", email), ("phone_number", phone), ("external_id", external_id)):
        if value and getattr(profile, name) != value:
            setattr(profile, name, value)
            changed.append(name)
    if changed:
        profile.save(update_fields=[*changed, "updated_at"])
    return profile, False


def record_consent(request: ConsentRequest) -> RecordResult:
    """Write one event per channel and purpose, with its outbox row, in one transaction.

    The ``consent_recorded`` signal is sent inside the transaction; the push happens on commit,
    so a failed push or a crash never loses an event.
    """
    email, phone, changes = _clean(request)
    try:
        return _record(request, email, phone, changes)
    except _LostProfileRace:
        # Two requests created the same new person at once and this one lost the race. Its
        # transaction (or savepoint) is rolled back whole; the second run finds the profile.
        return _record(request, email, phone, changes)


def _record(
    request: ConsentRequest, email: str | None, phone: str | None, changes: list[tuple[str, str]]
) -> RecordResult:
    with transaction.atomic():
        profile, created = _resolve_profile(email, phone, request.external_id)
        if any(channel == Channel.SMS for channel, _ in changes) and not profile.phone_number:
            raise ConsentValidationError(
                "SMS consent needs a phone_number.", field="profile.phone_number"
            )
        if any(channel == Channel.EMAIL for channel, _ in changes) and not profile.email:
            raise ConsentValidationError("Email consent needs an email.", field="profile.email")
        now = timezone.now()
        events = [
            ConsentEvent(
                profile=profile,
                email=profile.email or "",
                phone_number=profile.phone_number or "",
                channel=channel,
                purpose=purpose,
                consent=request.consent,
                method=request.method,
                method_detail=request.method_detail,
                custom_source=request.custom_source,
                consent_text=request.consent_text,
                consented_at=request.consented_at,
                recorded_at=now,
                list_id=request.list_id,
                historical_import=request.historical_import,
                ip_address=_IP_FIELD.get_prep_value(request.evidence.ip_address),
                user_agent=request.evidence.user_agent,
                page_url=request.evidence.page_url,
                recorded_by=request.recorded_by,
            )
            for channel, purpose in changes
        ]
        ConsentEvent.objects.append(events, next_attempt_at=now)
        consent_recorded.send(sender=ConsentEvent, events=events, profile=profile)
    return RecordResult(profile=profile, events=events, created=created)


def settled(result: RecordResult) -> RecordResult:
    """``result`` as the database has it after the recording committed, with its ledger events.

    With the immediate task backend the push and its read-back ran on commit, so the profile,
    the events and the ledger are read again. Otherwise the rows just written are current: a
    new profile's ledger is exactly its new events (no query), an existing profile's latest
    events are read once (not its whole history).
    """
    from klaviyo_consent.tasks import runs_inline

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


def latest_events(profile_ids: Iterable[int]) -> dict[int, list[ConsentEvent]]:
    """Each profile's latest event per channel and purpose, with its delivery, in id order.

    One query however many profiles and however long their histories (the ``kc_event_key``
    index answers the per-key maximum), for the check endpoint and the profile lists.
    """
    ids = list(profile_ids)
    if not ids:
        return {}
    newest = (
        ConsentEvent.objects.filter(profile_id__in=ids)
        .order_by()
        .values("profile_id", "channel", "purpose")
        .annotate(newest=Max("id"))
        .values("newest")
    )
    latest: dict[int, list[ConsentEvent]] = {pk: [] for pk in ids}
    for event in (
        ConsentEvent.objects.filter(pk__in=newest).select_related("delivery").order_by("id")
    ):
        latest[event.profile_id].append(event)
    return latest


def ledger_for(
    profile: Profile | None, *, events: Iterable[ConsentEvent] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """The latest local state per channel and purpose: what the ledger alone says of consent.

    ``events``: the profile's events in id order with their deliveries (its whole history, or
    only the latest per key from :func:`latest_events`) when the caller already holds them,
    to spare a query. No profile: every leaf is NEVER_SUBSCRIBED.
    """
    if profile is None:
        events = ()
    elif events is None:
        events = latest_events([profile.pk])[profile.pk]
    latest: dict[tuple[str, str], ConsentEvent] = {}
    for event in events:
        latest[(event.channel, event.purpose)] = event
    ledger: dict[str, dict[str, dict[str, Any]]] = {}
    for channel, purposes in CHANNEL_PURPOSES.items():
        for purpose in purposes:
            event = latest.get((channel, purpose))
            if event is None:
                leaf: dict[str, Any] = {
                    "status": Consent.NEVER_SUBSCRIBED,
                    "delivery": None,
                    "reason": "",
                    "event_id": None,
                    "consented_at": None,
                }
            else:
                delivery = getattr(event, "delivery", None)
                leaf = {
                    "status": event.consent,
                    "delivery": delivery.status if delivery else None,
                    "reason": delivery.reason if delivery else "",
                    "event_id": event.pk,
                    "consented_at": _consented_at(event),
                }
            leaf["can_receive"], leaf["cannot_receive_reason"] = can_receive(
                event, channel, purpose
            )
            ledger.setdefault(channel, {})[purpose] = leaf
    return ledger


def can_receive(event: ConsentEvent | None, channel: str, purpose: str) -> tuple[bool, str]:
    """Can the person receive ``channel``/``purpose`` messages, per the ledger's latest event,
    and if not, why (an empty reason when they can).

    An inbound event carries Klaviyo's own ``can_receive_<channel>_<purpose>`` (Klaviyo's
    profile ``subscriptions`` object, revision 2026-07-15) and its suppressions; the site's own
    event counts only once Klaviyo applied it.
    """
    if event is None:
        return False, "never subscribed"
    delivery = getattr(event, "delivery", None)
    status = delivery.status if delivery else None
    if event.suppression == "suppress":
        where = "" if status == DeliveryStatus.APPLIED else f"; Klaviyo: {status}"
        return False, f"suppressed from the site (USER_SUPPRESSED{where})"
    data = event.klaviyo_data or {}
    flag = data.get(f"can_receive_{channel}_{purpose}")
    suppressed = [s.get("reason") for s in data.get("suppression") or [] if isinstance(s, dict)]
    if event.consent != Consent.SUBSCRIBED:
        why = "unsubscribed" if event.consent == Consent.UNSUBSCRIBED else "never subscribed"
        if event.method == Method.KLAVIYO:
            detail = event.method_detail or "changed in Klaviyo"
            why = f"{why} in Klaviyo ({detail})"
        return False, why
    if event.method == Method.KLAVIYO:
        if flag is False or suppressed:
            if suppressed:
                return False, f"suppressed in Klaviyo ({', '.join(r for r in suppressed if r)})"
            return False, f"Klaviyo reports can_receive_{channel}_{purpose}: false"
        return True, ""
    if status == DeliveryStatus.APPLIED:
        return True, ""
    reason = f": {delivery.reason}" if delivery and delivery.reason else ""
    return False, f"consent not applied in Klaviyo ({status}{reason})"


def _consented_at(event: ConsentEvent) -> str | None:
    """When the person agreed: the import's date, Klaviyo's timestamp, or when we recorded it."""
    if event.consented_at:
        return event.consented_at.astimezone(UTC).isoformat()
    stamp = (event.klaviyo_data or {}).get("consent_timestamp")
    return stamp or event.recorded_at.astimezone(UTC).isoformat()
