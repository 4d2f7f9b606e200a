"""Phone numbers in E.164, and whether Klaviyo texts the number's country."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers import geocoder

from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import InvalidPhoneNumber, UnsupportedSMSCountry


def normalize_phone_number(raw: str, *, field: str = "phone_number") -> str:
    """Return ``raw`` as E.164, or raise naming the field; Klaviyo refuses anything else."""
    text = (raw or "").strip()
    try:
        number = phonenumbers.parse(text, consent_settings.DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(
            f"{text!r} is not a phone number ({exc}); use E.164, e.g. +13239169023.",
            field=field,
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber(
            f"{text!r} is not a valid phone number; use E.164, e.g. +13239169023.", field=field
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
    example = phonenumbers.example_number(region)
    name = geocoder.country_name_for_number(example, "en") if example else ""
    return name or region


def sms_unsupported_reason(e164: str, *, published_too: bool = False) -> str | None:
    """Why Klaviyo will not apply SMS consent for this number, or None when it should.

    ``published_too`` also consults Klaviyo's published list, to explain a consent Klaviyo did
    not apply even though the site's ``SMS_COUNTRIES`` allowed it.
    """
    from klaviyo_consent.conf import KLAVIYO_SMS_COUNTRIES

    region = phone_region(e164)
    supported = region in consent_settings.SMS_COUNTRIES
    if published_too:
        supported = supported and region in KLAVIYO_SMS_COUNTRIES
    if not supported:
        return f"SMS is not available in {country_name(region)} ({region or '??'})"
    sending = consent_settings.SMS_SENDING_COUNTRIES
    if sending is not None and region not in sending:
        return f"this account has no SMS sending number for {country_name(region)} ({region})"
    return None


def require_sms_country(e164: str, *, field: str = "phone_number") -> None:
    """Refuse SMS consent Klaviyo cannot apply: a country Klaviyo does not text
    (``SMS_COUNTRIES``), or one this account has no sending number for
    (``SMS_SENDING_COUNTRIES``)."""
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
