"""The drop-in consent form: ``{% consent_form %}`` renders it, ``public/subscribe/`` shares
its rules.

Every message here is for a shopper: plain words, never a setting name or a format's name.
The form only checks what was typed; :func:`klaviyo_consent.services.signup.record_signup`
records it (and decides whether Klaviyo can text the number).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import phonenumbers
from django import forms
from django.conf import settings

from klaviyo_consent.choices import Channel
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import ConsentText
from klaviyo_consent.phone import country_name, normalize_phone_number
from klaviyo_consent.services.ledger import Evidence, clean_email
from klaviyo_consent.services.signup import (
    Outcome,
    SignupOutcome,
    SignupRequest,
    signup_texts,
    texts_by_id,
)

#: Names phonenumbers' English geocoder lacks.
_NAMES = {
    "AC": "Ascension Island",
    "BL": "Saint Barthélemy",
    "EH": "Western Sahara",
    "MF": "Saint Martin",
    "TA": "Tristan da Cunha",
    "XK": "Kosovo",
}

#: The form's messages, each in words a shopper understands.
MESSAGES = {
    "email_invalid": "Enter a valid email address, like name@example.com.",
    "email_needed": "Enter your email address to get our emails.",
    "phone_needed": "Enter your mobile number to get our text messages.",
    "phone_unreadable": (
        "We couldn't read that as a phone number from {country}. Check the number, or choose "
        "the country it is from."
    ),
    "phone_unreadable_international": (
        "We couldn't read that as a phone number. Check it, including the country code after +."
    ),
    "phone_extension": "Give a mobile number without an extension.",
    "country_invalid": "Choose a country from the list.",
    "nothing_ticked": "Tick at least one box to choose what we may send you.",
    "text_changed": (
        "The wording of this form has changed since you opened it. Please read it again and "
        "tick the boxes you agree to."
    ),
    "sms_country": "We can't send text messages to numbers in {country} yet.",
    "sms_not_mobile": "This number can't receive text messages. Give a mobile number.",
    "failed": "We couldn't sign you up just now. Please try again in a moment.",
    "throttled": (
        "There have been too many sign-ups from your connection just now. Please wait a "
        "minute and try again."
    ),
}


def region_name(region: str) -> str:
    """The English name of an ISO 3166-1 alpha-2 region, e.g. ``GB`` → United Kingdom."""
    return _NAMES.get(region) or country_name(region)


def textable_regions() -> list[str]:
    """Where this site can text: ``SMS_SENDING_COUNTRIES``, else ``SMS_COUNTRIES``."""
    sending = consent_settings.SMS_SENDING_COUNTRIES
    regions = sending if sending is not None else consent_settings.SMS_COUNTRIES
    return [r for r in regions if r in phonenumbers.SUPPORTED_REGIONS]


@lru_cache(maxsize=512)
def example_number(region: str) -> str:
    """A mobile number of ``region`` as people there write it (``07400 123456`` in GB); every
    example is one the form accepts, read in that region."""
    number = phonenumbers.example_number_for_type(
        region, phonenumbers.PhoneNumberType.MOBILE
    ) or phonenumbers.example_number(region)
    if number is None:
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


def country_choices() -> list[Any]:
    """The countries a number can be from: those the site texts first, then all others."""
    textable = textable_regions()
    first = sorted(((r, region_name(r)) for r in textable), key=lambda c: c[1])
    others = sorted(
        ((r, region_name(r)) for r in phonenumbers.SUPPORTED_REGIONS if r not in textable),
        key=lambda c: c[1],
    )
    return [("We send texts to", first), ("Other countries", others)]


def default_region(accept_language: str = "") -> str:
    """The country the form starts on: ``DEFAULT_PHONE_REGION``; else the first region of the
    visitor's ``Accept-Language`` (``en-GB`` → GB); else of ``LANGUAGE_CODE``; else the first
    texted country in alphabetical order."""
    if consent_settings.DEFAULT_PHONE_REGION:
        return str(consent_settings.DEFAULT_PHONE_REGION)
    for tag in [*accept_language.split(","), settings.LANGUAGE_CODE]:
        parts = tag.split(";")[0].strip().replace("_", "-").split("-")
        if len(parts) > 1 and parts[-1].upper() in phonenumbers.SUPPORTED_REGIONS:
            return parts[-1].upper()
    textable = sorted(textable_regions())
    return textable[0] if textable else "US"


class CountrySelect(forms.Select):
    """A ``<select>`` whose options carry ``data-example``: the hint's number for that country."""

    def create_option(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(*args, **kwargs)
        if option["value"]:
            option["attrs"]["data-example"] = example_number(str(option["value"]))
        return option


class ConsentForm(forms.Form):
    """Email and SMS marketing consent, with the words of the active text versions.

    Unticked boxes, one per channel, each labelled with the exact words recorded; a country for
    national numbers; a honeypot (``website``); the versions shown travel in hidden fields, so
    the ledger records the words the person read even if staff publish new ones meanwhile.
    """

    email = forms.CharField(
        label="Email address",
        required=False,
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "spellcheck": "false"}),
    )
    email_marketing = forms.BooleanField(required=False, initial=False)
    country = forms.ChoiceField(
        label="Country",
        required=False,
        widget=CountrySelect(attrs={"autocomplete": "country"}),
        error_messages={"invalid_choice": MESSAGES["country_invalid"]},
    )
    phone_number = forms.CharField(
        label="Mobile number",
        required=False,
        max_length=64,
        widget=forms.TextInput(attrs={"type": "tel", "autocomplete": "tel", "inputmode": "tel"}),
    )
    sms_marketing = forms.BooleanField(required=False, initial=False)
    email_text = forms.IntegerField(required=False, widget=forms.HiddenInput)
    sms_text = forms.IntegerField(required=False, widget=forms.HiddenInput)
    #: Left empty by people (it is hidden from them); bots fill it in.
    website = forms.CharField(
        label="Leave this field empty",
        required=False,
        widget=forms.TextInput(attrs={"tabindex": "-1", "autocomplete": "off"}),
    )

    def __init__(self, *args: Any, accept_language: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "kc-%s")
        super().__init__(*args, **kwargs)
        self.texts: dict[str, ConsentText] = signup_texts()
        self.fields["email_marketing"].label = self.texts[Channel.EMAIL].body
        self.fields["sms_marketing"].label = self.texts[Channel.SMS].body
        self.fields["email_text"].initial = self.texts[Channel.EMAIL].pk
        self.fields["sms_text"].initial = self.texts[Channel.SMS].pk
        self.fields["country"].choices = country_choices()
        self.fields["country"].initial = default_region(accept_language)
        self.e164: str | None = None

    def phone_display(self) -> str | None:
        """The number read, written as people read it internationally (+44 7400 123457)."""
        if not self.e164:
            return None
        number = phonenumbers.parse(self.e164, None)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)

    # --- what the shopper sees ------------------------------------------------------------

    @property
    def is_bot(self) -> bool:
        """The honeypot was filled in: answer as if signed up, record nothing."""
        return bool(self.is_bound and (self.data.get("website") or "").strip())

    def phone_hint(self) -> str:
        region = self.data.get("country") if self.is_bound else None
        if region not in phonenumbers.SUPPORTED_REGIONS:
            region = self.fields["country"].initial
        return f"For example {example_number(region)}"

    def describe(self) -> None:
        """Point each input at its hint and its errors (``aria-describedby``), and mark the
        invalid ones (``aria-invalid``), for screen readers."""
        for name, field in self.fields.items():
            ids = [f"kc-{name}-hint"] if name == "phone_number" else []
            if name in self.errors:
                ids.append(f"kc-{name}-error")
                field.widget.attrs["aria-invalid"] = "true"
            if ids:
                field.widget.attrs["aria-describedby"] = " ".join(ids)

    # --- the rules ---------------------------------------------------------------------------

    def clean_email(self) -> str:
        raw = (self.cleaned_data.get("email") or "").strip()
        if not raw:
            return ""
        try:
            return clean_email(raw, field="email") or ""
        except ConsentValidationError:
            raise forms.ValidationError(MESSAGES["email_invalid"], code="invalid") from None

    def clean_country(self) -> str:
        return self.cleaned_data.get("country") or ""

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.is_bot:
            return data
        email_wanted, sms_wanted = data.get("email_marketing"), data.get("sms_marketing")
        if not (email_wanted or sms_wanted):
            raise forms.ValidationError(MESSAGES["nothing_ticked"], code="nothing_ticked")
        if email_wanted and not data.get("email") and "email" not in self.errors:
            self.add_error("email", forms.ValidationError(MESSAGES["email_needed"], "required"))
        phone = (data.get("phone_number") or "").strip()
        if sms_wanted and not phone:
            self.add_error(
                "phone_number", forms.ValidationError(MESSAGES["phone_needed"], "required")
            )
        if phone and "country" not in self.errors:
            self._clean_phone(phone, data.get("country") or None)
        shown = texts_by_id({"email": data.get("email_text"), "sms": data.get("sms_text")})
        if any(
            shown[c] is None
            for c, wanted in (("email", email_wanted), ("sms", sms_wanted))
            if wanted
        ):
            self.texts = signup_texts()  # show the current words again
            raise forms.ValidationError(MESSAGES["text_changed"], code="text_changed")
        self.shown = shown
        return data

    def _clean_phone(self, phone: str, region: str | None) -> None:
        try:
            self.e164 = normalize_phone_number(phone, country=region)
        except ConsentValidationError:
            if _has_extension(phone, region):
                message = MESSAGES["phone_extension"]
            elif phone.lstrip().startswith("+") or region is None:
                message = MESSAGES["phone_unreadable_international"]
            else:
                message = MESSAGES["phone_unreadable"].format(country=region_name(region))
            self.add_error("phone_number", forms.ValidationError(message, code="invalid"))

    # --- to the service ----------------------------------------------------------------------

    def to_signup(self, *, evidence: Evidence, method_detail: str = "signup form") -> SignupRequest:
        """The service request for the cleaned form (see :func:`record_signup`)."""
        data = self.cleaned_data
        channels = {
            channel
            for channel, ticked in (
                (Channel.EMAIL, data["email_marketing"]),
                (Channel.SMS, data["sms_marketing"]),
            )
            if ticked
        }
        return SignupRequest(
            email=data["email"] or None,
            phone_number=(data["phone_number"] or "").strip() or None,
            country=data["country"] or None,
            channels=frozenset(channels),
            texts={c: t for c, t in self.shown.items() if t is not None},
            evidence=evidence,
            method_detail=method_detail,
        )


