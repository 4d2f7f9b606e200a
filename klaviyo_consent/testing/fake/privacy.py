"""The fake's Request Profile Deletion (``POST /api/data-privacy-deletion-jobs``), a mixin.

Validated with the SDK's ``DataPrivacyCreateDeletionJobQuery`` (klaviyo-api 25.0.0). Like
Klaviyo (spec ``request_profile_deletion``): the profile is named by exactly one of ``email``,
``phone_number`` or ``id`` ("If multiple identifiers are provided, we will return an error"),
every matching profile is deleted, and the answer is 202 with no body. Klaviyo deletes
asynchronously; the fake deletes at once, so a read right after the 202 finds nothing.
``deletion_jobs`` lists what each request named and which profiles it deleted.
"""

from __future__ import annotations

from typing import Any

from openapi_client.models.data_privacy_create_deletion_job_query import (
    DataPrivacyCreateDeletionJobQuery,
)
from openapi_client.models.data_privacy_create_deletion_job_query_resource_object import (
    DataPrivacyCreateDeletionJobQueryResourceObject,
)

from klaviyo_consent.testing.fake.errors import _problem
from klaviyo_consent.testing.fake.records import FakeResponse, _phone_info


class DataPrivacy:
    """``_op_request_profile_deletion`` for :class:`~klaviyo_consent.testing.fake.FakeKlaviyo`."""

    def _op_request_profile_deletion(self, call: Any) -> Any:
        document = self._read_body(call)
        parsed = self._sdk_validate(
            DataPrivacyCreateDeletionJobQuery,
            DataPrivacyCreateDeletionJobQueryResourceObject,
            document,
        )
        profile = parsed.data.attributes.profile.data
        attributes = profile.attributes
        named = {
            key: value
            for key, value in (
                ("id", profile.id),
                ("email", attributes.email if attributes else None),
                ("phone_number", attributes.phone_number if attributes else None),
            )
            if value
        }
        if len(named) != 1:
            raise _problem(
                400,
                "Exactly one of email, phone_number or id must be provided.",
                code="invalid",
                pointer="/data/attributes/profile/data",
            )
        ((field, value),) = named.items()
        if field == "phone_number":
            value = _phone_info(value)[0] or value
        matching = [
            p
            for p in self._profiles.values()
            if (field == "id" and p.id == value)
            or (field == "email" and (p.email or "").lower() == value.lower())
            or (field == "phone_number" and p.phone_number == value)
        ]
        for doomed in matching:
            self._delete_profile(doomed)
        self.deletion_jobs.append(
            {"field": field, "value": value, "deleted": [p.id for p in matching]}
        )
        return FakeResponse(202, {}, b"")

    def _delete_profile(self, profile: Any) -> None:
        """Forget ``profile``: its identifiers, consent, pending confirmations."""
        self._profiles.pop(profile.id, None)
        if profile.email:
            self._by_email.pop(profile.email.lower(), None)
        if profile.phone_number:
            self._by_phone.pop(profile.phone_number, None)
        for key in [k for k in self._pending if k[0] == profile.id]:
            self._pending.pop(key, None)
