"""An in-memory imitation of the Klaviyo API endpoints this app relies on.

Why it exists: consent sync has to be exercised against Klaviyo's real behaviour (bulk jobs
answered with 202 and applied later, double opt-in, SMS country rules, suppressions, rate
limits, lost answers) in unit tests, benchmarks and local demos, without a network or an
account. Request bodies are checked with the official SDK's pydantic models (klaviyo-api),
so a payload the fake accepts has the shape Klaviyo documents.

The fake applies a job while answering it (Klaviyo queues it): a test can read the result
straight after the 202, as a poller would after the job has run.

Django is deliberately not imported: the fake also runs behind a plain WSGI server.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import io
import json
import math
import os
import pickle
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer
from wsgiref.util import request_uri

import phonenumbers
import requests
import requests.adapters
from openapi_client.models.profile_subscription_create_query_resource_object import (
    ProfileSubscriptionCreateQueryResourceObject,
)
from openapi_client.models.profile_subscription_delete_query_resource_object import (
    ProfileSubscriptionDeleteQueryResourceObject,
)
from openapi_client.models.profile_suppression_create_query_resource_object import (
    ProfileSuppressionCreateQueryResourceObject,
)
from openapi_client.models.profile_suppression_delete_query_resource_object import (
    ProfileSuppressionDeleteQueryResourceObject,
)
from openapi_client.models.subscription_create_job_create_query import (
    SubscriptionCreateJobCreateQuery,
)
from openapi_client.models.subscription_delete_job_create_query import (
    SubscriptionDeleteJobCreateQuery,
)
from openapi_client.models.suppression_create_job_create_query import (
    SuppressionCreateJobCreateQuery,
)
from openapi_client.models.suppression_delete_job_create_query import (
    SuppressionDeleteJobCreateQuery,
)
from pydantic import ValidationError
from requests.structures import CaseInsensitiveDict

from klaviyo_consent.testing.fake_profile_import import ProfileImportMixin

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_SMS_COUNTRIES",
    "FAULT_CHOICES",
    "INVALID_PHONE_DETAIL",
    "NO_SENDING_NUMBER_DETAIL",
    "PARTIAL_FAILURE_HEADER",
    "REFUSES_UNSENDABLE_SMS_REVISION",
    "RATE_LIMITS",
    "SMS_CONFIGURATION_REQUIRED_DETAIL",
    "FakeKlaviyo",
    "FakeKlaviyoAdapter",
    "FakeKlaviyoServer",
    "FakeResponse",
    "InjectedFault",
    "LoggedRequest",
    "PendingConfirmation",
    "RateLimit",
    "error_object",
    "get_default_fake",
    "make_server",
    "make_wsgi_app",
    "parse_filter",
    "serve",
    "set_default_fake",
]

DEFAULT_BASE_URL = "https://a.klaviyo.com"

#: Countries Klaviyo sends SMS to, as ISO 3166 alpha-2 region codes (phonenumbers' regions).
#: "US" means the 50 states: Puerto Rico and the other territories have their own regions.
DEFAULT_SMS_COUNTRIES: tuple[str, ...] = (
    "US", "CA", "GB", "IE", "DE", "NL", "FR", "BE", "AT", "ES",
    "CH", "DK", "SE", "NO", "FI", "IT", "PT", "AU", "NZ",
)  # fmt: skip

INVALID_PHONE_DETAIL = "Invalid phone number format (Example of a valid format: +13239169023)"
SMS_CONFIGURATION_REQUIRED_DETAIL = (
    "SMS configuration is required to subscribe phone number only profiles."
)
INVALID_EMAIL_DETAIL = "Invalid email address"

JSON_API = "application/vnd.api+json"

#: Faults ``fault_rate`` picks from: HTTP statuses, or a lost connection / answer.
FAULT_CHOICES: tuple[int | str, ...] = (500, 503, 429, "connection", "timeout")


class RateLimit(NamedTuple):
    """Klaviyo's two fixed windows for one operation: per second (burst) and per minute (steady)."""

    burst: int
    steady: int


#: ``x-klaviyo-ratelimit`` of each operation the fake serves (burst per 1 s, steady per 60 s).
RATE_LIMITS: dict[str, RateLimit] = {
    "bulk_subscribe_profiles": RateLimit(75, 750),
    "bulk_unsubscribe_profiles": RateLimit(75, 750),
    "bulk_suppress_profiles": RateLimit(75, 750),
    "bulk_unsuppress_profiles": RateLimit(75, 750),
    "get_bulk_suppress_profiles_jobs": RateLimit(75, 750),
    "get_bulk_suppress_profiles_job": RateLimit(75, 750),
    "get_bulk_unsuppress_profiles_jobs": RateLimit(75, 750),
    "get_bulk_unsuppress_profiles_job": RateLimit(75, 750),
    "get_profiles": RateLimit(75, 750),
    "get_profile": RateLimit(75, 750),
    "create_or_update_profile": RateLimit(75, 750),
    "get_lists": RateLimit(75, 750),
    "get_list": RateLimit(75, 750),
}

_WINDOWS = ((1.0, "burst"), (60.0, "steady"))

MAX_SUBSCRIBE_PROFILES = 1000
MAX_UNSUBSCRIBE_PROFILES = 100
MAX_SUPPRESSION_EMAILS = 100

_REVISION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.\w+)?$")
#: From this revision on, SMS consent for a number in a region the account has no sending
#: number for is refused (400, pointer at the entry's phone_number) instead of dropped
#: silently (Klaviyo staff, community thread 12192).
REFUSES_UNSENDABLE_SMS_REVISION = "2024-05-15"
NO_SENDING_NUMBER_DETAIL = (
    "This account has no SMS sending number for the phone number's region "
    "({region}); SMS consent cannot be applied."
)
#: Klaviyo's header naming an identifier it ignored while accepting the job (announced).
PARTIAL_FAILURE_HEADER = "X-Klaviyo-Partial-Failure"
_E164_RE = re.compile(r"^\+[1-9]\d{1,14}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_NEVER_SUBSCRIBED = "NEVER_SUBSCRIBED"
_SUBSCRIBED = "SUBSCRIBED"
_UNSUBSCRIBED = "UNSUBSCRIBED"

#: Suppressions a subscribe lifts; HARD_BOUNCE and INVALID_EMAIL stay.
_LIFTED_BY_SUBSCRIBE = frozenset(
    {"UNSUBSCRIBE", "SPAM_REPORT", "SPAM_COMPLAINT", "USER_SUPPRESSED"}
)
_SUPPRESSION_REASONS = frozenset(
    {"HARD_BOUNCE", "INVALID_EMAIL", "SPAM_COMPLAINT", "UNSUBSCRIBE", "USER_SUPPRESSED"}
)
_OPT_IN_PROCESSES = frozenset({"double_opt_in", "single_opt_in"})
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

_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    429: "throttled",
    500: "error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_TITLES = {
    400: "Invalid input.",
    401: "Authentication credentials were not provided.",
    404: "Not found.",
    405: "Method not allowed.",
    429: "Request was throttled.",
    500: "A server error occurred.",
    503: "Service unavailable.",
}

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


class _Problem(Exception):
    """A request the fake refuses; carries the status and JSON:API error objects."""

    def __init__(
        self, status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None
    ):
        super().__init__(status)
        self.status = status
        self.errors = errors
        self.headers = headers or {}


def error_object(
    status: int,
    detail: str | None = None,
    *,
    code: str | None = None,
    title: str | None = None,
    pointer: str | None = None,
    parameter: str | None = None,
) -> dict[str, Any]:
    """One JSON:API error object in the shape Klaviyo's live answers have."""
    title = title or _TITLES.get(status) or _phrase(status)
    source: dict[str, str] = {}
    if pointer is not None:
        source["pointer"] = pointer
    if parameter is not None:
        source["parameter"] = parameter
    return {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code or _CODES.get(status, "error"),
        "title": title,
        "detail": detail or title,
        "source": source,
        "links": {},
        "meta": {},
    }


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _problem(status: int, detail: str | None = None, **kwargs: Any) -> _Problem:
    return _Problem(status, [error_object(status, detail, **kwargs)])


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


# --- filter= ---------------------------------------------------------------------------------

_FILTER_TOKEN = re.compile(
    r"""\s*(?:("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([(),\[\]])|([^\s(),\[\]"']+))"""
)


class _FilterError(ValueError):
    pass


class _Bare(str):
    """An unquoted filter value (datetimes, numbers)."""


