"""A public signup: the drop-in form and ``POST public/subscribe/`` record through here.

A signup is up to two consents, each with its own words: marketing email and marketing SMS.
It is recorded with :func:`~klaviyo_consent.services.ledger.record_consent` (one call per
channel, inside one transaction, so the push happens once, on commit) with two rules a public
page needs and the staff API does not:

* **The email part is kept when only the SMS part is refused.** A number Klaviyo cannot text
  (a country it does not text, one this account has no sending number for, a landline) refuses
  the SMS consent only; the outcome says so, and the email consent stands.
* **A stranger neither learns who is on file nor joins anything to a known person.** An email
  and a number are recorded together only when they are both new or already one profile's.
  Otherwise (a known email with a new number, a known number with a new email, identifiers of
  two profiles: a 409 ``identity_conflict`` on the staff API, or a number silently added to a
  known person's profile) each consent is recorded for its own channel's identifier alone:
  the email consent for the email, the SMS consent for the number. The answer is the one a new
  person gets, nothing is overwritten, no unverified identifier is attached to someone's
  profile; the event's ``method_detail`` says "recorded apart", for staff to merge the
  profiles if they are one person.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import transaction
from django.db.models import Q

from klaviyo_consent.choices import Channel, Consent, Method, OptInProcess, Purpose
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import (
    IdentityConflict,
    UnsupportedSMSCountry,
    UnsupportedSMSNumber,
)
from klaviyo_consent.models import ConsentEvent, ConsentText, KlaviyoList, Profile
from klaviyo_consent.phone import normalize_phone_number, phone_region, require_sms_country
from klaviyo_consent.services.ledger import ConsentRequest, Evidence, clean_email, record_consent
from klaviyo_consent.services.texts import active_text

logger = logging.getLogger("klaviyo_consent.signup")

#: The ConsentText keys whose active versions a public signup shows, per channel.
TEXT_KEYS: dict[str, str] = {Channel.EMAIL: "email-marketing", Channel.SMS: "sms-marketing"}

#: The words a key starts with on a fresh site (version 1); staff add new versions in the admin.
DEFAULT_TEXTS: dict[str, str] = {
    Channel.EMAIL: "Email me news and offers. I can unsubscribe at any time.",
    Channel.SMS: (
        "Text me marketing messages at the number provided. Consent is not a condition "
        "of purchase. Msg & data rates may apply. Msg frequency varies. Reply HELP for help "
        "and STOP to cancel."
    ),
}

#: ``method_detail`` of the consents recorded apart (see the module docstring).
RECORDED_APART = "recorded apart: a public signup never joins identifiers to a known profile"


class Outcome:
    """What became of one channel of a signup (the public answer's vocabulary)."""

    SUBSCRIBED = "subscribed"
    NOT_REQUESTED = "not_requested"
    #: SMS only: Klaviyo does not text the number's country, or this account cannot.
    COUNTRY_UNSUPPORTED = "country_unsupported"
    #: SMS only: the number cannot receive texts (a landline, a toll-free number...).
    NOT_A_MOBILE = "not_a_mobile"


@dataclass(frozen=True)
class SignupRequest:
    """One submitted signup: identifiers, the boxes ticked, the text versions shown.

    ``texts``: channel → the ConsentText the person was shown (:func:`signup_texts`).
    ``country``: ISO 3166-1 alpha-2 a national ``phone_number`` is read in.
    """

    email: str | None
    phone_number: str | None
    country: str | None
    channels: frozenset[str]
    texts: dict[str, ConsentText]
    evidence: Evidence
    method_detail: str = "signup form"
    custom_source: str = "Signup form"


@dataclass
class SignupOutcome:
    """Per channel an :class:`Outcome`; ``sms_region`` is the number's ISO country (for
    words like "we cannot text numbers in Slovenia"); ``events`` the rows written."""

    email: str = Outcome.NOT_REQUESTED
    sms: str = Outcome.NOT_REQUESTED
    sms_region: str | None = None
    events: list[ConsentEvent] = field(default_factory=list)
    #: The signup list is double opt-in (as last mirrored): Klaviyo asks the person to confirm.
    double_opt_in: bool = False

    @property
    def recorded(self) -> bool:
        return bool(self.events)


def signup_texts() -> dict[str, ConsentText]:
    """The text version shown now for each channel (created from the defaults if missing)."""
    return {channel: active_text(key, DEFAULT_TEXTS[channel]) for channel, key in TEXT_KEYS.items()}


def record_signup(request: SignupRequest) -> SignupOutcome:
    """Record each channel ticked, keep the email when only the SMS part is refused.

    Raises :class:`~klaviyo_consent.exceptions.ConsentValidationError` naming the field for
    input no channel can be recorded with (a malformed email or number); an SMS-only signup
    whose number cannot be texted returns the outcome with nothing recorded. Identifiers of
    different profiles are recorded apart, never a :class:`IdentityConflict` (see the module
    docstring); only a request that keeps losing races to concurrent ones still raises it.
    """
    outcome = SignupOutcome()
    given = request
    refused = _sms_refusal(request)
    if refused:
        # The number cannot be texted: the email is recorded alone and the number is kept
        # nowhere (on the profile it would make the person findable by a number they were
        # told was not taken).
        outcome.sms = refused
        request = replace(request, phone_number=None, channels=request.channels - {Channel.SMS})
    with transaction.atomic():
        together = _may_join(request)
        for channel in (Channel.EMAIL, Channel.SMS):
            if channel not in request.channels:
                continue
            try:
                events = _record_channel(request, channel, together=together)
            except UnsupportedSMSCountry:
                outcome.sms = Outcome.COUNTRY_UNSUPPORTED
            except UnsupportedSMSNumber:
                outcome.sms = Outcome.NOT_A_MOBILE
            else:
                outcome.events += events
                setattr(outcome, channel, Outcome.SUBSCRIBED)
    list_id = consent_settings.DEFAULT_LIST_ID
    if outcome.recorded and list_id:
        outcome.double_opt_in = KlaviyoList.objects.filter(
            list_id=list_id, opt_in_process=OptInProcess.DOUBLE_OPT_IN
        ).exists()
    if given.phone_number:
        outcome.sms_region = phone_region(
            normalize_phone_number(given.phone_number, country=given.country)
        )
    return outcome


def _sms_refusal(request: SignupRequest) -> str | None:
    """The SMS :class:`Outcome` when the SMS box is ticked for a number Klaviyo cannot text
    (``require_sms_country``), else None. A malformed number raises ConsentValidationError."""
    if Channel.SMS not in request.channels or not request.phone_number:
        return None
    phone = normalize_phone_number(
        request.phone_number, field="phone_number", country=request.country
    )
    try:
        require_sms_country(phone)
    except UnsupportedSMSCountry:
        return Outcome.COUNTRY_UNSUPPORTED
    except UnsupportedSMSNumber:
        return Outcome.NOT_A_MOBILE
    return None


def _may_join(request: SignupRequest) -> bool:
    """Whether the email and the number may go on one profile: both new, or one profile's."""
    if not (request.email and request.phone_number):
        return True
    email = clean_email(request.email, field="email")
    phone = normalize_phone_number(
        request.phone_number, field="phone_number", country=request.country
    )
    known = list(Profile.objects.filter(Q(email=email) | Q(phone_number=phone)))
    return not known or any(p.email == email and p.phone_number == phone for p in known)


def _record_channel(request: SignupRequest, channel: str, *, together: bool) -> list[ConsentEvent]:
    base = dict(
        consent=Consent.SUBSCRIBED,
        subscriptions={channel: {Purpose.MARKETING: True}},
        country=request.country,
        list_id=consent_settings.DEFAULT_LIST_ID or "",
        method=Method.FORM,
        method_detail=request.method_detail,
        custom_source=request.custom_source,
        consent_text_id=request.texts[channel].pk,
        evidence=request.evidence,
    )
    if together:
        try:
            return record_consent(
                ConsentRequest(email=request.email, phone_number=request.phone_number, **base)
            ).events
        except IdentityConflict as error:  # a concurrent signup took one of them meanwhile
            logger.info("Signup recorded apart: %s conflict with other profiles", error.fields)
    own = (
        {"email": request.email}
        if channel == Channel.EMAIL
        else {"phone_number": request.phone_number}
    )
    base["method_detail"] = f"{request.method_detail}; {RECORDED_APART}"
    return record_consent(ConsentRequest(**own, **base)).events


def texts_by_id(ids: dict[str, Any]) -> dict[str, ConsentText | None]:
    """For each channel, the ConsentText ``ids[channel]`` names if it is a version of that
    channel's key (a form shows one version; a later one may have replaced it since), else
    None. Channels not in ``ids`` get the active version."""
    active = signup_texts()
    found: dict[str, ConsentText | None] = {}
    for channel, key in TEXT_KEYS.items():
        wanted = ids.get(channel)
        if wanted is None:
            found[channel] = active[channel]
        else:
            found[channel] = ConsentText.objects.filter(pk=wanted, key=key).first()
    return found
