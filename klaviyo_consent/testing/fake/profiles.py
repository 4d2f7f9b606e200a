"""The fake's Create or Update Profile (``POST /api/profile-import``), as a FakeKlaviyo mixin.

Validated with the SDK's ``ProfileUpsertQuery`` (klaviyo-api 25.0.0). Like Klaviyo: the
profile is found by ``id``, else ``email``, else ``phone_number``, else ``external_id``; none
found is a new profile (201), else it is updated (200) and only the fields given change (spec:
"setting a field to null will clear out the field, whereas not including a field in your
request will leave it unchanged"). A new phone number resets the profile's SMS consent to
NEVER_SUBSCRIBED (help centre, "How SMS affects profiles"); an identifier another profile holds
is a 409 ``duplicate_profile`` pointing at ``/data/attributes`` (recorded live answers, see
klaviyo-api-facts.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from openapi_client.models.profile_upsert_query import ProfileUpsertQuery
from openapi_client.models.profile_upsert_query_resource_object import (
    ProfileUpsertQueryResourceObject,
)

from klaviyo_consent.testing.fake.errors import _problem
from klaviyo_consent.testing.fake.records import _fresh_sms, _phone_info

DUPLICATE_PROFILE_DETAIL = "A profile already exists with one of these identifiers."


class ProfileImports:
    """``_op_create_or_update_profile`` for :class:`~klaviyo_consent.testing.fake.FakeKlaviyo`."""

    def _op_create_or_update_profile(self, call: Any) -> Any:
        document = self._read_body(call)
        parsed = self._sdk_validate(ProfileUpsertQuery, ProfileUpsertQueryResourceObject, document)
        given = document["data"]["attributes"]  # which fields were sent (null clears one)
        attributes = parsed.data.attributes
        email = attributes.email.strip() if attributes.email else None
        phone = None
        if attributes.phone_number:
            phone = _phone_info(attributes.phone_number)[0]
            if phone is None:
                raise _problem(
                    400,
                    "Invalid phone number format (Example of a valid format: +12345678901)",
                    code="invalid",
                    pointer="/data/attributes/phone_number",
                )
        profile_id = parsed.data.id
        profile = None
        if profile_id is not None:
            profile = self._profiles.get(profile_id)
            if profile is None:
                raise _problem(404, f"A profile with id {profile_id} does not exist.")
        if profile is None:
            profile = self._find(None, email, phone)
        if profile is None and attributes.external_id:
            profile = next(
                (p for p in self._profiles.values() if p.external_id == attributes.external_id),
                None,
            )
        moment = self.now()
        for holder in (
            self._by_email.get(email.lower()) if email else None,
            self._by_phone.get(phone) if phone else None,
        ):
            if holder is not None and holder is not profile:
                problem = _problem(
                    409,
                    DUPLICATE_PROFILE_DETAIL,
                    code="duplicate_profile",
                    title="Conflict.",
                    pointer="/data/attributes",
                )
                problem.errors[0]["meta"] = {"duplicate_profile_id": holder.id}
                raise problem
        created = profile is None
        if created:
            profile = self._create_profile(email, phone, moment)
        else:
            if email and email.lower() != (profile.email or "").lower():
                if profile.email is not None:
                    self._by_email.pop(profile.email.lower(), None)
                profile.email = email
                self._by_email[email.lower()] = profile
            if "phone_number" in given and phone != profile.phone_number:
                self._set_phone_number(profile, phone, moment)
        if attributes.external_id and profile.external_id is None:
            profile.external_id = attributes.external_id
        profile.updated = moment
        with_subscriptions = self._additional_fields(call)
        resource = self._profile_resource(profile, call.base, with_subscriptions=with_subscriptions)
        return self._json_response(
            201 if created else 200, {"data": resource}, "PostProfileResponse"
        )

    def _take_phone_number(self, profile: Any, phone: str | None, moment: datetime) -> None:
        """A subscribe entry found ``profile`` (by id or email) and names another number: the
        number is set on the profile (spec, ProfileSubscriptionCreateQueryResourceObject
        ``phone_number``: "this will be set on the profile"), which resets its SMS consent
        before the entry's own subscriptions apply. A number another profile holds is left
        alone (Klaviyo would merge; the app never asks for that)."""
        if phone is None or phone == profile.phone_number or phone in self._by_phone:
            return
        self._set_phone_number(profile, phone, moment)

    def _set_phone_number(self, profile: Any, phone: str | None, moment: datetime) -> None:
        """Replace (or clear) a profile's number: SMS consent starts over as NEVER_SUBSCRIBED
        and pending SMS confirmations are dropped, as ``change_phone_number`` does."""
        if profile.phone_number is not None:
            self._by_phone.pop(profile.phone_number, None)
        profile.phone_number = phone
        if phone is not None:
            self._by_phone[phone] = profile
        profile.sms_marketing = _fresh_sms("marketing")
        profile.sms_transactional = _fresh_sms("transactional")
        for purpose in ("marketing", "transactional"):
            self._drop_pending(profile.id, "sms", purpose)
        profile.updated = moment
