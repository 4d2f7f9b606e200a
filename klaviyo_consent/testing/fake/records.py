"""What the fake keeps and answers: its constants, records and small value helpers.

Klaviyo's published facts come from :mod:`klaviyo_consent.klaviyo`; the rest (error details,
record shapes, id alphabets) is how the fake imitates Klaviyo's answers.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import phonenumbers

from klaviyo_consent import klaviyo

DEFAULT_BASE_URL = klaviyo.BASE_URL
#: Countries Klaviyo sends SMS to (:data:`klaviyo_consent.klaviyo.SMS_COUNTRIES`).
DEFAULT_SMS_COUNTRIES: tuple[str, ...] = klaviyo.SMS_COUNTRIES

INVALID_PHONE_DETAIL = "Invalid phone number format (Example of a valid format: +13239169023)"
SMS_CONFIGURATION_REQUIRED_DETAIL = (
    "SMS configuration is required to subscribe phone number only profiles."
)
INVALID_EMAIL_DETAIL = "Invalid email address"

JSON_API = "application/vnd.api+json"

#: Faults ``fault_rate`` picks from: HTTP statuses, or a lost connection / answer.
FAULT_CHOICES: tuple[int | str, ...] = (500, 503, 429, "connection", "timeout")

MAX_SUBSCRIBE_PROFILES = klaviyo.MAX_SUBSCRIBE_PROFILES
MAX_UNSUBSCRIBE_PROFILES = klaviyo.MAX_UNSUBSCRIBE_PROFILES
MAX_SUPPRESS_PROFILES = klaviyo.MAX_SUPPRESS_PROFILES
MAX_UNSUPPRESS_PROFILES = klaviyo.MAX_UNSUPPRESS_PROFILES

_REVISION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.\w+)?$")
REFUSES_UNSENDABLE_SMS_REVISION = klaviyo.REFUSES_UNSENDABLE_SMS_REVISION
NO_SENDING_NUMBER_DETAIL = (
    "This account has no SMS sending number for the phone number's region "
    "({region}); SMS consent cannot be applied."
)
PARTIAL_FAILURE_HEADER = klaviyo.PARTIAL_FAILURE_HEADER
_E164_RE = re.compile(r"^\+[1-9]\d{1,14}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_NEVER_SUBSCRIBED = "NEVER_SUBSCRIBED"
_SUBSCRIBED = "SUBSCRIBED"
_UNSUBSCRIBED = "UNSUBSCRIBED"

_LIFTED_BY_SUBSCRIBE = klaviyo.LIFTED_BY_SUBSCRIBE
_SUPPRESSION_REASONS = klaviyo.SUPPRESSION_REASONS
_OPT_IN_PROCESSES = klaviyo.OPT_IN_PROCESSES
#: Replies Klaviyo treats as an SMS opt-out (help centre, "SMS keywords").
SMS_OPT_OUT_KEYWORDS = frozenset({"STOP", "END", "QUIT", "UNSUBSCRIBE", "CANCEL", "STOPALL"})
#: SMS consent Klaviyo removes by itself, and how the fake reports it (method: method_detail).
SMS_CONSENT_REMOVALS = {
    "PERMANENT_FAILURE": "permanent delivery failure",
    "CARRIER_DEACTIVATION": "Carrier Deactivation",
}

_SUBSCRIBE_JOB = "profile-subscription-bulk-create-job"
_UNSUBSCRIBE_JOB = "profile-subscription-bulk-delete-job"
_SUPPRESS_JOB = "profile-suppression-bulk-create-job"
_UNSUPPRESS_JOB = "profile-suppression-bulk-delete-job"

_CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Maps each base64 symbol to a Crockford base32 one (index mod 32): still uniform, still C-fast.
_B64_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    _CROCKFORD_ALPHABET.encode() * 2,
)
_LIST_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(slots=True)
class FakeResponse:
    """What the fake answers; ``fault`` is set when no answer reaches the caller at all."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    fault: str | None = None

    @property
    def json(self) -> Any:
        """The decoded body, or None for Klaviyo's empty 202s."""
        return json.loads(self.body) if self.body else None


class LoggedRequest(NamedTuple):
    """One request as the fake saw it; ``status`` is None when the answer was lost (fault)."""

    method: str
    path: str
    status: int | None


