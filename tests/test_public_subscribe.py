"""``POST /api/consent/public/subscribe/``: anonymous, throttled, CSRF-checked, and silent about
who is on file (issue 12, "Drop-in capture")."""

from __future__ import annotations

import pytest
from django.utils.crypto import get_random_string
from rest_framework.test import APIClient

from klaviyo_consent.models import ConsentEvent, ConsentText, Profile
from klaviyo_consent.services.signup import RECORDED_APART, TEXT_KEYS

pytestmark = pytest.mark.django_db

PUBLIC = "/api/consent/public/subscribe/"


def signup(email="ada@example.com", phone="07400 123457", country="GB", sms=True, **extra):
    profile = {"email": email, "phone_number": phone, "country": country}
    return {
        "profile": {k: v for k, v in profile.items() if v is not None},
        "subscriptions": {"email": {"marketing": email is not None}, "sms": {"marketing": sms}},
        **extra,
    }


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


def test_an_anonymous_signup_is_recorded_and_answered_with_the_outcome_only(anonymous, fake):
    response = anonymous.post(
        PUBLIC, signup(), format="json", REMOTE_ADDR="203.0.113.9", HTTP_REFERER="https://shop/x"
    )
    assert response.status_code == 201, response.content
    assert response.json() == {
        "email": "subscribed",
        "sms": "subscribed",
        "message": "Thank you! You're signed up for our marketing emails and our text messages.",
    }
    events = {e.channel: e for e in ConsentEvent.objects.all()}
    assert events["sms"].phone_number == "+447400123457"
    assert events["email"].ip_address == "203.0.113.9"
    assert events["email"].page_url == "https://shop/x"
    assert events["email"].method == "form" and events["email"].recorded_by_id is None
    assert events["email"].consent_text_version.key == TEXT_KEYS["email"]


def test_the_answer_echoes_nothing_the_caller_sent(anonymous, fake):
    text = response_text(anonymous.post(PUBLIC, signup(), format="json"))
    for sent in ("ada@example.com", "7400", "123457", "GB"):
        assert sent not in text


def response_text(response) -> str:
    return response.content.decode()


