"""No input reaches a 5xx: bodies, query parameters, admin filters and request headers."""

from __future__ import annotations

import json
import time

import pytest
from rest_framework.test import APIClient

from klaviyo_consent.models import ConsentEvent, Profile, WebhookDelivery
from klaviyo_consent.services.webhooks import sign
from tests.helpers import SUBSCRIBE, UNSUBSCRIBE, body

pytestmark = pytest.mark.django_db

CHECK = "/api/consent/check/"
WEBHOOK = "/api/consent/webhooks/klaviyo/"
SECRET = "s3cret"

#: Raw JSON texts each strict-JSON rule refuses, with a word the 400 must say.
HOSTILE_BODIES = {
    "deep nesting": ('{"profile": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested"),
    "nesting past the limit": ('{"a": ' + "[" * 40 + "]" * 40 + "}", "nested"),
    "duplicate key": (
        '{"profile": {"email": "ada@example.com"}, "profile": {"email": "bob@example.com"}}',
        "twice",
    ),
    "NaN": ('{"profile": {"email": "ada@example.com"}, "x": NaN}', "NaN"),
    "Infinity": ('{"profile": {"email": "ada@example.com"}, "x": -Infinity}', "Infinity"),
    "a number past a double": (
        '{"profile": {"email": "ada@example.com"}, "x": 1e400}',
        "too large",
    ),
    "an integer past 4300 digits": ('{"x": ' + "9" * 5000 + "}", "not JSON"),
    "NUL": ('{"profile": {"email": "ada\\u0000@example.com"}}', "NUL"),
    "NUL in a key": ('{"pro\\u0000file": {}}', "NUL"),
    "lone surrogate": ('{"profile": {"email": "ada\\ud800@example.com"}}', "surrogate"),
    "not UTF-8": (b'{"profile": {"email": "ada\xff@example.com"}}', "UTF-8"),
}


def _post_raw(client: APIClient, path: str, raw: str | bytes):
    data = raw.encode() if isinstance(raw, str) else raw
    return client.post(path, data, content_type="application/json")


@pytest.mark.parametrize("path", [SUBSCRIBE, UNSUBSCRIBE, CHECK])
@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
def test_a_hostile_json_body_is_a_400_that_says_why(api, fake, path, name):
    raw, word = HOSTILE_BODIES[name]
    response = _post_raw(api, path, raw)
    assert response.status_code == 400, response.content
    assert word in response.json()["detail"]
    assert ConsentEvent.objects.count() == 0


def test_a_body_over_the_size_limit_is_a_400(api, fake, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = _post_raw(api, SUBSCRIBE, json.dumps(body(consent_text="x" * 2000)))
    assert response.status_code == 400
    assert "larger than 1000 bytes" in response.json()["detail"]


def test_a_strict_body_still_records_consent(api, fake):
    response = _post_raw(api, SUBSCRIBE, json.dumps(body()))
    assert response.status_code == 201, response.content


def _signed(raw: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {
        "Klaviyo-Webhook-Id": "wh_test",
        "Klaviyo-Timestamp": stamp,
        "Klaviyo-Signature": sign(raw, stamp, SECRET),
    }


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
def test_a_correctly_signed_hostile_webhook_body_is_a_400_and_nothing_is_stored(
    fake, settings, name
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "WEBHOOK_SECRET": SECRET}
    raw, word = HOSTILE_BODIES[name]
    envelope = raw if isinstance(raw, bytes) else raw.encode()
    # Inside a valid envelope, so only the hostile part can be what is refused.
    if not isinstance(raw, bytes):
        envelope = (
            b'{"data": [], "meta": {"klaviyo_webhook_id": "wh_test"}, "x": ' + envelope + b"}"
        )
    response = APIClient().post(
        WEBHOOK, envelope, content_type="application/json", headers=_signed(envelope)
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed"
    assert word in response.json()["detail"]
    assert WebhookDelivery.objects.count() == 0


# -- query parameters ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["²", "٣", "99999999999999999999", "9223372036854775808", "-1"])
def test_an_events_profile_filter_that_is_not_a_64_bit_id_is_a_400_naming_it(api, value):
    response = api.get("/api/consent/events/", {"profile": value})
    assert response.status_code == 400
    assert "profile" in response.json()


def test_the_largest_64_bit_profile_id_is_a_valid_filter(api):
    response = api.get("/api/consent/events/", {"profile": str(2**63 - 1)})
    assert response.status_code == 200 and response.json()["results"] == []


@pytest.mark.parametrize("name", ["email", "external_id", "phone_number"])
@pytest.mark.parametrize("value", ["ada\x00@example.com", "x" * 400])
def test_a_profiles_filter_holding_a_nul_or_too_long_is_a_400_naming_it(api, name, value):
    response = api.get("/api/consent/profiles/", {name: value})
    assert response.status_code == 400
    assert name in response.json()


def test_a_profile_id_in_the_path_beyond_64_bits_is_a_404(api):
    assert api.get("/api/consent/profiles/99999999999999999999/").status_code == 404


# -- admin --------------------------------------------------------------------------------


@pytest.fixture
def admin_with_profile(admin_client, api, fake, on_commit):
    with on_commit():
        assert api.post(SUBSCRIBE, body(), format="json").status_code == 201
    return admin_client


@pytest.mark.parametrize(
    "params",
    [
        {"consent": "a.b"},
        {"consent": "email.marketing__isnull.True"},
        {"consent": "email.marketing.SUBSCRIBED.x"},
        {"consent": "email.marketing.subscribed"},
        {"verdict": "nonsense"},
        {"verdict": "pending__in"},
    ],
)
def test_an_admin_filter_value_outside_its_choices_is_ignored(admin_with_profile, params):
    response = admin_with_profile.get("/admin/klaviyo_consent/profile/", params)
    assert response.status_code == 200
    assert "ada@example.com" in response.content.decode()  # not filtered by a made-up lookup


@pytest.mark.parametrize("path", ["profile", "consentevent", "delivery", "webhookdelivery"])
@pytest.mark.parametrize(
    "params",
    [
        {"q": "ada\x00"},
        {"consent": "email.marketing.\x00"},
        {"verdict": "pending\x00"},
        {"o": "99.x"},
        {"channel__exact": "\x00"},
        {"recorded_at__year": "²"},
        {"recorded_at__year": "99999999999999999999"},
        {"delivery__status__exact": "x\x00"},
    ],
)
def test_no_admin_changelist_query_is_a_500(admin_with_profile, path, params):
    response = admin_with_profile.get(f"/admin/klaviyo_consent/{path}/", params)
    assert response.status_code in (200, 302, 400, 404)


# -- evidence -----------------------------------------------------------------------------


def test_nul_bytes_in_user_agent_and_referer_are_cleaned_not_a_500(api, fake):
    response = api.post(
        SUBSCRIBE,
        body(),
        format="json",
        HTTP_USER_AGENT="Mozilla\x00/5.0",
        HTTP_REFERER="https://shop.example/\x00signup",
    )
    assert response.status_code == 201, response.content
    event = ConsentEvent.objects.first()
    assert event.user_agent == "Mozilla\ufffd/5.0"
    assert event.page_url == "https://shop.example/\ufffdsignup"


@pytest.mark.parametrize("remote_addr", ["not-an-ip", "1.2.3.4.5", "::g", "", "1.2.3.4, 5.6.7.8"])
def test_a_remote_addr_that_is_not_an_ip_is_not_stored(api, fake, remote_addr):
    response = api.post(SUBSCRIBE, body(), format="json", REMOTE_ADDR=remote_addr)
    assert response.status_code == 201, response.content
    assert ConsentEvent.objects.first().ip_address is None


@pytest.mark.parametrize(
    "remote_addr, stored",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_an_ip_is_stored_in_its_canonical_form(api, fake, remote_addr, stored):
    response = api.post(SUBSCRIBE, body(), format="json", REMOTE_ADDR=remote_addr)
    assert response.status_code == 201, response.content
    assert ConsentEvent.objects.first().ip_address == stored


def test_a_very_long_user_agent_is_cut_and_marked(api, fake):
    api.post(SUBSCRIBE, body(), format="json", HTTP_USER_AGENT="A" * 10_000)
    agent = ConsentEvent.objects.first().user_agent
    assert len(agent) == 2048 and agent.endswith("…")


def test_the_drop_in_form_cleans_its_evidence_too(client, fake):
    response = client.post(
        "/consent/signup/",
        {"email": "ada@example.com", "email_marketing": "on", "next": "/\x00signup"},
        HTTP_USER_AGENT="Mozilla\x00",
        REMOTE_ADDR="garbage",
    )
    assert response.status_code == 302, response.content
    event = ConsentEvent.objects.get()
    assert event.user_agent == "Mozilla\ufffd" and event.ip_address is None
    assert "\x00" not in event.page_url
    assert Profile.objects.get().email == "ada@example.com"


def test_a_form_encoded_body_cannot_bypass_strict_json(api, fake):
    form = {
        "profile.email": "ada@example.com",
        "subscriptions.email.marketing": "true",
        "consent_text": "I agree\x00",
        "list_id": "Single",
    }
    response = api.post(SUBSCRIBE, form)  # multipart, as a browser form would send it
    assert response.status_code == 415
    assert ConsentEvent.objects.count() == 0
    response = api.post(
        SUBSCRIBE, form, format=None, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415


@pytest.mark.parametrize("path", ["/api/consent/profiles/", "/api/consent/events/"])
@pytest.mark.parametrize(
    "params",
    [
        {"page": "99999999999999999999"},
        {"page": "²"},
        {"page_size": "99999999999999999999"},
        {"page_size": "\x00"},
        {"page": "\x00"},
    ],
)
def test_hostile_pagination_is_never_a_5xx(api, path, params):
    assert api.get(path, params).status_code in (200, 400, 404)


@pytest.mark.parametrize("pk", ["99999999999999999999", "abc", "1%00", "²"])
@pytest.mark.parametrize("path", ["profile", "consentevent", "webhookdelivery"])
def test_an_admin_change_page_for_a_hostile_id_is_never_a_500(admin_with_profile, path, pk):
    response = admin_with_profile.get(f"/admin/klaviyo_consent/{path}/{pk}/change/")
    assert response.status_code in (302, 404)


@pytest.mark.parametrize("selected", ["abc", "99999999999999999999", "1\x00", "²"])
def test_an_admin_action_on_hostile_ids_is_never_a_500(admin_with_profile, selected):
    response = admin_with_profile.post(
        "/admin/klaviyo_consent/profile/",
        {
            "action": "reverify_action",
            "_selected_action": [selected],
            "confirm": "yes",
            "reason": "hostile ids",
        },
    )
    assert response.status_code in (200, 302, 400)
