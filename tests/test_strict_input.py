"""Strict where it matters: consent flags, ids, Klaviyo ids, deliverable emails, one mobile
number. Lenient where the meaning is certain: tel: URIs and national formats."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from klaviyo_consent.backends.base import BaseKlaviyoBackend, RawResponse
from klaviyo_consent.checks import check_settings
from klaviyo_consent.exceptions import ConsentValidationError, KlaviyoMalformedResponse
from klaviyo_consent.models import ConsentEvent, Profile
from klaviyo_consent.services.ledger import ConsentRequest, clean_email, record_consent
from klaviyo_consent.services.suppressions import record_suppression
from tests.helpers import SUBSCRIBE, UNSUBSCRIBE, body

pytestmark = pytest.mark.django_db

EMAIL_ONLY = {"email": "ada@example.com"}


def _errors(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.content
    return response.json()


@pytest.mark.parametrize("flag", ["yes", "true", "on", "1", 1, 0, "false", None, [], {}])
@pytest.mark.parametrize("path", [SUBSCRIBE, UNSUBSCRIBE])
def test_a_consent_flag_that_is_not_a_json_boolean_is_a_400_naming_it(api, fake, path, flag):
    response = api.post(
        path,
        body(profile=EMAIL_ONLY, subscriptions={"email": {"marketing": flag}}),
        format="json",
    )
    errors = _errors(response)
    assert "marketing" in errors["subscriptions"]["email"]
    assert not ConsentEvent.objects.exists()


@pytest.mark.parametrize("flag", ["true", 1, "on"])
def test_historical_import_must_be_a_json_boolean(api, fake, flag):
    response = api.post(
        SUBSCRIBE,
        body(
            profile=EMAIL_ONLY,
            subscriptions={"email": {"marketing": True}},
            historical_import=flag,
            consented_at="2024-01-01T00:00:00Z",
        ),
        format="json",
    )
    assert "historical_import" in _errors(response)


def test_a_service_caller_passing_a_truthy_string_as_a_flag_is_refused_naming_it(fake):
    with pytest.raises(ConsentValidationError) as raised:
        record_consent(
            ConsentRequest(
                consent="SUBSCRIBED",
                subscriptions={"email": {"marketing": "yes"}},  # type: ignore[dict-item]
                email="ada@example.com",
            )
        )
    assert raised.value.field == "subscriptions.email.marketing"


@pytest.mark.parametrize("other", ["2", 2.0, True, "2²", 2**63, 0, -1, None])
def test_merge_other_must_be_a_json_integer_row_id(api, fake, other):
    profile = Profile.objects.create(email="ada@example.com")
    response = api.post(
        f"/api/consent/profiles/{profile.pk}/merge/", {"other": other}, format="json"
    )
    assert "other" in _errors(response)


@pytest.mark.parametrize(
    "list_id", ["a/b", "Y6nRLr?x=1", "..", "../profiles", "Y6n%2F", "Y6n RLr", " Y6nRLr", "ü1"]
)
def test_a_list_id_outside_klaviyos_id_alphabet_is_a_400_naming_list_id(api, fake, list_id):
    response = api.post(SUBSCRIBE, body(profile=EMAIL_ONLY, list_id=list_id), format="json")
    assert "list_id" in _errors(response)
    assert not ConsentEvent.objects.exists()


def test_a_service_caller_list_id_is_checked_too(fake):
    with pytest.raises(ConsentValidationError) as raised:
        record_consent(
            ConsentRequest(
                consent="SUBSCRIBED",
                subscriptions={"email": {"marketing": True}},
                email="ada@example.com",
                list_id="../lists",
            )
        )
    assert raised.value.field == "list_id"


def test_the_import_refuses_a_list_id_outside_the_alphabet(tmp_path, fake):
    path = tmp_path / "c.csv"
    path.write_text("email,email_marketing\nada@example.com,yes\n")
    with pytest.raises(CommandError, match="line 2: list_id"):
        call_command("klaviyo_consent_import", str(path), "--list-id", "x/../y")


def test_a_default_list_id_outside_the_alphabet_fails_the_system_check(settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "DEFAULT_LIST_ID": "Y6n/RLr"}
    assert "klaviyo_consent.E005" in [m.id for m in check_settings()]
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "DEFAULT_LIST_ID": "Y6nRLr"}
    assert "klaviyo_consent.E005" not in [m.id for m in check_settings()]


class _Recorder(BaseKlaviyoBackend):
    """Answers every request with ``answer`` and keeps the URLs it was asked for."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(api_key="pk_test", api_url="https://a.klaviyo.com", limiter=None)
        self.answer = answer
        self.urls: list[str] = []

    def send(self, method, url, *, headers, params, body):  # type: ignore[override]
        self.urls.append(url)
        return RawResponse(200, {}, json.dumps(self.answer).encode(), url=url)


def test_a_list_id_is_url_quoted_as_one_path_segment():
    backend = _Recorder({"data": {"type": "list", "id": "x"}})
    backend.get_list("a/../b?c")
    assert backend.urls == ["https://a.klaviyo.com/api/lists/a%2F..%2Fb%3Fc"]


def test_a_next_link_to_another_host_is_never_followed_with_the_key():
    backend = _Recorder({"data": [], "links": {"next": "https://attacker.example/api/lists"}})
    with pytest.raises(KlaviyoMalformedResponse):
        list(backend.get_lists())
    assert backend.urls == ["https://a.klaviyo.com/api/lists"]