def test_the_email_is_kept_when_only_the_sms_part_is_refused(anonymous, fake):
    response = anonymous.post(PUBLIC, signup(phone="+386 40 123 456", country=None), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["email"] == "subscribed"
    assert response.json()["sms"] == "country_unsupported"
    assert "numbers in Slovenia" in response.json()["message"]
    assert [e.channel for e in ConsentEvent.objects.all()] == ["email"]
    # The refused number is kept nowhere: not on the profile, not on the event.
    [profile] = Profile.objects.all()
    assert not profile.phone_number and not ConsentEvent.objects.get().phone_number


def test_a_refused_landline_is_not_kept_either(anonymous, fake):
    response = anonymous.post(PUBLIC, signup(phone="020 7946 0000", country="GB"), format="json")
    assert response.status_code == 201 and response.json()["sms"] == "not_a_mobile"
    assert not Profile.objects.exclude(phone_number=None).exclude(phone_number="").exists()


def test_an_sms_only_signup_that_cannot_be_texted_is_a_400_in_plain_words(anonymous, fake):
    response = anonymous.post(
        PUBLIC, signup(email=None, phone="040 123 456", country="SI"), format="json"
    )
    assert response.status_code == 400
    assert response.json() == {
        "profile": {"phone_number": ["We can't send text messages to numbers in Slovenia yet."]}
    }
    assert not ConsentEvent.objects.exists()


@pytest.mark.parametrize(
    "body, where",
    [
        (signup(email="ada@localhost"), ("profile", "email")),
        (signup(phone="0740"), ("profile", "phone_number")),
        (signup(country="ZZ"), ("profile", "country")),
    ],
)
def test_bad_input_is_a_400_naming_the_field_in_plain_words(anonymous, fake, body, where):
    response = anonymous.post(PUBLIC, body, format="json")
    assert response.status_code == 400
    [message] = response.json()[where[0]][where[1]]
    assert "E.164" not in message and "SMS_COUNTRIES" not in message and "region" not in message
    assert not ConsentEvent.objects.exists()


def test_a_bad_consent_text_id_is_called_a_consent_text_id_not_a_profile_id(anonymous, fake):
    body = {**signup(), "consent_text_ids": {"sms": "seven"}}
    response = anonymous.post(PUBLIC, body, format="json")
    assert response.status_code == 400
    assert response.json()["consent_text_ids"]["sms"] == [
        "A consent text id is a whole number (a JSON integer)."
    ]


def test_unknown_fields_and_identifiers_the_public_may_not_name_are_refused(anonymous, fake):
    named = signup()
    named["profile"]["external_id"] = "crm-1"
    response = anonymous.post(PUBLIC, named, format="json")
    assert response.status_code == 400 and "external_id" in response.json()["profile"]
    listed = {**signup(), "list_id": "Double"}
    response = anonymous.post(PUBLIC, listed, format="json")
    assert response.status_code == 400 and "list_id" in response.json()
    assert not ConsentEvent.objects.exists()


def test_the_same_answer_whether_the_person_was_on_file_or_not(anonymous, fake):
    first = anonymous.post(PUBLIC, signup(), format="json")
    again = anonymous.post(PUBLIC, signup(), format="json")
    assert (first.status_code, first.json()) == (again.status_code, again.json())


@pytest.mark.parametrize(
    "known, sent",
    [
        # a known email with another number
        (("ada@example.com", "07400 123456"), ("ada@example.com", "07400 654321")),
        # a known number with another email
        (("ada@example.com", "07400 123456"), ("mallory@example.org", "07400 123456")),
    ],
)
def test_identity_conflicts_get_the_answer_a_new_person_gets_and_overwrite_nothing(
    anonymous, fake, known, sent
):
    anonymous.post(PUBLIC, signup(email=known[0], phone=known[1]), format="json")
    stranger = anonymous.post(
        PUBLIC, signup(email="new@example.net", phone="07400 999999"), format="json"
    )
    conflicting = anonymous.post(PUBLIC, signup(email=sent[0], phone=sent[1]), format="json")
    assert (conflicting.status_code, conflicting.json()) == (
        stranger.status_code,
        stranger.json(),
    )
    assert conflicting.status_code == 201 and "identity_conflict" not in response_text(conflicting)
    ada = Profile.objects.get(email=known[0])
    assert ada.phone_number == "+447400123456"  # nothing overwritten
    apart = ConsentEvent.objects.filter(method_detail__contains=RECORDED_APART)
    assert apart.exists()
    # Each consent apart belongs to its own channel's identifier only.
    for event in apart:
        assert event.profile.email if event.channel == "email" else event.profile.phone_number


def test_the_public_endpoint_checks_csrf_like_a_form(fake):
    client = APIClient(enforce_csrf_checks=True)
    refused = client.post(PUBLIC, signup(), format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert not ConsentEvent.objects.exists()
    # A page of the site sets the csrftoken cookie; its JavaScript sends it as X-CSRFToken.
    secret = get_random_string(32)
    client.cookies["csrftoken"] = secret
    accepted = client.post(PUBLIC, signup(), format="json", HTTP_X_CSRFTOKEN=secret)
    assert accepted.status_code == 201, accepted.content


def test_the_public_endpoint_refuses_form_bodies(anonymous, fake):
    response = anonymous.post(PUBLIC, {"profile.email": "ada@example.com"})
    assert response.status_code == 415


def test_the_public_endpoint_is_throttled_per_ip_and_shares_the_forms_budget(
    anonymous, fake, settings, client
):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"klaviyo_consent_public": "3/min"},
    }
    for n in range(2):
        response = anonymous.post(
            PUBLIC, signup(email=f"p{n}@example.com", sms=False), format="json"
        )
        assert response.status_code == 201
    client.post("/consent/signup/", {"email": "form@example.com", "email_marketing": "on"})
    refused = anonymous.post(PUBLIC, signup(email="p9@example.com", sms=False), format="json")
    assert refused.status_code == 429 and "Retry-After" in refused
    other_ip = anonymous.post(
        PUBLIC, signup(email="p8@example.com", sms=False), format="json", REMOTE_ADDR="192.0.2.7"
    )
    assert other_ip.status_code == 201
    assert ConsentEvent.objects.count() == 4


