"""The fake Klaviyo behaves like Klaviyo where this app depends on it (no Django needed)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from openapi_client.models.get_list_response_collection import GetListResponseCollection
from openapi_client.models.get_profile_response import GetProfileResponse
from openapi_client.models.get_profile_response_collection import GetProfileResponseCollection

from klaviyo_consent.testing.fake import (
    DEFAULT_BASE_URL,
    DEFAULT_SMS_COUNTRIES,
    INVALID_PHONE_DETAIL,
    SMS_CONFIGURATION_REQUIRED_DETAIL,
    FakeKlaviyo,
    FakeKlaviyoAdapter,
    FakeResponse,
    get_default_fake,
    parse_filter,
    serve,
    set_default_fake,
)
from tests.helpers import FAKE_HEADERS as HEADERS
from tests.helpers import FAKE_KEY as KEY
from tests.helpers import SUBSCRIBE_JOBS as SUBSCRIBE
from tests.helpers import post_to_fake as post
from tests.helpers import profile_entry, subscribe_body

UNSUBSCRIBE = "/api/profile-subscription-bulk-delete-jobs"
NOW = datetime(2026, 7, 20, 12, 0, tzinfo=UTC)


class FakeClock:
    """A monotonic clock the test moves by hand, so rate-limit windows are deterministic."""

    def __init__(self, start: float = 1000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def fake() -> FakeKlaviyo:
    return FakeKlaviyo(api_key=KEY, default_opt_in_process="single_opt_in", validate_responses=True)


@pytest.fixture
def session(fake: FakeKlaviyo) -> requests.Session:
    """A real requests.Session whose Klaviyo traffic is answered by the fake."""
    http = requests.Session()
    http.mount(DEFAULT_BASE_URL, FakeKlaviyoAdapter(fake))
    http.headers.update(HEADERS)
    return http


def unsubscribe_body(
    profiles: list[dict[str, Any]], *, list_id: str | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": profiles}},
    }
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def unsubscribe_entry(
    email: str | None = None, phone: str | None = None, *, sms: bool = False
) -> dict:
    subscriptions: dict[str, Any] = {}
    if email:
        subscriptions["email"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
    if sms:
        subscriptions["sms"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
    attributes: dict[str, Any] = {"subscriptions": subscriptions}
    if email:
        attributes["email"] = email
    if phone:
        attributes["phone_number"] = phone
    return {"type": "profile", "attributes": attributes}


def get(fake: FakeKlaviyo, path_and_query: str, headers: dict[str, str] = HEADERS) -> FakeResponse:
    return fake.handle("GET", path_and_query, headers, None)


def consent_of(
    fake: FakeKlaviyo, email: str | None = None, phone: str | None = None
) -> dict[str, Any]:
    found = fake.get_profile(email=email, phone_number=phone)
    assert found is not None
    return found["subscriptions"]


# --- request checks ---------------------------------------------------------------------------


def test_sdk_validation_rejects_a_bad_consent_value_with_a_pointer(fake: FakeKlaviyo) -> None:
    bad = profile_entry("d@example.com")
    bad["attributes"]["subscriptions"]["email"]["marketing"]["consent"] = "YES"
    body = subscribe_body([profile_entry(f"{n}@example.com") for n in "abc"] + [bad])

    answer = post(fake, SUBSCRIBE, body)

    assert answer.status == 400
    (error,) = answer.json["errors"]
    assert error["code"] == "invalid"
    assert error["status"] == 400
    assert (
        error["source"]["pointer"]
        == "/data/attributes/profiles/data/3/attributes/subscriptions/email/marketing/consent"
    )
    assert "SUBSCRIBED" in error["detail"]
    assert set(error) >= {"id", "code", "title", "detail", "source"}
    assert fake.profile_count == 0


def test_sdk_validation_points_at_a_wrong_job_type(fake: FakeKlaviyo) -> None:
    body = subscribe_body([profile_entry("a@example.com")])
    body["data"]["type"] = "profile-subscription-bulk-delete-job"

    answer = post(fake, SUBSCRIBE, body)

    assert answer.status == 400
    assert answer.json["errors"][0]["source"]["pointer"] == "/data/type"


def test_malformed_json_is_a_400(fake: FakeKlaviyo) -> None:
    answer = fake.handle("POST", SUBSCRIBE, HEADERS, b"{not json")

    assert answer.status == 400
    assert answer.json["errors"][0]["code"] == "parse_error"


def test_missing_key_is_401_and_a_wrong_key_is_never_echoed(fake: FakeKlaviyo) -> None:
    missing = get(fake, "/api/lists", {"revision": "2026-07-15"})
    wrong = get(fake, "/api/lists", {**HEADERS, "Authorization": "Klaviyo-API-Key pk_wrong_secret"})

    assert missing.status == 401
    assert wrong.status == 401
    assert wrong.json["errors"][0]["code"] == "authentication_failed"
    assert b"pk_wrong_secret" not in wrong.body


def test_any_key_is_accepted_when_none_is_configured() -> None:
    fake = FakeKlaviyo()

    answer = get(fake, "/api/lists", {**HEADERS, "Authorization": "Klaviyo-API-Key anything"})

    assert answer.status == 200


@pytest.mark.parametrize("revision", [None, "latest", "2026-7-15", "2026-07-15.pre.beta"])
def test_missing_or_malformed_revision_is_a_400_naming_the_header(
    fake: FakeKlaviyo, revision: str | None
) -> None:
    headers = {key: value for key, value in HEADERS.items() if key != "revision"}
    if revision is not None:
        headers["revision"] = revision

    answer = get(fake, "/api/lists", headers)

    assert answer.status == 400
    assert answer.json["errors"][0]["source"] == {"parameter": "revision"}


def test_beta_revision_suffix_is_accepted(fake: FakeKlaviyo) -> None:
    assert get(fake, "/api/lists", {**HEADERS, "revision": "2026-07-15.pre"}).status == 200


def test_unknown_path_is_404_and_wrong_method_is_405(fake: FakeKlaviyo) -> None:
    unknown = get(fake, "/api/v2/list/abc/subscribe")
    wrong_method = fake.handle("DELETE", "/api/profiles", HEADERS, None)

    assert unknown.status == 404
    assert unknown.json["errors"][0]["code"] == "not_found"
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "GET"


# --- subscribe --------------------------------------------------------------------------------


def test_subscribe_answers_202_with_an_empty_body_and_consent_reads_back(fake: FakeKlaviyo) -> None:
    list_id = fake.add_list("Y6nRLr", "Newsletter")
    body = subscribe_body(
        [profile_entry("Ann@Example.com", "+13239169023", sms_marketing=True)],
        list_id=list_id,
        custom_source="Checkout",
    )

    answer = post(fake, SUBSCRIBE, body)

    assert answer.status == 202
    assert answer.body == b""
    found = get(
        fake,
        '/api/profiles?filter=equals(email,"ann@example.com")&additional-fields[profile]=subscriptions',
    )
    (profile,) = found.json["data"]
    email = profile["attributes"]["subscriptions"]["email"]["marketing"]
    sms = profile["attributes"]["subscriptions"]["sms"]
    assert email["consent"] == "SUBSCRIBED"
    assert email["can_receive_email_marketing"] is True
    assert email["method"] == "API"
    assert email["custom_method_detail"] == "Checkout"
    assert email["double_optin"] is False
    assert email["consent_timestamp"].endswith("+00:00")
    assert sms["marketing"]["consent"] == "SUBSCRIBED"
    assert sms["marketing"]["can_receive_sms_marketing"] is True
    assert sms["transactional"] == {
        "can_receive_sms_transactional": False,
        "consent": "NEVER_SUBSCRIBED",
        "consent_timestamp": None,
        "method": None,
        "method_detail": None,
        "last_updated": None,
    }
    assert len(profile["id"]) == 26 and profile["id"].isalnum() and profile["id"].isupper()
    assert fake.list_members(list_id) == [profile["id"]]
    assert fake.applied[("ann@example.com", "email", "marketing", "SUBSCRIBED")] == 1
    assert fake.jobs[-1]["custom_source"] == "Checkout"
    assert fake.counts["bulk_subscribe_profiles"] == 1


def test_subscriptions_appear_only_when_asked_for_with_additional_fields(fake: FakeKlaviyo) -> None:
    post(fake, SUBSCRIBE, subscribe_body([profile_entry("a@example.com")]))

    plain = get(fake, "/api/profiles").json["data"][0]["attributes"]
    extended = get(fake, "/api/profiles?additional-fields%5Bprofile%5D=subscriptions").json["data"][
        0
    ]["attributes"]

    assert "subscriptions" not in plain
    assert extended["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"


def test_fresh_profile_has_klaviyos_never_subscribed_shape(fake: FakeKlaviyo) -> None:
    fake.add_profile(email="new@example.com", phone_number="+447700900123")

    subscriptions = consent_of(fake, "new@example.com")

    assert subscriptions["email"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert subscriptions["email"]["marketing"]["can_receive_email_marketing"] is True
    assert subscriptions["email"]["marketing"]["suppression"] == []
    assert subscriptions["sms"]["marketing"]["can_receive_sms_marketing"] is False
    assert subscriptions["sms"]["marketing"]["consent_timestamp"] is None


def test_phone_only_profile_without_sms_configuration_is_refused_whole() -> None:
    fake = FakeKlaviyo(sms_enabled=False, default_opt_in_process="single_opt_in")
    body = subscribe_body(
        [
            profile_entry("ok@example.com"),
            profile_entry(phone="+13239169023", email_marketing=False, sms_marketing=True),
        ]
    )

    answer = post(fake, SUBSCRIBE, body)

    assert answer.status == 400
    (error,) = answer.json["errors"]
    assert (
        error["detail"] == "SMS configuration is required to subscribe phone number only profiles."
    )
    assert error["detail"] == SMS_CONFIGURATION_REQUIRED_DETAIL
    assert error["source"]["pointer"] == "/data/attributes/profiles/data/1/attributes/phone_number"
    assert fake.profile_count == 0


def test_sms_part_is_silently_skipped_without_sms_configuration_when_email_is_given() -> None:
    fake = FakeKlaviyo(sms_enabled=False, default_opt_in_process="single_opt_in")

    answer = post(
        fake,
        SUBSCRIBE,
        subscribe_body([profile_entry("a@example.com", "+13239169023", sms_marketing=True)]),
    )

    assert answer.status == 202
    subscriptions = consent_of(fake, "a@example.com")
    assert subscriptions["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert subscriptions["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"


def test_unsupported_sms_country_is_silently_not_applied(fake: FakeKlaviyo) -> None:
    slovenian = "+38640123456"

    answer = post(
        fake,
        SUBSCRIBE,
        subscribe_body([profile_entry("si@example.com", slovenian, sms_marketing=True)]),
    )

    assert answer.status == 202
    profile = fake.get_profile(email="si@example.com")
    assert profile is not None
    assert profile["phone_number"] == slovenian
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert profile["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert not any(key[1] == "sms" for key in fake.applied)


def test_puerto_rico_shares_plus_one_but_is_not_a_us_sms_country(fake: FakeKlaviyo) -> None:
    post(
        fake,
        SUBSCRIBE,
        subscribe_body([profile_entry("pr@example.com", "+17875551234", sms_marketing=True)]),
    )

    assert consent_of(fake, "pr@example.com")["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"


def test_phone_only_profile_in_an_unsupported_country_is_refused(fake: FakeKlaviyo) -> None:
    answer = post(
        fake,
        SUBSCRIBE,
        subscribe_body(
            [profile_entry(phone="+38640123456", email_marketing=False, sms_marketing=True)]
        ),
    )

    assert answer.status == 400
    assert answer.json["errors"][0]["detail"] == SMS_CONFIGURATION_REQUIRED_DETAIL


def test_sms_countries_are_configurable() -> None:
    fake = FakeKlaviyo(sms_countries=["US", "SI"], default_opt_in_process="single_opt_in")

    post(
        fake,
        SUBSCRIBE,
        subscribe_body([profile_entry("si@example.com", "+38640123456", sms_marketing=True)]),
    )

    assert consent_of(fake, "si@example.com")["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    assert "SI" not in DEFAULT_SMS_COUNTRIES


@pytest.mark.parametrize(
    "phone", ["13239169023", "+1 323 916 9023", "+15555555555", "+4407700900123"]
)
def test_phone_not_in_valid_e164_is_rejected_with_klaviyos_message(
    fake: FakeKlaviyo, phone: str
) -> None:
    answer = post(
        fake,
        SUBSCRIBE,
        subscribe_body([profile_entry("a@example.com"), profile_entry("b@example.com", phone)]),
    )

    assert answer.status == 400
    (error,) = answer.json["errors"]
    assert error["detail"] == INVALID_PHONE_DETAIL
    assert error["source"]["pointer"] == "/data/attributes/profiles/data/1/attributes/phone_number"
    assert fake.profile_count == 0


def test_profile_without_email_or_phone_is_rejected(fake: FakeKlaviyo) -> None:
    answer = post(fake, SUBSCRIBE, subscribe_body([profile_entry()]))

    assert answer.status == 400
    assert (
        answer.json["errors"][0]["source"]["pointer"]
        == "/data/attributes/profiles/data/0/attributes"
    )


def test_rejected_emails_answer_one_error_per_bad_profile_and_apply_nothing(
    fake: FakeKlaviyo,
) -> None:
    fake.rejected_emails.update({"bounce@example.com", "Typo@Example.com"})
    body = subscribe_body(
        [
            profile_entry("good@example.com"),
            profile_entry("bounce@example.com"),
            profile_entry("fine@example.com"),
            profile_entry("typo@example.com"),
        ]
    )

    answer = post(fake, SUBSCRIBE, body)

    assert answer.status == 400
    pointers = [error["source"]["pointer"] for error in answer.json["errors"]]
    assert pointers == [
        "/data/attributes/profiles/data/1/attributes/email",
        "/data/attributes/profiles/data/3/attributes/email",
    ]
    assert {error["detail"] for error in answer.json["errors"]} == {"Invalid email address"}
    assert fake.get_profile(email="good@example.com") is None
    assert fake.jobs == []


def test_more_than_1000_profiles_is_rejected(fake: FakeKlaviyo) -> None:
    body = subscribe_body([profile_entry(f"p{n}@example.com") for n in range(1001)])

    answer = post(fake, SUBSCRIBE, body)

    assert answer.status == 400
    assert answer.json["errors"][0]["source"]["pointer"] == "/data/attributes/profiles/data"
    assert fake.profile_count == 0


def test_exactly_1000_profiles_are_accepted(fake: FakeKlaviyo) -> None:
    body = json.dumps(
        subscribe_body(
            [
                profile_entry(f"p{n}@example.com", f"+1212555{n:04d}", sms_marketing=True)
                for n in range(1000)
            ]
        )
    ).encode()
    fake.enforce_rate_limits = False

    answer = fake.handle("POST", SUBSCRIBE, HEADERS, body)
    assert answer.status == 202
    assert fake.profile_count == 1000
    # How fast the fake takes a full job is a benchmark's question (push_throughput.py), not
    # a test's: no wall-clock threshold here.


def test_unknown_list_is_a_404(fake: FakeKlaviyo) -> None:
    answer = post(
        fake, SUBSCRIBE, subscribe_body([profile_entry("a@example.com")], list_id="NoSuch")
    )

    assert answer.status == 404
    assert fake.profile_count == 0


def test_existing_profile_is_found_by_email_case_insensitively_and_gets_its_phone(
    fake: FakeKlaviyo,
) -> None:
    profile_id = fake.add_profile(email="Mixed@Example.com")

    post(
        fake,
        SUBSCRIBE,
        subscribe_body([profile_entry("mixed@example.com", "+13239169023", sms_marketing=True)]),
    )

    profile = fake.get_profile(phone_number="+13239169023")
    assert profile is not None
    assert profile["id"] == profile_id
    assert fake.profile_count == 1


# --- double opt-in ----------------------------------------------------------------------------


def test_double_opt_in_list_leaves_consent_pending_until_confirmed_by_email(
    fake: FakeKlaviyo,
) -> None:
    list_id = fake.add_list("Dbl", "VIP", "double_opt_in")
    body = subscribe_body(
        [profile_entry("d@example.com", "+13239169023", sms_marketing=True)],
        list_id=list_id,
        custom_source="Footer",
    )

    assert post(fake, SUBSCRIBE, body).status == 202

    assert consent_of(fake, "d@example.com")["email"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert {(item.channel, item.purpose, item.list_id) for item in fake.pending_confirmations} == {
        ("email", "marketing", list_id),
        ("sms", "marketing", list_id),
    }
    assert fake.list_members(list_id) == []

    assert fake.confirm_double_optin(email="d@example.com") == 1

    subscriptions = consent_of(fake, "d@example.com")
    assert subscriptions["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert subscriptions["email"]["marketing"]["double_optin"] is True
    assert subscriptions["email"]["marketing"]["custom_method_detail"] == "Footer"
    assert subscriptions["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert [(item.channel, item.purpose) for item in fake.pending_confirmations] == [
        ("sms", "marketing")
    ]
    assert len(fake.list_members(list_id)) == 1


def test_confirming_by_text_subscribes_sms_and_email(fake: FakeKlaviyo) -> None:
    list_id = fake.add_list("Dbl", "VIP", "double_opt_in")
    post(
        fake,
        SUBSCRIBE,
        subscribe_body(
            [profile_entry("t@example.com", "+13239169023", sms_marketing=True)], list_id=list_id
        ),
    )

    assert fake.confirm_double_optin(phone_number="+13239169023") == 2

    subscriptions = consent_of(fake, "t@example.com")
    assert subscriptions["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert subscriptions["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    assert subscriptions["sms"]["marketing"]["method"] == "TEXT"
    assert fake.pending_confirmations == []


def test_account_default_opt_in_applies_without_a_list() -> None:
    fake = FakeKlaviyo()

    post(fake, SUBSCRIBE, subscribe_body([profile_entry("a@example.com")]))

    assert fake.default_opt_in_process == "double_opt_in"
    assert consent_of(fake, "a@example.com")["email"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert len(fake.pending_confirmations) == 1


# --- historical import ------------------------------------------------------------------------


def test_consented_at_without_historical_import_is_rejected(fake: FakeKlaviyo) -> None:
    body = subscribe_body([profile_entry("a@example.com", consented_at="2024-01-01T00:00:00Z")])

    answer = post(fake, SUBSCRIBE, body)

    assert answer.status == 400
    pointer = answer.json["errors"][0]["source"]["pointer"]
    assert (
        pointer
        == "/data/attributes/profiles/data/0/attributes/subscriptions/email/marketing/consented_at"
    )


def test_historical_import_requires_consented_at_in_the_past() -> None:
    fake = FakeKlaviyo(now=NOW)
    missing = subscribe_body([profile_entry("a@example.com")], historical_import=True)
    future = subscribe_body(
        [profile_entry("a@example.com", consented_at="2026-08-01T00:00:00Z")],
        historical_import=True,
    )

    assert post(fake, SUBSCRIBE, missing).status == 400
    assert post(fake, SUBSCRIBE, future).status == 400
    assert fake.profile_count == 0


def test_historical_import_skips_double_opt_in_and_keeps_the_consent_time() -> None:
    fake = FakeKlaviyo(now=NOW)
    list_id = fake.add_list("Dbl", "VIP", "double_opt_in")
    body = subscribe_body(
        [profile_entry("old@example.com", consented_at="2021-03-04T05:06:07+00:00")],
        list_id=list_id,
        historical_import=True,
    )

    assert post(fake, SUBSCRIBE, body).status == 202

    marketing = consent_of(fake, "old@example.com")["email"]["marketing"]
    assert marketing["consent"] == "SUBSCRIBED"
    assert marketing["consent_timestamp"] == "2021-03-04T05:06:07+00:00"
    assert marketing["method"] == "BULK_IMPORT"
    assert fake.pending_confirmations == []
    assert fake.jobs[-1]["historical_import"] is True


# --- unsubscribe and suppressions -------------------------------------------------------------


def test_unsubscribe_revokes_consent_and_adds_an_unsubscribe_suppression(fake: FakeKlaviyo) -> None:
    post(
        fake,
        SUBSCRIBE,
        subscribe_body([profile_entry("u@example.com", "+13239169023", sms_marketing=True)]),
    )

    answer = post(
        fake,
        UNSUBSCRIBE,
        unsubscribe_body([unsubscribe_entry("u@example.com", "+13239169023", sms=True)]),
    )

    assert answer.status == 202
    assert answer.body == b""
    subscriptions = consent_of(fake, "u@example.com")
    email = subscriptions["email"]["marketing"]
    assert email["consent"] == "UNSUBSCRIBED"
    assert email["can_receive_email_marketing"] is False
    assert [item["reason"] for item in email["suppression"]] == ["UNSUBSCRIBE"]
    assert subscriptions["sms"]["marketing"]["consent"] == "UNSUBSCRIBED"
    assert subscriptions["sms"]["marketing"]["can_receive_sms_marketing"] is False
    assert fake.applied[("u@example.com", "email", "marketing", "UNSUBSCRIBED")] == 1


def test_unsubscribe_creates_unknown_profiles(fake: FakeKlaviyo) -> None:
    post(fake, UNSUBSCRIBE, unsubscribe_body([unsubscribe_entry("stranger@example.com")]))

    assert (
        consent_of(fake, "stranger@example.com")["email"]["marketing"]["consent"] == "UNSUBSCRIBED"
    )


def test_unsubscribe_takes_at_most_100_profiles(fake: FakeKlaviyo) -> None:
    body = unsubscribe_body([unsubscribe_entry(f"p{n}@example.com") for n in range(101)])

    assert post(fake, UNSUBSCRIBE, body).status == 400


def test_subscribe_lifts_an_unsubscribe_but_not_a_hard_bounce(fake: FakeKlaviyo) -> None:
    fake.add_profile(email="back@example.com")
    fake.click_unsubscribe("back@example.com")
    fake.suppress("bounced@example.com", "HARD_BOUNCE")

    post(
        fake,
        SUBSCRIBE,
        subscribe_body([profile_entry("back@example.com"), profile_entry("bounced@example.com")]),
    )

    back = consent_of(fake, "back@example.com")["email"]["marketing"]
    bounced = consent_of(fake, "bounced@example.com")["email"]["marketing"]
    assert back["consent"] == "SUBSCRIBED"
    assert back["suppression"] == []
    assert back["can_receive_email_marketing"] is True
    assert bounced["consent"] == "NEVER_SUBSCRIBED"
    assert [item["reason"] for item in bounced["suppression"]] == ["HARD_BOUNCE"]
    assert bounced["can_receive_email_marketing"] is False


def test_suppression_jobs_answer_a_job_and_unsuppress_lifts_only_user_suppressed(
    fake: FakeKlaviyo, session: requests.Session
) -> None:
    fake.suppress("bounced@example.com", "HARD_BOUNCE")
    suppress = {
        "data": {
            "type": "profile-suppression-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {"type": "profile", "attributes": {"email": "quiet@example.com"}},
                        {"type": "profile", "attributes": {"email": "bounced@example.com"}},
                    ]
                }
            },
        }
    }
    created = session.post(
        f"{DEFAULT_BASE_URL}/api/profile-suppression-bulk-create-jobs", json=suppress
    )
    assert created.status_code == 202
    job = created.json()["data"]
    assert job["type"] == "profile-suppression-bulk-create-job"
    assert job["attributes"]["status"] == "complete"
    assert job["attributes"]["total_count"] == 2
    fetched = session.get(
        f"{DEFAULT_BASE_URL}/api/profile-suppression-bulk-create-jobs/{job['id']}"
    )
    assert fetched.json()["data"]["id"] == job["id"]

    unsuppress = json.loads(json.dumps(suppress).replace("bulk-create-job", "bulk-delete-job"))
    unsuppress["data"]["attributes"]["profiles"]["data"].append(
        {"type": "profile", "attributes": {"email": "unknown@example.com"}}
    )
    removed = session.post(
        f"{DEFAULT_BASE_URL}/api/profile-suppression-bulk-delete-jobs", json=unsuppress
    )

    assert removed.status_code == 202
    assert removed.json()["data"]["attributes"]["skipped_count"] == 1
    assert consent_of(fake, "quiet@example.com")["email"]["marketing"]["suppression"] == []
    bounced = consent_of(fake, "bounced@example.com")["email"]["marketing"]["suppression"]
    assert [item["reason"] for item in bounced] == ["HARD_BOUNCE"]
    assert fake.get_profile(email="unknown@example.com") is None


# --- simulated people -------------------------------------------------------------------------


def test_reply_stop_revokes_sms_marketing_by_text(fake: FakeKlaviyo) -> None:
    post(
        fake,
        SUBSCRIBE,
        subscribe_body([profile_entry("s@example.com", "+13239169023", sms_marketing=True)]),
    )

    fake.reply_stop("+13239169023")

    sms = consent_of(fake, phone="+13239169023")["sms"]["marketing"]
    assert (sms["consent"], sms["method"], sms["method_detail"]) == ("UNSUBSCRIBED", "TEXT", "STOP")
    assert sms["can_receive_sms_marketing"] is False


def test_click_unsubscribe_uses_the_preference_page(fake: FakeKlaviyo) -> None:
    post(fake, SUBSCRIBE, subscribe_body([profile_entry("c@example.com")]))

    fake.click_unsubscribe("c@example.com")

    marketing = consent_of(fake, "c@example.com")["email"]["marketing"]
    assert (marketing["consent"], marketing["method"]) == ("UNSUBSCRIBED", "PREFERENCE_PAGE")
    assert [item["reason"] for item in marketing["suppression"]] == ["UNSUBSCRIBE"]


def test_report_spam_suppresses_with_a_spam_complaint(fake: FakeKlaviyo) -> None:
    post(fake, SUBSCRIBE, subscribe_body([profile_entry("spam@example.com")]))

    fake.report_spam("spam@example.com")

    marketing = consent_of(fake, "spam@example.com")["email"]["marketing"]
    assert marketing["consent"] == "UNSUBSCRIBED"
    assert [item["reason"] for item in marketing["suppression"]] == ["SPAM_COMPLAINT"]
    assert marketing["can_receive_email_marketing"] is False


def test_helpers_refuse_unknown_people(fake: FakeKlaviyo) -> None:
    with pytest.raises(LookupError):
        fake.reply_stop("+13239169023")


def test_reset_forgets_everything_but_settings(fake: FakeKlaviyo) -> None:
    post(fake, SUBSCRIBE, subscribe_body([profile_entry("a@example.com")]))

    fake.reset()

    assert fake.profile_count == 0
    assert fake.jobs == [] and fake.request_log == [] and not fake.counts and not fake.applied
    assert fake.api_key == KEY


# --- reading profiles and lists ---------------------------------------------------------------


def test_pagination_walks_250_profiles_in_pages_of_100_through_links_next(
    fake: FakeKlaviyo, session: requests.Session
) -> None:
    created = [fake.add_profile(email=f"p{n:03d}@example.com") for n in range(250)]

    seen: list[str] = []
    sizes = []
    url: str | None = f"{DEFAULT_BASE_URL}/api/profiles"
    params: dict[str, str] | None = {
        "page[size]": "100",
        "additional-fields[profile]": "subscriptions",
    }
    while url:
        page = session.get(url, params=params).json()
        params = None
        sizes.append(len(page["data"]))
        seen += [item["id"] for item in page["data"]]
        url = page["links"]["next"]
        if url:
            query = parse_qs(urlsplit(url).query)
            assert query["page[size]"] == ["100"]
            assert query["page[cursor]"]

    assert sizes == [100, 100, 50]
    assert seen == created
    assert fake.counts["get_profiles"] == 3


def test_page_size_over_100_is_rejected_naming_the_parameter(fake: FakeKlaviyo) -> None:
    answer = get(fake, "/api/profiles?page%5Bsize%5D=101")

    assert answer.status == 400
    assert answer.json["errors"][0]["source"] == {"parameter": "page[size]"}


def test_bad_cursor_is_rejected(fake: FakeKlaviyo) -> None:
    assert get(fake, "/api/profiles?page%5Bcursor%5D=garbage!").status == 400


def test_profiles_filter_by_any_phone_and_updated_since(
    fake: FakeKlaviyo, session: requests.Session
) -> None:
    fake.add_profile(email="a@example.com", phone_number="+13239169023")
    fake.add_profile(email="b@x.com", phone_number="+447700900123")
    fake.add_profile(email="c@example.com", external_id="ext-3")
    url = f"{DEFAULT_BASE_URL}/api/profiles"

    by_phone = session.get(
        url, params={"filter": 'any(phone_number,["+13239169023","+447700900123"])'}
    ).json()
    by_external = session.get(url, params={"filter": 'equals(external_id,"ext-3")'}).json()
    combined = session.get(
        url,
        params={
            "filter": 'and(greater-than(updated,2000-01-01T00:00:00Z),equals(email,"B@x.com"))'
        },
    ).json()
    future = session.get(
        url, params={"filter": "greater-than(updated,2999-01-01T00:00:00Z)"}
    ).json()

    assert [item["attributes"]["email"] for item in by_phone["data"]] == [
        "a@example.com",
        "b@x.com",
    ]
    assert [item["attributes"]["email"] for item in by_external["data"]] == ["c@example.com"]
    assert [item["attributes"]["email"] for item in combined["data"]] == ["b@x.com"]
    assert future["data"] == []


def test_unsupported_filter_is_a_400_naming_the_parameter(fake: FakeKlaviyo) -> None:
    answer = get(fake, '/api/profiles?filter=contains(email,"x")')

    assert answer.status == 400
    assert answer.json["errors"][0]["source"] == {"parameter": "filter"}


def test_filter_parser_reads_klaviyos_syntax() -> None:
    assert parse_filter(
        'and(equals(email,"a@b.com"),any(id,["1","2"]),greater-than(updated,2024-01-01T00:00:00Z))'
    ) == [
        ("equals", "email", "a@b.com"),
        ("any", "id", ["1", "2"]),
        ("greater-than", "updated", "2024-01-01T00:00:00Z"),
    ]


def test_get_profiles_validates_with_the_sdk_collection_model(fake: FakeKlaviyo) -> None:
    post(
        fake,
        SUBSCRIBE,
        subscribe_body([profile_entry("a@example.com", "+13239169023", sms_marketing=True)]),
    )
    fake.suppress("b@example.com")

    document = get(fake, "/api/profiles?additional-fields[profile]=subscriptions").json
    parsed = GetProfileResponseCollection.from_dict(document)

    assert parsed is not None and len(parsed.data) == 2
    marketing = parsed.data[0].attributes.subscriptions.email.marketing
    assert marketing.consent == "SUBSCRIBED"
    assert (
        parsed.data[1].attributes.subscriptions.email.marketing.suppression[0].reason
        == "HARD_BOUNCE"
    )


def test_get_profile_by_id_validates_and_unknown_id_is_404(fake: FakeKlaviyo) -> None:
    profile_id = fake.add_profile(email="a@example.com")

    found = get(fake, f"/api/profiles/{profile_id}/?additional-fields[profile]=subscriptions")
    missing = get(fake, "/api/profiles/01AAAAAAAAAAAAAAAAAAAAAAAA")

    assert GetProfileResponse.from_dict(found.json).data.id == profile_id
    assert missing.status == 404
    assert missing.json["errors"][0]["code"] == "not_found"


def test_get_lists_validates_with_the_sdk_collection_model(fake: FakeKlaviyo) -> None:
    fake.add_list("Y6nRLr", "Newsletter")
    fake.add_list("Dbl", "VIP", "double_opt_in")

    document = get(fake, "/api/lists").json
    parsed = GetListResponseCollection.from_dict(document)

    assert [item.attributes.opt_in_process for item in parsed.data] == [
        "single_opt_in",
        "double_opt_in",
    ]
    assert get(fake, "/api/lists/Dbl").json["data"]["attributes"]["name"] == "VIP"
    assert get(fake, "/api/lists/Nope").status == 404


# --- rate limits ------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_after_75_requests_in_a_second() -> None:
    clock = FakeClock(1000.2)
    fake = FakeKlaviyo()
    fake.clock = clock

    answers = [get(fake, "/api/profiles") for _ in range(76)]

    assert {answer.status for answer in answers[:75]} == {200}
    assert answers[74].headers["RateLimit-Remaining"] == "0"
    throttled = answers[75]
    assert throttled.status == 429
    assert throttled.headers["Retry-After"] == "1"
    assert "RateLimit-Limit" not in throttled.headers
    assert throttled.json["errors"][0]["code"] == "throttled"
    assert fake.throttled == 1

    clock.value = 1001.0
    assert get(fake, "/api/profiles").status == 200


def test_steady_window_throttles_at_750_a_minute_and_says_when_it_resets() -> None:
    clock = FakeClock(600.0)
    fake = FakeKlaviyo()
    fake.clock = clock

    for second in range(10):
        clock.value = 600.0 + second
        assert {get(fake, "/api/lists").status for _ in range(75)} == {200}
    clock.value = 610.5
    throttled = get(fake, "/api/lists")

    assert throttled.status == 429
    assert throttled.headers["Retry-After"] == "50"


def test_time_scale_shortens_windows_and_retry_after() -> None:
    clock = FakeClock(600.0)
    fake = FakeKlaviyo(time_scale=10)
    fake.clock = clock

    for step in range(10):
        clock.value = 600.0 + step * 0.1
        for _ in range(75):
            get(fake, "/api/lists")
    clock.value = 601.0
    throttled = get(fake, "/api/lists")

    assert throttled.status == 429
    assert throttled.headers["Retry-After"] == "5"  # 50 simulated seconds / 10
    assert fake.throttled == 1


def test_rate_limits_are_per_operation_and_can_be_switched_off() -> None:
    clock = FakeClock(1000.0)
    limited = FakeKlaviyo()
    limited.clock = clock
    for _ in range(75):
        get(limited, "/api/profiles")
    unlimited = FakeKlaviyo(enforce_rate_limits=False)

    assert get(limited, "/api/lists").status == 200
    assert get(limited, "/api/profiles").status == 429
    assert {get(unlimited, "/api/profiles").status for _ in range(100)} == {200}


# --- faults -----------------------------------------------------------------------------------


def test_fail_next_kinds_reach_a_real_requests_session(
    fake: FakeKlaviyo, session: requests.Session
) -> None:
    url = f"{DEFAULT_BASE_URL}{SUBSCRIBE}"
    body = subscribe_body([profile_entry("f@example.com")])
    fake.fail_next(503)
    fake.fail_next(429, retry_after=7)
    fake.fail_next(kind="connection")
    fake.fail_next(kind="timeout")

    unavailable = session.post(url, json=body)
    throttled = session.post(url, json=body)
    with pytest.raises(requests.ConnectionError):
        session.post(url, json=body)
    with pytest.raises(requests.Timeout):
        session.post(url, json=body)

    assert unavailable.status_code == 503
    assert unavailable.json()["errors"][0]["status"] == 503
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "7"
    assert fake.get_profile(email="f@example.com") is None
    assert fake.jobs == []

    accepted = session.post(url, json=body)

    assert accepted.status_code == 202
    assert accepted.content == b""
    assert fake.applied[("f@example.com", "email", "marketing", "SUBSCRIBED")] == 1
    assert [entry.status for entry in fake.request_log] == [503, 429, None, None, 202]
    assert fake.counts["bulk_subscribe_profiles"] == 5


def test_a_lost_answer_may_still_have_applied_the_job(
    fake: FakeKlaviyo, session: requests.Session
) -> None:
    fake.fail_next(kind="timeout", applies=True)

    with pytest.raises(requests.Timeout):
        session.post(
            f"{DEFAULT_BASE_URL}{SUBSCRIBE}",
            json=subscribe_body([profile_entry("lost@example.com")]),
        )

    assert consent_of(fake, "lost@example.com")["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert len(fake.jobs) == 1


def test_fail_next_can_carry_custom_errors(fake: FakeKlaviyo) -> None:
    errors = [
        {"id": "x", "code": "conflict", "title": "Conflict", "detail": "Duplicate", "source": {}}
    ]
    fake.fail_next(409, errors=errors, count=2)

    assert [get(fake, "/api/lists").json for _ in range(2)] == [{"errors": errors}] * 2
    assert get(fake, "/api/lists").status == 200


def test_random_faults_are_reproducible_with_a_seed_and_never_apply_the_job() -> None:
    def run(seed: int) -> list[int | None]:
        fake = FakeKlaviyo(
            fault_rate=0.5,
            seed=seed,
            enforce_rate_limits=False,
            default_opt_in_process="single_opt_in",
        )
        statuses = []
        for n in range(40):
            answer = post(fake, SUBSCRIBE, subscribe_body([profile_entry(f"r{n}@example.com")]))
            statuses.append(None if answer.fault else answer.status)
            applied = fake.get_profile(email=f"r{n}@example.com") is not None
            assert applied == (answer.status == 202 and answer.fault is None)
        return statuses

    first = run(7)

    assert first == run(7)
    assert {500, 503, 429, 202, None} <= set(first)


# --- transports and sharing -------------------------------------------------------------------


def test_wsgi_server_serves_the_fake_over_http() -> None:
    fake = FakeKlaviyo(default_opt_in_process="single_opt_in")
    server = serve(fake, port=0, background=True, verbose=False)
    try:
        created = requests.post(
            f"{server.url}{SUBSCRIBE}",
            headers=HEADERS,
            data=json.dumps(subscribe_body([profile_entry("h@example.com")])),
            timeout=5,
        )
        page = requests.get(
            f"{server.url}/api/profiles", headers=HEADERS, params={"page[size]": "1"}, timeout=5
        )
        fake.fail_next(kind="connection")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.url}/api/profiles", headers=HEADERS, timeout=5)
    finally:
        server.shutdown()
        server.server_close()

    assert created.status_code == 202
    assert page.json()["data"][0]["attributes"]["email"] == "h@example.com"
    assert page.json()["links"]["self"].startswith(server.url)


def test_concurrent_jobs_from_many_threads_are_all_applied_once() -> None:
    fake = FakeKlaviyo(enforce_rate_limits=False, default_opt_in_process="single_opt_in")

    def worker(start: int) -> None:
        for n in range(start, start + 25):
            assert (
                post(fake, SUBSCRIBE, subscribe_body([profile_entry(f"t{n}@example.com")])).status
                == 202
            )

    threads = [threading.Thread(target=worker, args=(n * 25,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert fake.profile_count == 200
    assert set(fake.applied.values()) == {1}
    assert len(fake.request_log) == 200


def test_default_fake_can_be_swapped_and_restored() -> None:
    mine = FakeKlaviyo()

    previous = set_default_fake(mine)
    try:
        assert get_default_fake() is mine
        assert FakeKlaviyoAdapter().fake is mine
    finally:
        set_default_fake(previous)


def test_injected_clock_stamps_timestamps() -> None:
    fake = FakeKlaviyo(now=NOW, default_opt_in_process="single_opt_in")

    post(fake, SUBSCRIBE, subscribe_body([profile_entry("a@example.com")]))

    marketing = consent_of(fake, "a@example.com")["email"]["marketing"]
    assert marketing["consent_timestamp"] == "2026-07-20T12:00:00+00:00"
    assert fake.jobs[-1]["accepted_at"] == NOW
    assert fake.now() - NOW < timedelta(seconds=1)
