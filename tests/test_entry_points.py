"""Each entry point builds its service request in one place: the API serializer, the drop-in
consent form, the CSV import's row and the demo seeds (issue 9, "Thin entry points")."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from example_project.signup.management.commands.seed_demo import SEED_DEFAULTS, SEEDS
from klaviyo_consent.api.serializers import ConsentRequestSerializer
from klaviyo_consent.choices import Consent, Method
from klaviyo_consent.forms import ConsentForm
from klaviyo_consent.management.commands.klaviyo_consent_import import request_from_row
from klaviyo_consent.services.ledger import ConsentRequest, Evidence
from klaviyo_consent.services.signup import SignupRequest

EVIDENCE = Evidence(ip_address="192.0.2.1", user_agent="test", page_url="https://shop.test/")


def _unset(request: ConsentRequest) -> list[str]:
    """The request's fields still at their defaults."""
    unset = []
    for f in dataclasses.fields(request):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        if getattr(request, f.name) == default:
            unset.append(f.name)
    return unset


def test_the_serializer_maps_every_field_of_the_body_to_the_request():
    serializer = ConsentRequestSerializer(
        data={
            "profile": {
                "email": "Ada@Example.com",
                "phone_number": "07400 900123",
                "external_id": "crm-1",
                "country": "GB",
            },
            "subscriptions": {"email": {"marketing": True}, "sms": {"transactional": True}},
            "list_id": "DemoLs",
            "method": Method.FORM,
            "method_detail": "footer",
            "custom_source": "Footer signup",
            "consent_text": "Yes, send me offers.",
            "consent_text_id": 7,
            "consented_at": "2024-05-01T12:00:00Z",
            "historical_import": True,
        }
    )
    assert serializer.is_valid(), serializer.errors
    request = serializer.to_request(
        consent=Consent.UNSUBSCRIBED, evidence=EVIDENCE, recorded_by="operator"
    )
    assert _unset(request) == []
    assert request == ConsentRequest(
        consent=Consent.UNSUBSCRIBED,
        subscriptions={"email": {"marketing": True}, "sms": {"transactional": True}},
        email="Ada@Example.com",
        phone_number="07400 900123",
        external_id="crm-1",
        country="GB",
        list_id="DemoLs",
        method=Method.FORM,
        method_detail="footer",
        custom_source="Footer signup",
        consent_text="Yes, send me offers.",
        consent_text_id=7,
        consented_at=datetime(2024, 5, 1, 12, tzinfo=UTC),
        historical_import=True,
        evidence=EVIDENCE,
        recorded_by="operator",
    )


@pytest.mark.parametrize("reader", [False, True])
def test_the_serializer_refuses_an_external_id_alone_unless_the_caller_may_read_profiles(reader):
    data = {"profile": {"external_id": "crm-1"}, "subscriptions": {"email": {"marketing": True}}}
    serializer = ConsentRequestSerializer(data=data, context={"can_read_profiles": reader})
    assert serializer.is_valid() is reader
    if not reader:
        assert serializer.errors == {
            "profile": {"external_id": ["Give an email or a phone_number with external_id."]}
        }


@pytest.mark.django_db
def test_the_consent_form_builds_a_signup_with_the_boxes_ticked_and_the_words_shown():
    texts = ConsentForm().texts
    form = ConsentForm(
        {
            "email": "Ada@Example.com",
            "country": "GB",
            "phone_number": "07400 900123",
            "sms_marketing": "on",
            "email_text": str(texts["email"].pk),
            "sms_text": str(texts["sms"].pk),
        }
    )
    assert form.is_valid(), form.errors
    assert form.to_signup(evidence=EVIDENCE) == SignupRequest(
        email="ada@example.com",
        phone_number="07400 900123",
        country="GB",
        channels=frozenset({"sms"}),
        texts={"email": texts["email"], "sms": texts["sms"]},
        evidence=EVIDENCE,
    )


def test_an_import_row_maps_every_column_to_the_request():
    row = {
        "email": "ada@example.com",
        "phone_number": "07400 900123",
        "external_id": "crm-1",
        "country": "GB",
        "email_marketing": "yes",
        "sms_marketing": "no",
        "sms_transactional": "1",
        "consented_at": "05/01/2024 12:00",
        "consent_text": "Yes, send me offers.",
        "method_detail": "",
    }
    request = request_from_row(
        row,
        consent=Consent.SUBSCRIBED,
        list_id="DemoLs",
        custom_source="Spring fair",
        historical_import=True,
        zone=UTC,
        source="fair.csv",
    )
    assert request == ConsentRequest(
        consent=Consent.SUBSCRIBED,
        subscriptions={"email": {"marketing": True}, "sms": {"transactional": True}},
        email="ada@example.com",
        phone_number="07400 900123",
        external_id="crm-1",
        country="GB",
        list_id="DemoLs",
        method=Method.IMPORT,
        method_detail="CSV fair.csv",
        custom_source="Spring fair",
        consent_text="Yes, send me offers.",
        consented_at=datetime(2024, 5, 1, 12, tzinfo=UTC),
        historical_import=True,
        evidence=Evidence(page_url="file:fair.csv"),
    )


@pytest.mark.parametrize("seed", SEEDS, ids=[s["profile"]["email"] for s in SEEDS])
def test_every_demo_seed_is_a_subscribe_body_the_api_accepts(seed):
    body = {**SEED_DEFAULTS, **seed}
    if body.get("historical_import"):
        body["consented_at"] = datetime(2024, 5, 1, tzinfo=UTC)
    serializer = ConsentRequestSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    request = serializer.to_request(consent=Consent.SUBSCRIBED, evidence=EVIDENCE, recorded_by=None)
    assert request.email == seed["profile"]["email"]
    assert request.method == (Method.IMPORT if seed.get("historical_import") else Method.ADMIN)
