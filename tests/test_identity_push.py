"""Klaviyo is told a profile's new phone number (issue 7): Create or Update Profile, durable,
in order after the old number's withdrawal, failures recorded with Klaviyo's detail."""

from __future__ import annotations

import pytest
from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.exceptions import KlaviyoClientError
from klaviyo_consent.models import Delivery, IdentityDelivery, Profile
from klaviyo_consent.services import payloads
from klaviyo_consent.services.identity import merge_profiles, replace_phone_number
from klaviyo_consent.services.identity_push import push_identity_changes
from klaviyo_consent.services.sync import push_pending, sync
from klaviyo_consent.testing.fake.profiles import DUPLICATE_PROFILE_DETAIL
from tests.helpers import ADA, CHECK, subscribe_as

pytestmark = pytest.mark.django_db

OLD = ADA["phone_number"]
NEW = "+447400654321"
IMPORT = "/api/profile-import"
UNSUBSCRIBE_JOB = "/api/profile-subscription-bulk-delete-jobs"
SUBSCRIBE_JOB = "/api/profile-subscription-bulk-create-jobs"


@pytest.fixture
def ada(api, fake, on_commit):
    """Ada, subscribed to email and SMS marketing with her old number, pushed and applied."""
    with on_commit():
        response = subscribe_as(api, ADA)
    assert response.status_code == 201, response.content
    return Profile.objects.get(pk=response.data["profile"]["id"])


@pytest.fixture
def no_push_on_commit(settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}


def posts(fake, since=0):
    return [r.path for r in fake.request_log[since:] if r.method == "POST"]


def due_now():
    IdentityDelivery.objects.update(next_attempt_at=timezone.now())
    Delivery.objects.filter(status="pending").update(next_attempt_at=timezone.now())


def test_a_number_change_is_told_to_klaviyo_after_the_old_numbers_withdrawal(
    api, ada, fake, on_commit
):
    klaviyo_id = fake.get_profile(email=ADA["email"])["id"]
    since = len(fake.request_log)
    with on_commit():
        response = api.post(
            f"/api/consent/profiles/{ada.pk}/phone-number/", {"phone_number": NEW}, format="json"
        )
    assert response.status_code == 200, response.content
    profile = fake.get_profile(email=ADA["email"])
    assert (profile["id"], profile["phone_number"]) == (klaviyo_id, NEW)
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    sent = posts(fake, since)
    assert UNSUBSCRIBE_JOB in sent and IMPORT in sent
    assert sent.index(UNSUBSCRIBE_JOB) < sent.index(IMPORT)
    assert fake.applied[(OLD, "sms", "marketing", "UNSUBSCRIBED")] == 1
    row = IdentityDelivery.objects.get(identity_event_id=response.data["identity_event"]["id"])
    assert (row.status, row.errors) == ("applied", [])
    assert fake.get_profile(phone_number=OLD) is None


def test_the_profile_import_waits_for_the_old_numbers_withdrawal_to_leave_the_outbox(
    ada, fake, no_push_on_commit
):
    replace_phone_number(ada, NEW)
    fake.fail_next(503)  # the withdrawal's job fails once: the number change must wait for it
    report = sync(verify=False)
    assert report.retried == 1
    assert IMPORT not in posts(fake)
    assert IdentityDelivery.objects.get().status == "pending"
    due_now()
    since = len(fake.request_log)
    sync(verify=False)
    assert posts(fake, since) == [UNSUBSCRIBE_JOB, IMPORT]
    assert fake.get_profile(email=ADA["email"])["phone_number"] == NEW


def test_a_new_numbers_sms_consent_recorded_before_klaviyo_was_told_goes_after_it(
    api, ada, fake, no_push_on_commit
):
    replace_phone_number(ada, NEW)
    fake.fail_next(429, retry_after=1)  # the withdrawal is rate-limited: nothing else may pass
    response = subscribe_as(
        api, {"email": ADA["email"], "phone_number": NEW}, {"sms": {"marketing": True}}
    )
    assert response.status_code == 201, response.content
    sync(verify=False)
    assert posts(fake)[-1] == UNSUBSCRIBE_JOB  # the 429: the rest waited
    due_now()
    since = len(fake.request_log)
    sync(verify=False)
    assert posts(fake, since) == [UNSUBSCRIBE_JOB, IMPORT, SUBSCRIBE_JOB]
    profile = fake.get_profile(email=ADA["email"])
    assert profile["phone_number"] == NEW
    # The import's reset came first, so the new number's consent stands.
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"


