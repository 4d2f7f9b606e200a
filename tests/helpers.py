"""Helpers shared by the test modules: build requests, record consent, read it back.

Test modules import from here, never from one another.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management import call_command
from rest_framework.test import APIClient

from klaviyo_consent.testing.fake import FakeKlaviyo, FakeResponse

# --- the app's API ---------------------------------------------------------------------------

SUBSCRIBE = "/api/consent/subscribe/"
UNSUBSCRIBE = "/api/consent/unsubscribe/"


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "profile": {"email": "Ada@Example.com", "phone_number": "+44 7400 123456"},
        "subscriptions": {"email": {"marketing": True}, "sms": {"marketing": True}},
        "list_id": "Single",
        "method": "form",
        "method_detail": "footer form",
        "custom_source": "Footer signup",
        "consent_text": "Yes, text me offers. Reply STOP to cancel.",
    }
    data.update(overrides)
    return data


def email_history(api: Any, email: str, *paths: str) -> None:
    """Record an email-marketing history for ``email``: one call to each of ``paths``."""
    for path in paths:
        response = api.post(
            path,
            body(profile={"email": email}, subscriptions={"email": {"marketing": True}}),
            format="json",
        )
        assert response.status_code == 201, response.content


# --- verdicts: record, pull, read the ledger -------------------------------------------------

PHONE = "+447400123456"


def subscribe(api, on_commit, **overrides):
    with on_commit():
        response = api.post(SUBSCRIBE, body(**overrides), format="json")
    assert response.status_code == 201, response.content
    return response.data["profile"]["id"]


def ledger(api, profile_id):
    return api.get(f"/api/consent/profiles/{profile_id}/").data["ledger"]


def pull(profile_id):
    call_command("klaviyo_consent_pull", "--profile", str(profile_id))


# --- webhooks --------------------------------------------------------------------------------

WEBHOOK_URL = "/api/consent/webhooks/klaviyo/"


def post_webhook(payload: bytes, headers: dict[str, str]) -> Any:
    """POST a webhook delivery to the endpoint, as Klaviyo would (no session, no CSRF)."""
    return APIClient().post(WEBHOOK_URL, payload, content_type="application/json", headers=headers)


# --- the fake Klaviyo, spoken to directly ----------------------------------------------------

FAKE_KEY = "pk_test_0123456789"
FAKE_HEADERS = {
    "Authorization": f"Klaviyo-API-Key {FAKE_KEY}",
    "revision": "2026-07-15",
    "Content-Type": "application/vnd.api+json",
    "Accept": "application/vnd.api+json",
}
SUBSCRIBE_JOBS = "/api/profile-subscription-bulk-create-jobs"


def profile_entry(
    email: str | None = None,
    phone: str | None = None,
    *,
    email_marketing: bool = True,
    sms_marketing: bool = False,
    sms_transactional: bool = False,
    consented_at: str | None = None,
) -> dict[str, Any]:
    def consent() -> dict[str, Any]:
        item: dict[str, Any] = {"consent": "SUBSCRIBED"}
        if consented_at is not None:
            item["consented_at"] = consented_at
        return item

    subscriptions: dict[str, Any] = {}
    if email_marketing:
        subscriptions["email"] = {"marketing": consent()}
    sms: dict[str, Any] = {}
    if sms_marketing:
        sms["marketing"] = consent()
    if sms_transactional:
        sms["transactional"] = consent()
    if sms:
        subscriptions["sms"] = sms
    attributes: dict[str, Any] = {"subscriptions": subscriptions}
    if email is not None:
        attributes["email"] = email
    if phone is not None:
        attributes["phone_number"] = phone
    return {"type": "profile", "attributes": attributes}


def subscribe_body(
    profiles: list[dict[str, Any]],
    *,
    list_id: str | None = None,
    custom_source: str | None = None,
    historical_import: bool | None = None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"profiles": {"data": profiles}}
    if custom_source is not None:
        attributes["custom_source"] = custom_source
    if historical_import is not None:
        attributes["historical_import"] = historical_import
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-create-job",
        "attributes": attributes,
    }
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def post_to_fake(
    fake: FakeKlaviyo, path: str, document: Any, headers: dict[str, str] = FAKE_HEADERS
) -> FakeResponse:
    return fake.handle("POST", path, headers, json.dumps(document).encode())


# --- identity (tests/test_identity.py, tests/test_identity_push.py) ---------------------------

CHECK = "/api/consent/check/"
ADA = {"email": "ada@example.org", "phone_number": "+447400123456"}
BOTH = {"email": {"marketing": True}, "sms": {"marketing": True}}


def subscribe_as(api, profile, subscriptions=BOTH, path=SUBSCRIBE):
    """POST ``profile`` to subscribe/ (or ``path``) on the single opt-in list; the response."""
    return api.post(
        path, body(profile=profile, subscriptions=subscriptions, list_id="Single"), format="json"
    )
