"""Reading profiles and the audit trail: filters, order, pagination, and who may read."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from klaviyo_consent.models import ConsentEvent
from tests.helpers import SUBSCRIBE, UNSUBSCRIBE, body, email_history

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_profiles(api, fake):
    first = api.post(SUBSCRIBE, body(), format="json").data["profile"]["id"]
    second = api.post(
        SUBSCRIBE,
        body(
            profile={"email": "grace@example.com", "external_id": "cust-42"},
            subscriptions={"email": {"marketing": True}},
        ),
        format="json",
    ).data["profile"]["id"]
    return first, second


def test_profiles_are_found_by_normalised_email_phone_and_external_id(api, two_profiles):
    first, second = two_profiles
    by_email = api.get("/api/consent/profiles/", {"email": " ADA@example.COM "}).data["results"]
    assert [p["id"] for p in by_email] == [first]
    by_phone = api.get("/api/consent/profiles/", {"phone_number": "+44 (0)7400 123456"}).data
    assert [p["id"] for p in by_phone["results"]] == [first]
    by_external = api.get("/api/consent/profiles/", {"external_id": "cust-42"}).data["results"]
    assert [p["id"] for p in by_external] == [second]


def test_a_malformed_phone_filter_is_a_400_naming_it(api, two_profiles):
    response = api.get("/api/consent/profiles/", {"phone_number": "call me"})
    assert response.status_code == 400
    assert "phone_number" in response.json()


def test_events_are_newest_first_filtered_and_paginated(api, two_profiles):
    first, _ = two_profiles
    api.post(
        "/api/consent/unsubscribe/", body(subscriptions={"sms": {"marketing": True}}), format="json"
    )
    events = api.get("/api/consent/events/", {"profile": first}).data
    assert events["count"] == 3
    recorded = [e["id"] for e in events["results"]]
    assert recorded == sorted(recorded, reverse=True)
    assert events["results"][0]["consent"] == "UNSUBSCRIBED"
    sms = api.get("/api/consent/events/", {"profile": first, "channel": "sms"}).data
    assert {e["channel"] for e in sms["results"]} == {"sms"} and sms["count"] == 2
    page = api.get("/api/consent/events/", {"page_size": 1}).data
    assert len(page["results"]) == 1 and page["next"]


def test_event_filters_refuse_nonsense(api, two_profiles):
    assert api.get("/api/consent/events/", {"channel": "fax"}).status_code == 400
    assert api.get("/api/consent/events/", {"profile": "abc"}).status_code == 400


def test_reads_need_an_authenticated_user_with_the_view_permission(two_profiles, django_user_model):
    first, _ = two_profiles
    anonymous = APIClient()
    for url in (
        "/api/consent/profiles/",
        f"/api/consent/profiles/{first}/",
        "/api/consent/events/",
    ):
        assert anonymous.get(url).status_code in (401, 403)
    nobody = APIClient()
    nobody.force_authenticate(django_user_model.objects.create_user("nobody"))
    for url in (
        "/api/consent/profiles/",
        f"/api/consent/profiles/{first}/",
        "/api/consent/events/",
    ):
        assert nobody.get(url).status_code == 403


def test_writes_need_authentication_by_default(fake):
    assert APIClient().post(SUBSCRIBE, body(), format="json").status_code in (401, 403)


def test_write_permission_classes_are_configurable(fake, settings):
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "WRITE_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    }
    response = APIClient().post(SUBSCRIBE, body(), format="json")
    assert response.status_code == 201
    # An anonymous caller gets receipts (docs/security.md); the event records no user.
    assert ConsentEvent.objects.get(pk=response.data["events"][0]["id"]).recorded_by_id is None


def test_token_authentication_is_accepted(staff, fake):
    token = Token.objects.create(user=staff)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.post(SUBSCRIBE, body(), format="json").status_code == 201
    assert client.get("/api/consent/profiles/").status_code == 200


def test_session_authentication_is_accepted(staff, fake):
    client = APIClient(enforce_csrf_checks=False)
    assert client.login(username="staff", password="pw")
    assert client.get("/api/consent/profiles/").status_code == 200


def test_unknown_profile_is_a_404(api, fake):
    assert api.get("/api/consent/profiles/999999/").status_code == 404


def test_serializers_built_once_still_bind_each_instance_to_its_own_profile(two_profiles):
    from klaviyo_consent.api.serializers import ProfileSerializer
    from klaviyo_consent.models import Profile

    first, second = (Profile.objects.get(pk=pk) for pk in two_profiles)
    no_history = ProfileSerializer(first, context={"ledger_events": {first.pk: []}})
    own_history = ProfileSerializer(second)

    # Read in the other order than built: a field shared between instances would answer for
    # the last serializer it was bound to.
    second_data, first_data = own_history.data, no_history.data

    assert (first_data["id"], second_data["id"]) == (first.pk, second.pk)
    assert first_data["ledger"]["email"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert second_data["ledger"]["email"]["marketing"]["consent"] == "SUBSCRIBED"


def test_a_page_of_profiles_reads_every_ledger_in_one_query(api, fake):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for i in range(12):
        email_history(api, f"p{i}@example.com", SUBSCRIBE, UNSUBSCRIBE)

    def queries_for_a_page_of(size: int) -> tuple[int, list[dict]]:
        with CaptureQueriesContext(connection) as queries:
            page = api.get("/api/consent/profiles/", {"page_size": size}).json()["results"]
        ledger_reads = [q for q in queries.captured_queries if "consentevent" in q["sql"]]
        return len(ledger_reads), page

    one_read, _ = queries_for_a_page_of(1)
    ten_reads, page = queries_for_a_page_of(10)

    assert one_read == ten_reads == 1
    assert len(page) == 10
    assert {p["ledger"]["email"]["marketing"]["consent"] for p in page} == {"UNSUBSCRIBED"}
