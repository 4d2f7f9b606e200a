"""Recording consent: validate, find or create the profile, write events and outbox rows at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F, Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from klaviyo_consent.choices import CHANNEL_PURPOSES, Channel, Consent, DeliveryStatus, Method
from klaviyo_consent.exceptions import ConsentValidationError, IdentityConflict
from klaviyo_consent.models import (
    ConsentEvent,
    ConsentText,
    EventPersonalData,
    IdentityChange,
    IdentityEvent,
    Profile,
    normalize_email,
)
from klaviyo_consent.models.bulk import new
from klaviyo_consent.phone import clean_country, normalize_phone_number, require_sms_country
from klaviyo_consent.services.texts import resolve_text
from klaviyo_consent.signals import consent_recorded, identity_changed
from klaviyo_consent.validators import (
    check_deliverable_email,
    clean_klaviyo_id,
    clean_reason,
    strict_bool,
)

#: Stores the evidence IP as the database keeps it (IPv6 compressed), so a response built
#: from the new rows says what a later read says.
_IP_FIELD = EventPersonalData._meta.get_field("ip_address")


class LostProfileRace(Exception):
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
    #: A ConsentText version by id; ``consent_text`` alone is matched by hash or stored new.
    consent_text_id: int | None = None
    consented_at: datetime | None = None
    historical_import: bool = False
    evidence: Evidence = field(default_factory=Evidence)
    recorded_by: Any = None
    #: ISO 3166-1 alpha-2 country a national ``phone_number`` is read in (else
    #: ``DEFAULT_PHONE_REGION``).
    country: str | None = None

    def __post_init__(self) -> None:
        if self.consented_at is not None:
            object.__setattr__(self, "consented_at", aware(self.consented_at))


@dataclass
class RecordResult:
    profile: Profile
    events: list[ConsentEvent]
    created: bool
    #: The profile's latest event per channel and purpose (its ledger), once the API layer's
    #: ``api.committed.as_committed`` knows them.
    latest: list[ConsentEvent] | None = None


def clean_request(
    request: ConsentRequest,
) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """Apply every rule that needs no profile before anything is written; raise naming the field.

    Returns (normalised email or None, E.164 phone number or None, [(channel, purpose), ...]).
    Rules that depend on who the person is (a withdrawal by any identifier of a known profile,
    the number an SMS consent is for) are applied by :func:`check_profile`, once the profile is
    found.
    """
    email = clean_email(request.email) if request.email else None
    country = clean_country(request.country, field="profile.country")
    phone = None
    if request.phone_number:
        phone = normalize_phone_number(
            request.phone_number, field="profile.phone_number", country=country
        )
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
            if strict_bool(wanted, field=f"subscriptions.{channel}.{purpose}"):
                changes.append((channel, purpose))
    if not changes:
        raise ConsentValidationError(
            'Name at least one channel and purpose, e.g. {"email": {"marketing": true}}.',
            field="subscriptions",
        )

    channels = {channel for channel, _ in changes}
    # A withdrawal may name the person by any identifier (GDPR Art. 7(3)); whether the profile
    # it finds has the channel's identifier is decided in _record. Giving consent needs the
    # channel's own identifier (or an external_id naming a profile that has it).
    if request.consent == Consent.SUBSCRIBED:
        if Channel.EMAIL in channels and not email and not request.external_id:
            raise ConsentValidationError("Email consent needs an email.", field="profile.email")
        if Channel.SMS in channels and not phone and not request.external_id:
            raise ConsentValidationError(
                "SMS consent needs a phone_number.", field="profile.phone_number"
            )
        if Channel.SMS in channels and phone:
            require_sms_country(phone, field="profile.phone_number")

    strict_bool(request.historical_import, field="historical_import")
    if request.method != Method.KLAVIYO:  # Klaviyo's own words (drift) are recorded as given
        # The event's method_detail enters its ledger leaf: an erasure could never blank it.
        clean_reason(request.method_detail, field="method_detail")
    if request.list_id:
        clean_klaviyo_id(request.list_id, field="list_id")
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
    if request.consented_at is not None and request.consented_at < EARLIEST_CONSENT:
        raise ConsentValidationError(
            f"consented_at is before {EARLIEST_CONSENT.year}: not a consent this ledger can "
            "hold (a date typed wrong, e.g. year 0001).",
            field="consented_at",
        )
    if request.historical_import and request.consent != Consent.SUBSCRIBED:
        raise ConsentValidationError(
            "historical_import applies to subscriptions only.", field="historical_import"
        )
    return email, phone, changes


def aware(moment: datetime, zone: tzinfo | None = None) -> datetime:
    """``moment`` with a zone: a naive one is read in ``zone``, else the site's ``TIME_ZONE``.

    Naive times are wall-clock times where the consent was collected; the site's zone is the
    documented default (docs/identity.md, "Timestamps").
    """
    if timezone.is_aware(moment):
        return moment
    try:
        return timezone.make_aware(moment, zone or timezone.get_default_timezone())
    except OverflowError:  # year 1 west of UTC, year 9999 east of it
        raise ConsentValidationError(
            f"{moment.isoformat()} is out of range in its time zone.", field="consented_at"
        ) from None


#: The earliest ``consented_at`` accepted: before it, a date is a typing error (year 0001,
#: a 2-digit year read as 19xx), not an email or SMS consent anyone can prove.
EARLIEST_CONSENT = datetime(1990, 1, 1, tzinfo=UTC)

#: RFC 5321 §4.5.3.1.3's path limit less the angle brackets; the column's length.
MAX_EMAIL_LENGTH = 254


def clean_email(raw: str, *, field: str = "profile.email") -> str | None:
    """The email normalised (None when blank), or raise naming ``field`` if malformed.

    Malformed: Django's ``EmailValidator`` refuses it, or it is not deliverable
    (:func:`klaviyo_consent.validators.check_deliverable_email`: ``localhost``, an IP
    literal, no dot in the domain, a local part over 64 characters).
    """
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
    check_deliverable_email(email, field=field)
    return email


IDENTIFIERS = ("email", "phone_number", "external_id")

#: ``method_detail`` of the withdrawals that close a replaced number's SMS consent.
PHONE_NUMBER_REPLACED = "phone number replaced"


def _find_profile(email: str | None, phone: str | None, external_id: str | None) -> Profile | None:
    """The one profile these identifiers name, or None; :class:`IdentityConflict` (409) when
    they name two people, or name one whose stored identifier differs from the one given.

    Identifiers are compared after normalisation. A stored identifier is never overwritten: a
    different one is a conflict, even if no other profile holds it (a number change is its
    own operation, :func:`klaviyo_consent.services.identity.replace_phone_number`).
    """
    given = [
        (name, value)
        for name, value in zip(IDENTIFIERS, (email, phone, external_id), strict=True)
        if value
    ]
    if not given:
        return None
    # One query for all identifiers (each is unique, so at most one row matches each).
    condition = Q()
    for name, value in given:
        condition |= Q(**{name: value})
    # Locked in id order, so concurrent requests naming the same rows never lock in a cycle.
    candidates = list(Profile.objects.select_for_update().filter(condition).order_by("pk"))
    return match_profile(
        given,
        lambda name, value: next((p for p in candidates if getattr(p, name) == value), None),
    )


def match_profile(
    given: list[tuple[str, str]], holder: Callable[[str, str], Profile | None]
) -> Profile | None:
    """The one profile the ``given`` (identifier, value) pairs name, or None.

    ``holder(name, value)`` is the profile holding that identifier (a query's rows, or a bulk
    import's index of them). Raises :class:`IdentityConflict` naming the fields when they name
    two people, or a person whose stored identifier differs from the one given.
    """
    found: dict[str, Profile] = {}
    for name, value in given:
        profile = holder(name, value)
        if profile is not None:
            found[name] = profile
    profile = next(iter(found.values()), None)  # the first identifier given that matched
    if profile is None:
        return None
    clashes = [
        f"profile.{name}"
        for name, _ in given
        # held by another person, or the matched person holds a different one
        if (name in found and found[name] is not profile)
        or (name not in found and getattr(profile, name) is not None)
    ]
    if clashes:
        raise IdentityConflict(
            f"The identifiers given do not belong to one person: {', '.join(clashes)} "
            "cannot be recorded with the others. Nothing was recorded.",
            fields=clashes,
        )
    return profile


def resolve_profile(
    email: str | None, phone: str | None, external_id: str | None, *, method: str, user: Any
) -> tuple[Profile, bool]:
    """Find the person, or create them; add identifiers they lack, never overwrite one."""
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
            raise LostProfileRace from error
        return profile, True
    added = [
        (name, value)
        for name, value in zip(IDENTIFIERS, (email, phone, external_id), strict=True)
        if value and getattr(profile, name) is None
    ]
    if added:
        for name, value in added:
            setattr(profile, name, value)
        try:
            profile.save(update_fields=[name for name, _ in added] + ["updated_at"])
        except IntegrityError as error:  # another request gave it to someone else meanwhile
            raise LostProfileRace from error
        records = IdentityEvent.objects.append(
            IdentityEvent(
                profile=profile,
                change=IdentityChange.IDENTIFIER_ADDED,
                field=name,
                new_value=value,
                method=method,
                recorded_by=user,
            )
            for name, value in added
        )
        identity_changed.send(sender=IdentityEvent, profile=profile, identity_events=records)
    return profile, False


def record_consent(request: ConsentRequest) -> RecordResult:
    """Write one event per channel and purpose, with its outbox row, in one transaction.

    The ``consent_recorded`` signal is sent inside the transaction; the push happens on commit,
    so a failed push or a crash never loses an event. Raises :class:`ConsentValidationError`
    naming the field, or :class:`IdentityConflict` (nothing written) when the identifiers do
    not belong to one person (docs/identity.md).
    """
    email, phone, changes = clean_request(request)
    for attempt in range(RACE_ATTEMPTS):
        try:
            return _record(request, email, phone, changes)
        except (LostProfileRace, OperationalError) as error:
            # Another request created or changed this person between our lookup and our
            # write, or PostgreSQL broke a lock cycle (deadlock, serialization failure). The
            # transaction (or savepoint) is rolled back whole; the next run sees the winner's
            # rows, so it finds the profile, adds to it, or raises IdentityConflict.
            if not is_profile_race(error) or attempt == RACE_ATTEMPTS - 1:
                if isinstance(error, LostProfileRace):
                    raise IdentityConflict(
                        "Other requests kept changing the profiles these identifiers name; "
                        "nothing was recorded. Try again.",
                        fields=[
                            f"profile.{name}"
                            for name, value in zip(
                                IDENTIFIERS, (email, phone, request.external_id), strict=True
                            )
                            if value
                        ],
                    ) from error
                raise
    raise AssertionError("unreachable")


#: Runs of a consent request that lost a race to a concurrent one, before it answers 409.
RACE_ATTEMPTS = 5

#: PostgreSQL's SQLSTATEs for a broken lock cycle: serialization_failure, deadlock_detected.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


def is_profile_race(error: Exception) -> bool:
    """A lost profile race, or a database error that says "run the transaction again"."""
    if isinstance(error, LostProfileRace):
        return True
    cause = error.__cause__
    return (
        getattr(cause, "sqlstate", None) in _RETRYABLE_SQLSTATES
        or getattr(cause, "pgcode", None) in _RETRYABLE_SQLSTATES
    )


def _record(
    request: ConsentRequest, email: str | None, phone: str | None, changes: list[tuple[str, str]]
) -> RecordResult:
    with transaction.atomic():
        profile, created = resolve_profile(
            email, phone, request.external_id, method=request.method, user=request.recorded_by
        )
        check_profile(request, phone, changes, profile.email, profile.phone_number)
        text = resolve_text(request.consent_text, request.consent_text_id)
        now = timezone.now()
        events = build_events(request, profile, email, phone, changes, text, now)
        ConsentEvent.objects.append(events, next_attempt_at=now)
        consent_recorded.send(sender=ConsentEvent, events=events, profile=profile)
    return RecordResult(profile=profile, events=events, created=created)


def check_profile(
    request: ConsentRequest,
    phone: str | None,
    changes: list[tuple[str, str]],
    profile_email: str | None,
    profile_phone: str | None,
) -> None:
    """The rules that depend on who the person is, once their profile is found: a channel's
    event needs the profile's identifier for it; an SMS consent named by ``external_id`` is for
    the profile's number, which must be in an SMS country. Raises naming the field."""
    channels = {channel for channel, _ in changes}
    if Channel.SMS in channels and not profile_phone:
        raise ConsentValidationError(
            "SMS consent needs a phone_number.", field="profile.phone_number"
        )
    if Channel.EMAIL in channels and not profile_email:
        raise ConsentValidationError("Email consent needs an email.", field="profile.email")
    if Channel.SMS in channels and request.consent == Consent.SUBSCRIBED and not phone:
        # Named by external_id: the number the consent is for is the profile's.
        require_sms_country(profile_phone, field="profile.phone_number")


def build_events(
    request: ConsentRequest,
    profile: Profile,
    email: str | None,
    phone: str | None,
    changes: list[tuple[str, str]],
    text: ConsentText | None,
    now: datetime,
) -> list[ConsentEvent]:
    """The request's events, one per (channel, purpose) in ``changes``, not yet written.

    ``email``/``phone`` are the request's cleaned identifiers (:func:`clean_request`);
    ``profile`` may be unsaved (a bulk import creates its people together).
    """
    return [
        new(
            ConsentEvent,
            profile=profile,
            # The identifiers the person gave, plus the profile's own identifier for the
            # event's channel (the address the consent is for); never another person's.
            email=email or (profile.email if channel == Channel.EMAIL else None) or "",
            phone_number=phone or (profile.phone_number if channel == Channel.SMS else None) or "",
            external_id=request.external_id or None,
            channel=channel,
            purpose=purpose,
            consent=request.consent,
            method=request.method,
            method_detail=request.method_detail,
            custom_source=request.custom_source,
            consent_text=text.body if text else request.consent_text,
            consent_text_version=text,
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


def _current(queryset: Any) -> Any:
    """Events that speak for the identifiers a profile holds now: email events for its email,
    SMS events for its phone number. A replaced number's history stays with that number.

    The identifiers are the survivor's for the events of a merged profile. An erased
    profile holds no identifiers any more: its latest consent per key still speaks (what the
    person had agreed to when they were erased), not NEVER_SUBSCRIBED.
    """
    return queryset.annotate(
        current_email=Coalesce(F("profile__merged_into__email"), F("profile__email")),
        current_phone=Coalesce(F("profile__merged_into__phone_number"), F("profile__phone_number")),
    ).filter(
        Q(channel=Channel.EMAIL, personal_data__email=F("current_email"))
        | Q(channel=Channel.SMS, personal_data__phone_number=F("current_phone"))
        | Q(profile__erased_at__isnull=False)
    )


def latest_events(profile_ids: Iterable[int]) -> dict[int, list[ConsentEvent]]:
    """Each profile's latest event per channel and purpose, with its delivery, in id order.

    A profile's ledger is its events and those of the profiles merged into it, for the
    identifiers it holds now (docs/identity.md): after a number change the new number starts
    NEVER_SUBSCRIBED. Events recorded as history (``DeliveryStatus.HISTORY``: an imported
    consent older than what the ledger held) never speak for the present. One query however
    many profiles and however long their histories.
    """
    ids = list(profile_ids)
    if not ids:
        return {}
    owner = Coalesce(F("profile__merged_into_id"), F("profile_id"))
    newest = (
        _current(
            # One semi-join on the event's profile column, so the kc_event_key index serves it.
            ConsentEvent.objects.filter(
                profile_id__in=Profile.objects.filter(
                    Q(pk__in=ids) | Q(merged_into_id__in=ids)
                ).values("pk")
            ).exclude(delivery__status=DeliveryStatus.HISTORY)
        )
        .order_by()
        .annotate(owner=owner)
        .values("owner", "channel", "purpose")
        .annotate(newest=Max("id"))
        .values("newest")
    )
    latest: dict[int, list[ConsentEvent]] = {pk: [] for pk in ids}
    for event in (
        ConsentEvent.objects.filter(pk__in=newest)
        .select_related("delivery", "profile")
        .order_by("id")
    ):
        owner_id = event.profile.merged_into_id or event.profile_id
        # A profile merged away, asked for by its own id, keeps its own latest events.
        latest[owner_id if owner_id in latest else event.profile_id].append(event)
    return latest


def sms_histories(phone_numbers: Iterable[str]) -> dict[str, list[ConsentEvent]]:
    """For each number, its latest SMS events per purpose, whoever recorded them.

    How ``check/`` answers a number no profile holds any more (a replaced number): with the
    number's own history. Emails never lose their profile (they only move, on a merge), so
    only numbers need this. One query (the ``kc_event_phone_number`` index); a number never seen
    maps to ``[]``, and no numbers cost no query.
    """
    found: dict[str, list[ConsentEvent]] = {number: [] for number in phone_numbers}
    if not found:
        return found
    newest = (
        ConsentEvent.objects.filter(
            channel=Channel.SMS, personal_data__phone_number__in=list(found)
        )
        .exclude(delivery__status=DeliveryStatus.HISTORY)
        .order_by()
        .values("personal_data__phone_number", "purpose")
        .annotate(newest=Max("id"))
        .values("newest")
    )
    for event in (
        ConsentEvent.objects.filter(pk__in=newest).select_related("delivery").order_by("id")
    ):
        found[event.phone_number].append(event)
    return found