def _tokenise(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _FILTER_TOKEN.match(text, position)
        if not match or match.end() == position:
            raise _FilterError(f"unexpected character at position {position}")
        quoted, punct, word = match.groups()
        if quoted is not None:
            tokens.append(("str", re.sub(r"\\(.)", r"\1", quoted[1:-1])))
        elif punct is not None:
            tokens.append(("punct", punct))
        else:
            tokens.append(("word", word))
        position = match.end()
    return tokens


def parse_filter(text: str) -> list[tuple[str, str, Any]]:
    """Parse Klaviyo's ``filter=`` syntax into a flat AND of (operator, field, value)."""
    tokens = _tokenise(text)
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take(kind: str, value: str | None = None) -> str:
        nonlocal position
        token = peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            raise _FilterError(f"expected {value or kind}")
        position += 1
        return token[1]

    def value() -> Any:
        nonlocal position
        token = peek()
        if token is None:
            raise _FilterError("missing value")
        if token == ("punct", "["):
            position += 1
            items: list[Any] = []
            if peek() != ("punct", "]"):
                items.append(value())
                while peek() == ("punct", ","):
                    position += 1
                    items.append(value())
            take("punct", "]")
            return items
        if token[0] == "str":
            position += 1
            return token[1]
        return _Bare(take("word"))

    def expression() -> list[tuple[str, str, Any]]:
        operator = take("word")
        take("punct", "(")
        if operator == "and":
            conditions = expression()
            while peek() == ("punct", ","):
                take("punct", ",")
                conditions += expression()
            take("punct", ")")
            return conditions
        field_name = take("word")
        take("punct", ",")
        operand = value()
        take("punct", ")")
        return [(operator, field_name, operand)]

    conditions = expression()
    while peek() == ("punct", ","):
        take("punct", ",")
        conditions += expression()
    if peek() is not None:
        raise _FilterError("unexpected trailing input")
    return conditions


def _filter_datetime(raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise _FilterError("expected a datetime")
    try:
        return _aware(datetime.fromisoformat(raw))
    except ValueError as exc:
        raise _FilterError(f"invalid datetime {raw!r}") from exc


_PROFILE_FILTERS = {
    "id": {"equals", "any"},
    "email": {"equals", "any"},
    "phone_number": {"equals", "any"},
    "external_id": {"equals", "any"},
    "created": {"greater-than", "less-than"},
    "updated": {"greater-than", "less-than"},
}
_LIST_FILTERS = {
    "id": {"equals", "any"},
    "name": {"equals", "any"},
    "created": {"greater-than"},
    "updated": {"greater-than"},
}


def _compile_filter(
    text: str | None, allowed: Mapping[str, set[str]], normalise: Callable[[str, str], str]
) -> list[tuple[str, str, Any]]:
    """Check a filter against the endpoint's allowed fields/operators and normalise its values."""
    if not text:
        return []
    try:
        conditions = parse_filter(text)
        compiled = []
        for operator, field_name, operand in conditions:
            if operator not in allowed.get(field_name, ()):
                raise _FilterError(f"operator {operator!r} is not allowed for field {field_name!r}")
            if operator == "equals":
                if not isinstance(operand, str):
                    raise _FilterError(f"equals({field_name}) takes one value")
                compiled.append((operator, field_name, normalise(field_name, operand)))
            elif operator == "any":
                if not isinstance(operand, list) or not all(
                    isinstance(item, str) for item in operand
                ):
                    raise _FilterError(f"any({field_name}) takes a list of values")
                compiled.append(
                    (operator, field_name, {normalise(field_name, item) for item in operand})
                )
            else:
                compiled.append((operator, field_name, _filter_datetime(operand)))
        return compiled
    except _FilterError as exc:
        raise _problem(400, f"Invalid filter provided: {exc}.", parameter="filter") from exc


def _matches(conditions: list[tuple[str, str, Any]], values: Callable[[str], Any]) -> bool:
    for operator, field_name, operand in conditions:
        actual = values(field_name)
        if operator == "equals":
            if actual != operand:
                return False
        elif operator == "any":
            if actual not in operand:
                return False
        elif actual is None:
            return False
        elif operator == "greater-than" and not actual > operand:
            return False
        elif operator == "less-than" and not actual < operand:
            return False
    return True


# --- SDK validation errors -------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _model_fields(title: str) -> frozenset[str] | None:
    import openapi_client.models as models

    try:
        model = getattr(models, title)
        return frozenset(info.alias or name for name, info in model.model_fields.items())
    except Exception:
        return None


def _walk(node: Any, path: str = "") -> Iterable[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, child in node.items():
            yield from _walk(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _walk(child, f"{path}/{index}")


def _follow(node: Any, loc: tuple[Any, ...]) -> tuple[bool, Any]:
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False, None
    return True, node


def _locate(exc: ValidationError, document: Any) -> str:
    """Best-effort JSON pointer (relative to ``document``) of the first error pydantic reports.

    The SDK validates nested objects through separate ``from_dict`` calls, so pydantic's
    ``loc`` is relative to the innermost model (named by ``exc.title``); find the object in
    the document that has that model's keys and holds the offending value.
    """
    details = exc.errors()
    if not details:
        return ""
    loc = tuple(details[0]["loc"])
    bad = details[0].get("input")
    suffix = "".join(f"/{part}" for part in loc)
    fields = _model_fields(exc.title)
    for strict in (True, False):
        for path, node in _walk(document):
            if strict and (fields is None or not set(node) <= fields):
                continue
            found, value = _follow(node, loc)
            if (not found and bad is None) or (found and type(value) is type(bad) and value == bad):
                return path + suffix
    return suffix


def _sdk_errors(
    exc: Exception, document: Any, item_model: type, items_pointer: str
) -> list[dict[str, Any]]:
    """JSON:API errors for a body the SDK rejected: one per bad profile, else one for the job."""
    items = _follow(document, ("data", "attributes", "profiles", "data"))[1]
    errors: list[dict[str, Any]] = []
    if isinstance(items, list):
        for index, item in enumerate(items):
            try:
                item_model.from_dict(item)
            except ValidationError as item_exc:
                detail = item_exc.errors()[0]["msg"] if item_exc.errors() else str(item_exc)
                pointer = f"{items_pointer}/{index}{_locate(item_exc, item)}"
                errors.append(error_object(400, detail, pointer=pointer))
            except (TypeError, AttributeError, KeyError, ValueError) as item_exc:
                errors.append(
                    error_object(
                        400, f"Invalid profile: {item_exc}", pointer=f"{items_pointer}/{index}"
                    )
                )
    if errors:
        return errors
    if isinstance(exc, ValidationError) and exc.errors():
        return [
            error_object(400, exc.errors()[0]["msg"], pointer=_locate(exc, document) or "/data")
        ]
    return [error_object(400, f"Invalid request body: {exc}", pointer="/data")]


# --- the fake ---------------------------------------------------------------------------------


class FakeKlaviyo(ProfileImportMixin):
    """Klaviyo's consent endpoints, in memory and thread-safe (one RLock around all state).

    Settings mirror an account: ``sms_countries`` (phonenumbers regions Klaviyo texts),
    ``sms_enabled``, ``default_opt_in_process`` (used when a job names no list), ``api_key``
    (None accepts any key). Test knobs: ``enforce_rate_limits``, ``time_scale`` (simulated
    seconds per real second), ``fault_rate`` with ``seed``, ``timeout_applies`` (a random
    timeout on a POST then applies the job half of the time), ``validate_responses``
    (check every answer with the SDK's models), ``now`` (a datetime or a callable).

    Tests and benchmarks read the public state directly: ``jobs``, ``request_log``,
    ``counts`` (requests per operation id), ``applied`` (consent applications by jobs,
    keyed by lower-cased email or E.164 phone, channel, purpose, consent), ``throttled``
    (rate-limit 429s), ``injected_faults``, ``pending_confirmations`` and
    ``rejected_emails`` (fill it to make Klaviyo refuse addresses). ``clock`` (default
    ``time.monotonic``) can be replaced to drive the rate-limit windows by hand.
    """

    def __init__(
        self,
        *,
        sms_countries: Iterable[str] = DEFAULT_SMS_COUNTRIES,
        sms_enabled: bool = True,
        default_opt_in_process: str = "double_opt_in",
        enforce_rate_limits: bool = True,
        time_scale: float = 1.0,
        fault_rate: float = 0.0,
        seed: int | None = None,
        api_key: str | None = None,
        validate_responses: bool = False,
        now: Callable[[], datetime] | datetime | None = None,
        timeout_applies: bool = False,
        sms_sending_countries: Iterable[str] | None = None,
        partial_failure_header: bool = False,
    ) -> None:
        if default_opt_in_process not in _OPT_IN_PROCESSES:
            raise ValueError(f"default_opt_in_process must be one of {sorted(_OPT_IN_PROCESSES)}")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        self.sms_countries: frozenset[str] = frozenset(code.upper() for code in sms_countries)
        #: Regions this account has an SMS sending number for (None: every region it texts).
        self.sms_sending_countries: frozenset[str] | None = (
            None
            if sms_sending_countries is None
            else frozenset(code.upper() for code in sms_sending_countries)
        )
        #: Answer an invalid phone beside a valid email with 202 and ``X-Klaviyo-Partial-
        #: Failure: phone_number`` (the phone is ignored) instead of a 400 for the entry.
        self.partial_failure_header = partial_failure_header
        self.sms_enabled = sms_enabled
        self.default_opt_in_process = default_opt_in_process
        self.enforce_rate_limits = enforce_rate_limits
        self.time_scale = float(time_scale)
        self.fault_rate = fault_rate
        self.seed = seed
        self.api_key = api_key
        self.validate_responses = validate_responses
        self.timeout_applies = timeout_applies
        self.rate_limits: dict[str, RateLimit] = dict(RATE_LIMITS)
        self.clock: Callable[[], float] = time.monotonic
        if now is None:
            self._now: Callable[[], datetime] = lambda: datetime.now(UTC)
        elif isinstance(now, datetime):
            fixed = _aware(now)
            self._now = lambda: fixed
        else:
            self._now = now
        self._lock = threading.RLock()
        self.reset()

    # --- state -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every profile, list, job, log, counter and queued fault; keep the settings."""
        with self._lock:
            self._profiles: dict[str, _Profile] = {}
            self._by_email: dict[str, _Profile] = {}
            self._by_phone: dict[str, _Profile] = {}
            self._lists: dict[str, _List] = {}
            self._pending: dict[tuple[str, str, str], dict[str | None, PendingConfirmation]] = {}
            self._suppression_jobs: dict[str, dict[str, dict[str, Any]]] = {
                _SUPPRESS_JOB: {},
                _UNSUPPRESS_JOB: {},
            }
            self._windows: dict[tuple[str, float], list[float]] = {}
            self._faults: list[InjectedFault] = []
            self._seq = 0
            self._id_prefix: tuple[int, str] = (-1, "")
            self._fault_rng = random.Random(self.seed)
            self._id_rng = random.Random(None if self.seed is None else self.seed + 1)
            self.rejected_emails: set[str] = set()
            self.rejected_phone_numbers: set[str] = set()
            self.jobs: list[dict[str, Any]] = []
            self.request_log: list[LoggedRequest] = []
            self.counts: Counter[str] = Counter()
            self.applied: Counter[tuple[str, str, str, str]] = Counter()
            self.injected_faults: Counter[str] = Counter()
            self.throttled = 0

    def now(self) -> datetime:
        """The fake's wall clock (injectable through ``now=``), always timezone-aware UTC."""
        return _aware(self._now())

    @property
    def pending_confirmations(self) -> list[PendingConfirmation]:
        """Double opt-in subscriptions still waiting for ``confirm_double_optin``."""
        with self._lock:
            return [item for by_list in self._pending.values() for item in by_list.values()]

    @property
    def profile_count(self) -> int:
        """How many profiles exist."""
        with self._lock:
            return len(self._profiles)

    # --- simulation helpers ----------------------------------------------------------------

    def add_list(
        self,
        list_id: str | None = None,
        name: str = "Newsletter",
        opt_in_process: str = "single_opt_in",
    ) -> str:
        """Create a list (Klaviyo's own default is double opt-in; tests usually want single)."""
        if opt_in_process not in _OPT_IN_PROCESSES:
            raise ValueError(f"opt_in_process must be one of {sorted(_OPT_IN_PROCESSES)}")
        with self._lock:
            if list_id is None:
                list_id = "".join(self._id_rng.choice(_LIST_ID_ALPHABET) for _ in range(6))
            moment = self.now()
            self._lists[list_id] = _List(list_id, name, opt_in_process, moment, moment)
            return list_id

    def list_ids(self) -> list[str]:
        """Ids of the lists this account has."""
        with self._lock:
            return list(self._lists)

    def list_members(self, list_id: str) -> list[str]:
        """Profile ids on a list (joined by a subscribe or a confirmed double opt-in)."""
        with self._lock:
            return list(self._lists[list_id].members)

    def add_profile(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        external_id: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> str:
        """Create a profile directly (as a form, import or the UI would); returns its id."""
        with self._lock:
            if phone_number is not None:
                phone_number = _phone_info(phone_number)[0] or phone_number
            profile = self._find(None, email, phone_number)
            if profile is None:
                profile = self._create_profile(email, phone_number, self.now())
            else:
                self._fill_identifiers(profile, email, phone_number)
            if external_id is not None:
                profile.external_id = external_id
            if first_name is not None:
                profile.first_name = first_name
            if last_name is not None:
                profile.last_name = last_name
            return profile.id

    def get_profile(
        self, email: str | None = None, phone_number: str | None = None
    ) -> dict[str, Any] | None:
        """The profile's id and attributes, ``subscriptions`` included, or None when unknown.

        Flattened from what ``GET /api/profiles?additional-fields[profile]=subscriptions``
        shows, so tests can write ``fake.get_profile(email=e)["subscriptions"]["email"]``.
        """
        with self._lock:
            profile = self._lookup(email, phone_number)
            if profile is None:
                return None
            resource = self._profile_resource(profile, DEFAULT_BASE_URL, with_subscriptions=True)
            return {"id": resource["id"], **resource["attributes"]}

    def confirm_double_optin(
        self, email: str | None = None, phone_number: str | None = None
    ) -> int:
        """The person confirms: by text (phone) SMS and email items, by email only email ones.

        Returns how many pending subscriptions were confirmed.
        """
        with self._lock:
            profile = self._require(email, phone_number)
            channels = {"sms", "email"} if phone_number is not None else {"email"}
            moment = self.now()
            stamp = _iso(moment)
            confirmed = 0
            for channel, purpose in (
                ("email", "marketing"),
                ("sms", "marketing"),
                ("sms", "transactional"),
            ):
                if channel not in channels:
                    continue
                waiting = self._pending.pop((profile.id, channel, purpose), {})
                if not waiting:
                    continue
                confirmed += len(waiting)
                if channel == "email":
                    source = next(iter(waiting.values())).custom_source
                    applied = self._subscribe_email(
                        profile, stamp, stamp, method="API", custom_source=source, double_optin=True
                    )
                else:
                    applied = self._subscribe_sms(
                        profile, purpose, stamp, stamp, method="TEXT", method_detail="JOIN"
                    )
                for list_id in waiting:
                    if applied and list_id in self._lists:
                        self._lists[list_id].members[profile.id] = None
            if confirmed:
                profile.updated = moment
            return confirmed

    def reply_stop(self, phone_number: str, keyword: str = "STOP") -> None:
        """The person texts an opt-out keyword: Klaviyo revokes SMS marketing consent itself
        (method TEXT, method_detail the keyword as texted: STOP, END, QUIT, ...)."""
        word = keyword.strip().upper()
        if word not in SMS_OPT_OUT_KEYWORDS:
            raise ValueError(f"keyword must be one of {sorted(SMS_OPT_OUT_KEYWORDS)}")
        with self._lock:
            profile = self._require(None, phone_number)
            moment = self.now()
            self._unsubscribe_sms(
                profile, "marketing", _iso(moment), method="TEXT", method_detail=word
            )
            self._drop_pending(profile.id, "sms", "marketing")
            profile.updated = moment

    def remove_sms_consent(self, phone_number: str, reason: str) -> None:
        """Klaviyo removes SMS consent on its own after a permanent delivery failure or a
        carrier deactivation (help centre, "Understanding SMS consent removal"): every SMS
        subscription of the number becomes UNSUBSCRIBED, with ``reason`` as Klaviyo's method
        (``PERMANENT_FAILURE`` or ``CARRIER_DEACTIVATION``; the exact method strings Klaviyo
        reports are unconfirmed, the point is that the inbound event carries them).
        """
        if reason not in SMS_CONSENT_REMOVALS:
            raise ValueError(f"reason must be one of {sorted(SMS_CONSENT_REMOVALS)}")
        with self._lock:
            profile = self._require(None, phone_number)
            moment = self.now()
            for purpose in ("marketing", "transactional"):
                if profile.sms(purpose).get("consent") == _SUBSCRIBED:
                    self._unsubscribe_sms(
                        profile,
                        purpose,
                        _iso(moment),
                        method=reason,
                        method_detail=SMS_CONSENT_REMOVALS[reason],
                    )
                self._drop_pending(profile.id, "sms", purpose)
            profile.updated = moment

    def change_phone_number(self, email: str, phone_number: str) -> None:
        """The profile's number is replaced on Klaviyo's side (e.g. a new number given at
        checkout): Klaviyo resets SMS consent, the new number starts NEVER_SUBSCRIBED (help
        centre, "How SMS affects profiles")."""
        phone = _phone_info(phone_number)[0] or phone_number
        with self._lock:
            profile = self._require(email, None)
            moment = self.now()
            if profile.phone_number is not None:
                self._by_phone.pop(profile.phone_number, None)
            profile.phone_number = phone
            self._by_phone[phone] = profile
            profile.sms_marketing = _fresh_sms("marketing")
            profile.sms_transactional = _fresh_sms("transactional")
            for purpose in ("marketing", "transactional"):
                self._drop_pending(profile.id, "sms", purpose)
            profile.updated = moment

    def click_unsubscribe(self, email: str) -> None:
        """The person unsubscribes through the preference page / unsubscribe link."""
        with self._lock:
            profile = self._require(email, None)
            moment = self.now()
            self._unsubscribe_email(
                profile, _iso(moment), method="PREFERENCE_PAGE", reason="UNSUBSCRIBE"
            )
            self._drop_pending(profile.id, "email", "marketing")
            profile.updated = moment

    def report_spam(self, email: str) -> None:
        """The person marks a campaign as spam: consent revoked and a SPAM_COMPLAINT suppression."""
        with self._lock:
            profile = self._require(email, None)
            moment = self.now()
            self._unsubscribe_email(
                profile, _iso(moment), method="SPAM_COMPLAINT", reason="SPAM_COMPLAINT"
            )
            self._drop_pending(profile.id, "email", "marketing")
            profile.updated = moment

    def suppress(self, email: str, reason: str = "HARD_BOUNCE") -> str:
        """Klaviyo suppresses an address itself (bounce, invalid); consent is left as it was."""
        if reason not in _SUPPRESSION_REASONS:
            raise ValueError(f"reason must be one of {sorted(_SUPPRESSION_REASONS)}")
        with self._lock:
            moment = self.now()
            profile = self._find(None, email, None) or self._create_profile(email, None, moment)
            self._add_suppression(profile, reason, _iso(moment))
            profile.updated = moment
            return profile.id

    def unsuppress(self, email: str, reason: str = "USER_SUPPRESSED") -> None:
        """Someone removes a suppression in Klaviyo's UI; consent is left as it was."""
        with self._lock:
            profile = self._require(email, None)
            moment = self.now()
            marketing = profile.email_marketing
            marketing["suppression"] = [
                item for item in marketing["suppression"] if item["reason"] != reason
            ]
            marketing["can_receive_email_marketing"] = not marketing["suppression"]
            marketing["last_updated"] = _iso(moment)
            profile.updated = moment

    # --- faults ----------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        *,
        count: int = 1,
        retry_after: float | None = None,
        errors: list[dict[str, Any]] | None = None,
        kind: str | None = None,
        applies: bool | None = None,
    ) -> None:
        """Replace the next ``count`` answers with a failure; the job is not applied.

        ``kind="connection"`` / ``"timeout"`` loses the answer instead (the requests adapter
        raises ``requests.ConnectionError`` / ``requests.Timeout``). A timeout on a POST may
        still apply the job, as when Klaviyo got the request but the answer was lost:
        ``applies`` forces that, None leaves it to ``timeout_applies`` (then a coin toss).
        """
        if kind not in (None, "http", "connection", "timeout"):
            raise ValueError("kind must be None, 'http', 'connection' or 'timeout'")
        with self._lock:
            fault = InjectedFault(
                status, retry_after, errors, None if kind == "http" else kind, applies
            )
            self._faults.extend([fault] * count)

    def _next_fault(self) -> InjectedFault | None:
        if self._faults:
            return self._faults.pop(0)
        if self.fault_rate and self._fault_rng.random() < self.fault_rate:
            choice = self._fault_rng.choice(FAULT_CHOICES)
            if isinstance(choice, str):
                return InjectedFault(kind=choice)
            return InjectedFault(status=choice, retry_after=1 if choice == 429 else None)
        return None

    # --- HTTP entry point ------------------------------------------------------------------

    def handle(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FakeResponse:
        """Answer one HTTP request as Klaviyo would (``url`` may be absolute or just a path)."""
        method = method.upper()
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}" if parts.netloc else DEFAULT_BASE_URL
        raw_path = parts.path or "/"
        path = unquote(raw_path).rstrip("/") or "/"
        query = parse_qsl(parts.query, keep_blank_values=True)
        call = _Call(
            method=method,
            path=path,
            url=f"{base}{raw_path}" + (f"?{parts.query}" if parts.query else ""),
            base=base,
            query=query,
            params=dict(query),
            body=body,
            args={},
        )
        lowered = {key.lower(): value for key, value in headers.items()}
        with self._lock:
            answer = self._dispatch(call, lowered)
            self.request_log.append(
                LoggedRequest(method, path, None if answer.fault else answer.status)
            )
            return answer

    def _dispatch(self, call: _Call, headers: dict[str, str]) -> FakeResponse:
        route = _route(call.path)
        if route is None:
            return self._error_response(_problem(404, f"The path {call.path} could not be found."))
        operations, args = route
        operation = operations.get(call.method)
        if operation is None:
            allowed = ", ".join(sorted(operations))
            problem = _problem(405, f'Method "{call.method}" not allowed.')
            problem.headers["Allow"] = allowed
            return self._error_response(problem)
        call.args = args
        self.counts[operation] += 1
        fault = self._next_fault()
        if fault is not None:
            return self._inject(fault, operation, call, headers)
        return self._serve(operation, call, headers)

    def _inject(
        self, fault: InjectedFault, operation: str, call: _Call, headers: dict[str, str]
    ) -> FakeResponse:
        if fault.kind in ("connection", "timeout"):
            self.injected_faults[fault.kind] += 1
            if fault.kind == "timeout" and call.method == "POST":
                applies = fault.applies
                if applies is None:
                    applies = self.timeout_applies and self._fault_rng.random() < 0.5
                if applies:
                    self._serve(operation, call, headers)
            return FakeResponse(0, {}, b"", fault=fault.kind)
        self.injected_faults[str(fault.status)] += 1
        if fault.errors is not None:
            answer = self._json_response(fault.status, {"errors": fault.errors})
        else:
            answer = self._error_response(_problem(fault.status))
        retry_after = fault.retry_after
        if retry_after is None and fault.status == 429:
            retry_after = 1
        if retry_after is not None:
            answer.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return answer

    def _serve(self, operation: str, call: _Call, headers: dict[str, str]) -> FakeResponse:
        try:
            self._authenticate(headers)
            revision = headers.get("revision")
            if not revision or not _REVISION_RE.match(revision):
                raise _problem(
                    400,
                    "The revision header is missing or not in the format YYYY-MM-DD[.suffix].",
                    parameter="revision",
                )
            limit_headers = self._take_quota(operation)
        except _Problem as problem:
            return self._error_response(problem)
        call.revision = revision
        try:
            answer = getattr(self, f"_op_{operation}")(call)
        except _Problem as problem:
            answer = self._error_response(problem)
        answer.headers.update(limit_headers)
        return answer

    def _authenticate(self, headers: dict[str, str]) -> None:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme != "Klaviyo-API-Key" or not key:
            raise _problem(
                401, "Missing or invalid authorization scheme. Please use Klaviyo-API-Key."
            )
        if self.api_key is not None and not hmac.compare_digest(
            key.encode(), self.api_key.encode()
        ):
            raise _problem(
                401,
                "Incorrect authentication credentials.",
                code="authentication_failed",
                title="Incorrect authentication credentials.",
            )

    def _take_quota(self, operation: str) -> dict[str, str]:
        """Count one request against the operation's fixed windows, or raise a 429.

        Windows are measured in simulated seconds, ``clock() * time_scale``. Header values
        (``Retry-After``, ``RateLimit-Reset``) are real seconds: the simulated time left in
        the window divided by ``time_scale``, rounded up, and at least 1, so a client that
        sleeps for them lands in the next window.
        """
        limits = self.rate_limits.get(operation)
        if not self.enforce_rate_limits or limits is None:
            return {}
        moment = self.clock() * self.time_scale
        windows = []
        for seconds, name in _WINDOWS:
            index = moment // seconds
            key = (operation, seconds)
            window = self._windows.get(key)
            if window is None or window[0] != index:
                window = self._windows[key] = [index, 0]
            reset = max(1, math.ceil(((index + 1) * seconds - moment) / self.time_scale))
            windows.append((window, getattr(limits, name), reset))
        full = [reset for window, limit, reset in windows if window[1] >= limit]
        if full:
            self.throttled += 1
            retry_after = max(full)
            plural = "" if retry_after == 1 else "s"
            detail = f"Request was throttled. Expected available in {retry_after} second{plural}."
            raise _Problem(429, [error_object(429, detail)], {"Retry-After": str(retry_after)})
        for window, _limit, _reset in windows:
            window[1] += 1
        window, limit, reset = min(windows, key=lambda item: item[1] - item[0][1])
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(limit - int(window[1])),
            "RateLimit-Reset": str(reset),
        }

    # --- responses -------------------------------------------------------------------------

    def _json_response(self, status: int, document: Any, model: str | None = None) -> FakeResponse:
        if self.validate_responses and model is not None:
            _validate_with_sdk(model, document)
        body = json.dumps(document, separators=(",", ":")).encode()
        return FakeResponse(status, {"Content-Type": JSON_API}, body)

    def _error_response(self, problem: _Problem) -> FakeResponse:
        answer = self._json_response(
            problem.status, {"errors": problem.errors}, "GetAccounts4XXResponse"
        )
        answer.headers.update(problem.headers)
        return answer

    def _read_body(self, call: _Call) -> Any:
        if not call.body:
            raise _problem(400, "A request body is required.", code="parse_error", pointer="/data")
        try:
            return json.loads(call.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _problem(
                400, "Malformed JSON in request body.", code="parse_error", pointer="/data"
            ) from exc

    def _sdk_validate(self, query_model: type, item_model: type, document: Any) -> Any:
        try:
            parsed = query_model.from_dict(document)
        except (ValidationError, TypeError, AttributeError, KeyError, ValueError) as exc:
            raise _Problem(
                400, _sdk_errors(exc, document, item_model, "/data/attributes/profiles/data")
            ) from exc
        if parsed is None:
            raise _problem(400, "A request body is required.", pointer="/data")
        return parsed

    # --- profiles: lookup and mutation -----------------------------------------------------

    def _find(
        self, profile_id: str | None, email: str | None, phone: str | None
    ) -> _Profile | None:
        if profile_id is not None and profile_id in self._profiles:
            return self._profiles[profile_id]
        if email is not None:
            profile = self._by_email.get(email.lower())
            if profile is not None:
                return profile
        if phone is not None:
            return self._by_phone.get(phone)
        return None

    def _lookup(self, email: str | None, phone_number: str | None) -> _Profile | None:
        if email is None and phone_number is None:
            raise ValueError("give an email or a phone_number")
        if phone_number is not None:
            phone_number = _phone_info(phone_number)[0] or phone_number
        return self._find(None, email, phone_number)

    def _require(self, email: str | None, phone_number: str | None) -> _Profile:
        profile = self._lookup(email, phone_number)
        if profile is None:
            raise LookupError(f"no profile with email={email!r} phone_number={phone_number!r}")
        return profile

    def _new_profile_id(self, moment: datetime) -> str:
        """A 26-character id like Klaviyo's ULIDs: 10 characters of time, 16 random ones."""
        millis = int(moment.timestamp() * 1000)
        if self._id_prefix[0] != millis:
            chars = []
            value = millis
            for _ in range(10):
                value, digit = divmod(value, 32)
                chars.append(_CROCKFORD_ALPHABET[digit])
            self._id_prefix = (millis, "".join(reversed(chars)))
        random_part = (
            base64.b64encode(self._id_rng.randbytes(12)).translate(_B64_TO_CROCKFORD).decode()
        )
        return self._id_prefix[1] + random_part

    def _create_profile(self, email: str | None, phone: str | None, moment: datetime) -> _Profile:
        self._seq += 1
        profile = _Profile(
            id=self._new_profile_id(moment),
            seq=self._seq,
            created=moment,
            updated=moment,
            email_marketing=_fresh_email_marketing(),
            sms_marketing=_fresh_sms("marketing"),
            sms_transactional=_fresh_sms("transactional"),
        )
        self._profiles[profile.id] = profile
        self._fill_identifiers(profile, email, phone)
        return profile

    def _fill_identifiers(self, profile: _Profile, email: str | None, phone: str | None) -> None:
        """Set a missing email/phone, unless another profile already owns it."""
        if email is not None and profile.email is None and email.lower() not in self._by_email:
            profile.email = email
            self._by_email[email.lower()] = profile
        if phone is not None and profile.phone_number is None and phone not in self._by_phone:
            profile.phone_number = phone
            self._by_phone[phone] = profile

    def _drop_pending(self, profile_id: str, channel: str, purpose: str) -> None:
        self._pending.pop((profile_id, channel, purpose), None)

    def _add_suppression(self, profile: _Profile, reason: str, stamp: str) -> None:
        marketing = profile.email_marketing
        if not any(item["reason"] == reason for item in marketing["suppression"]):
            marketing["suppression"].append({"reason": reason, "timestamp": stamp})
        marketing["can_receive_email_marketing"] = False
        marketing["last_updated"] = stamp

    def _subscribe_email(
        self,
        profile: _Profile,
        consent_stamp: str,
        stamp: str,
        *,
        method: str,
        custom_source: str | None,
        double_optin: bool,
    ) -> bool:
        """Grant email marketing consent; False while a HARD_BOUNCE/INVALID_EMAIL remains."""
        marketing = profile.email_marketing
        kept = [
            item for item in marketing["suppression"] if item["reason"] not in _LIFTED_BY_SUBSCRIBE
        ]
        if len(kept) != len(marketing["suppression"]):
            marketing["suppression"] = kept
            marketing["last_updated"] = stamp
        if kept:
            marketing["can_receive_email_marketing"] = False
            return False
        marketing.update(
            can_receive_email_marketing=True,
            consent=_SUBSCRIBED,
            consent_timestamp=consent_stamp,
            last_updated=stamp,
            method=method,
            method_detail="",
            custom_method_detail=custom_source,
            double_optin=double_optin,
        )
        return True

    def _unsubscribe_email(
        self, profile: _Profile, stamp: str, *, method: str, reason: str
    ) -> None:
        profile.email_marketing.update(
            consent=_UNSUBSCRIBED,
            consent_timestamp=stamp,
            last_updated=stamp,
            method=method,
            method_detail="",
            custom_method_detail=None,
        )
        self._add_suppression(profile, reason, stamp)

    def _subscribe_sms(
        self,
        profile: _Profile,
        purpose: str,
        consent_stamp: str,
        stamp: str,
        *,
        method: str,
        method_detail: str = "",
    ) -> bool:
        profile.sms(purpose).update(
            {
                f"can_receive_sms_{purpose}": True,
                "consent": _SUBSCRIBED,
                "consent_timestamp": consent_stamp,
                "method": method,
                "method_detail": method_detail,
                "last_updated": stamp,
            }
        )
        return True

    def _unsubscribe_sms(
        self, profile: _Profile, purpose: str, stamp: str, *, method: str, method_detail: str = ""
    ) -> None:
        profile.sms(purpose).update(
            {
                f"can_receive_sms_{purpose}": False,
                "consent": _UNSUBSCRIBED,
                "consent_timestamp": stamp,
                "method": method,
                "method_detail": method_detail,
                "last_updated": stamp,
            }
        )

    def _sms_allowed(self, phone: str | None) -> bool:
        return (
            self.sms_enabled
            and phone is not None
            and _phone_info(phone)[1] in self.sms_countries
            and self._has_sending_number(phone)
        )

    def _has_sending_number(self, phone: str) -> bool:
        sending = self.sms_sending_countries
        return sending is None or _phone_info(phone)[1] in sending

    def _phone_refused(self, phone: str) -> bool:
        return _phone_info(phone)[0] is None or phone in self.rejected_phone_numbers

    # --- bulk subscription jobs ------------------------------------------------------------

    def _check_identifiers(
        self, index: int, email: str | None, phone: str | None, rejected: set[str]
    ) -> dict | None:
        """The first problem Klaviyo would report for one profile's email/phone, if any."""
        if not email and not phone:
            detail, where = "Either an email or a phone_number is required.", ""
        elif phone and self._phone_refused(phone):
            detail, where = INVALID_PHONE_DETAIL, "/phone_number"
        elif email and (not _EMAIL_RE.match(email) or email.lower() in rejected):
            detail, where = INVALID_EMAIL_DETAIL, "/email"
        else:
            return None
        return error_object(
            400, detail, pointer=f"/data/attributes/profiles/data/{index}/attributes{where}"
        )

    def _job_list(self, relationships: Any) -> _List | None:
        data = getattr(getattr(relationships, "list", None), "data", None)
        if data is None:
            return None
        found = self._lists.get(data.id)
        if found is None:
            raise _problem(
                404,
                f"A list with id {data.id} does not exist.",
                pointer="/data/relationships/list/data/id",
            )
        return found

    def _op_bulk_subscribe_profiles(self, call: _Call) -> FakeResponse:
        document = self._read_body(call)
        query = self._sdk_validate(
            SubscriptionCreateJobCreateQuery, ProfileSubscriptionCreateQueryResourceObject, document
        )
        attributes = query.data.attributes
        entries = attributes.profiles.data
        historical = bool(attributes.historical_import)
        if len(entries) > MAX_SUBSCRIBE_PROFILES:
            raise _problem(
                400,
                f"A job takes at most {MAX_SUBSCRIBE_PROFILES} profiles; got {len(entries)}.",
                pointer="/data/attributes/profiles/data",
            )
        target = self._job_list(query.data.relationships)
        moment = self.now()
        rejected = {item.lower() for item in self.rejected_emails}
        errors = []
        plans = []
        ignored: list[str] = []
        refuses_unsendable = call.revision >= REFUSES_UNSENDABLE_SMS_REVISION
        for index, entry in enumerate(entries):
            entry_attributes = entry.attributes
            items = _subscribe_items(entry_attributes.subscriptions)
            phone = entry_attributes.phone_number
            email = entry_attributes.email
            if (
                self.partial_failure_header
                and phone
                and self._phone_refused(phone)
                and email
                and self._check_identifiers(index, email, None, rejected) is None
            ):
                # Announced behaviour: the invalid phone is ignored, the entry goes through.
                phone = None
                items = [item for item in items if item[0] != "sms"]
                if "phone_number" not in ignored:
                    ignored.append("phone_number")
            problem = self._check_subscribe_entry(
                index, email, phone, items, historical, moment, rejected, refuses_unsendable
            )
            if problem is not None:
                errors.append(problem)
            elif not errors:
                plans.append(
                    (
                        entry.id,
                        entry_attributes.email or None,
                        _phone_info(phone)[0] if phone else None,
                        items,
                    )
                )
        if errors:
            raise _Problem(400, errors)

        stamp = _iso(moment)
        opt_in = (
            "single_opt_in"
            if historical
            else (target.opt_in_process if target else self.default_opt_in_process)
        )
        method = "BULK_IMPORT" if historical else "API"
        list_id = target.id if target else None
        custom_source = attributes.custom_source
        for profile_id, email, phone, items in plans:
            profile = self._find(profile_id, email, phone)
            if profile is None:
                profile = self._create_profile(email, phone, moment)
            else:
                self._fill_identifiers(profile, email, phone)
                self._take_phone_number(profile, phone, moment)
            profile.updated = moment
            joined = False
            for channel, purpose, parameters in items:
                if channel == "email":
                    if profile.email is None:
                        continue
                    identifier = profile.email.lower()
                elif not self._sms_allowed(profile.phone_number):
                    continue
                else:
                    identifier = profile.phone_number
                if opt_in == "double_opt_in":
                    pending = PendingConfirmation(
                        profile.id, channel, purpose, list_id, custom_source
                    )
                    self._pending.setdefault((profile.id, channel, purpose), {})[list_id] = pending
                    continue
                consent_stamp = _iso(parameters.consented_at) if historical else stamp
                if channel == "email":
                    applied = self._subscribe_email(
                        profile,
                        consent_stamp,
                        stamp,
                        method=method,
                        custom_source=custom_source,
                        double_optin=False,
                    )
                else:
                    applied = self._subscribe_sms(
                        profile, purpose, consent_stamp, stamp, method=method
                    )
                if applied:
                    self._pending.pop((profile.id, channel, purpose), None)
                    self.applied[(identifier, channel, purpose, _SUBSCRIBED)] += 1
                    joined = True
            if joined and target is not None:
                target.members[profile.id] = None
        self._log_job(
            _SUBSCRIBE_JOB,
            list_id,
            len(entries),
            moment,
            custom_source=custom_source,
            historical_import=historical,
        )
        headers = {PARTIAL_FAILURE_HEADER: ", ".join(ignored)} if ignored else {}
        return FakeResponse(202, headers, b"")

    def _check_subscribe_entry(
        self,
        index: int,
        email: str | None,
        phone: str | None,
        items: list[tuple[str, str, Any]],
        historical: bool,
        moment: datetime,
        rejected: set[str],
        refuses_unsendable: bool = False,
    ) -> dict[str, Any] | None:
        """The first problem Klaviyo would report for one subscribe entry, if any."""
        problem = self._check_identifiers(index, email, phone, rejected)
        if problem is not None:
            return problem
        region = _phone_info(phone)[1] if phone else None
        if (
            refuses_unsendable
            and phone
            and self.sms_enabled
            and region in self.sms_countries
            and not self._has_sending_number(phone)
            and any(channel == "sms" for channel, _, _ in items)
        ):
            pointer = f"/data/attributes/profiles/data/{index}/attributes/phone_number"
            detail = NO_SENDING_NUMBER_DETAIL.format(region=region)
            return error_object(400, detail, pointer=pointer)
        if not email and not self._sms_allowed(phone):
            pointer = f"/data/attributes/profiles/data/{index}/attributes/phone_number"
            return error_object(400, SMS_CONFIGURATION_REQUIRED_DETAIL, pointer=pointer)
        for channel, purpose, parameters in items:
            consented_at = parameters.consented_at
            if historical:
                if consented_at is None:
                    detail = "consented_at is required when historical_import is true."
                elif _aware(consented_at) > moment:
                    detail = "consented_at must be in the past."
                else:
                    continue
            elif consented_at is not None:
                detail = "consented_at may only be given when historical_import is true."
            else:
                continue
            pointer = (
                f"/data/attributes/profiles/data/{index}/attributes"
                f"/subscriptions/{channel}/{purpose}/consented_at"
            )
            return error_object(400, detail, pointer=pointer)
        return None

    def _op_bulk_unsubscribe_profiles(self, call: _Call) -> FakeResponse:
        document = self._read_body(call)
        query = self._sdk_validate(
            SubscriptionDeleteJobCreateQuery, ProfileSubscriptionDeleteQueryResourceObject, document
        )
        entries = query.data.attributes.profiles.data
        if len(entries) > MAX_UNSUBSCRIBE_PROFILES:
            raise _problem(
                400,
                f"A job takes at most {MAX_UNSUBSCRIBE_PROFILES} profiles; got {len(entries)}.",
                pointer="/data/attributes/profiles/data",
            )
        target = self._job_list(query.data.relationships)
        rejected = {item.lower() for item in self.rejected_emails}
        errors = [
            problem
            for index, entry in enumerate(entries)
            if (
                problem := self._check_identifiers(
                    index, entry.attributes.email, entry.attributes.phone_number, rejected
                )
            )
        ]
        if errors:
            raise _Problem(400, errors)

        moment = self.now()
        stamp = _iso(moment)
        for entry in entries:
            attributes = entry.attributes
            email = attributes.email or None
            phone = _phone_info(attributes.phone_number)[0] if attributes.phone_number else None
            profile = self._find(None, email, phone)
            if profile is None:
                profile = self._create_profile(email, phone, moment)
            else:
                self._fill_identifiers(profile, email, phone)
            profile.updated = moment
            for channel, purpose in _unsubscribe_items(attributes.subscriptions):
                if channel == "email":
                    if profile.email is None:
                        continue
                    self._unsubscribe_email(profile, stamp, method="API", reason="UNSUBSCRIBE")
                    identifier = profile.email.lower()
                else:
                    if profile.phone_number is None:
                        continue
                    self._unsubscribe_sms(profile, purpose, stamp, method="API")
                    identifier = profile.phone_number
                self._drop_pending(profile.id, channel, purpose)
                self.applied[(identifier, channel, purpose, _UNSUBSCRIBED)] += 1
            if target is not None:
                target.members.pop(profile.id, None)
        self._log_job(_UNSUBSCRIBE_JOB, target.id if target else None, len(entries), moment)
        return FakeResponse(202, {}, b"")

    def _log_job(
        self, job_type: str, list_id: str | None, count: int, moment: datetime, **extra: Any
    ) -> None:
        self.jobs.append(
            {
                "type": job_type,
                "list_id": list_id,
                "custom_source": extra.get("custom_source"),
                "historical_import": extra.get("historical_import", False),
                "profile_count": count,
                "accepted_at": moment,
                **({"id": extra["id"]} if "id" in extra else {}),
            }
        )

    # --- suppression jobs ------------------------------------------------------------------

    def _op_bulk_suppress_profiles(self, call: _Call) -> FakeResponse:
        return self._suppression_job(call, _SUPPRESS_JOB)

    def _op_bulk_unsuppress_profiles(self, call: _Call) -> FakeResponse:
        return self._suppression_job(call, _UNSUPPRESS_JOB)

    def _suppression_job(self, call: _Call, job_type: str) -> FakeResponse:
        document = self._read_body(call)
        if job_type == _SUPPRESS_JOB:
            query = self._sdk_validate(
                SuppressionCreateJobCreateQuery,
                ProfileSuppressionCreateQueryResourceObject,
                document,
            )
        else:
            query = self._sdk_validate(
                SuppressionDeleteJobCreateQuery,
                ProfileSuppressionDeleteQueryResourceObject,
                document,
            )
        profiles = query.data.attributes.profiles
        entries = profiles.data if profiles is not None else []
        relationships = query.data.relationships
        segment = getattr(getattr(relationships, "segment", None), "data", None)
        target = self._job_list(relationships)
        if segment is not None:
            raise _problem(
                404,
                f"A segment with id {segment.id} does not exist.",
                pointer="/data/relationships/segment/data/id",
            )
        if profiles is None and target is None:
            raise _problem(
                400, "Provide profiles, a list or a segment.", pointer="/data/attributes/profiles"
            )
        if len(entries) > MAX_SUPPRESSION_EMAILS:
            raise _problem(
                400,
                f"A job can take at most {MAX_SUPPRESSION_EMAILS} emails; got {len(entries)}.",
                pointer="/data/attributes/profiles/data",
            )
        errors = [
            error_object(
                400,
                INVALID_EMAIL_DETAIL,
                pointer=f"/data/attributes/profiles/data/{index}/attributes/email",
            )
            for index, entry in enumerate(entries)
            if not _EMAIL_RE.match(entry.attributes.email)
        ]
        if errors:
            raise _Problem(400, errors)

        moment = self.now()
        stamp = _iso(moment)
        emails = [entry.attributes.email for entry in entries]
        if target is not None:
            emails += [
                self._profiles[pid].email for pid in target.members if self._profiles[pid].email
            ]
        skipped = 0
        for email in emails:
            profile = self._find(None, email, None)
            if job_type == _SUPPRESS_JOB:
                profile = profile or self._create_profile(email, None, moment)
                self._add_suppression(profile, "USER_SUPPRESSED", stamp)
            elif profile is None:
                skipped += 1
                continue
            else:
                marketing = profile.email_marketing
                kept = [
                    item for item in marketing["suppression"] if item["reason"] != "USER_SUPPRESSED"
                ]
                if len(kept) == len(marketing["suppression"]):
                    continue
                marketing.update(
                    suppression=kept, can_receive_email_marketing=not kept, last_updated=stamp
                )
            profile.updated = moment
        job_id = self._new_profile_id(moment)
        job = {
            "type": job_type,
            "id": job_id,
            "attributes": {
                "status": "complete",
                "created_at": stamp,
                "total_count": len(emails),
                "completed_count": len(emails) - skipped,
                "completed_at": stamp,
                "skipped_count": skipped,
            },
            "links": {"self": f"{call.base}{_JOB_PATHS[job_type]}/{job_id}/"},
        }
        self._suppression_jobs[job_type][job_id] = job
        self._log_job(job_type, target.id if target else None, len(emails), moment, id=job_id)
        model = (
            "PostBulkProfileSuppressionsCreateJobResponse"
            if job_type == _SUPPRESS_JOB
            else "PostBulkProfileSuppressionsRemoveJobResponse"
        )
        return self._json_response(202, {"data": _with_base(job, call.base)}, model)

    def _op_get_bulk_suppress_profiles_job(self, call: _Call) -> FakeResponse:
        return self._get_suppression_job(
            call, _SUPPRESS_JOB, "GetBulkProfileSuppressionsCreateJobResponse"
        )

    def _op_get_bulk_unsuppress_profiles_job(self, call: _Call) -> FakeResponse:
        return self._get_suppression_job(
            call, _UNSUPPRESS_JOB, "GetBulkProfileSuppressionsRemoveJobResponse"
        )

    def _get_suppression_job(self, call: _Call, job_type: str, model: str) -> FakeResponse:
        job = self._suppression_jobs[job_type].get(call.args["id"])
        if job is None:
            raise _problem(404, f"A job with id {call.args['id']} does not exist.")
        return self._json_response(
            200, {"data": _with_base(job, call.base), "links": {"self": call.url}}, model
        )

    def _op_get_bulk_suppress_profiles_jobs(self, call: _Call) -> FakeResponse:
        return self._list_suppression_jobs(
            call, _SUPPRESS_JOB, "GetBulkProfileSuppressionsCreateJobResponseCollection"
        )

    def _op_get_bulk_unsuppress_profiles_jobs(self, call: _Call) -> FakeResponse:
        return self._list_suppression_jobs(
            call, _UNSUPPRESS_JOB, "GetBulkProfileSuppressionsRemoveJobResponseCollection"
        )

    def _list_suppression_jobs(self, call: _Call, job_type: str, model: str) -> FakeResponse:
        jobs = [_with_base(job, call.base) for job in self._suppression_jobs[job_type].values()]
        page, links = self._paginate(call, jobs, default_size=20, max_size=100)
        return self._json_response(200, {"data": page, "links": links}, model)

    # --- profiles and lists ----------------------------------------------------------------

    def _additional_fields(self, call: _Call) -> bool:
        raw = call.params.get("additional-fields[profile]", "")
        requested = {item.strip() for item in raw.split(",") if item.strip()}
        unknown = requested - {"subscriptions", "predictive_analytics"}
        if unknown:
            raise _problem(
                400,
                f"Invalid additional-fields[profile] value(s): {', '.join(sorted(unknown))}.",
                parameter="additional-fields[profile]",
            )
        return "subscriptions" in requested

    def _profile_resource(
        self, profile: _Profile, base: str, *, with_subscriptions: bool
    ) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "email": profile.email,
            "phone_number": profile.phone_number,
            "external_id": profile.external_id,
            "first_name": profile.first_name,
            "last_name": profile.last_name,
            "organization": None,
            "locale": None,
            "title": None,
            "image": None,
            "created": _iso(profile.created),
            "updated": _iso(profile.updated),
            "last_event_date": None,
            "location": {
                "address1": None,
                "address2": None,
                "city": None,
                "country": None,
                "latitude": None,
                "longitude": None,
                "region": None,
                "zip": None,
                "timezone": None,
                "ip": None,
            },
            "properties": {},
        }
        if with_subscriptions:
            marketing = profile.email_marketing
            attributes["subscriptions"] = {
                "email": {
                    "marketing": {
                        **marketing,
                        "suppression": [dict(item) for item in marketing["suppression"]],
                        "list_suppressions": [
                            dict(item) for item in marketing["list_suppressions"]
                        ],
                    }
                },
                "sms": {
                    "marketing": dict(profile.sms_marketing),
                    "transactional": dict(profile.sms_transactional),
                },
            }
        return {
            "type": "profile",
            "id": profile.id,
            "attributes": attributes,
            "links": {"self": f"{base}/api/profiles/{profile.id}/"},
        }

    def _normalise_profile_value(self, field_name: str, value: str) -> str:
        if field_name == "email":
            return value.lower()
        if field_name == "phone_number":
            if value.startswith(" ") and value.strip().isdigit():
                value = "+" + value.strip()
            return _phone_info(value)[0] or value
        return value

    def _op_get_profiles(self, call: _Call) -> FakeResponse:
        with_subscriptions = self._additional_fields(call)
        conditions = _compile_filter(
            call.params.get("filter"), _PROFILE_FILTERS, self._normalise_profile_value
        )
        pool: Iterable[_Profile] = self._profiles.values()
        for operator, field_name, operand in conditions:
            if operator in ("equals", "any") and field_name in ("id", "email", "phone_number"):
                wanted = [operand] if operator == "equals" else operand
                index = {
                    "id": self._profiles,
                    "email": self._by_email,
                    "phone_number": self._by_phone,
                }[field_name]
                pool = sorted(
                    {index[value].id: index[value] for value in wanted if value in index}.values(),
                    key=lambda p: p.seq,
                )
                break
        if conditions:
            selected = [p for p in pool if _matches(conditions, functools.partial(_field_of, p))]
        else:
            selected = list(pool)
        selected = _sort(selected, call.params.get("sort"), {"created", "updated", "id", "email"})
        page, links = self._paginate(call, selected, default_size=20, max_size=100)
        data = [
            self._profile_resource(p, call.base, with_subscriptions=with_subscriptions)
            for p in page
        ]
        return self._json_response(
            200, {"data": data, "links": links}, "GetProfileResponseCollection"
        )

    def _op_get_profile(self, call: _Call) -> FakeResponse:
        with_subscriptions = self._additional_fields(call)
        profile = self._profiles.get(call.args["id"])
        if profile is None:
            raise _problem(404, f"A profile with id {call.args['id']} does not exist.")
        document = {
            "data": self._profile_resource(
                profile, call.base, with_subscriptions=with_subscriptions
            ),
            "links": {"self": call.url},
        }
        return self._json_response(200, document, "GetProfileResponse")

    def _list_resource(self, item: _List, base: str) -> dict[str, Any]:
        return {
            "type": "list",
            "id": item.id,
            "attributes": {
                "name": item.name,
                "created": _iso(item.created),
                "updated": _iso(item.updated),
                "opt_in_process": item.opt_in_process,
            },
            "links": {"self": f"{base}/api/lists/{item.id}/"},
        }

    def _op_get_lists(self, call: _Call) -> FakeResponse:
        conditions = _compile_filter(
            call.params.get("filter"), _LIST_FILTERS, lambda _field, value: value
        )
        selected = [
            item
            for item in self._lists.values()
            if _matches(conditions, lambda name, item=item: getattr(item, name))
        ]
        selected = _sort(selected, call.params.get("sort"), {"created", "updated", "id", "name"})
        page, links = self._paginate(call, selected, default_size=10, max_size=10)
        data = [self._list_resource(item, call.base) for item in page]
        return self._json_response(200, {"data": data, "links": links}, "GetListResponseCollection")

    def _op_get_list(self, call: _Call) -> FakeResponse:
        item = self._lists.get(call.args["id"])
        if item is None:
            raise _problem(404, f"A list with id {call.args['id']} does not exist.")
        document = {"data": self._list_resource(item, call.base), "links": {"self": call.url}}
        return self._json_response(200, document, "GetListRetrieveResponseCompoundDocument")

    def _paginate(
        self, call: _Call, items: list[Any], *, default_size: int, max_size: int
    ) -> tuple[list[Any], dict]:
        """Slice one page and build ``links`` whose ``next``/``prev`` carry an opaque cursor."""
        raw_size = call.params.get("page[size]")
        size = default_size
        if raw_size is not None:
            try:
                size = int(raw_size)
            except ValueError:
                size = 0
            if not 1 <= size <= max_size:
                raise _problem(
                    400,
                    f"Page size must be an integer between 1 and {max_size}.",
                    parameter="page[size]",
                )
        offset = 0
        cursor = call.params.get("page[cursor]")
        if cursor:
            offset = _decode_cursor(cursor)
        page = items[offset : offset + size]
        links: dict[str, Any] = {"self": call.url, "next": None, "prev": None}
        if offset + size < len(items):
            links["next"] = _page_url(call, offset + size)
        if offset > 0:
            links["prev"] = _page_url(call, max(0, offset - size))
        return page, links


# --- module helpers ---------------------------------------------------------------------------

_JOB_PATHS = {
    _SUPPRESS_JOB: "/api/profile-suppression-bulk-create-jobs",
    _UNSUPPRESS_JOB: "/api/profile-suppression-bulk-delete-jobs",
}

_ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (
        re.compile(r"^/api/profile-subscription-bulk-create-jobs$"),
        {"POST": "bulk_subscribe_profiles"},
    ),
    (
        re.compile(r"^/api/profile-subscription-bulk-delete-jobs$"),
        {"POST": "bulk_unsubscribe_profiles"},
    ),
    (
        re.compile(r"^/api/profile-suppression-bulk-create-jobs$"),
        {"POST": "bulk_suppress_profiles", "GET": "get_bulk_suppress_profiles_jobs"},
    ),
    (
        re.compile(r"^/api/profile-suppression-bulk-create-jobs/(?P<id>[^/]+)$"),
        {"GET": "get_bulk_suppress_profiles_job"},
    ),
    (
        re.compile(r"^/api/profile-suppression-bulk-delete-jobs$"),
        {"POST": "bulk_unsuppress_profiles", "GET": "get_bulk_unsuppress_profiles_jobs"},
    ),
    (
        re.compile(r"^/api/profile-suppression-bulk-delete-jobs/(?P<id>[^/]+)$"),
        {"GET": "get_bulk_unsuppress_profiles_job"},
    ),
    (re.compile(r"^/api/profiles$"), {"GET": "get_profiles"}),
    (re.compile(r"^/api/profile-import$"), {"POST": "create_or_update_profile"}),
    (re.compile(r"^/api/profiles/(?P<id>[^/]+)$"), {"GET": "get_profile"}),
    (re.compile(r"^/api/lists$"), {"GET": "get_lists"}),
    (re.compile(r"^/api/lists/(?P<id>[^/]+)$"), {"GET": "get_list"}),
]


def _route(path: str) -> tuple[dict[str, str], dict[str, str]] | None:
    for pattern, operations in _ROUTES:
        match = pattern.match(path)
        if match:
            return operations, match.groupdict()
    return None


def _field_of(profile: _Profile, name: str) -> Any:
    """A profile field as filters compare it (emails case-insensitively)."""
    value = getattr(profile, name)
    return value.lower() if name == "email" and value else value


def _subscribe_items(subscriptions: Any) -> list[tuple[str, str, Any]]:
    """(channel, purpose, parameters) for each email/SMS consent a subscribe entry asks for."""
    items = []
    email = subscriptions.email
    if email is not None and email.marketing is not None and email.marketing.consent == _SUBSCRIBED:
        items.append(("email", "marketing", email.marketing))
    sms = subscriptions.sms
    if sms is not None:
        if sms.marketing is not None and sms.marketing.consent == _SUBSCRIBED:
            items.append(("sms", "marketing", sms.marketing))
        if sms.transactional is not None and sms.transactional.consent == _SUBSCRIBED:
            items.append(("sms", "transactional", sms.transactional))
    return items


def _unsubscribe_items(subscriptions: Any) -> list[tuple[str, str]]:
    """(channel, purpose) for each email/SMS consent an unsubscribe entry revokes."""
    items = []
    email = subscriptions.email
    if (
        email is not None
        and email.marketing is not None
        and email.marketing.consent == _UNSUBSCRIBED
    ):
        items.append(("email", "marketing"))
    sms = subscriptions.sms
    if sms is not None:
        if sms.marketing is not None and sms.marketing.consent == _UNSUBSCRIBED:
            items.append(("sms", "marketing"))
        if sms.transactional is not None and sms.transactional.consent == _UNSUBSCRIBED:
            items.append(("sms", "transactional"))
    return items


def _sort(items: list[Any], sort: str | None, allowed: set[str]) -> list[Any]:
    if not sort:
        return items
    name = sort.lstrip("-")
    if name not in allowed:
        raise _problem(400, f"Sorting by {sort!r} is not supported.", parameter="sort")
    return sorted(
        items,
        key=lambda item: (getattr(item, name) is None, getattr(item, name) or ""),
        reverse=sort.startswith("-"),
    )


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"next::offset::{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, offset = decoded.rpartition("::")
        if prefix != "next::offset" or not offset.isdigit():
            raise ValueError(cursor)
        return int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise _problem(400, "Invalid page cursor.", parameter="page[cursor]") from exc


def _page_url(call: _Call, offset: int) -> str:
    params = [(key, value) for key, value in call.query if key != "page[cursor]"]
    params.append(("page[cursor]", _encode_cursor(offset)))
    return f"{call.base}{call.path}/?{urlencode(params, quote_via=quote)}"


def _with_base(job: dict[str, Any], base: str) -> dict[str, Any]:
    link = job["links"]["self"]
    path = link[link.index("/api/") :]
    return {**job, "attributes": dict(job["attributes"]), "links": {"self": f"{base}{path}"}}


def _validate_with_sdk(model_name: str, document: Any) -> None:
    """Fail loudly when the fake answers something the official SDK would not accept."""
    import openapi_client.models as models

    model = getattr(models, model_name)
    try:
        model.from_dict(document)
    except (ValidationError, TypeError, KeyError, ValueError) as exc:
        raise AssertionError(f"FakeKlaviyo produced a {model_name} the SDK rejects: {exc}") from exc


# --- default instance -------------------------------------------------------------------------

_default_fake: FakeKlaviyo | None = None
#: What a file-backed fake keeps between processes: its profiles, lists and jobs.
_PERSISTED = (
    "_profiles",
    "_by_email",
    "_by_phone",
    "_lists",
    "_pending",
    "_suppression_jobs",
    "_seq",
    "_id_prefix",
    "jobs",
    "rejected_emails",
)


class FileBackedFakeKlaviyo(FakeKlaviyo):
    """A fake whose account lives in a file, so several processes see one Klaviyo.

    The demo needs it: ``seed_demo`` pushes in one process and ``runserver`` reads back in
    another. It reloads the file when another process changed it and saves after each write.
    Demo and local use only: the file is a pickle this class wrote itself.
    """

    def __init__(self, state_file: str, **kwargs: Any) -> None:
        self.state_file = state_file
        self._loaded_mtime: float | None = None
        super().__init__(**kwargs)
        self._reload()

    def _mtime(self) -> float | None:
        try:
            return os.stat(self.state_file).st_mtime_ns / 1e9
        except FileNotFoundError:
            return None

    def _reload(self) -> None:
        mtime = self._mtime()
        if mtime is None or mtime == self._loaded_mtime:
            return
        with open(self.state_file, "rb") as handle:
            state = pickle.load(handle)
        for name in _PERSISTED:
            if name in state:
                setattr(self, name, state[name])
        self._loaded_mtime = mtime

    def save(self) -> None:
        state = {name: getattr(self, name) for name in _PERSISTED}
        temporary = f"{self.state_file}.{os.getpid()}.tmp"
        with open(temporary, "wb") as handle:
            pickle.dump(state, handle)
        os.replace(temporary, self.state_file)
        self._loaded_mtime = self._mtime()

    def handle(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FakeResponse:
        with self._lock:
            self._reload()
            response = super().handle(method, url, headers, body)
            if method.upper() != "GET" and response.status < 300:
                self.save()
            return response


_files_lock = threading.Lock()
_file_fakes: dict[str, FileBackedFakeKlaviyo] = {}


def get_file_backed_fake(state_file: str, **kwargs: Any) -> FileBackedFakeKlaviyo:
    """One file-backed fake per state file in this process, shared by all its threads."""
    with _files_lock:
        fake = _file_fakes.get(state_file)
        if fake is None:
            fake = _file_fakes[state_file] = FileBackedFakeKlaviyo(state_file, **kwargs)
        return fake


_default_lock = threading.Lock()


def get_default_fake() -> FakeKlaviyo:
    """The process-wide fake shared by the adapter, the WSGI app and settings-driven code."""
    global _default_fake
    with _default_lock:
        if _default_fake is None:
            _default_fake = FakeKlaviyo()
        return _default_fake


def set_default_fake(fake: FakeKlaviyo | None) -> FakeKlaviyo | None:
    """Replace (or, with None, forget) the process-wide fake; returns the previous one."""
    global _default_fake
    with _default_lock:
        previous, _default_fake = _default_fake, fake
        return previous


# --- transports: requests adapter and WSGI ----------------------------------------------------


class FakeKlaviyoAdapter(requests.adapters.BaseAdapter):
    """A ``requests`` transport answering from a FakeKlaviyo instead of the network.

    Mount it on the session the real client uses (``session.mount(DEFAULT_BASE_URL, adapter)``)
    so every header, body and status goes through the same code as in production. Lost
    answers surface as the exceptions ``requests`` itself raises.
    """

    def __init__(self, fake: FakeKlaviyo | None = None) -> None:
        super().__init__()
        self._fake = fake

    @property
    def fake(self) -> FakeKlaviyo:
        """The wrapped fake, or the process-wide default one when none was given."""
        return self._fake if self._fake is not None else get_default_fake()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        """Answer ``request`` from the fake, or raise as a dropped connection / timeout would."""
        body = request.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif body is not None and not isinstance(body, bytes):
            body = body.read() if hasattr(body, "read") else b"".join(body)
        answer = self.fake.handle(
            request.method or "GET", request.url or "/", request.headers, body
        )
        if answer.fault == "connection":
            raise requests.ConnectionError(
                "FakeKlaviyo dropped the connection (injected fault)", request=request
            )
        if answer.fault == "timeout":
            raise requests.ReadTimeout(
                "FakeKlaviyo did not answer in time (injected fault)", request=request
            )
        response = requests.Response()
        response.status_code = answer.status
        response.headers = CaseInsensitiveDict(answer.headers)
        response._content = answer.body
        response._content_consumed = True
        response.raw = io.BytesIO(answer.body)
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        response.reason = _phrase(answer.status)
        response.connection = self
        return response

    def close(self) -> None:
        """Nothing to release: there is no socket."""


class _DroppedConnection(Exception):
    """Raised inside the WSGI app so the server closes the socket without answering."""


def make_wsgi_app(
    fake: FakeKlaviyo | None = None, *, timeout_delay: float = 5.0
) -> Callable[..., Iterable[bytes]]:
    """A WSGI app serving ``fake`` (default: the process-wide one) over real HTTP.

    An injected "timeout" holds the request for ``timeout_delay`` seconds and then drops
    it, so a client with a shorter timeout sees a read timeout. Under :func:`serve` a
    dropped request gets no answer at all; other WSGI servers turn it into a 500.
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = fake if fake is not None else get_default_fake()
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else None
        answer = target.handle(
            environ["REQUEST_METHOD"], request_uri(environ, include_query=True), headers, body
        )
        if answer.fault is not None:
            if answer.fault == "timeout":
                time.sleep(timeout_delay)
            raise _DroppedConnection(answer.fault)
        response_headers = list(answer.headers.items()) + [
            ("Content-Length", str(len(answer.body)))
        ]
        start_response(f"{answer.status} {_phrase(answer.status)}", response_headers)
        return [answer.body]

    return app


class _ServerHandler(ServerHandler):
    def handle_error(self) -> None:
        if isinstance(sys.exc_info()[1], _DroppedConnection):
            self.request_handler.close_connection = True
            return
        super().handle_error()


class _RequestHandler(WSGIRequestHandler):
    """wsgiref's handler, but able to drop a request unanswered and quiet unless asked."""

    verbose = False

    def handle(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = _ServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True
        )
        handler.request_handler = self
        handler.run(self.server.get_app())

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:
            super().log_message(format, *args)


class FakeKlaviyoServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request, so a held "timeout" blocks no one else."""

    daemon_threads = True
    allow_reuse_address = True

    @property
    def url(self) -> str:
        """Base URL to give the client instead of https://a.klaviyo.com."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(
    fake: FakeKlaviyo | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    verbose: bool = False,
    timeout_delay: float = 5.0,
) -> FakeKlaviyoServer:
    """A threaded HTTP server for ``fake``, bound, not yet serving (``port=0``: any free port)."""
    handler = type("RequestHandler", (_RequestHandler,), {"verbose": verbose})
    server = FakeKlaviyoServer((host, port), handler)
    server.set_app(make_wsgi_app(fake, timeout_delay=timeout_delay))
    return server


def serve(
    fake: FakeKlaviyo | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    background: bool = False,
    verbose: bool = True,
    timeout_delay: float = 5.0,
) -> FakeKlaviyoServer:
    """Serve ``fake`` over HTTP: forever (until Ctrl-C), or from a thread with ``background``.

    With ``background`` the running server is returned; stop it with ``server.shutdown()``.
    """
    server = make_server(fake, host, port, verbose=verbose, timeout_delay=timeout_delay)
    if background:
        threading.Thread(
            target=server.serve_forever, args=(0.1,), name="fake-klaviyo", daemon=True
        ).start()
        return server
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return server
