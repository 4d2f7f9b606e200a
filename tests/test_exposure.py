"""Answer only what the caller may read; throttle writes, check/ and the webhook."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from klaviyo_consent.api.throttling import ConsentRateThrottle
from klaviyo_consent.models import ConsentEvent, Profile
from tests.helpers import SUBSCRIBE, UNSUBSCRIBE, body

pytestmark = pytest.mark.django_db

SECRET_PHONE = "+447400999888"
SECRET_EXTERNAL = "cust-42"


@pytest.fixture
def writer(django_user_model: Any) -> APIClient:
    """A logged-in user with no permission at all: the default WRITE_PERMISSION_CLASSES."""
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("writer"))
    return client


@pytest.fixture
def anyone(settings: Any) -> APIClient:
    """An anonymous caller on a site whose public form posts with AllowAny."""
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "WRITE_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    }
    return APIClient()


@pytest.fixture
def ada(api: APIClient, fake: Any) -> Profile:
    """A person with an email, a number, an external id and SMS consent, recorded by staff."""
    response = api.post(
        SUBSCRIBE,
        body(
            profile={
                "email": "ada@example.com",
                "phone_number": SECRET_PHONE,
                "external_id": SECRET_EXTERNAL,
            },
            subscriptions={"email": {"marketing": True}, "sms": {"marketing": True}},
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    profile = Profile.objects.get()
    profile.subscriptions = {"sms": {"marketing": {"consent": "SUBSCRIBED"}}}
    profile.save()
    return profile


def _leaks(response: Any) -> list[str]:
    text = response.content.decode()
    return [s for s in (SECRET_PHONE, SECRET_EXTERNAL, "subscriptions", "ledger") if s in text]


@pytest.mark.parametrize("caller", ["writer", "anyone"])
def test_a_write_answers_a_caller_without_the_view_permission_only_what_it_sent(
    request, ada, caller
):
    client = request.getfixturevalue(caller)
    response = client.post(
        SUBSCRIBE,
        body(profile={"email": "Ada@Example.com"}, subscriptions={"email": {"marketing": True}}),
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["profile"] == {"id": ada.pk, "email": "ada@example.com"}
    (event,) = response.json()["events"]
    assert event["channel"] == "email" and event["consent"] == "SUBSCRIBED"
    assert set(event["delivery"]) == {"status", "reason"}
    assert not {"email", "phone_number", "ip_address", "user_agent"} & set(event)
    # The words agreed to are the caller's own, and every response carries them (issue 10).
    sent_text = body()["consent_text"]
    assert event["consent_text"] == sent_text
    assert event["consent_text_sha256"] == hashlib.sha256(sent_text.encode()).hexdigest()
    assert _leaks(response) == []


def test_a_withdrawal_by_email_does_not_show_the_number_it_withdraws(writer, ada):
    response = writer.post(
        UNSUBSCRIBE,
        body(profile={"email": "ada@example.com"}, subscriptions={"sms": {"marketing": True}}),
        format="json",
    )
    assert response.status_code == 201, response.content
    assert _leaks(response) == []
    # The event still records the number it withdraws (docs/identity.md rule 7).
    assert ConsentEvent.objects.get(pk=response.json()["events"][0]["id"]).phone_number == (
        SECRET_PHONE
    )


def test_a_reader_still_gets_the_whole_profile(api, ada):
    response = api.post(
        SUBSCRIBE,
        body(profile={"email": "ada@example.com"}, subscriptions={"email": {"marketing": True}}),
        format="json",
    )
    assert response.json()["profile"]["phone_number"] == SECRET_PHONE
    assert "ledger" in response.json()["profile"]


@pytest.mark.parametrize("path", [SUBSCRIBE, UNSUBSCRIBE])
def test_an_external_id_alone_answers_the_same_whether_or_not_it_exists(writer, ada, path):
    def post(external_id: str) -> Any:
        return writer.post(
            path,
            body(profile={"external_id": external_id}, subscriptions={"sms": {"marketing": True}}),
            format="json",
        )

    known, unknown = post(SECRET_EXTERNAL), post("cust-nobody")
    assert known.status_code == unknown.status_code == 400
    assert known.json() == unknown.json()
    assert "external_id" in known.json()["profile"]
    assert ConsentEvent.objects.count() == 2  # the fixture's two, nothing more


def test_a_reader_may_still_name_a_profile_by_external_id_alone(api, ada):
    response = api.post(
        UNSUBSCRIBE,
        body(profile={"external_id": SECRET_EXTERNAL}, subscriptions={"sms": {"marketing": True}}),
        format="json",
    )
    assert response.status_code == 201, response.content


def test_an_identity_conflict_names_only_the_callers_own_fields(writer, ada):
    response = writer.post(
        SUBSCRIBE,
        body(
            profile={"email": "grace@example.com", "phone_number": SECRET_PHONE},
            subscriptions={"email": {"marketing": True}},
        ),
        format="json",
    )
    assert response.status_code == 409
    answer = response.json()
    assert answer["code"] == "identity_conflict"
    assert set(answer["fields"]) <= {"profile.email", "profile.phone_number"}
    text = json.dumps(answer)
    assert "ada@example.com" not in text and SECRET_EXTERNAL not in text
    assert str(ada.pk) not in text


@pytest.mark.parametrize(
    "path, data",
    [("phone-number/", {"phone_number": "+447400123456"}), ("merge/", {"other": 999})],
)
def test_changing_a_profiles_identity_needs_change_profile_not_only_the_write_permission(
    writer, anyone, ada, path, data
):
    for client in (writer, anyone):
        response = client.post(f"/api/consent/profiles/{ada.pk}/{path}", data, format="json")
        assert response.status_code in (401, 403)
    ada.refresh_from_db()
    assert ada.phone_number == SECRET_PHONE


def test_an_identity_change_by_a_writer_without_view_answers_receipts(django_user_model, ada):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("desk")
    user.user_permissions.add(Permission.objects.get(codename="change_profile"))
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(
        f"/api/consent/profiles/{ada.pk}/phone-number/",
        {"phone_number": "+447400123456"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["profile"] == {"id": ada.pk, "phone_number": "+447400123456"}
    assert _leaks(response) == []


@pytest.mark.parametrize("path", ["/api/consent/suppress/", "/api/consent/unsuppress/"])
def test_suppress_reads_strict_json_only(api, fake, path):
    assert api.post(path, {"emails": "ada@example.com"}).status_code == 415
    assert (
        api.post(
            path, b'{"emails": [], "emails": ["a@example.com"]}', content_type=("application/json")
        ).status_code
        == 400
    )


# -- throttles -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(ConsentRateThrottle, "timer", clock)
    return clock


def _rates(settings: Any, **rates: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


def test_writes_past_the_default_rate_are_429_until_the_window_passes(writer, fake, clock):
    def post(n: int) -> int:
        return writer.post(
            SUBSCRIBE,
            body(
                profile={"email": f"p{n}@example.com"}, subscriptions={"email": {"marketing": True}}
            ),
            format="json",
        ).status_code

    assert [post(n) for n in range(60)] == [201] * 60
    refused = writer.post(SUBSCRIBE, body(), format="json")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "60"
    clock.now += 61
    assert post(60) == 201


def test_a_site_raises_or_lowers_a_scope_in_drfs_throttle_rates(writer, fake, clock, settings):
    _rates(settings, klaviyo_consent_write="2/min")
    # (suppress/ needs change_profile besides the write permission; subscribe/ shares the scope)
    def post(email: str) -> int:
        return writer.post(
            SUBSCRIBE,
            body(profile={"email": email}, subscriptions={"email": {"marketing": True}}),
            format="json",
        ).status_code

    statuses = [post(f"s{n}@example.com") for n in range(3)]
    assert statuses == [201, 201, 429]
    _rates(settings, klaviyo_consent_write=None)
    assert post("s9@example.com") == 201


def test_anonymous_writes_are_counted_per_client_ip(anyone, fake, clock, settings):
    _rates(settings, klaviyo_consent_write="1/min")

    def post(ip: str) -> int:
        return anyone.post(
            SUBSCRIBE,
            body(profile={"email": "a@example.com"}, subscriptions={"email": {"marketing": True}}),
            format="json",
            REMOTE_ADDR=ip,
        ).status_code

    assert [post("192.0.2.1"), post("192.0.2.1"), post("192.0.2.2")] == [201, 429, 201]


def test_check_is_throttled_on_its_own_scope(api, fake, clock, settings):
    _rates(settings, klaviyo_consent_check="2/min", klaviyo_consent_write="1/min")
    statuses = [
        api.post("/api/consent/check/", {"emails": ["a@example.com"]}, format="json").status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_the_webhook_endpoint_is_throttled_before_its_signature_is_checked(fake, clock, settings):
    _rates(settings, klaviyo_consent_webhook="2/min")
    client = APIClient()
    statuses = [
        client.post("/api/consent/webhooks/klaviyo/", {}, format="json").status_code
        for _ in range(3)
    ]
    assert statuses == [403, 403, 429]