@dataclass(frozen=True)
class PendingConfirmation:
    """A double opt-in subscription waiting for the person to confirm."""

    profile_id: str
    channel: str
    purpose: str
    list_id: str | None
    custom_source: str | None = None


@dataclass(frozen=True)
class InjectedFault:
    """A queued answer replacing the real one (``kind`` "connection"/"timeout": no answer)."""

    status: int = 500
    retry_after: float | None = None
    errors: list[dict[str, Any]] | None = None
    kind: str | None = None
    applies: bool | None = None


@dataclass(slots=True)
class _Profile:
    id: str
    seq: int
    created: datetime
    updated: datetime
    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email_marketing: dict[str, Any] = field(default_factory=dict)
    sms_marketing: dict[str, Any] = field(default_factory=dict)
    sms_transactional: dict[str, Any] = field(default_factory=dict)

    def sms(self, purpose: str) -> dict[str, Any]:
        return self.sms_marketing if purpose == "marketing" else self.sms_transactional


@dataclass(slots=True)
class _List:
    id: str
    name: str
    opt_in_process: str
    created: datetime
    updated: datetime
    members: dict[str, None] = field(default_factory=dict)


@dataclass(slots=True)
class _Call:
    method: str
    path: str
    url: str
    base: str
    query: list[tuple[str, str]]
    params: dict[str, str]
    body: bytes | None
    args: dict[str, str]
    #: The request's ``revision`` header (Klaviyo's behaviour differs by revision).
    revision: str = ""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=65536)
def _phone_info(raw: str) -> tuple[str | None, str | None]:
    """(E.164 form, region) of a phone number, or (None, None) when Klaviyo would refuse it.

    Cached, and for canonical E.164 input the number is built directly rather than through
    ``phonenumbers.parse`` (half the cost): parsing dominates per-profile work. Whenever
    ``parse`` could read the digits differently (a national prefix it would strip, odd
    lengths) the full parse decides.
    """
    if not _E164_RE.match(raw):
        return None, None
    digits = raw[1:]
    for size in (1, 2, 3):
        country_code = int(digits[:size])
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code)
        if regions is not None:
            break
    else:
        return None, None
    national = digits[size:]
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        country_code, regions[0]
    )
    prefix = metadata.national_prefix_for_parsing if metadata is not None else None
    if len(national) < 2 or metadata is None or (prefix and _compiled(prefix).match(national)):
        return _parsed_phone_info(raw)
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    if national[0] == "0":
        number.italian_leading_zero = True
        zeros = len(national) - len(national.lstrip("0"))
        zeros = min(zeros, len(national) - 1)
        if zeros != 1:
            number.number_of_leading_zeros = zeros
    if len(regions) == 1:
        valid = phonenumbers.is_valid_number_for_region(number, regions[0])
        return (raw, regions[0]) if valid else (None, None)
    for region in regions:
        # phonenumbers' own region choice, without checking the winner's validity twice.
        leading_digits = phonenumbers.PhoneMetadata.metadata_for_region(region).leading_digits
        if leading_digits is not None:
            if _compiled(leading_digits).match(national):
                valid = phonenumbers.is_valid_number_for_region(number, region)
                return (raw, region) if valid else (None, None)
        elif phonenumbers.is_valid_number_for_region(number, region):
            return raw, region
    return None, None


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _parsed_phone_info(raw: str) -> tuple[str | None, str | None]:
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None, None
    region = phonenumbers.region_code_for_number(parsed)
    if region is None or not phonenumbers.is_valid_number_for_region(parsed, region):
        return None, None
    if phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) != raw:
        return None, None
    return raw, region


def _fresh_email_marketing() -> dict[str, Any]:
    return {
        "can_receive_email_marketing": True,
        "consent": _NEVER_SUBSCRIBED,
        "consent_timestamp": None,
        "last_updated": None,
        "method": None,
        "method_detail": None,
        "custom_method_detail": None,
        "double_optin": None,
        "suppression": [],
        "list_suppressions": [],
    }


def _fresh_sms(purpose: str) -> dict[str, Any]:
    return {
        f"can_receive_sms_{purpose}": False,
        "consent": _NEVER_SUBSCRIBED,
        "consent_timestamp": None,
        "method": None,
        "method_detail": None,
        "last_updated": None,
    }
