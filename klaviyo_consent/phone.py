"""Phone numbers in E.164, and whether Klaviyo texts the number's country."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers

from klaviyo_consent import klaviyo
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import (
    InvalidPhoneNumber,
    UnsupportedSMSCountry,
    UnsupportedSMSNumber,
)


def clean_country(raw: str | None, *, field: str = "profile.country") -> str | None:
    """``raw`` as an upper-case ISO 3166-1 alpha-2 code with a numbering plan, or None if blank.

    Raises :class:`InvalidPhoneNumber` naming ``field`` for anything else (phonenumbers'
    ``SUPPORTED_REGIONS``: every ISO country that has telephone numbers).
    """
    text = (raw or "").strip().upper()
    if not text:
        return None
    if text not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidPhoneNumber(
            f"{raw!r} is not an ISO 3166-1 alpha-2 country code, e.g. US or GB.", field=field
        )
    return text


def normalize_phone_number(
    raw: str, *, field: str = "phone_number", country: str | None = None
) -> str:
    """Return ``raw`` as E.164, or raise naming the field; Klaviyo refuses anything else.

    A national number (no ``+``) is read in ``country`` (ISO 3166-1 alpha-2), else in the
    ``DEFAULT_PHONE_REGION`` setting; with neither, only ``+E.164`` input is accepted.
    Lenient where the meaning is certain: spaces, dashes, brackets, a national trunk ``(0)``
    and ``tel:`` URIs (RFC 3966, ``phone-context`` included) are read as Klaviyo's importer
    reads them. A number with an extension (``ext. 12``, ``x12``, ``;ext=12``) is refused.
    """
    text = (raw or "").strip()
    region = country or consent_settings.DEFAULT_PHONE_REGION
    international = "write it with + and its country code (E.164, e.g. +13239169023)"
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        # The library's own words ("(0) Missing or invalid default region.") mean nothing to
        # the caller: say what to send instead.
        national = exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE
        raise InvalidPhoneNumber(
            f"{text!r} is a national number: {international}, or give its country."
            if national and not text.startswith("+")
            else f"{text!r} is not a phone number: {international}.",
            field=field,
        ) from exc
    if not phonenumbers.is_valid_number(number):
        where = f" in {region}" if region and not text.startswith("+") else ""
        raise InvalidPhoneNumber(
            f"{text!r} is not a valid phone number{where}: {international}.", field=field
        )
    if number.extension:
        # A consent is for one number a text reaches; an extension reaches a desk phone.
        raise InvalidPhoneNumber(
            f"{text!r} has an extension ({number.extension}); give one mobile number "
            "without an extension.",
            field=field,
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=4096)
def phone_region(e164: str) -> str | None:
    """The ISO region of a number by its numbering plan (+1 787 is PR, not US).

    Cached: a subscribe asks right after normalising, verdicts ask for every SMS event.
    """
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None


def country_name(region: str | None) -> str:
    if not region:
        return "an unknown country"
    # Imported here: phonenumbers' geocoder loads all its geodata (about 100 MB of RSS) into
    # every process that imports it, and only this refusal message needs a country's name.
    from phonenumbers import geocoder

    example = phonenumbers.example_number(region)
    name = geocoder.country_name_for_number(example, "en") if example else ""
    return name or region


def sms_unsupported_reason(e164: str, *, published_too: bool = False) -> str | None:
    """Why Klaviyo will not apply SMS consent for this number, or None when it should.

    ``published_too`` also consults Klaviyo's published list, to explain a consent Klaviyo did
    not apply even though the site's ``SMS_COUNTRIES`` allowed it.
    """
    region = phone_region(e164)
    supported = region in consent_settings.SMS_COUNTRIES
    if published_too:
        supported = supported and region in klaviyo.SMS_COUNTRIES
    if not supported:
        return f"SMS is not available in {country_name(region)} ({region or '??'})"
    sending = consent_settings.SMS_SENDING_COUNTRIES
    if sending is not None and region not in sending:
        return f"this account has no SMS sending number for {country_name(region)} ({region})"
    return None


#: phonenumbers' number types that can receive a text. VOIP and personal numbers often can
#: (so their consent is kept); UNKNOWN is a valid number whose type the metadata does not know.
_TEXTABLE = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.VOIP,
        phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
        phonenumbers.PhoneNumberType.UNKNOWN,
    }
)
_TYPE_NAMES = {
    phonenumbers.PhoneNumberType.FIXED_LINE: "a landline",
    phonenumbers.PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    phonenumbers.PhoneNumberType.TOLL_FREE: "a toll-free number",
    phonenumbers.PhoneNumberType.SHARED_COST: "a shared-cost number",
    phonenumbers.PhoneNumberType.PAGER: "a pager number",
    phonenumbers.PhoneNumberType.UAN: "a universal access number",
    phonenumbers.PhoneNumberType.VOICEMAIL: "a voicemail access number",
}


def sms_untextable_reason(e164: str) -> str | None:
    """Why this number cannot receive texts at all (a landline, toll-free, ...), or None.

    By phonenumbers' number type for the number's numbering plan; mobile, mobile-or-landline
    (the US and Canada cannot tell them apart), VoIP and personal numbers are textable.
    """
    try:
        kind = phonenumbers.number_type(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None
    if kind in _TEXTABLE:
        return None
    return f"{e164} is {_TYPE_NAMES.get(kind, 'a number that cannot receive texts')}"


def require_sms_country(e164: str, *, field: str = "phone_number") -> None:
    """Refuse SMS consent Klaviyo cannot apply: a number that cannot receive texts (its type),
    a country Klaviyo does not text (``SMS_COUNTRIES``), or one this account has no sending
    number for (``SMS_SENDING_COUNTRIES``).

    Raises :class:`UnsupportedSMSNumber` or :class:`UnsupportedSMSCountry` naming ``field``.
    """
    untextable = sms_untextable_reason(e164)
    if untextable:
        raise UnsupportedSMSNumber(
            f"{untextable}, which cannot receive text messages, so SMS consent cannot be "
            "recorded for it; give a mobile number.",
            field=field,
        )
    reason = sms_unsupported_reason(e164)
    if reason:
        region = phone_region(e164)
        setting = (
            "SMS_COUNTRIES"
            if region not in consent_settings.SMS_COUNTRIES
            else "SMS_SENDING_COUNTRIES"
        )
        what = "a supported SMS country" if setting == "SMS_COUNTRIES" else "a sending country"
        raise UnsupportedSMSCountry(
            f"{reason}: it is not {what} ({setting}), so SMS consent "
            f"cannot be recorded for {e164}.",
            field=field,
        )


def phone_numbers_in(text: str) -> list[str]:
    """The valid phone numbers written anywhere in free ``text``, as written there.

    Found by libphonenumber's matcher (``PhoneNumberMatcher``, leniency VALID): ``+``-prefixed
    numbers always, national ones in the ``DEFAULT_PHONE_REGION`` setting's format when it is
    set. A ticket number is not a valid phone number, so it is not found.
    """
    region = consent_settings.DEFAULT_PHONE_REGION or "ZZ"
    return [match.raw_string for match in phonenumbers.PhoneNumberMatcher(text or "", region)]