def _has_extension(phone: str, region: str | None) -> bool:
    try:
        return bool(phonenumbers.parse(phone, region).extension)
    except phonenumbers.NumberParseException:
        return False


def refusal(outcome: SignupOutcome) -> str:
    """Why the SMS part was not recorded, in a shopper's words ("" when it was)."""
    if outcome.sms == Outcome.COUNTRY_UNSUPPORTED:
        return MESSAGES["sms_country"].format(country=region_name(outcome.sms_region or ""))
    if outcome.sms == Outcome.NOT_A_MOBILE:
        return MESSAGES["sms_not_mobile"]
    return ""


def confirmation(
    outcome: SignupOutcome, *, email: str | None = None, phone: str | None = None
) -> str:
    """What was recorded, in words: "You're signed up for our marketing emails at …".

    Without ``email``/``phone`` (the JSON endpoint) it names no address or number.
    """
    parts = []
    if outcome.email == Outcome.SUBSCRIBED:
        parts.append("our marketing emails" + (f" at {email}" if email else ""))
    if outcome.sms == Outcome.SUBSCRIBED:
        parts.append("our text messages" + (f" at {phone}" if phone else ""))
    said = f"Thank you! You're signed up for {' and '.join(parts)}." if parts else ""
    if parts and outcome.sms == Outcome.COUNTRY_UNSUPPORTED:
        country = region_name(outcome.sms_region or "")
        said += (
            f" We can't send text messages to numbers in {country} yet, so your mobile number "
            "was not signed up for texts."
        )
    elif parts and outcome.sms == Outcome.NOT_A_MOBILE:
        said += (
            " The number you gave can't receive text messages, so it was not signed up for texts."
        )
    if outcome.double_opt_in and outcome.email == Outcome.SUBSCRIBED:
        said += " Please confirm with the link in the email we are sending you."
    if outcome.double_opt_in and outcome.sms == Outcome.SUBSCRIBED:
        said += " Please reply to the text message we are sending you to confirm."
    return said
