"""The account the fake imitates: settings, profiles, lists, logs and the rules that change them."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from klaviyo_consent.klaviyo import ADDITIONAL_FIELD_RATE_LIMITS
from klaviyo_consent.testing.fake.errors import _Problem, _problem
from klaviyo_consent.testing.fake.ratelimits import RATE_LIMITS, RateLimit
from klaviyo_consent.testing.fake.records import (
    _B64_TO_CROCKFORD,
    _CROCKFORD_ALPHABET,
    _LIFTED_BY_SUBSCRIBE,
    _OPT_IN_PROCESSES,
    _SUBSCRIBED,
    _SUPPRESS_JOB,
    _UNSUBSCRIBED,
    _UNSUPPRESS_JOB,
    DEFAULT_SMS_COUNTRIES,
    JSON_API,
    FakeResponse,
    InjectedFault,
    LoggedRequest,
    PendingConfirmation,
    _aware,
    _Call,
    _fresh_email_marketing,
    _fresh_sms,
    _iso,
    _List,
    _phone_info,
    _Profile,
)
from klaviyo_consent.testing.fake.validation import _sdk_errors, _validate_with_sdk


class AccountState:
    """One account's state and the rules every room applies to it (one RLock around all of it).

    :class:`~klaviyo_consent.testing.fake.FakeKlaviyo` documents the settings and knobs.
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
        public_api_key: str | None = None,
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
        self.public_api_key = public_api_key
        self.validate_responses = validate_responses
        self.timeout_applies = timeout_applies
        self.rate_limits: dict[str, RateLimit] = {**RATE_LIMITS, **ADDITIONAL_FIELD_RATE_LIMITS}
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
            self._import_jobs: dict[str, dict[str, Any]] = {}
            self._import_errors: dict[str, list[dict[str, Any]]] = {}
            self._windows: dict[tuple[str, float], list[float]] = {}
            self._faults: list[InjectedFault] = []
            self._seq = 0
            self._id_prefix: tuple[int, str] = (-1, "")
            self._fault_rng = random.Random(self.seed)
            self._id_rng = random.Random(None if self.seed is None else self.seed + 1)
            self.rejected_emails: set[str] = set()
            self.rejected_phone_numbers: set[str] = set()
            self.jobs: list[dict[str, Any]] = []
            #: Data-privacy deletion requests: ``{"field", "value", "deleted": [ids]}``.
            self.deletion_jobs: list[dict[str, Any]] = []
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
