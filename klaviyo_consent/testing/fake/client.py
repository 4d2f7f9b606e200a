"""Create Client Subscription (``POST /client/subscriptions?company_id=``), the public-key call.

Spec revision 2026-07-15, ``create_client_subscription``: one profile a request, the public
key (site id) as ``company_id`` (never a private key), ``relationships.list`` required, and
"if a subscriptions object is not provided, subscriptions are defaulted to MARKETING" for the
identifiers given. It answers 202 with no body; what it does is a one-profile subscribe with a
list, so the fake applies it through the same rules as a bulk subscribe job (the list's opt-in
process, SMS countries, suppressions).

klaviyo-api 25.0.0 (the server SDK) ships no model of this body: the profile is validated with
the SDK's ``ProfileSubscriptionCreateQueryResourceObject`` (the same profile-with-subscriptions
shape), the envelope by the spec's required fields.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from openapi_client.models.profile_subscription_create_query_resource_object import (
    ProfileSubscriptionCreateQueryResourceObject,
)
from pydantic import ValidationError

from klaviyo_consent.testing.fake.errors import _Problem, _problem, error_object
from klaviyo_consent.testing.fake.records import FakeResponse, _Call
from klaviyo_consent.testing.fake.state import AccountState

CLIENT_SUBSCRIPTION = "subscription"
_PROFILE = "/data/attributes/profile/data"


class ClientSubscriptions(AccountState):
    """``create_client_subscription``: authenticated by ``company_id``, one profile a call."""

    #: The public key (site id) this account answers to; None accepts any non-empty one.
    public_api_key: str | None = None

    def _authenticate_public(self, call: _Call) -> None:
        company_id = call.params.get("company_id", "").strip()
        if not company_id:
            raise _problem(400, "company_id is required.", parameter="company_id")
        if self.public_api_key is not None and not hmac.compare_digest(
            company_id.encode(), self.public_api_key.encode()
        ):
            raise _problem(400, "Invalid company_id.", parameter="company_id")

    def _op_create_client_subscription(self, call: _Call) -> FakeResponse:
        document = self._read_body(call)
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, dict) or data.get("type") != CLIENT_SUBSCRIPTION:
            raise _problem(400, "data.type must be 'subscription'.", pointer="/data/type")
        list_data = ((data.get("relationships") or {}).get("list") or {}).get("data")
        if (
            not isinstance(list_data, dict)
            or list_data.get("type") != "list"
            or not list_data.get("id")
        ):
            raise _problem(
                400, "relationships.list is required.", pointer="/data/relationships/list"
            )
        attributes = data.get("attributes") or {}
        profile = ((attributes.get("profile") or {}) if isinstance(attributes, dict) else {}).get(
            "data"
        )
        if not isinstance(profile, dict):
            raise _problem(400, "attributes.profile.data is required.", pointer=_PROFILE)
        profile = json.loads(json.dumps(profile))
        profile_attributes = profile.setdefault("attributes", {})
        if isinstance(profile_attributes, dict) and profile_attributes.get("subscriptions") is None:
            defaults: dict[str, Any] = {}
            if profile_attributes.get("email"):
                defaults["email"] = {"marketing": {"consent": "SUBSCRIBED"}}
            if profile_attributes.get("phone_number"):
                defaults["sms"] = {"marketing": {"consent": "SUBSCRIBED"}}
            profile_attributes["subscriptions"] = defaults
        try:
            ProfileSubscriptionCreateQueryResourceObject.from_dict(profile)
        except (ValidationError, TypeError, AttributeError, KeyError, ValueError) as exc:
            raise _problem(400, f"Invalid profile: {exc}", pointer=_PROFILE) from exc
        profile.pop("id", None)  # a public key cannot name a Klaviyo profile id
        job: dict[str, Any] = {
            "data": {
                "type": "profile-subscription-bulk-create-job",
                "attributes": {"profiles": {"data": [profile]}},
                "relationships": {"list": {"data": {"type": "list", "id": list_data["id"]}}},
            }
        }
        if attributes.get("custom_source"):
            job["data"]["attributes"]["custom_source"] = attributes["custom_source"]
        inner = _Call(
            method="POST",
            path="/api/profile-subscription-bulk-create-jobs",
            url=call.url,
            base=call.base,
            query=[],
            params={},
            body=json.dumps(job).encode(),
            args={},
            revision=call.revision,
        )
        try:
            self._op_bulk_subscribe_profiles(inner)  # type: ignore[attr-defined]
        except _Problem as problem:
            raise _Problem(problem.status, [_client_pointer(e) for e in problem.errors]) from None
        logged = self.jobs.pop()
        self._log_job(
            CLIENT_SUBSCRIPTION,
            logged["list_id"],
            1,
            logged["accepted_at"],
            custom_source=logged["custom_source"],
        )
        return FakeResponse(202, {}, b"")


def _client_pointer(error: dict[str, Any]) -> dict[str, Any]:
    """A subscribe job's error, pointing into this endpoint's body instead."""
    pointer = (error.get("source") or {}).get("pointer") or ""
    prefix = "/data/attributes/profiles/data/0"
    if pointer.startswith(prefix):
        return error_object(
            error.get("status") or 400,
            error.get("detail"),
            pointer=_PROFILE + pointer[len(prefix) :],
        )
    return error
