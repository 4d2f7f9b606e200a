"""Identity: a consent belongs to the identifiers that gave it (docs/identity.md)."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from klaviyo_consent.models import ConsentEvent, IdentityEvent, Profile
from klaviyo_consent.services.identity import merge_profiles, replace_phone_number
from tests.helpers import ADA, CHECK, UNSUBSCRIBE, subscribe_as

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(api, fake, on_commit):
    """Ada, subscribed to email and SMS marketing with her number, pushed and applied."""
    with on_commit():
        response = subscribe_as(api, ADA)
    assert response.status_code == 201, response.content
    return Profile.objects.get(pk=response.data["profile"]["id"])


def sms_status(api, number):
    [result] = api.post(CHECK, {"phone_numbers": [number]}, format="json").json()["results"]
    return result


def test_a_strangers_email_with_an_existing_number_is_a_409_and_changes_nothing(api, ada):
    before = ConsentEvent.objects.count()
    response = subscribe_as(
        api,
        {"email": "mallory@example.org", "phone_number": "+447400123456"},
        {"email": {"marketing": True}},
    )
    assert response.status_code == 409
    assert response.json()["code"] == "identity_conflict"
    assert response.json()["fields"] == ["profile.email"]
    assert "mallory" not in response.json()["detail"] and "ada" not in response.json()["detail"]
    ada.refresh_from_db()
    assert ada.email == "ada@example.org"
    assert ConsentEvent.objects.count() == before
    assert not Profile.objects.filter(email="mallory@example.org").exists()
    check = api.post(CHECK, {"emails": ["ada@example.org"]}, format="json").json()
    assert check["results"][0]["consent"]["email"]["marketing"]["consent"] == "SUBSCRIBED"


def test_a_withdrawal_with_a_strangers_identifiers_is_a_409_too(api, ada):
    response = subscribe_as(
        api,
        {"email": "mallory@example.org", "phone_number": "+447400123456"},
        {"sms": {"marketing": True}},
        path=UNSUBSCRIBE,
    )
    assert response.status_code == 409
    assert sms_status(api, "+447400123456")["consent"]["sms"]["marketing"]["consent"] == (
        "SUBSCRIBED"
    )


def test_a_new_number_for_a_known_email_is_a_409_and_the_old_number_keeps_its_consent(api, ada):
    response = subscribe_as(
        api,
        {"email": "ada@example.org", "phone_number": "+447400654321"},
        {"email": {"marketing": True}},
    )
    assert response.status_code == 409
    assert response.json()["fields"] == ["profile.phone_number"]
    ada.refresh_from_db()
    assert ada.phone_number == "+447400123456"
    new = sms_status(api, "+447400654321")
    assert new["profile_id"] is None
    assert new["consent"]["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert sms_status(api, "+447400123456")["consent"]["sms"]["marketing"]["consent"] == (
        "SUBSCRIBED"
    )


def test_an_external_id_never_overwrites_a_stored_one(api, fake):
    assert subscribe_as(api, {**ADA, "external_id": "cust-1"}).status_code == 201
    response = subscribe_as(api, {"email": "ada@example.org", "external_id": "cust-2"})
    assert response.status_code == 409
    assert response.json()["fields"] == ["profile.external_id"]
    assert Profile.objects.get().external_id == "cust-1"


def test_a_request_adds_an_identifier_the_profile_lacks_and_records_it(api, fake):
    first = subscribe_as(api, {"email": "ada@example.org"}, {"email": {"marketing": True}})
    response = subscribe_as(api, ADA, {"sms": {"marketing": True}})
    assert response.status_code == 201, response.content
    profile = Profile.objects.get()
    assert profile.pk == first.data["profile"]["id"]
    assert profile.phone_number == "+447400123456"
    [added] = IdentityEvent.objects.all()
    assert (added.change, added.field, added.new_value) == (
        "identifier_added",
        "phone_number",
        "+447400123456",
    )


def test_an_identifier_held_by_another_profile_is_not_added(api, fake):
    subscribe_as(api, {"phone_number": "+447400123456"}, {"sms": {"marketing": True}})
    subscribe_as(api, {"email": "ada@example.org"}, {"email": {"marketing": True}})
    response = subscribe_as(api, ADA, {"email": {"marketing": True}})
    assert response.status_code == 409
    assert sorted(response.json()["fields"]) == ["profile.phone_number"]
    assert Profile.objects.get(email="ada@example.org").phone_number is None


def test_an_sms_withdrawal_by_the_email_of_a_known_profile_is_accepted(api, ada, on_commit):
    with on_commit():
        response = subscribe_as(
            api, {"email": "sam@example.org"}, {"email": {"marketing": True}}
        )  # a second person with no phone: their withdrawal needs no number either
        response = subscribe_as(
            api, {"email": "ada@example.org"}, {"sms": {"marketing": True}}, UNSUBSCRIBE
        )
    assert response.status_code == 201, response.content
    [event] = response.data["events"]
    assert (event["channel"], event["consent"]) == ("sms", "UNSUBSCRIBED")
    # The event names what the person gave, and the number the withdrawal is for.
    assert (event["email"], event["phone_number"]) == ("ada@example.org", "+447400123456")
    assert sms_status(api, "+447400123456")["consent"]["sms"]["marketing"]["consent"] == (
        "UNSUBSCRIBED"
    )


def test_an_sms_withdrawal_by_an_email_with_no_number_anywhere_is_still_refused(api, fake):
    subscribe_as(api, {"email": "sam@example.org"}, {"email": {"marketing": True}})
    response = subscribe_as(
        api, {"email": "sam@example.org"}, {"sms": {"marketing": True}}, UNSUBSCRIBE
    )
    assert response.status_code == 400
    assert "phone_number" in response.json()["profile"]


def test_an_email_only_consent_records_only_the_identifiers_given(api, ada):
    response = subscribe_as(api, {"email": "ada@example.org"}, {"email": {"marketing": True}})
    assert response.status_code == 201
    [event] = response.data["events"]
    assert (event["email"], event["phone_number"]) == ("ada@example.org", "")


def test_an_email_and_an_sms_event_of_one_person_are_pushed_with_their_own_identifiers(
    api, fake, settings
):
    from klaviyo_consent.services.push import push_pending

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    subscribe_as(api, ADA, {"sms": {"marketing": True}})
    subscribe_as(api, {"email": "ada@example.org"}, {"email": {"marketing": True}})
    push_pending()
    assert fake.applied[("ada@example.org", "email", "marketing", "SUBSCRIBED")] == 1
    assert fake.applied[("+447400123456", "sms", "marketing", "SUBSCRIBED")] == 1


# --- the number change: its own operation ---------------------------------------------------


def test_replacing_a_number_closes_the_old_numbers_sms_consent_and_starts_the_new_one_never(
    api, ada, fake, on_commit
):
    with on_commit():
        response = api.post(
            f"/api/consent/profiles/{ada.pk}/phone-number/",
            {"phone_number": "+44 7400 654321"},
            format="json",
        )
    assert response.status_code == 200, response.content
    assert response.data["profile"]["phone_number"] == "+447400654321"
    record = response.data["identity_event"]
    assert (record["change"], record["old_value"], record["new_value"]) == (
        "phone_number_replaced",
        "+447400123456",
        "+447400654321",
    )
    [closing] = response.data["events"]
    assert (closing["channel"], closing["consent"], closing["phone_number"]) == (
        "sms",
        "UNSUBSCRIBED",
        "+447400123456",
    )
    assert closing["method_detail"] == "phone number replaced"
    # Klaviyo is told: the old number's SMS consent is withdrawn there too.
    assert fake.applied[("+447400123456", "sms", "marketing", "UNSUBSCRIBED")] == 1
    results = api.post(
        CHECK, {"phone_numbers": ["+447400654321", "+447400123456"]}, format="json"
    ).json()["results"]
    new, old = (r["consent"]["sms"]["marketing"] for r in results)
    assert new["consent"] == "NEVER_SUBSCRIBED"
    assert results[0]["profile_id"] == ada.pk
    assert old["consent"] == "UNSUBSCRIBED"
    assert results[1]["profile_id"] is None
    # Email consent is the email's, untouched by the number change.
    assert results[0]["consent"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    ledger = api.get(f"/api/consent/profiles/{ada.pk}/").json()["ledger"]
    assert ledger["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"


def test_the_old_number_check_says_why_it_was_closed_before_klaviyo_answers(api, ada, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    replace_phone_number(ada, "+447400654321")
    old = sms_status(api, "+447400123456")["consent"]["sms"]["marketing"]
    assert (old["consent"], old["reason"]) == ("UNSUBSCRIBED", "phone number replaced")


def test_a_number_another_profile_holds_cannot_be_given_by_a_number_change(api, ada):
    other = subscribe_as(api, {"phone_number": "+447400654321"}, {"sms": {"marketing": True}})
    response = api.post(
        f"/api/consent/profiles/{ada.pk}/phone-number/",
        {"phone_number": "+447400654321"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json() == {
        "code": "identity_conflict",
        "fields": ["phone_number"],
        "detail": response.json()["detail"],
    }
    ada.refresh_from_db()
    assert ada.phone_number == "+447400123456"
    assert other.status_code == 201


def test_a_number_change_reads_a_national_number_in_the_country_given(api, ada):
    response = api.post(
        f"/api/consent/profiles/{ada.pk}/phone-number/",
        {"phone_number": "(202) 555-0143", "country": "US"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.data["profile"]["phone_number"] == "+12025550143"


def test_a_number_change_needs_the_write_permission(ada, settings):
    client = APIClient()
    response = client.post(
        f"/api/consent/profiles/{ada.pk}/phone-number/",
        {"phone_number": "+447400654321"},
        format="json",
    )
    assert response.status_code in (401, 403)
    ada.refresh_from_db()
    assert ada.phone_number == "+447400123456"


def test_a_malformed_number_change_is_a_400_naming_the_field(api, ada):
    response = api.post(
        f"/api/consent/profiles/{ada.pk}/phone-number/", {"phone_number": "call me"}, format="json"
    )
    assert response.status_code == 400
    assert "phone_number" in response.json()


# --- merge ------------------------------------------------------------------------------------


@pytest.fixture
def two_halves(api, fake, on_commit):
    """One person known twice: a phone-only SMS subscriber and an email-only email subscriber."""
    with on_commit():
        phone = subscribe_as(api, {"phone_number": "+447400123456"}, {"sms": {"marketing": True}})
        email = subscribe_as(api, {"email": "ada@example.org"}, {"email": {"marketing": True}})
    return (
        Profile.objects.get(pk=email.data["profile"]["id"]),
        Profile.objects.get(pk=phone.data["profile"]["id"]),
    )


def test_a_merge_moves_the_identifiers_and_the_survivor_answers_for_both(api, two_halves):
    survivor, other = two_halves
    sms_event = ConsentEvent.objects.get(profile=other)
    response = api.post(
        f"/api/consent/profiles/{survivor.pk}/merge/", {"other": other.pk}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.data["profile"]["phone_number"] == "+447400123456"
    assert response.data["identity_event"]["change"] == "merged"
    assert response.data["identity_event"]["moved"] == {"phone_number": "+447400123456"}
    other.refresh_from_db()
    assert other.merged_into_id == survivor.pk and other.phone_number is None
    # The event keeps its profile and identifiers; the survivor's ledger includes it.
    assert ConsentEvent.objects.get(pk=sms_event.pk).profile_id == other.pk
    ledger = response.data["profile"]["ledger"]
    assert ledger["sms"]["marketing"]["event_id"] == sms_event.pk
    assert ledger["email"]["marketing"]["consent"] == "SUBSCRIBED"
    result = sms_status(api, "+447400123456")
    assert result["profile_id"] == survivor.pk
    assert result["consent"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    # Later requests naming both identifiers find the one person.
    assert subscribe_as(api, ADA, {"email": {"marketing": True}}).status_code == 201


def test_profiles_holding_different_values_of_one_identifier_cannot_be_merged(api, ada, fake):
    other = subscribe_as(api, {"email": "grace@example.org", "phone_number": "+447400654321"})
    response = api.post(
        f"/api/consent/profiles/{ada.pk}/merge/",
        {"other": other.data["profile"]["id"]},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["fields"] == ["other.email", "other.phone_number"]
    assert not Profile.objects.filter(merged_into__isnull=False).exists()


def test_a_merged_profile_cannot_be_merged_or_renumbered_again(two_halves):
    survivor, other = two_halves
    merge_profiles(survivor, other)
    from klaviyo_consent.exceptions import ConsentValidationError

    with pytest.raises(ConsentValidationError, match="merged into"):
        merge_profiles(survivor, other)
    with pytest.raises(ConsentValidationError, match="merged into"):
        replace_phone_number(other, "+447400654321")


def test_merging_into_itself_or_an_unknown_profile_is_a_400(api, ada):
    itself = api.post(f"/api/consent/profiles/{ada.pk}/merge/", {"other": ada.pk}, format="json")
    unknown = api.post(f"/api/consent/profiles/{ada.pk}/merge/", {"other": 999}, format="json")
    assert itself.status_code == unknown.status_code == 400
    assert "other" in itself.json() and "other" in unknown.json()


def test_identity_events_are_append_only(two_halves):
    from klaviyo_consent.exceptions import ImmutableConsentEvent

    record = merge_profiles(*two_halves).identity_event
    with pytest.raises(ImmutableConsentEvent):
        record.save()
    with pytest.raises(ImmutableConsentEvent):
        IdentityEvent.objects.all().delete()


# --- the other entry points -------------------------------------------------------------------


def test_a_csv_row_naming_two_people_is_a_command_error_naming_the_line(tmp_path, ada):
    path = tmp_path / "consent.csv"
    path.write_text(
        "email,phone_number,email_marketing\n"
        "grace@example.org,,yes\n"
        "mallory@example.org,+447400123456,yes\n",
        encoding="utf-8",
    )
    with pytest.raises(CommandError, match=r"line 3: profile.email: .*Nothing was imported"):
        call_command("klaviyo_consent_import", str(path))
    assert not Profile.objects.filter(email__in=["grace@example.org", "mallory@example.org"])


def test_admin_actions_replace_a_number_and_merge_profiles(admin_client, two_halves, fake):
    survivor, other = two_halves
    changelist = "/admin/klaviyo_consent/profile/"
    confirm = admin_client.post(
        changelist, {"action": "merge_action", "_selected_action": [survivor.pk, other.pk]}
    )
    assert confirm.status_code == 200
    assert b"Merge" in confirm.content
    done = admin_client.post(
        changelist,
        {
            "action": "merge_action",
            "_selected_action": [survivor.pk, other.pk],
            "survivor": survivor.pk,
            "confirm": "yes",
            "reason": "same customer, two signups",
        },
    )
    assert done.status_code == 302
    other.refresh_from_db()
    assert other.merged_into_id == survivor.pk
    assert IdentityEvent.objects.get(change="merged").method == "admin"

    form = admin_client.post(
        changelist, {"action": "replace_phone_number_action", "_selected_action": [survivor.pk]}
    )
    assert form.status_code == 200 and b"phone_number" in form.content
    done = admin_client.post(
        changelist,
        {
            "action": "replace_phone_number_action",
            "_selected_action": [survivor.pk],
            "phone_number": "+447400654321",
            "confirm": "yes",
            "reason": "customer changed phones",
        },
    )
    assert done.status_code == 302
    survivor.refresh_from_db()
    assert survivor.phone_number == "+447400654321"
    closing = ConsentEvent.objects.get(method_detail="phone number replaced")
    assert (closing.phone_number, closing.method) == ("+447400123456", "admin")


def test_the_drop_in_form_records_a_known_number_with_a_new_email_apart_naming_no_one(
    client, ada
):
    from klaviyo_consent.views import DONE_KEY

    before = ConsentEvent.objects.filter(profile=ada).count()
    response = client.post(
        "/consent/signup/",
        {
            "email": "mallory@example.org",
            "email_marketing": "on",
            "phone_number": "+447400123456",
        },
    )
    assert response.status_code == 302
    said = client.session[DONE_KEY]
    # The answer a new person gets: what was recorded for the address given, nobody named.
    assert said == "Thank you! You're signed up for our marketing emails at mallory@example.org."
    ada.refresh_from_db()
    assert (ada.email, ada.phone_number) == ("ada@example.org", "+447400123456")
    mallory = Profile.objects.get(email="mallory@example.org")
    assert mallory.phone_number is None  # the number stays with the person who holds it
    assert ConsentEvent.objects.filter(profile=ada).count() == before


def test_an_email_withdrawal_by_the_number_of_a_known_profile_is_accepted(api, ada):
    response = subscribe_as(
        api, {"phone_number": "+447400123456"}, {"email": {"marketing": True}}, UNSUBSCRIBE
    )
    assert response.status_code == 201, response.content
    [event] = response.data["events"]
    assert (event["channel"], event["email"], event["phone_number"]) == (
        "email",
        "ada@example.org",
        "+447400123456",
    )


def test_the_profile_page_shows_its_identity_changes(admin_client, ada):
    replace_phone_number(ada, "+447400654321")
    page = admin_client.get(f"/admin/klaviyo_consent/profile/{ada.pk}/change/").content.decode()
    assert "identity changes" in page.lower()
    assert "+447400654321" in page and "Phone number replaced" in page


def test_drift_never_records_the_old_numbers_state_for_the_new_number(api, ada, fake):
    from klaviyo_consent.services.verify import pull_profiles

    replace_phone_number(ada, "+447400654321")
    fake.reply_stop("+447400123456")  # the old number, still on Klaviyo's profile, texts STOP
    pull_profiles([Profile.objects.get(pk=ada.pk)])
    new = sms_status(api, "+447400654321")["consent"]["sms"]["marketing"]
    assert new["consent"] == "NEVER_SUBSCRIBED"
    assert not ConsentEvent.objects.filter(personal_data__phone_number="+447400654321").exists()


def test_a_naive_klaviyo_timestamp_is_read_as_utc_not_a_type_error():
    from datetime import UTC, datetime

    from klaviyo_consent.services.drift import _changed_after
    from klaviyo_consent.services.payloads import parse_klaviyo_datetime

    assert parse_klaviyo_datetime("2026-01-02T03:04:05") == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert parse_klaviyo_datetime("2026-02-30T00:00:00") is None
    assert _changed_after(
        {"consent_timestamp": "2026-01-02T03:04:05"}, datetime(2026, 1, 1, tzinfo=UTC)
    )


def test_giving_a_number_to_a_profile_without_one_is_recorded_as_an_addition(api, fake):
    response = subscribe_as(api, {"email": "ada@example.org"}, {"email": {"marketing": True}})
    profile = Profile.objects.get(pk=response.data["profile"]["id"])
    result = replace_phone_number(profile, "+447400123456")
    assert result.events == []
    assert (result.identity_event.change, result.identity_event.old_value) == (
        "identifier_added",
        "",
    )


def test_every_identity_change_sends_identity_changed(api, fake):
    from klaviyo_consent.signals import identity_changed

    seen = []

    def receiver(sender, profile, identity_events, **kwargs):
        seen.extend((profile.pk, e.change) for e in identity_events)

    identity_changed.connect(receiver)
    try:
        first = subscribe_as(api, {"email": "ada@example.org"}, {"email": {"marketing": True}})
        subscribe_as(api, ADA, {"sms": {"marketing": True}})
        other = subscribe_as(api, {"email": "sam@example.org"}, {"email": {"marketing": True}})
        ada = Profile.objects.get(pk=first.data["profile"]["id"])
        replace_phone_number(ada, "+447400654321")
        sam = Profile.objects.get(pk=other.data["profile"]["id"])
        with pytest.raises(Exception, match="different email"):
            merge_profiles(ada, sam)
    finally:
        identity_changed.disconnect(receiver)
    assert seen == [
        (ada.pk, "identifier_added"),
        (ada.pk, "phone_number_replaced"),
    ]


def test_after_a_merge_klaviyos_email_half_records_no_sms_drift(api, two_halves):
    from klaviyo_consent.services.verify import pull_profiles

    survivor, other = two_halves
    merge_profiles(survivor, other)
    before = ConsentEvent.objects.count()
    pull_profiles([Profile.objects.get(pk=survivor.pk)])  # Klaviyo still has two profiles
    assert ConsentEvent.objects.count() == before
    ledger = api.get(f"/api/consent/profiles/{survivor.pk}/").json()["ledger"]
    assert ledger["sms"]["marketing"]["consent"] == "SUBSCRIBED"
