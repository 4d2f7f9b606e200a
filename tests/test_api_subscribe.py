"""The subscribe/unsubscribe API: what is recorded, what is pushed, what is refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from klaviyo_consent.models import ConsentEvent, Profile
from tests.helpers import (
    SUBSCRIBE,
    UNSUBSCRIBE,
    body,
)

pytestmark = pytest.mark.django_db


def test_subscribe_records_one_event_per_channel_with_its_evidence(api, fake):
    response = api.post(
        SUBSCRIBE,
        body(),
        format="json",
        HTTP_USER_AGENT="Mozilla/5.0 test",
        HTTP_REFERER="https://shop.example/signup",
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 201, response.content
    profile = Profile.objects.get(pk=response.data["profile"]["id"])
    assert profile.email == "ada@example.com"
    assert profile.phone_number == "+447400123456"
    events = {(e["channel"], e["purpose"]): e for e in response.data["events"]}
    assert set(events) == {("email", "marketing"), ("sms", "marketing")}
    sms = ConsentEvent.objects.get(pk=events[("sms", "marketing")]["id"])
    assert sms.consent == "SUBSCRIBED"
    assert sms.phone_number == "+447400123456"
    assert sms.ip_address == "203.0.113.9"
    assert sms.user_agent == "Mozilla/5.0 test"
    assert sms.page_url == "https://shop.example/signup"
    assert sms.consent_text == "Yes, text me offers. Reply STOP to cancel."
    assert sms.custom_source == "Footer signup" and sms.method == "form"
    assert sms.recorded_by.username == "staff"
    assert sms.delivery.status == "pending"


def test_subscribe_is_pushed_on_commit_and_mirrored_back(api, fake, on_commit):
    with on_commit():
        response = api.post(SUBSCRIBE, body(), format="json")
    assert response.status_code == 201
    in_klaviyo = fake.get_profile(email="ada@example.com")
    assert in_klaviyo["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert in_klaviyo["subscriptions"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"

    detail = api.get(f"/api/consent/profiles/{response.data['profile']['id']}/").data
    assert detail["phone_number"] == "+447400123456"
    assert detail["mirrored_at"] is not None
    assert detail["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert detail["subscriptions"]["email"]["marketing"]["custom_method_detail"] == "Footer signup"
    assert detail["ledger"]["email"]["marketing"]["delivery"] == "applied"
    assert detail["ledger"]["sms"]["marketing"]["delivery"] == "applied"
    assert detail["ledger"]["sms"]["transactional"]["consent"] == "NEVER_SUBSCRIBED"


def test_unsubscribe_records_a_withdrawal_that_reaches_klaviyo(api, fake, on_commit):
    with on_commit():
        api.post(SUBSCRIBE, body(), format="json")
    with on_commit():
        response = api.post(
            UNSUBSCRIBE,
            body(subscriptions={"sms": {"marketing": True}}, method="api", consent_text=""),
            format="json",
        )
    assert response.status_code == 201, response.content
    [event] = response.data["events"]
    assert (event["channel"], event["consent"]) == ("sms", "UNSUBSCRIBED")
    subscriptions = fake.get_profile(email="ada@example.com")["subscriptions"]
    assert subscriptions["sms"]["marketing"]["consent"] == "UNSUBSCRIBED"
    assert subscriptions["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert ConsentEvent.objects.get(pk=event["id"]).delivery.status == "applied"


def test_withdrawal_is_accepted_even_for_a_country_klaviyo_does_not_text(api, fake):
    response = api.post(
        UNSUBSCRIBE,
        body(profile={"phone_number": "+38640123456"}, subscriptions={"sms": {"marketing": True}}),
        format="json",
    )
    assert response.status_code == 201


def test_historical_import_sends_consented_at_to_klaviyo(api, fake, on_commit):
    agreed = (timezone.now() - timedelta(days=400)).replace(microsecond=0)
    with on_commit():
        response = api.post(
            SUBSCRIBE,
            body(consented_at=agreed.isoformat(), historical_import=True, method="import"),
            format="json",
        )
    assert response.status_code == 201, response.content
    [job] = [j for j in fake.jobs if j["type"] == "profile-subscription-bulk-create-job"]
    assert job["historical_import"] is True
    leaf = fake.get_profile(email="ada@example.com")["subscriptions"]["email"]["marketing"]
    assert leaf["consent"] == "SUBSCRIBED"
    assert leaf["consent_timestamp"].startswith(agreed.date().isoformat())


def test_double_opt_in_list_leaves_consent_pending_confirmation(api, fake, on_commit):
    with on_commit():
        response = api.post(
            SUBSCRIBE,
            body(list_id="Double", subscriptions={"email": {"marketing": True}}),
            format="json",
        )
    [event] = response.data["events"]
    assert ConsentEvent.objects.get(pk=event["id"]).delivery.status == "pending_confirmation"


def test_a_national_number_without_a_country_says_to_give_one_in_words(api, fake):
    response = api.post(
        SUBSCRIBE,
        {
            "profile": {"email": "a@example.com", "phone_number": "07400 123458"},
            "subscriptions": {"sms": {"marketing": True}},
        },
        format="json",
    )
    assert response.status_code == 400
    [message] = response.json()["profile"]["phone_number"]
    assert "national number" in message and "give its country" in message
    assert "default region" not in message and "(0)" not in message


BAD_INPUT = [
    (
        "malformed email",
        {"profile": {"email": "ada@@example"}},
        ["profile", "email"],
        "valid email",
    ),
    (
        "phone phonenumbers cannot parse",
        {"profile": {"email": "a@example.com", "phone_number": "12"}},
        ["profile", "phone_number"],
        "E.164",
    ),
    (
        "invalid phone number",
        {"profile": {"email": "a@example.com", "phone_number": "+44 12"}},
        ["profile", "phone_number"],
        "not a valid phone number",
    ),
    (
        "SMS without a phone",
        {"profile": {"email": "a@example.com"}},
        ["profile", "phone_number"],
        "SMS consent needs a phone_number",
    ),
    (
        "SMS for an unsupported country",
        {"profile": {"email": "a@example.com", "phone_number": "+386 40 123 456"}},
        ["profile", "phone_number"],
        "Slovenia (SI)",
    ),
    (
        "SMS for Puerto Rico, +1 but not the US",
        {"profile": {"email": "a@example.com", "phone_number": "+1 787 555 0123"}},
        ["profile", "phone_number"],
        "Puerto Rico (PR)",
    ),
    (
        "consented_at without historical_import",
        {"consented_at": "2024-01-01T00:00:00Z"},
        ["historical_import"],
        "only accepted with historical_import",
    ),
    (
        "historical_import without consented_at",
        {"historical_import": True},
        ["consented_at"],
        "needs consented_at",
    ),
    (
        "consented_at in the future",
        {"historical_import": True, "consented_at": "2999-01-01T00:00:00Z"},
        ["consented_at"],
        "in the past",
    ),
    ("no channel at all", {"subscriptions": {}}, ["subscriptions"], "at least one channel"),
    (
        "every purpose false",
        {"subscriptions": {"email": {"marketing": False}}},
        ["subscriptions"],
        "at least one channel",
    ),
    ("unknown top-level key", {"colour": "blue"}, ["colour"], "Unknown field"),
    (
        "unknown profile key",
        {"profile": {"email": "a@example.com", "first_name": "Ada"}},
        ["profile", "first_name"],
        "Unknown field",
    ),
    (
        "email has no transactional purpose",
        {"subscriptions": {"email": {"transactional": True}}},
        ["subscriptions", "email", "transactional"],
        "Unknown field",
    ),
    (
        "unknown channel",
        {"subscriptions": {"whatsapp": {"marketing": True}}},
        ["subscriptions", "whatsapp"],
        "Unknown field",
    ),
    ("unknown method", {"method": "carrier-pigeon"}, ["method"], "not a valid choice"),
    (
        "method klaviyo is reserved for inbound events",
        {"method": "klaviyo"},
        ["method"],
        "not a valid choice",
    ),
    ("no profile identifiers", {"profile": {}}, ["profile"], "Give an email"),
]


#: Withdrawals are accepted for any country: refusing one would keep texting someone who said STOP.
SUBSCRIBE_ONLY = {"SMS for an unsupported country", "SMS for Puerto Rico, +1 but not the US"}
CASES = [(SUBSCRIBE, *case) for case in BAD_INPUT] + [
    (UNSUBSCRIBE, *case) for case in BAD_INPUT if case[0] not in SUBSCRIBE_ONLY
]


@pytest.mark.parametrize(
    "url,overrides,path,message",
    [(url, *case[1:]) for url, *case in CASES],
    ids=[f"{url.split('/')[-2]}: {case[0]}" for url, *case in CASES],
)
def test_bad_input_is_a_400_naming_the_field_and_records_nothing(
    api, fake, url, overrides, path, message
):
    response = api.post(url, body(**overrides), format="json")
    assert response.status_code == 400, response.content
    detail: Any = response.json()
    for key in path:
        assert key in detail, (path, detail)
        detail = detail[key]
    assert message in str(detail), detail
    assert ConsentEvent.objects.count() == 0
    assert Profile.objects.count() == 0


def test_identifiers_of_two_different_profiles_are_refused_with_409(api, fake):
    api.post(
        SUBSCRIBE,
        body(profile={"email": "a@example.com", "phone_number": "+447400900001"}),
        format="json",
    )
    api.post(
        SUBSCRIBE,
        body(profile={"email": "b@example.com", "phone_number": "+447400900002"}),
        format="json",
    )
    before = ConsentEvent.objects.count()
    response = api.post(
        SUBSCRIBE,
        body(profile={"email": "a@example.com", "phone_number": "+447400900002"}),
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "identity_conflict"
    assert response.json()["fields"] == ["profile.phone_number"]
    assert ConsentEvent.objects.count() == before


def test_a_job_klaviyo_refuses_is_recorded_on_the_events_with_klaviyos_detail(api, fake, on_commit):
    from klaviyo_consent.services.sync import sync

    fake.rejected_emails.add("ada@example.com")
    with on_commit():
        response = api.post(SUBSCRIBE, body(), format="json")
    sync()
    deliveries = {
        event["channel"]: ConsentEvent.objects.get(pk=event["id"]).delivery
        for event in response.data["events"]
    }
    # Klaviyo refused the email part: only the email event fails, with Klaviyo's detail ...
    email = deliveries["email"]
    assert email.status == "failed"
    assert "Invalid email address" in email.reason
    assert email.errors and email.errors[0]["detail"] == "Invalid email address"
    # ... and the SMS part went again without the refused email, and was applied.
    assert deliveries["sms"].status == "applied"
    events = api.get("/api/consent/events/").data["results"]
    assert {e["channel"]: e["delivery"]["status"] for e in events} == {
        "email": "failed",
        "sms": "applied",
    }


def test_a_klaviyo_outage_loses_nothing_and_the_next_sync_delivers(api, fake, on_commit, settings):
    from klaviyo_consent.services.sync import sync

    fake.fail_next(503, count=1)
    with on_commit():
        response = api.post(SUBSCRIBE, body(), format="json")
    ids = [e["id"] for e in response.data["events"]]
    assert {ConsentEvent.objects.get(pk=i).delivery.status for i in ids} == {"pending"}
    assert fake.get_profile(email="ada@example.com") is None
    from klaviyo_consent.models import Delivery

    Delivery.objects.update(next_attempt_at=timezone.now())
    sync()
    assert {ConsentEvent.objects.get(pk=i).delivery.status for i in ids} == {"applied"}


@pytest.mark.parametrize("history", ["new profile", "known profile"])
def test_the_201_body_says_what_the_profile_and_events_endpoints_say(api, fake, settings, history):
    settings.TIME_ZONE = "Europe/Ljubljana"  # not UTC: the ledger's times must not depend on it
    if history == "known profile":
        api.post(SUBSCRIBE, body(subscriptions={"sms": {"transactional": True}}), format="json")
    response = api.post(
        SUBSCRIBE,
        body(consented_at="2024-01-01T12:00:00Z", historical_import=True, method="import"),
        format="json",
        REMOTE_ADDR="2001:0db8:0000:0000:0000:0000:0000:0001",  # stored compressed
    )
    assert response.status_code == 201, response.content

    profile_id = response.data["profile"]["id"]
    detail = api.get(f"/api/consent/profiles/{profile_id}/").json()
    listed = api.get(f"/api/consent/events/?profile={profile_id}").json()["results"]
    assert response.json()["profile"] == detail
    by_id = {event["id"]: event for event in listed}
    assert response.json()["events"] == [by_id[event["id"]] for event in response.json()["events"]]
    expected = "SUBSCRIBED" if history == "known profile" else "NEVER_SUBSCRIBED"
    assert detail["ledger"]["sms"]["transactional"]["consent"] == expected
    assert detail["ledger"]["sms"]["marketing"]["delivery"] == "pending"
    assert detail["ledger"]["email"]["marketing"]["consented_at"] == "2024-01-01T12:00:00+00:00"
    assert {event["ip_address"] for event in response.json()["events"]} == {"2001:db8::1"}


@pytest.mark.django_db(transaction=True)
def test_with_the_immediate_task_backend_the_201_already_shows_the_consent_applied(api, fake):
    response = api.post(SUBSCRIBE, body(), format="json")  # commits: the push runs inline

    assert response.status_code == 201, response.content
    assert {event["delivery"]["status"] for event in response.data["events"]} == {"applied"}
    ledger = response.data["profile"]["ledger"]
    assert ledger["email"]["marketing"]["delivery"] == "applied"
    subscriptions = response.data["profile"]["subscriptions"]
    assert subscriptions["sms"]["marketing"]["consent"] == "SUBSCRIBED"


@pytest.mark.django_db(transaction=True)
def test_a_task_backend_that_cannot_load_still_answers_201_and_loses_nothing(api, fake, settings):
    settings.TASKS = {"default": {"BACKEND": "no.such.Backend"}}  # system check E003 says so too

    response = api.post(SUBSCRIBE, body(), format="json")

    assert response.status_code == 201, response.content
    assert {event["delivery"]["status"] for event in response.data["events"]} == {"pending"}
    assert ConsentEvent.objects.filter(delivery__status="pending").count() == 2