def test_a_logged_in_staff_member_is_throttled_and_answered_like_anyone(api, fake):
    response = api.post(PUBLIC, signup(), format="json")
    assert set(response.json()) == {"email", "sms", "message"}
    assert ConsentEvent.objects.filter(recorded_by__isnull=False).count() == 0


def test_a_text_version_given_must_be_one_of_the_channels_key(anonymous, fake):
    other = ConsentText.objects.create(key="terms", version=1, body="Terms.")
    response = anonymous.post(PUBLIC, signup(consent_text_ids={"email": other.pk}), format="json")
    assert response.status_code == 400
    assert "wording of this form has changed" in str(response.json())


def test_a_signup_the_ledger_refuses_is_plain_words_naming_nobody(anonymous, fake, monkeypatch):
    from klaviyo_consent.api import public
    from klaviyo_consent.exceptions import IdentityConflict

    def refuse(request):
        raise IdentityConflict("Other requests kept changing ...", fields=["profile.email"])

    monkeypatch.setattr(public, "record_signup", refuse)
    response = anonymous.post(PUBLIC, signup(), format="json")
    assert response.status_code == 400
    assert response.json() == {
        "non_field_errors": ["We couldn't sign you up just now. Please try again in a moment."]
    }


def test_allow_any_on_the_staff_writes_is_warned_about(settings):
    from django.core import checks

    def ids():
        return [m.id for m in checks.run_checks(tags=["klaviyo_consent"])]

    assert "klaviyo_consent.W020" not in ids()
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "WRITE_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    }
    assert "klaviyo_consent.W020" in ids()


def test_a_double_opt_in_signup_list_asks_the_person_to_confirm(
    anonymous, fake, settings, on_commit
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "DEFAULT_LIST_ID": "Double"}
    with on_commit():
        first = anonymous.post(PUBLIC, signup(email="a@example.com", sms=False), format="json")
    # The first push read the list's opt-in process; from then on the answer says what it means.
    with on_commit():
        second = anonymous.post(PUBLIC, signup(email="b@example.com", sms=False), format="json")
    assert first.status_code == second.status_code == 201
    assert second.json()["message"] == (
        "Thank you! You're signed up for our marketing emails. Please confirm with the link in "
        "the email we are sending you."
    )
    assert ConsentEvent.objects.filter(delivery__status="pending_confirmation").count() == 2


def test_a_stranger_cannot_attach_a_number_to_a_known_person(anonymous, fake):
    anonymous.post(PUBLIC, signup(email="ada@example.com", phone=None, sms=False), format="json")
    stranger = anonymous.post(
        PUBLIC, signup(email="new@example.net", phone="07400 111111"), format="json"
    )
    attaching = anonymous.post(
        PUBLIC, signup(email="ada@example.com", phone="07400 999999"), format="json"
    )
    assert (attaching.status_code, attaching.json()) == (stranger.status_code, stranger.json())
    ada = Profile.objects.get(email="ada@example.com")
    assert ada.phone_number is None  # nothing joined to her profile
    sms = ConsentEvent.objects.get(personal_data__phone_number="+447400999999", channel="sms")
    assert sms.profile.email is None and RECORDED_APART in sms.method_detail


def test_a_new_person_s_email_and_number_stay_one_profile(anonymous, fake):
    anonymous.post(PUBLIC, signup(), format="json")
    anonymous.post(PUBLIC, signup(), format="json")  # the same person again
    [profile] = Profile.objects.all()
    assert (profile.email, profile.phone_number) == ("ada@example.com", "+447400123457")
    assert not ConsentEvent.objects.filter(method_detail__contains=RECORDED_APART).exists()
