"""The ``client`` backend: a site holding only a public key pushes consent with Create Client
Subscription (one profile a request, a list required) and cannot read Klaviyo back."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from klaviyo_consent.backends.client import CANNOT_READ_REASON, ClientBackend
from klaviyo_consent.models import Delivery
from klaviyo_consent.testing.fake import FakeKlaviyoAdapter
from tests.helpers import SUBSCRIBE, UNSUBSCRIBE, body

pytestmark = pytest.mark.django_db

EMAIL_ONLY = {"email": {"marketing": True}}


def without_list(**overrides):
    """A signup naming no list: DEFAULT_LIST_ID decides."""
    data = body(**overrides)
    del data["list_id"]
    return data


@pytest.fixture
def client_site(fake, settings):
    """The site configured with the client backend, its public key and a default list."""
    fake.public_api_key = "PubKey1"
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "BACKEND": "tests.test_client_backend.FakeClientBackend",
        "PUBLIC_API_KEY": "PubKey1",
        "DEFAULT_LIST_ID": "Single",
    }
    return fake


class FakeClientBackend(ClientBackend):
    """The client backend with the test's fake mounted as its transport."""

    def __init__(self, **kwargs):
        from klaviyo_consent.testing.fake import get_default_fake

        super().__init__(**kwargs)
        self.session.mount(self.api_url, FakeKlaviyoAdapter(get_default_fake()))


def test_each_profile_is_one_client_subscription_with_the_public_key_and_the_list(
    api, client_site, on_commit
):
    for email in ("ada@example.com", "bob@example.com"):
        with on_commit():
            response = api.post(
                SUBSCRIBE,
                without_list(profile={"email": email}, subscriptions=EMAIL_ONLY),
                format="json",
            )
        assert response.status_code == 201, response.content
    assert client_site.counts["create_client_subscription"] == 2
    assert client_site.counts["bulk_subscribe_profiles"] == 0
    assert [job["type"] for job in client_site.jobs] == ["subscription", "subscription"]
    assert {job["list_id"] for job in client_site.jobs} == {"Single"}
    shown = client_site.get_profile(email="ada@example.com")["subscriptions"]
    assert shown["email"]["marketing"]["consent"] == "SUBSCRIBED"


def test_verdicts_stay_pushed_with_the_reason_and_nothing_is_read(api, client_site, on_commit):
    with on_commit():
        response = api.post(
            SUBSCRIBE,
            body(profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY),
            format="json",
        )
    [event] = response.json()["events"]
    call_command("klaviyo_consent_sync")
    delivery = Delivery.objects.get(pk=event["id"])
    assert delivery.status == "pushed"
    assert delivery.reason == CANNOT_READ_REASON == "no private key: Klaviyo's state cannot be read"
    assert delivery.next_attempt_at is None
    assert client_site.counts["get_profiles"] == 0


def test_a_private_key_never_travels_to_the_client_endpoint(client_site, settings):
    sent = []
    backend = ClientBackend(public_api_key="PubKey1")

    def send(method, url, *, headers, params, body):
        sent.append((url, dict(headers), dict(params or {}), json.loads(body)))
        from klaviyo_consent.backends.base import RawResponse

        return RawResponse(202, {}, b"")

    backend.send = send
    backend.create_client_subscription({"data": {}})
    [(url, headers, params, _)] = sent
    assert url.endswith("/client/subscriptions")
    assert params == {"company_id": "PubKey1"}
    assert not any(name.lower() == "authorization" for name in headers)


def test_a_withdrawal_fails_loudly_with_the_reason(api, client_site, on_commit):
    with on_commit():
        response = api.post(
            UNSUBSCRIBE,
            body(profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY),
            format="json",
        )
    [event] = response.json()["events"]
    delivery = Delivery.objects.get(pk=event["id"])
    assert delivery.status == "failed"
    assert "no private key" in delivery.reason and "bulk_unsubscribe_profiles" in delivery.reason
    assert client_site.counts["bulk_unsubscribe_profiles"] == 0


def test_without_a_list_nothing_is_sent_and_the_consent_waits_with_the_reason(
    api, client_site, on_commit, settings
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "DEFAULT_LIST_ID": None}
    with on_commit():
        response = api.post(
            SUBSCRIBE,
            without_list(profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY),
            format="json",
        )
    [event] = response.json()["events"]
    delivery = Delivery.objects.get(pk=event["id"])
    assert delivery.status == "pending"
    assert "requires a list" in delivery.reason
    assert client_site.counts["create_client_subscription"] == 0


def test_klaviyos_refusal_of_the_email_fails_that_consent(api, client_site, on_commit):
    client_site.rejected_emails.add("ada@example.com")
    with on_commit():
        response = api.post(
            SUBSCRIBE,
            body(profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY),
            format="json",
        )
    [event] = response.json()["events"]
    delivery = Delivery.objects.get(pk=event["id"])
    assert delivery.status == "failed"
    assert "Invalid email address" in delivery.reason


def test_the_fake_refuses_a_client_subscription_without_a_list_or_company_id(client_site):
    profile = {"type": "profile", "attributes": {"email": "ada@example.com"}}
    document = {"data": {"type": "subscription", "attributes": {"profile": {"data": profile}}}}
    headers = {"revision": "2026-07-15"}
    answer = client_site.handle(
        "POST", "/client/subscriptions?company_id=PubKey1", headers, json.dumps(document).encode()
    )
    assert answer.status == 400
    assert answer.json["errors"][0]["source"]["pointer"] == "/data/relationships/list"
    document["data"]["relationships"] = {"list": {"data": {"type": "list", "id": "Single"}}}
    answer = client_site.handle(
        "POST", "/client/subscriptions", headers, json.dumps(document).encode()
    )
    assert answer.status == 400
    assert answer.json["errors"][0]["source"]["parameter"] == "company_id"
    answer = client_site.handle(
        "POST", "/client/subscriptions?company_id=PubKey1", headers, json.dumps(document).encode()
    )
    assert answer.status == 202
    # No subscriptions object: marketing for the identifiers given (spec).
    shown = client_site.get_profile(email="ada@example.com")["subscriptions"]
    assert shown["email"]["marketing"]["consent"] == "SUBSCRIBED"


def _check_ids(settings, **overrides):
    from klaviyo_consent.checks import check_settings

    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "BACKEND": "klaviyo_consent.backends.client.ClientBackend",
        **overrides,
    }
    return {message.id: message.msg for message in check_settings()}


def test_the_system_check_says_what_the_client_backend_cannot_do(settings):
    found = _check_ids(settings, PUBLIC_API_KEY="PubKey1", DEFAULT_LIST_ID="Single")
    assert "klaviyo_consent.W130" in found
    assert "cannot be read" in found["klaviyo_consent.W130"]
    assert "Withdrawals" in found["klaviyo_consent.W130"]
    assert "klaviyo_consent.E002" not in found  # no private key is expected here
    assert not {"klaviyo_consent.E130", "klaviyo_consent.W131"} & set(found)


def test_the_system_check_wants_the_public_key_and_a_list(settings):
    found = _check_ids(settings, PUBLIC_API_KEY=None, DEFAULT_LIST_ID=None)
    assert "PUBLIC_API_KEY" in found["klaviyo_consent.E130"]
    assert "requires a list" in found["klaviyo_consent.W131"]
