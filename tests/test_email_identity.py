"""One mailbox is one profile: emails are compared in one normal form (docs/security.md)."""

from __future__ import annotations

import pytest

from klaviyo_consent.models import Profile, normalize_email
from tests.test_api_subscribe import SUBSCRIBE
from tests.test_api_subscribe import body as _body

pytestmark = pytest.mark.django_db


def body(**overrides):
    return _body(subscriptions={"email": {"marketing": True}}, **overrides)


@pytest.mark.parametrize(
    "given, stored",
    [
        ("Ada@Example.com", "ada@example.com"),
        ("  ada@example.com\n", "ada@example.com"),
        ("ada@ｅｘａｍｐｌｅ．ｃｏｍ", "ada@example.com"),  # full-width domain and dot
        ("ａｄａ@example.com", "ada@example.com"),  # full-width local part
        ("ada@bücher.example", "ada@xn--bcher-kva.example"),
        ("ada@BÜCHER.example", "ada@xn--bcher-kva.example"),
        ("ada@xn--bcher-kva.example", "ada@xn--bcher-kva.example"),
        ("ada@XN--BCHER-KVA.example", "ada@xn--bcher-kva.example"),
        ("ada@bu\u0308cher.example", "ada@xn--bcher-kva.example"),  # decomposed ü
        ("ada@straße.de", "ada@xn--strae-oqa.de"),  # IDNA 2008: ß is not ss
        ("straße@example.com", "straße@example.com"),  # local part is lower-cased only
    ],
)
def test_an_email_is_stored_in_one_normal_form(given, stored):
    assert normalize_email(given) == stored


def test_ss_and_sharp_s_domains_stay_two_domains():
    assert normalize_email("ada@strasse.de") != normalize_email("ada@straße.de")


def test_a_domain_idna_cannot_encode_is_kept_for_the_validator():
    assert normalize_email("ada@exa mple.com") == "ada@exa mple.com"


@pytest.mark.parametrize(
    "variant",
    ["ada@ｅｘａｍｐｌｅ.com", "ADA@EXAMPLE.COM", "ａｄａ@example.com"],
)
def test_the_same_mailbox_in_another_form_is_the_same_profile(api, fake, variant):
    first = api.post(SUBSCRIBE, body(profile={"email": "ada@example.com"}), format="json")
    again = api.post(SUBSCRIBE, body(profile={"email": variant}), format="json")
    assert first.status_code == again.status_code == 201, again.content
    assert Profile.objects.count() == 1
    assert first.data["profile"]["id"] == again.data["profile"]["id"]


def test_an_idn_domain_and_its_punycode_are_one_profile(api, fake):
    first = api.post(SUBSCRIBE, body(profile={"email": "ada@bücher.example"}), format="json")
    again = api.post(SUBSCRIBE, body(profile={"email": "ada@xn--bcher-kva.example"}), format="json")
    assert first.status_code == again.status_code == 201, again.content
    assert Profile.objects.get().email == "ada@xn--bcher-kva.example"


def test_the_profiles_filter_finds_a_mailbox_in_any_form(api, fake):
    api.post(SUBSCRIBE, body(profile={"email": "ada@bücher.example"}), format="json")
    found = api.get("/api/consent/profiles/", {"email": "ADA@BÜCHER.example"}).json()
    assert [p["email"] for p in found["results"]] == ["ada@xn--bcher-kva.example"]


def test_an_email_longer_than_254_once_its_domain_is_punycode_is_a_400(api, fake):
    label = "ü" * 20 + "a" * 20
    email = "a" * 20 + "@" + ".".join([label] * 5) + ".de"
    assert len(email) <= 254 < len(normalize_email(email))
    response = api.post(SUBSCRIBE, body(profile={"email": email}), format="json")
    assert response.status_code == 400
    assert "254" in str(response.json()["profile"]["email"])
    assert Profile.objects.count() == 0
