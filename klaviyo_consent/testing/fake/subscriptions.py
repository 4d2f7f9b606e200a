"""Bulk subscription jobs (subscribe and unsubscribe), applied while answering the 202."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from openapi_client.models.profile_subscription_create_query_resource_object import (
    ProfileSubscriptionCreateQueryResourceObject,
)
from openapi_client.models.profile_subscription_delete_query_resource_object import (
    ProfileSubscriptionDeleteQueryResourceObject,
)
from openapi_client.models.subscription_create_job_create_query import (
    SubscriptionCreateJobCreateQuery,
)
from openapi_client.models.subscription_delete_job_create_query import (
    SubscriptionDeleteJobCreateQuery,
)

from klaviyo_consent.testing.fake.errors import _Problem, _problem, error_object
from klaviyo_consent.testing.fake.records import (
    _EMAIL_RE,
    _SUBSCRIBE_JOB,
    _SUBSCRIBED,
    _UNSUBSCRIBE_JOB,
    _UNSUBSCRIBED,
    INVALID_EMAIL_DETAIL,
    INVALID_PHONE_DETAIL,
    MAX_SUBSCRIBE_PROFILES,
    MAX_UNSUBSCRIBE_PROFILES,
    NO_SENDING_NUMBER_DETAIL,
    PARTIAL_FAILURE_HEADER,
    REFUSES_UNSENDABLE_SMS_REVISION,
    SMS_CONFIGURATION_REQUIRED_DETAIL,
    FakeResponse,
    PendingConfirmation,
    _aware,
    _Call,
    _iso,
    _phone_info,
)
from klaviyo_consent.testing.fake.state import AccountState


class SubscriptionJobs(AccountState):
    """``bulk_subscribe_profiles`` and ``bulk_unsubscribe_profiles``: validated, then applied."""

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