def test_a_next_link_on_the_api_origin_is_followed():
    class TwoPages(_Recorder):
        def send(self, method, url, *, headers, params, body):  # type: ignore[override]
            if self.urls:
                self.answer = {"data": [{"id": "Y6nRLr"}], "links": {}}
            return super().send(method, url, headers=headers, params=params, body=body)

    backend = TwoPages({"data": [], "links": {"next": "https://a.klaviyo.com/api/lists?p=2"}})
    assert [row["id"] for row in backend.get_lists()] == ["Y6nRLr"]
    assert backend.urls == [
        "https://a.klaviyo.com/api/lists",
        "https://a.klaviyo.com/api/lists?p=2",
    ]


@pytest.mark.parametrize(
    "email",
    [
        "ada@localhost",
        "ada@sub.localhost",
        "ada@[127.0.0.1]",
        "ada@[IPv6:::1]",
        "ada@1.2.3.4",
        "ada@intranet",
        "a" * 65 + "@example.com",
    ],
)
def test_an_undeliverable_email_is_a_400_naming_the_field(api, fake, email):
    response = api.post(SUBSCRIBE, body(profile={"email": email}), format="json")
    assert "email" in _errors(response)["profile"]
    assert not Profile.objects.exists()


@pytest.mark.parametrize("email", ["ada@localhost", "ada@[127.0.0.1]", "b" * 65 + "@example.com"])
def test_the_service_layer_refuses_undeliverable_emails_for_every_entry_point(fake, email):
    with pytest.raises(ConsentValidationError):
        clean_email(email)
    with pytest.raises(ConsentValidationError) as raised:
        record_suppression([email], action="suppress")
    assert raised.value.field == "emails.0"


def test_suppress_refuses_an_undeliverable_email_naming_its_index(api, fake):
    response = api.post(
        "/api/consent/suppress/", {"emails": ["ada@example.com", "x@localhost"]}, format="json"
    )
    assert "1" in _errors(response)["emails"]


def test_a_local_part_of_64_characters_is_accepted(api, fake):
    email = "a" * 64 + "@example.com"
    response = api.post(
        SUBSCRIBE,
        body(profile={"email": email}, subscriptions={"email": {"marketing": True}}),
        format="json",
    )
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    "number",
    ["+447400123456 ext. 12", "+447400123456x12", "+44 7400 123456 #12", "tel:+447400123456;ext=1"],
)
def test_a_number_with_an_extension_is_refused_naming_the_field(api, fake, number):
    response = api.post(
        SUBSCRIBE,
        body(profile={"phone_number": number}, subscriptions={"sms": {"marketing": True}}),
        format="json",
    )
    assert "phone_number" in _errors(response)["profile"]
    assert not Profile.objects.exists()


@pytest.mark.parametrize(
    "number",
    ["+44 7400 123456, +44 7400 123457", "+447400123456 / +447400123457"],
)
def test_two_numbers_in_one_field_are_refused(api, fake, number):
    response = api.post(
        SUBSCRIBE,
        body(profile={"phone_number": number}, subscriptions={"sms": {"marketing": True}}),
        format="json",
    )
    assert "phone_number" in _errors(response)["profile"]


@pytest.mark.parametrize(
    "number, country",
    [
        ("tel:+44-7400-123456", None),
        ("tel:07400123456;phone-context=+44", None),
        ("+44 (0)7400 123456", None),
        ("07400 123456", "GB"),
        ("+44.7400.123.456", None),
    ],
)
def test_tel_uris_and_national_or_spaced_formats_normalise_to_e164(api, fake, number, country):
    response = api.post(
        SUBSCRIBE,
        body(
            profile={"phone_number": number, "country": country},
            subscriptions={"sms": {"marketing": True}},
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Profile.objects.get().phone_number == "+447400123456"


def test_the_phone_number_operation_refuses_an_extension(api, fake):
    profile = Profile.objects.create(email="ada@example.com")
    response = api.post(
        f"/api/consent/profiles/{profile.pk}/phone-number/",
        {"phone_number": "+447400123456 ext. 12"},
        format="json",
    )
    assert "phone_number" in _errors(response)


@pytest.mark.parametrize(
    "data, field",
    [
        ({"email": "ada@localhost", "email_marketing": "on"}, "email"),
        (
            {
                "email": "ada@example.com",
                "phone_number": "+447400123456 ext. 12",
                "sms_marketing": "on",
            },
            "phone_number",
        ),
    ],
)
def test_the_drop_in_form_applies_the_same_rules(client, fake, data, field):
    from klaviyo_consent.views import FORM_KEY

    response = client.post("/consent/signup/", data)
    assert response.status_code == 302
    assert client.session[FORM_KEY]["errors"][field]
    assert not ConsentEvent.objects.exists()


def test_a_webhook_profile_id_outside_klaviyos_alphabet_is_not_read_back():
    from klaviyo_consent.services.webhooks import extract_identifiers

    payload = {
        "profile_id": '01GSQ"),equals(email,"x',
        "data": {"type": "profile", "id": "01GSQPBF74KQ5YTDEPP41T1BZH"},
        "profile": {"data": {"type": "profile", "id": "../../lists"}},
    }
    assert extract_identifiers(payload).profile_ids == {"01GSQPBF74KQ5YTDEPP41T1BZH"}
