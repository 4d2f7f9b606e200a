"""The fake's job answers that differ by revision and account (issue 7): an account's SMS
sending numbers, the 2024-05-15 refusal that replaced the silent drop, and the announced
``X-Klaviyo-Partial-Failure`` header."""

from __future__ import annotations

import pytest

from klaviyo_consent.testing.fake import (
    INVALID_PHONE_DETAIL,
    PARTIAL_FAILURE_HEADER,
    FakeKlaviyo,
)
from tests.helpers import FAKE_HEADERS as HEADERS
from tests.helpers import FAKE_KEY as KEY
from tests.helpers import SUBSCRIBE_JOBS as SUBSCRIBE
from tests.helpers import post_to_fake as post
from tests.helpers import profile_entry, subscribe_body

US_PHONE = "+12025550143"
POINTER = "/data/attributes/profiles/data/0/attributes/phone_number"


def account(**kwargs) -> FakeKlaviyo:
    return FakeKlaviyo(api_key=KEY, default_opt_in_process="single_opt_in", **kwargs)


def sms_signup(fake: FakeKlaviyo, revision: str = "2026-07-15"):
    entry = profile_entry("max@example.org", US_PHONE, sms_marketing=True)
    return post(fake, SUBSCRIBE, subscribe_body([entry]), {**HEADERS, "revision": revision})


@pytest.mark.parametrize("revision", ["2024-05-15", "2026-07-15"])
def test_no_sending_number_for_the_region_is_refused_with_a_pointer_from_2024_05_15(revision):
    fake = account(sms_sending_countries=["GB"])
    answer = sms_signup(fake, revision)
    assert answer.status == 400
    [error] = answer.json["errors"]
    assert error["source"]["pointer"] == POINTER
    assert "(US)" in error["detail"] and "sending number" in error["detail"]
    assert fake.profile_count == 0


def test_no_sending_number_before_2024_05_15_drops_the_sms_silently():
    fake = account(sms_sending_countries=["GB"])
    answer = sms_signup(fake, "2024-02-15")
    assert answer.status == 202
    profile = fake.get_profile(email="max@example.org")
    assert profile["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"


def test_an_account_with_a_sending_number_applies_the_sms():
    fake = account(sms_sending_countries=["US"])
    assert sms_signup(fake).status == 202
    profile = fake.get_profile(phone_number=US_PHONE)
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"


def test_a_country_klaviyo_does_not_text_is_still_dropped_silently_on_new_revisions():
    fake = account(sms_countries=["GB"], sms_sending_countries=["GB"])
    assert sms_signup(fake).status == 202
    profile = fake.get_profile(email="max@example.org")
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"


def test_an_invalid_phone_beside_a_valid_email_is_ignored_with_a_partial_failure_header():
    fake = account(partial_failure_header=True)
    fake.rejected_phone_numbers.add(US_PHONE)
    answer = sms_signup(fake)
    assert answer.status == 202
    assert answer.headers[PARTIAL_FAILURE_HEADER] == "phone_number"
    profile = fake.get_profile(email="max@example.org")
    assert profile["phone_number"] is None
    assert profile["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"


def test_an_invalid_phone_without_an_email_is_still_refused():
    fake = account(partial_failure_header=True)
    fake.rejected_phone_numbers.add(US_PHONE)
    entry = profile_entry(None, US_PHONE, email_marketing=False, sms_marketing=True)
    answer = post(fake, SUBSCRIBE, subscribe_body([entry]))
    assert answer.status == 400
    assert answer.json["errors"][0]["detail"] == INVALID_PHONE_DETAIL
    assert PARTIAL_FAILURE_HEADER not in answer.headers
