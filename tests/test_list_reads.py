"""The lists mirror and the legacy v2 questions: get-members and exclusions."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from klaviyo_consent import klaviyo
from klaviyo_consent.ratelimit import LIMITS
from klaviyo_consent.testing.fake import FakeKlaviyo
from tests.helpers import subscribe

pytestmark = pytest.mark.django_db

MEMBERS = "/api/consent/lists/{}/members/"
EMAIL_ONLY = {"email": {"marketing": True}}


def test_pull_lists_mirrors_each_list_with_its_member_count(api, fake, on_commit):
    subscribe(api, on_commit, profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY)
    fake.counts.clear()
    call_command("klaviyo_consent_pull", "--lists")
    assert fake.counts["get_lists"] == 1
    assert fake.counts["get_list"] == 2  # one profile_count read per list
    answer = api.get("/api/consent/lists/").json()
    rows = {row["list_id"]: row for row in answer["results"]}
    assert rows["Single"]["name"] == "Newsletter"
    assert rows["Single"]["opt_in_process"] == "single_opt_in"
    assert rows["Single"]["profile_count"] == 1
    assert rows["Double"]["profile_count"] == 0
    assert rows["Single"]["profile_count_read_at"]
    detail = api.get("/api/consent/lists/Single/").json()
    assert detail["profile_count"] == 1 and detail["name"] == "Newsletter"


def test_an_unknown_list_is_a_404(api, fake):
    assert api.get("/api/consent/lists/Nope/").status_code == 404


def test_the_member_count_has_its_own_published_rate_limit():
    assert klaviyo.ADDITIONAL_FIELD_RATE_LIMITS["get_list+profile_count"] == (1, 15)
    assert LIMITS["get_list+profile_count"] == ((1, 1.0), (15, 60.0))
    fake = FakeKlaviyo()
    fake.add_list("Single")
    fake.clock = lambda: 1000.0
    headers = {"Authorization": "Klaviyo-API-Key pk_test", "revision": "2026-07-15"}
    counted = "/api/lists/Single?additional-fields[list]=profile_count"
    assert fake.handle("GET", counted, headers, None).status == 200
    assert fake.handle("GET", counted, headers, None).status == 429
    assert fake.handle("GET", "/api/lists/Single", headers, None).status == 200


def get_members(api, **query):
    response = api.get(MEMBERS.format("Single"), query)
    assert response.status_code == 200, response.content
    return response.json()["members"]


def test_get_members_answers_on_the_list_and_not_suppressed(api, fake, on_commit):
    with on_commit():
        api.post(
            MEMBERS.format("Single"),
            {"profiles": [{"email": "ada@example.com"}, {"email": "bob@example.com"}]},
            format="json",
        )
    call_command("klaviyo_consent_sync")
    fake.suppress("bob@example.com", "HARD_BOUNCE")
    call_command("klaviyo_consent_pull", "--all", "--no-progress")
    ada, bob, eve = get_members(
        api, email=["Ada@Example.com", "bob@example.com", "eve@example.com"]
    )
    assert (ada["on_list"], ada["suppressed"], ada["member"]) == (True, False, True)
    assert ada["membership_status"] == "applied"
    assert (bob["on_list"], bob["suppressed"], bob["member"]) == (True, True, False)
    assert [s["reason"] for s in bob["suppressions"]] == ["HARD_BOUNCE"]
    assert (eve["profile"], eve["on_list"], eve["member"]) == (None, False, False)


def test_a_removed_person_is_no_member(api, fake, on_commit):
    body = {"profiles": [{"email": "ada@example.com"}]}
    with on_commit():
        api.post(MEMBERS.format("Single"), body, format="json")
    with on_commit():
        api.delete(MEMBERS.format("Single"), body, format="json")
    [ada] = get_members(api, email="ada@example.com")
    assert ada["on_list"] is False


def test_a_subscriber_of_the_list_is_on_it(api, fake, on_commit):
    subscribe(api, on_commit, profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY)
    call_command("klaviyo_consent_sync")
    [ada] = get_members(api, email="ada@example.com")
    assert ada["on_list"] is True and ada["member"] is True


def test_get_members_wants_an_identifier_and_valid_ones(api, fake):
    assert "email" in api.get(MEMBERS.format("Single")).json()
    assert "email" in api.get(MEMBERS.format("Single"), {"email": "nope"}).json()
    assert "phone_number" in api.get(MEMBERS.format("Single"), {"phone_number": "12"}).json()


def test_get_members_needs_the_view_permission(fake):
    from rest_framework.test import APIClient

    assert APIClient().get(MEMBERS.format("Single"), {"email": "a@example.com"}).status_code in (
        401,
        403,
    )


def test_exclusions_list_each_suppressed_profile_with_each_reason(api, fake, on_commit):
    for email in ("ada@example.com", "bob@example.com", "cy@example.com"):
        subscribe(api, on_commit, profile={"email": email}, subscriptions=EMAIL_ONLY)
    fake.suppress("ada@example.com", "HARD_BOUNCE")
    fake.unsubscribe_from_list("bob@example.com", "Single")
    call_command("klaviyo_consent_pull", "--all", "--no-progress")

    everywhere = api.get("/api/consent/profiles/", {"suppressed": "true"}).json()["results"]
    assert [p["email"] for p in everywhere] == ["ada@example.com"]
    assert [(s["reason"], s["scope"]) for s in everywhere[0]["suppressions"]] == [
        ("HARD_BOUNCE", "global")
    ]

    from_list = api.get(
        "/api/consent/profiles/", {"suppressed": "true", "list_id": "Single"}
    ).json()["results"]
    reasons = {
        p["email"]: [(s["reason"], s["scope"]) for s in p["suppressions"]] for p in from_list
    }
    assert reasons == {
        "ada@example.com": [("HARD_BOUNCE", "global")],
        "bob@example.com": [("UNSUBSCRIBE", "list")],
    }
    other = api.get("/api/consent/profiles/", {"suppressed": "true", "list_id": "Double"}).json()
    assert [p["email"] for p in other["results"]] == ["ada@example.com"]


@pytest.mark.parametrize(
    "query",
    [{"suppressed": "yes"}, {"list_id": "Single"}, {"suppressed": "true", "list_id": "a/b"}],
)
def test_bad_exclusion_queries_are_400s(api, fake, query):
    response = api.get("/api/consent/profiles/", query)
    assert response.status_code == 400
    assert set(response.json()) <= {"suppressed", "list_id"}
