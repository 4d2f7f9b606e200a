"""Klaviyo changes SMS consent by itself; the fake models each, the ledger records Klaviyo's why."""

from __future__ import annotations

import pytest

from klaviyo_consent.models import ConsentEvent
from tests.helpers import PHONE, ledger, pull, subscribe

pytestmark = pytest.mark.django_db


def _inbound_sms(profile_id: int) -> list[ConsentEvent]:
    return list(
        ConsentEvent.objects.filter(
            profile_id=profile_id, method="klaviyo", channel="sms", purpose="marketing"
        )
    )


@pytest.mark.parametrize("keyword", ["STOP", "END", "QUIT"])
def test_an_opt_out_keyword_reply_is_recorded_with_the_keyword_klaviyo_reports(
    api, fake, on_commit, keyword
):
    profile_id = subscribe(api, on_commit)
    fake.reply_stop(PHONE, keyword=keyword)
    pull(profile_id)
    [event] = _inbound_sms(profile_id)
    assert event.consent == "UNSUBSCRIBED"
    assert event.method_detail == f"TEXT / {keyword}"
    assert event.klaviyo_data["method"] == "TEXT"
    assert event.klaviyo_data["method_detail"] == keyword
    leaf = ledger(api, profile_id)["sms"]["marketing"]
    assert leaf["can_receive"] is False
    assert leaf["cannot_receive_reason"] == f"unsubscribed in Klaviyo (TEXT / {keyword})"


def test_the_fake_refuses_a_reply_that_is_not_an_opt_out_keyword(fake):
    fake.add_profile(phone_number=PHONE)
    with pytest.raises(ValueError, match="keyword"):
        fake.reply_stop(PHONE, keyword="HELLO")


@pytest.mark.parametrize(
    ("reason", "detail"),
    [
        ("PERMANENT_FAILURE", "permanent delivery failure"),
        ("CARRIER_DEACTIVATION", "Carrier Deactivation"),
    ],
)
def test_sms_consent_klaviyo_removes_itself_carries_klaviyos_reason(
    api, fake, on_commit, reason, detail
):
    profile_id = subscribe(
        api,
        on_commit,
        subscriptions={"sms": {"marketing": True, "transactional": True}},
    )
    fake.remove_sms_consent(PHONE, reason)
    pull(profile_id)
    inbound = ConsentEvent.objects.filter(profile_id=profile_id, method="klaviyo", channel="sms")
    assert {(e.purpose, e.consent, e.method_detail) for e in inbound} == {
        ("marketing", "UNSUBSCRIBED", f"{reason} / {detail}"),
        ("transactional", "UNSUBSCRIBED", f"{reason} / {detail}"),
    }
    assert all(e.klaviyo_data["method"] == reason for e in inbound)
    assert (
        fake.get_profile(phone_number=PHONE)["subscriptions"]["sms"]["marketing"][
            "can_receive_sms_marketing"
        ]
        is False
    )


def test_a_phone_change_on_klaviyos_side_resets_sms_consent_and_the_ledger_follows(
    api, fake, on_commit
):
    profile_id = subscribe(api, on_commit)
    fake.change_phone_number("ada@example.com", "+447400654321")
    shown = fake.get_profile(email="ada@example.com")
    assert shown["phone_number"] == "+447400654321"
    assert shown["subscriptions"]["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert fake.get_profile(phone_number=PHONE) is None

    pull(profile_id)
    [event] = _inbound_sms(profile_id)
    assert event.consent == "NEVER_SUBSCRIBED"
    assert event.method_detail == "Klaviyo shows no consent (NEVER_SUBSCRIBED)"
    assert event.phone_number == PHONE  # the number the ledger knew; the event keeps it
    leaf = ledger(api, profile_id)["sms"]["marketing"]
    assert leaf["consent"] == "NEVER_SUBSCRIBED" and leaf["can_receive"] is False
    # The email consent is untouched.
    assert ledger(api, profile_id)["email"]["marketing"]["can_receive"] is True