def test_a_later_sms_subscribe_for_the_new_number_reaches_the_same_klaviyo_profile(
    api, ada, fake, on_commit
):
    klaviyo_id = fake.get_profile(email=ADA["email"])["id"]
    count = fake.profile_count
    with on_commit():
        replace_phone_number(ada, NEW)
    with on_commit():
        response = subscribe_as(
            api, {"email": ADA["email"], "phone_number": NEW}, {"sms": {"marketing": True}}
        )
    assert response.status_code == 201, response.content
    profile = fake.get_profile(phone_number=NEW)
    assert profile["id"] == klaviyo_id
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    assert fake.profile_count == count
    assert fake.applied[(NEW, "sms", "marketing", "SUBSCRIBED")] == 1


def test_a_rate_limited_number_change_is_retried_later_and_never_dead_lettered(
    ada, fake, settings, no_push_on_commit
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "MAX_ATTEMPTS": 2}
    replace_phone_number(ada, NEW)
    push_pending()  # the old number's withdrawal goes first
    fake.fail_next(429, count=5, retry_after=1)
    for _ in range(5):
        assert push_identity_changes() == 0
        row = IdentityDelivery.objects.get()
        assert row.next_attempt_at > timezone.now()  # retried later, not now
        due_now()
    row.refresh_from_db()
    assert (row.status, row.attempts, row.deferrals, row.dead_lettered_at) == (
        "pending",
        0,
        5,
        None,
    )
    assert "429" in row.reason or "throttled" in row.reason.lower()
    assert push_identity_changes() == 1
    row.refresh_from_db()
    assert row.status == "applied"
    assert fake.get_profile(email=ADA["email"])["phone_number"] == NEW


def test_server_errors_spend_attempts_and_dead_letter_the_number_change(
    ada, fake, settings, no_push_on_commit
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "MAX_ATTEMPTS": 2}
    replace_phone_number(ada, NEW)
    push_pending()
    fake.fail_next(500, count=2)
    push_identity_changes()
    assert IdentityDelivery.objects.get().attempts == 1
    due_now()
    push_identity_changes()
    row = IdentityDelivery.objects.get()
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.dead_lettered_at is not None
    assert row.reason.startswith("Gave up after 2 attempts")


def test_a_number_another_klaviyo_profile_holds_is_recorded_with_klaviyos_detail(
    ada, fake, no_push_on_commit
):
    other = fake.add_profile(phone_number=NEW)  # known to Klaviyo only
    replace_phone_number(ada, NEW)
    sync(verify=False)
    row = IdentityDelivery.objects.get()
    assert row.status == "failed"
    assert DUPLICATE_PROFILE_DETAIL in row.reason
    [error] = row.errors
    assert (error["code"], error["source"]["pointer"]) == ("duplicate_profile", "/data/attributes")
    assert error["meta"]["duplicate_profile_id"] == other
    assert row.dead_lettered_at is None
    assert fake.get_profile(email=ADA["email"])["phone_number"] == OLD


def test_a_refused_number_change_is_sent_again_by_sync_retry_failed(ada, fake, no_push_on_commit):
    from django.core.management import call_command

    other = fake.add_profile(phone_number=NEW)
    replace_phone_number(ada, NEW)
    call_command("klaviyo_consent_sync", "--no-wait")
    assert IdentityDelivery.objects.get().status == "failed"
    # The site's team clears the number on the other Klaviyo profile (null clears a field).
    get_backend().create_or_update_profile(
        {"data": {"type": "profile", "id": other, "attributes": {"phone_number": None}}}
    )
    assert fake.get_profile(phone_number=NEW) is None
    call_command("klaviyo_consent_sync", "--retry-failed", "--no-wait")
    assert IdentityDelivery.objects.get().status == "applied"
    assert fake.get_profile(email=ADA["email"])["phone_number"] == NEW


