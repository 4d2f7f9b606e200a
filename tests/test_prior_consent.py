"""The prior-consent check: every identifier answered in order, malformed ones with an error."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from klaviyo_consent.models import Profile
from klaviyo_consent.services.prior_consent import check_prior_consent
from tests.helpers import SUBSCRIBE, UNSUBSCRIBE, body, email_history

pytestmark = pytest.mark.django_db

CHECK = "/api/consent/check/"
NEVER = {
    "consent": "NEVER_SUBSCRIBED",
    "delivery": None,
    "reason": "",
    "consented_at": None,
    "can_receive": False,
    "cannot_receive_reason": "never subscribed",
}


@pytest.fixture
def ada(api, fake, on_commit):
    """Subscribed to email and SMS marketing, pushed and applied."""
    with on_commit():
        response = api.post(SUBSCRIBE, body(), format="json")
    return Profile.objects.get(pk=response.data["profile"]["id"])


@pytest.fixture
def texter(api, fake, on_commit):
    """A phone-only profile subscribed to SMS marketing."""
    with on_commit():
        response = api.post(
            SUBSCRIBE,
            body(
                profile={"phone_number": "+44 7400 654321"},
                subscriptions={"sms": {"marketing": True}},
            ),
            format="json",
        )
    assert response.status_code == 201, response.content
    return Profile.objects.get(pk=response.data["profile"]["id"])


def check(client, **data):
    return client.post(CHECK, data, format="json")


def test_a_known_subscribed_email_shows_every_leaf_of_its_ledger(api, ada):
    response = check(api, emails=[" Ada@Example.com"])
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    assert result["identifier"] == " Ada@Example.com"
    assert result["type"] == "email" and result["normalized"] == "ada@example.com"
    assert result["profile_id"] == ada.pk and result["error"] is None
    email = result["consent"]["email"]["marketing"]
    assert email["consent"] == "SUBSCRIBED" and email["delivery"] == "applied"
    assert email["consented_at"] is not None
    assert result["consent"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    assert result["consent"]["sms"]["transactional"] == NEVER


def test_an_sms_only_profile_is_found_by_a_nationally_formatted_number(api, texter, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "DEFAULT_PHONE_REGION": "GB"}
    response = check(api, phone_numbers=["07400 654321", "+44 (0)7400 654321"])
    results = response.json()["results"]
    assert [r["normalized"] for r in results] == ["+447400654321", "+447400654321"]
    assert {r["profile_id"] for r in results} == {texter.pk}
    for result in results:
        assert result["type"] == "phone_number" and result["error"] is None
        assert result["consent"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"
        assert result["consent"]["email"]["marketing"] == NEVER


def test_unknown_identifiers_are_never_subscribed_everywhere(api, ada):
    response = check(api, emails=["grace@example.com"], phone_numbers=["+13239169023"])
    for result in response.json()["results"]:
        assert result["profile_id"] is None and result["error"] is None
        assert result["consent"] == {
            "email": {"marketing": NEVER},
            "sms": {"marketing": NEVER, "transactional": NEVER},
        }


def test_malformed_identifiers_keep_their_place_with_an_error(api, ada):
    response = check(
        api,
        emails=["ada@example.com", "ada@@example", ""],
        phone_numbers=["call me", "+447400123456", "+44 12"],
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["identifier"] for r in results] == [
        "ada@example.com",
        "ada@@example",
        "",
        "call me",
        "+447400123456",
        "+44 12",
    ]
    malformed = [results[i] for i in (1, 2, 3, 5)]
    for result in malformed:
        assert result["error"] and result["consent"] is None
        assert result["normalized"] is None and result["profile_id"] is None
    assert "valid email" in results[1]["error"]
    assert "phone number" in results[3]["error"]
    assert results[0]["profile_id"] == results[4]["profile_id"] == ada.pk


def test_order_is_kept_emails_first_then_phone_numbers(api, ada, texter):
    response = check(
        api,
        emails=["zed@example.com", "ada@example.com", "ada@example.com"],
        phone_numbers=["+447400654321", "+447400123456"],
    )
    results = response.json()["results"]
    assert [r["identifier"] for r in results] == [
        "zed@example.com",
        "ada@example.com",
        "ada@example.com",
        "+447400654321",
        "+447400123456",
    ]
    assert [r["profile_id"] for r in results] == [None, ada.pk, ada.pk, texter.pk, ada.pk]


def test_profiles_and_ledgers_are_read_in_three_queries_however_many_and_however_long(
    api, ada, texter, django_assert_num_queries, settings
):
    # Sixty writes from one user: more than the default write throttle allows in a minute.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"klaviyo_consent_write": None},
    }
    for i in range(20):  # twenty more known people, each with a history of three events
        email_history(api, f"known{i}@example.com", SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE)
    emails = [
        "ada@example.com",
        *(f"known{i}@example.com" for i in range(20)),
        *(f"nobody{i}@example.com" for i in range(50)),
    ]
    phones = ["+447400654321", "+447400123456", "bad number"]
    # One query per identifier type, then one for the latest events of every profile found,
    # and one for the erasures of the identifiers no profile holds (by keyed digest).
    with django_assert_num_queries(4):
        results = check_prior_consent(emails, phones)
    assert len(results) == len(emails) + len(phones)
    known = [r for r in results if r["identifier"].startswith("known")]
    assert {r["consent"]["email"]["marketing"]["consent"] for r in known} == {"SUBSCRIBED"}
    assert results[0]["consent"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"


@pytest.mark.parametrize(
    "data, field",
    [
        ({"emails": [f"p{i}@example.com" for i in range(1001)]}, "emails"),
        ({"phone_numbers": ["+13239169023"] * 1001}, "phone_numbers"),
        (
            {
                "emails": [f"p{i}@example.com" for i in range(600)],
                "phone_numbers": ["+13239169023"] * 401,
            },
            "phone_numbers",
        ),
        ({"emails": ["a@example.com"], "phone": ["+13239169023"]}, "phone"),
        ({"emails": [], "phone_numbers": []}, "non_field_errors"),
        ({}, "non_field_errors"),
        ({"emails": "a@example.com"}, "emails"),
    ],
)
def test_limits_unknown_keys_and_empty_checks_are_a_400_naming_the_field(api, data, field):
    response = check(api, **data)
    assert response.status_code == 400
    assert field in response.json()


def test_exactly_1000_identifiers_are_accepted(api, fake):
    response = check(
        api,
        emails=[f"p{i}@example.com" for i in range(500)],
        phone_numbers=[f"+1323916{i:04d}" for i in range(500)],
    )
    assert response.status_code == 200
    assert len(response.json()["results"]) == 1000


def test_checking_needs_an_authenticated_user_with_the_view_permission(django_user_model, ada):
    assert check(APIClient(), emails=["ada@example.com"]).status_code in (401, 403)
    nobody = APIClient()
    nobody.force_authenticate(django_user_model.objects.create_user("nobody"))
    assert check(nobody, emails=["ada@example.com"]).status_code == 403