def test_check_and_the_ledger_answer_each_number_with_its_own_history_after_klaviyo_is_told(
    api, ada, fake, on_commit
):
    with on_commit():
        replace_phone_number(ada, NEW)
    sync()  # push what is left and read Klaviyo back
    assert IdentityDelivery.objects.get().status == "applied"
    results = api.post(CHECK, {"phone_numbers": [NEW, OLD]}, format="json").json()["results"]
    new, old = (r["consent"]["sms"]["marketing"] for r in results)
    assert (results[0]["profile_id"], new["consent"]) == (ada.pk, "NEVER_SUBSCRIBED")
    assert (results[1]["profile_id"], old["consent"]) == (None, "UNSUBSCRIBED")
    assert old["reason"] == "phone number replaced"
    ledger = api.get(f"/api/consent/profiles/{ada.pk}/").json()["ledger"]
    assert ledger["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert ledger["email"]["marketing"]["consent"] == "SUBSCRIBED"


def test_a_number_given_to_a_profile_without_one_is_told_to_klaviyo_too(api, fake, on_commit):
    with on_commit():
        response = subscribe_as(api, {"email": "bo@example.org"}, {"email": {"marketing": True}})
    profile = Profile.objects.get(pk=response.data["profile"]["id"])
    with on_commit():
        result = replace_phone_number(profile, NEW)
    assert result.identity_event.change == "identifier_added"
    assert IdentityDelivery.objects.get().status == "applied"
    assert fake.get_profile(email="bo@example.org")["phone_number"] == NEW


def test_a_merge_tells_klaviyo_nothing_it_does_not_already_know(api, fake, on_commit):
    with on_commit():
        email_half = subscribe_as(api, {"email": "cy@example.org"}, {"email": {"marketing": True}})
        phone_half = subscribe_as(api, {"phone_number": NEW}, {"sms": {"marketing": True}})
    survivor = Profile.objects.get(pk=email_half.data["profile"]["id"])
    other = Profile.objects.get(pk=phone_half.data["profile"]["id"])
    merge_profiles(survivor, other)
    assert not IdentityDelivery.objects.exists()


# --- the fake's Create or Update Profile ----------------------------------------------------


def test_the_fake_creates_a_profile_with_201_and_updates_it_with_200(fake):
    fake.validate_responses = True
    backend = get_backend()
    created = backend.create_or_update_profile(
        {"data": {"type": "profile", "attributes": {"email": "di@example.org"}}}
    )
    assert fake.request_log[-1].status == 201
    updated = backend.create_or_update_profile(
        payloads.profile_import(phone_number=NEW, email="di@example.org")
    )
    assert fake.request_log[-1].status == 200
    assert created["data"]["id"] == updated["data"]["id"]
    assert updated["data"]["attributes"]["phone_number"] == NEW


def test_the_fakes_profile_import_resets_sms_consent_on_a_new_number_only(fake):
    backend = get_backend()
    entry = payloads.profile_entry(
        email="ed@example.org",
        phone_number=OLD,
        klaviyo_id=None,
        consents=[("sms", "marketing", "SUBSCRIBED", None)],
    )
    backend.bulk_subscribe_profiles(payloads.subscribe_job([entry], list_id="Single"))
    klaviyo_id = fake.get_profile(email="ed@example.org")["id"]
    backend.create_or_update_profile(
        payloads.profile_import(phone_number=OLD, klaviyo_id=klaviyo_id)
    )
    assert fake.get_profile(phone_number=OLD)["subscriptions"]["sms"]["marketing"]["consent"] == (
        "SUBSCRIBED"
    )
    backend.create_or_update_profile(
        payloads.profile_import(phone_number=NEW, klaviyo_id=klaviyo_id)
    )
    profile = fake.get_profile(email="ed@example.org")
    assert profile["phone_number"] == NEW
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert fake.get_profile(phone_number=OLD) is None


@pytest.mark.parametrize(
    ("document", "pointer"),
    [
        ({"data": {"type": "list", "attributes": {"email": "x@example.org"}}}, "/data"),
        ({"data": {"type": "profile", "attributes": {"phone_number": 447400654321}}}, "/data"),
        ({"data": {"type": "profile"}}, "/data"),
        (
            {"data": {"type": "profile", "attributes": {"phone_number": "call me"}}},
            "/data/attributes/phone_number",
        ),
    ],
)
def test_the_fake_refuses_a_profile_import_the_sdk_or_klaviyo_would_refuse(fake, document, pointer):
    with pytest.raises(KlaviyoClientError) as caught:
        get_backend().create_or_update_profile(document)
    assert caught.value.status == 400
    assert caught.value.errors[0]["source"]["pointer"].startswith(pointer)


def test_the_fakes_profile_import_of_an_unknown_id_is_a_404(fake):
    with pytest.raises(KlaviyoClientError) as caught:
        get_backend().create_or_update_profile(
            payloads.profile_import(phone_number=NEW, klaviyo_id="01NOSUCHPROFILE")
        )
    assert caught.value.status == 404


def test_the_profile_import_payload_names_the_profile_by_id_then_email_then_external_id():
    assert payloads.profile_import(phone_number=NEW, klaviyo_id="01K", email="a@b.c") == {
        "data": {"type": "profile", "id": "01K", "attributes": {"phone_number": NEW}}
    }
    assert payloads.profile_import(phone_number=NEW, email="a@b.c")["data"]["attributes"] == {
        "phone_number": NEW,
        "email": "a@b.c",
    }
    assert payloads.profile_import(phone_number=NEW, external_id="c-1")["data"]["attributes"] == {
        "phone_number": NEW,
        "external_id": "c-1",
    }
    assert payloads.profile_import(phone_number=NEW) == {
        "data": {"type": "profile", "attributes": {"phone_number": NEW}}
    }


def test_a_phone_only_profile_is_found_in_klaviyo_by_its_old_number(api, fake, on_commit):
    with on_commit():
        response = subscribe_as(api, {"phone_number": OLD}, {"sms": {"marketing": True}})
    profile = Profile.objects.get(pk=response.data["profile"]["id"])
    Profile.objects.filter(pk=profile.pk).update(klaviyo_id="")  # never read back
    klaviyo_id = fake.get_profile(phone_number=OLD)["id"]
    count = fake.profile_count
    with on_commit():
        replace_phone_number(profile, NEW)
    assert IdentityDelivery.objects.get().status == "applied"
    assert fake.get_profile(phone_number=NEW)["id"] == klaviyo_id
    assert fake.profile_count == count
    assert Profile.objects.get(pk=profile.pk).klaviyo_id == klaviyo_id


def test_a_subscribe_job_naming_a_known_email_with_a_new_number_sets_that_number(fake):
    backend = get_backend()

    def entry(phone, consents):
        return payloads.profile_entry(
            email="fy@example.org", phone_number=phone, klaviyo_id=None, consents=consents
        )

    sms = [("sms", "marketing", "SUBSCRIBED", None)]
    email = [("email", "marketing", "SUBSCRIBED", None)]
    backend.bulk_subscribe_profiles(payloads.subscribe_job([entry(OLD, sms)], list_id="Single"))
    # SMS left out: the number is only set on the profile (spec), and SMS consent starts over.
    backend.bulk_subscribe_profiles(payloads.subscribe_job([entry(NEW, email)], list_id="Single"))
    profile = fake.get_profile(email="fy@example.org")
    assert profile["phone_number"] == NEW
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert fake.get_profile(phone_number=OLD) is None
    # SMS included: the new number is the one subscribed, on the same profile.
    backend.bulk_subscribe_profiles(payloads.subscribe_job([entry(NEW, sms)], list_id="Single"))
    profile = fake.get_profile(phone_number=NEW)
    assert profile["email"] == "fy@example.org"
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"


def test_the_api_shows_the_number_changes_push_and_a_merge_has_none(api, ada, fake, on_commit):
    with on_commit():
        response = api.post(
            f"/api/consent/profiles/{ada.pk}/phone-number/", {"phone_number": NEW}, format="json"
        )
    delivery = response.data["identity_event"]["delivery"]
    assert (delivery["status"], delivery["attempts"], delivery["errors"]) == ("pending", 0, [])
    email_half = subscribe_as(api, {"email": "gu@example.org"}, {"email": {"marketing": True}})
    phone_half = subscribe_as(api, {"phone_number": "+447400999888"}, {"sms": {"marketing": True}})
    merged = api.post(
        f"/api/consent/profiles/{email_half.data['profile']['id']}/merge/",
        {"other": phone_half.data["profile"]["id"]},
        format="json",
    )
    assert merged.status_code == 200, merged.content
    assert merged.data["identity_event"]["delivery"] is None


def test_the_admin_profile_page_shows_whether_klaviyo_was_told(admin_client, ada, fake, on_commit):
    with on_commit():
        replace_phone_number(ada, NEW)
    page = admin_client.get(f"/admin/klaviyo_consent/profile/{ada.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Klaviyo told" in html
    assert "Klaviyo&#x27;s profile holds the new phone number." in html


@pytest.mark.parametrize(
    "names",
    [{"klaviyo_id": "01K"}, {"email": "a@b.c"}, {"external_id": "c-1"}, {}],
)
def test_the_profile_import_payload_is_a_profile_upsert_query_the_sdk_accepts(names):
    from openapi_client.models.profile_upsert_query import ProfileUpsertQuery

    document = payloads.profile_import(phone_number=NEW, **names)
    parsed = ProfileUpsertQuery.from_dict(document)
    assert parsed.data.attributes.phone_number == NEW
    assert parsed.data.id == names.get("klaviyo_id")
