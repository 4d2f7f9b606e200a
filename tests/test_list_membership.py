"""List membership without consent: recorded as membership events, pushed by bulk import jobs
or list relationships, judged by the list read-back, and never a change of consent."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from klaviyo_consent.exceptions import ImmutableConsentEvent
from klaviyo_consent.models import ConsentEvent, MembershipDelivery, MembershipEvent, Profile
from klaviyo_consent.services.membership import record_membership
from tests.helpers import ledger, subscribe

pytestmark = pytest.mark.django_db

MEMBERS = "/api/consent/lists/{}/members/"
EMAIL_ONLY = {"email": {"marketing": True}}


def add(api, on_commit, list_id="Single", **person):
    with on_commit():
        response = api.post(MEMBERS.format(list_id), {"profiles": [person]}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def remove(api, on_commit, list_id="Single", **person):
    with on_commit():
        response = api.delete(MEMBERS.format(list_id), {"profiles": [person]}, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def consent(fake, email):
    return fake.get_profile(email=email)["subscriptions"]["email"]["marketing"]["consent"]


def test_adding_someone_new_imports_them_into_the_list_without_subscribing(api, fake, on_commit):
    answer = add(api, on_commit, email="Ada@Example.com", external_id="cust-1")
    [event] = answer["events"]
    assert event["action"] == "add" and event["list_id"] == "Single"
    assert fake.counts["bulk_import_profiles"] == 1
    assert fake.counts["bulk_subscribe_profiles"] == 0
    assert fake.is_member("Single", email="ada@example.com")
    assert consent(fake, "ada@example.com") == "NEVER_SUBSCRIBED"
    assert not ConsentEvent.objects.exists()  # a membership is not a consent
    call_command("klaviyo_consent_sync")
    delivery = MembershipDelivery.objects.get(pk=event["id"])
    assert delivery.status == "applied"
    assert delivery.reason == "on the list in Klaviyo"
    assert Profile.objects.get(email="ada@example.com").klaviyo_id  # learnt by the read-back


def test_someone_klaviyo_knows_is_added_by_id_with_the_list_relationship(api, fake, on_commit):
    profile_id = subscribe(
        api,
        on_commit,
        profile={"email": "ada@example.com"},
        subscriptions=EMAIL_ONLY,
        list_id="Double",
    )
    call_command("klaviyo_consent_pull", "--profile", str(profile_id))
    add(api, on_commit, email="ada@example.com")
    assert fake.counts["add_profiles_to_list"] == 1
    assert fake.counts["bulk_import_profiles"] == 0
    assert fake.is_member("Single", email="ada@example.com")


def test_a_membership_never_changes_consent_or_the_ledger(api, fake, on_commit):
    profile_id = subscribe(
        api, on_commit, profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY
    )
    call_command("klaviyo_consent_sync")
    before = ledger(api, profile_id)
    events_before = ConsentEvent.objects.count()
    check = {"emails": ["ada@example.com"]}
    answer = api.post("/api/consent/check/", check, format="json")
    assert answer.status_code == 200, answer.content
    check_before = answer.json()
    add(api, on_commit, email="ada@example.com", list_id="Double")
    remove(api, on_commit, email="ada@example.com", list_id="Single")
    call_command("klaviyo_consent_sync")
    assert ConsentEvent.objects.count() == events_before
    assert ledger(api, profile_id) == before
    assert api.post("/api/consent/check/", check, format="json").json() == check_before
    assert consent(fake, "ada@example.com") == "SUBSCRIBED"
    assert not fake.is_member("Single", email="ada@example.com")
    assert fake.is_member("Double", email="ada@example.com")


def test_removing_someone_takes_them_off_the_list_and_the_read_back_applies_it(
    api, fake, on_commit
):
    add(api, on_commit, email="ada@example.com")
    call_command("klaviyo_consent_sync")
    [event] = remove(api, on_commit, email="ada@example.com")["events"]
    assert fake.counts["remove_profiles_from_list"] == 1
    call_command("klaviyo_consent_sync")
    delivery = MembershipDelivery.objects.get(pk=event["id"])
    assert (delivery.status, delivery.reason) == ("applied", "not on the list in Klaviyo")
    assert not fake.is_member("Single", email="ada@example.com")


def test_removing_someone_klaviyo_does_not_know_is_applied_without_a_call(api, fake, on_commit):
    [event] = remove(api, on_commit, email="nobody@example.com")["events"]
    delivery = MembershipDelivery.objects.get(pk=event["id"])
    assert delivery.status == "applied"
    assert "on no list" in delivery.reason
    assert fake.counts["remove_profiles_from_list"] == 0


def test_an_import_klaviyo_never_applies_is_not_applied_after_the_read_backs(
    api, fake, on_commit, monkeypatch
):
    # Klaviyo accepts the job (202) but never adds the person: the list read-back says so.
    monkeypatch.setattr(type(fake), "_op_bulk_import_profiles", _accept_and_drop)
    [event] = add(api, on_commit, email="ada@example.com")["events"]
    call_command("klaviyo_consent_sync")
    delivery = MembershipDelivery.objects.get(pk=event["id"])
    assert delivery.status == "not_applied"
    assert "does not show the person" in delivery.reason


def _accept_and_drop(self, call):
    from klaviyo_consent.testing.fake import FakeResponse

    job = {"type": "profile-bulk-import-job", "id": "JOB1", "attributes": {"status": "queued"}}
    return FakeResponse(202, {}, json.dumps({"data": job}).encode())


def test_a_rate_limited_push_waits_without_spending_attempts(api, fake, on_commit):
    fake.fail_next(429, retry_after=30)
    [event] = add(api, on_commit, email="ada@example.com")["events"]
    delivery = MembershipDelivery.objects.get(pk=event["id"])
    assert delivery.status == "pending"
    assert (delivery.attempts, delivery.deferrals) == (0, 1)
    assert "rate" in delivery.reason.lower() or "429" in delivery.reason


def test_a_server_error_spends_an_attempt_and_is_retried(api, fake, on_commit):
    fake.fail_next(503)
    [event] = add(api, on_commit, email="ada@example.com")["events"]
    delivery = MembershipDelivery.objects.get(pk=event["id"])
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert not fake.is_member("Single", email="ada@example.com")


def test_a_list_klaviyo_does_not_have_fails_with_its_error(api, fake, on_commit):
    [event] = add(api, on_commit, list_id="Missing1", email="ada@example.com")["events"]
    delivery = MembershipDelivery.objects.get(pk=event["id"])
    assert delivery.status == "failed"
    assert "Missing1 does not exist" in delivery.reason


def test_many_people_go_in_one_import_job(api, fake, on_commit):
    people = [{"email": f"p{i}@example.com"} for i in range(30)]
    with on_commit():
        response = api.post(MEMBERS.format("Single"), {"profiles": people}, format="json")
    assert response.status_code == 201
    assert fake.counts["bulk_import_profiles"] == 1
    assert fake.import_jobs.popitem()[1]["attributes"]["total_count"] == 30


@pytest.mark.parametrize(
    ("path", "data", "field"),
    [
        (MEMBERS.format("Single"), {"profiles": [{"email": "not-an-email"}]}, "profiles"),
        (MEMBERS.format("Single"), {"profiles": [{"phone_number": "12"}]}, "profiles"),
        (MEMBERS.format("Single"), {"profiles": []}, "profiles"),
        (MEMBERS.format("Single"), {"profiles": [{}]}, "profiles"),
        (MEMBERS.format("Single"), {"profiles": [{"email": "a@example.com", "x": 1}]}, "profiles"),
        (MEMBERS.format("Single"), {"profiles": [{"email": "a@example.com"}], "y": 1}, "y"),
        (MEMBERS.format("Bad-Id"), {"profiles": [{"email": "a@example.com"}]}, "list_id"),
    ],
)
def test_bad_requests_are_400s_naming_the_field_and_record_nothing(api, fake, path, data, field):
    response = api.post(path, data, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not MembershipEvent.objects.exists()
    assert not Profile.objects.exists()


def test_the_field_named_is_the_entrys(api, fake):
    response = api.post(
        MEMBERS.format("Single"),
        {"profiles": [{"email": "a@example.com"}, {"email": "nope"}]},
        format="json",
    )
    assert response.status_code == 400
    named = response.json()["profiles"]
    assert list(named) == ["1"] and list(named["1"]) == ["email"]
    assert "nope" in named["1"]["email"][0]
    assert not Profile.objects.exists()


def test_writing_needs_the_write_permission(fake):
    from rest_framework.test import APIClient

    response = APIClient().post(
        MEMBERS.format("Single"), {"profiles": [{"email": "a@example.com"}]}, format="json"
    )
    assert response.status_code in (401, 403)
    assert not MembershipEvent.objects.exists()


def test_membership_events_are_append_only(fake):
    result = record_membership("Single", [{"email": "a@example.com"}], action="add")
    [event] = result.events
    with pytest.raises(ImmutableConsentEvent):
        event.save()
    with pytest.raises(ImmutableConsentEvent):
        MembershipEvent.objects.filter(pk=event.pk).update(list_id="Other")
    with pytest.raises(ImmutableConsentEvent):
        event.delete()
    with pytest.raises(Exception, match="append-only"), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE klaviyo_consent_membershipevent SET list_id = 'Other' WHERE id = %s",
            [event.pk],
        )


def test_membership_rows_hold_no_raw_identifier():
    names = {f.name for f in MembershipEvent._meta.get_fields()}
    names |= {f.name for f in MembershipDelivery._meta.get_fields()}
    assert not names & {"email", "phone_number", "external_id", "ip_address", "user_agent"}


def test_a_bulk_import_in_the_fake_never_subscribes_even_if_asked(fake):
    entry = {
        "type": "profile",
        "attributes": {
            "email": "ada@example.com",
            "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
        },
    }
    document = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": [entry]}},
            "relationships": {"lists": {"data": [{"type": "list", "id": "Single"}]}},
        }
    }
    headers = {"Authorization": "Klaviyo-API-Key pk_test", "revision": "2026-07-15"}
    answer = fake.handle(
        "POST", "/api/profile-bulk-import-jobs", headers, json.dumps(document).encode()
    )
    assert answer.status == 202
    assert fake.is_member("Single", email="ada@example.com")
    assert consent(fake, "ada@example.com") == "NEVER_SUBSCRIBED"


def test_the_fake_validates_list_membership_bodies_with_the_sdk(fake):
    headers = {"Authorization": "Klaviyo-API-Key pk_test", "revision": "2026-07-15"}
    for body in ({"data": [{"type": "list", "id": "X"}]}, {"data": "nope"}, {}):
        answer = fake.handle(
            "POST", "/api/lists/Single/relationships/profiles", headers, json.dumps(body).encode()
        )
        assert answer.status == 400, body
    answer = fake.handle(
        "POST",
        "/api/profile-bulk-import-jobs",
        headers,
        json.dumps({"data": {"type": "profile-subscription-bulk-create-job"}}).encode(),
    )
    assert answer.status == 400


def test_the_admin_action_adds_the_selected_profiles_to_a_list_without_consent(
    admin_client, fake, on_commit
):
    ada = Profile.objects.create(email="ada@example.com")
    bob = Profile.objects.create(phone_number="+447400123456")
    changelist = "/admin/klaviyo_consent/profile/"
    form = admin_client.post(
        changelist, {"action": "add_to_list_action", "_selected_action": [ada.pk, bob.pk]}
    )
    assert form.status_code == 200 and b"list_id" in form.content
    assert not MembershipEvent.objects.exists()
    with on_commit():
        admin_client.post(
            changelist,
            {
                "action": "add_to_list_action",
                "_selected_action": [ada.pk, bob.pk],
                "confirm": "yes",
                "reason": "wholesale buyers, ticket 77",
                "list_id": "Single",
            },
        )
    events = MembershipEvent.objects.order_by("profile_id")
    assert [(e.profile_id, e.action, e.method) for e in events] == [
        (ada.pk, "add", "admin"),
        (bob.pk, "add", "admin"),
    ]
    assert {e.method_detail for e in events} == {"wholesale buyers, ticket 77"}
    assert fake.is_member("Single", email="ada@example.com")
    assert fake.is_member("Single", phone_number="+447400123456")
    assert not ConsentEvent.objects.exists()


def test_the_admin_action_refuses_a_bad_list_id(admin_client, fake):
    ada = Profile.objects.create(email="ada@example.com")
    page = admin_client.post(
        "/admin/klaviyo_consent/profile/",
        {
            "action": "remove_from_list_action",
            "_selected_action": [ada.pk],
            "confirm": "yes",
            "reason": "left the wholesale programme",
            "list_id": "../x",
        },
    )
    assert b"letters and digits" in page.content
    assert not MembershipEvent.objects.exists()


def _csv(tmp_path, text):
    path = tmp_path / "members.csv"
    path.write_text(text)
    return str(path)


def test_import_members_only_adds_every_row_to_the_list_without_consent(tmp_path, fake, on_commit):
    path = _csv(
        tmp_path,
        "email,phone_number,external_id,country\nada@example.com,,c-1,\n,07400 123456,,GB\n",
    )
    with on_commit():
        call_command("klaviyo_consent_import", path, "--members-only", "--list-id", "Single")
    events = MembershipEvent.objects.order_by("id")
    assert [(e.action, e.method, e.list_id) for e in events] == [("add", "import", "Single")] * 2
    assert Profile.objects.filter(phone_number="+447400123456").exists()
    assert not ConsentEvent.objects.exists()
    assert fake.is_member("Single", email="ada@example.com")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("email,email_marketing\nada@example.com,yes\n", "line 2: email_marketing"),
        ("email\nada@example.com\nnope\n", "line 3: email"),
        ("email\n\n,\n", "line 3"),
    ],
)
def test_import_members_only_names_the_bad_line_and_records_nothing(tmp_path, fake, text, expected):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match=expected):
        call_command(
            "klaviyo_consent_import", _csv(tmp_path, text), "--members-only", "--list-id", "Single"
        )
    assert not MembershipEvent.objects.exists()


def test_import_members_only_needs_a_list(tmp_path, fake):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="--list-id"):
        call_command(
            "klaviyo_consent_import", _csv(tmp_path, "email\na@example.com\n"), "--members-only"
        )


def test_import_members_only_dry_run_records_nothing_and_rejects_is_refused(tmp_path, fake):
    from django.core.management import CommandError

    path = _csv(tmp_path, "email\nada@example.com\nbob@example.com\n")
    out = StringIO()
    args = ("klaviyo_consent_import", path, "--members-only", "--list-id", "Single")
    call_command(*args, "--dry-run", stdout=out)
    assert "Would record 2 row(s)" in out.getvalue()
    assert not MembershipEvent.objects.exists() and not Profile.objects.exists()
    with pytest.raises(CommandError, match="--rejects is not available"):
        call_command(*args, "--rejects", str(tmp_path / "r.csv"))
    assert not MembershipEvent.objects.exists()


def test_a_failed_read_back_waits_and_says_why_without_a_verdict(api, fake, on_commit, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    record_membership("Single", [{"email": "ada@example.com"}], action="add")
    from klaviyo_consent.services.membership_push import push_memberships, verify_memberships

    push_memberships()
    fake.fail_next(400)  # not retried by the read itself: no sleeping in the test
    verify_memberships()
    delivery = MembershipDelivery.objects.get()
    assert delivery.status == "pushed"
    assert delivery.verify_attempts == 1
    assert delivery.reason.startswith("Read-back failed")
    assert delivery.next_attempt_at is not None


def test_the_list_bodies_the_app_sends_are_valid_for_the_sdk():
    from openapi_client.models.list_members_add_query import ListMembersAddQuery
    from openapi_client.models.list_members_delete_query import ListMembersDeleteQuery
    from openapi_client.models.profile_import_job_create_query import ProfileImportJobCreateQuery
    from openapi_client.models.profile_subscription_create_query_resource_object import (
        ProfileSubscriptionCreateQueryResourceObject,
    )

    from klaviyo_consent.backends.client import client_subscription
    from klaviyo_consent.services import list_payloads, payloads

    entry = list_payloads.import_entry(
        email="ada@example.com", phone_number="+447400123456", external_id="c-1"
    )
    assert "subscriptions" not in entry["attributes"]
    job = list_payloads.import_job([entry], list_id="Single")
    parsed = ProfileImportJobCreateQuery.from_dict(job)
    assert parsed.data.relationships.lists.data[0].id == "Single"
    assert (
        ListMembersAddQuery.from_dict(list_payloads.list_members(["01ABC"])).data[0].id == "01ABC"
    )
    assert ListMembersDeleteQuery.from_dict(list_payloads.list_members(["01ABC"])) is not None
    with pytest.raises(ValueError):
        list_payloads.list_members([str(i) for i in range(1001)])
    with pytest.raises(ValueError):
        list_payloads.import_job([], list_id="Single")
    subscription = client_subscription(
        payloads.profile_entry(
            email="ada@example.com",
            phone_number=None,
            consents=[("email", "marketing", "SUBSCRIBED", None)],
            klaviyo_id="01ABC",
        ),
        list_id="Single",
        custom_source="Footer",
    )
    data = subscription["data"]
    assert (
        data["type"] == "subscription" and data["relationships"]["list"]["data"]["id"] == "Single"
    )
    assert data["attributes"]["custom_source"] == "Footer"
    profile = data["attributes"]["profile"]["data"]
    assert "id" not in profile  # a public key cannot name a Klaviyo id
    assert ProfileSubscriptionCreateQueryResourceObject.from_dict(profile) is not None


def test_an_id_klaviyo_no_longer_has_is_added_by_its_identifiers_instead(api, fake, on_commit):
    known_id = fake.add_profile(email="bob@example.com")
    Profile.objects.create(email="bob@example.com", klaviyo_id=known_id)
    Profile.objects.create(email="ada@example.com", klaviyo_id="01GONE")  # deleted in Klaviyo
    with on_commit():
        response = api.post(
            MEMBERS.format("Single"),
            {"profiles": [{"email": "ada@example.com"}, {"email": "bob@example.com"}]},
            format="json",
        )
    assert response.status_code == 201
    assert fake.is_member("Single", email="ada@example.com")
    assert fake.is_member("Single", email="bob@example.com")
    assert fake.counts["bulk_import_profiles"] == 1  # ada, by her email
    assert Profile.objects.get(email="ada@example.com").klaviyo_id != "01GONE"
    assert not MembershipDelivery.objects.filter(status="failed").exists()


def test_removing_an_id_klaviyo_no_longer_has_is_done(api, fake, on_commit):
    Profile.objects.create(email="ada@example.com", klaviyo_id="01GONE")
    [event] = remove(api, on_commit, email="ada@example.com")["events"]
    delivery = MembershipDelivery.objects.get(pk=event["id"])
    assert (delivery.status, delivery.reason) == (
        "applied",
        "Klaviyo has no profile with this id: it is on no list",
    )


def test_a_failed_membership_is_shown_in_the_admin_and_can_be_retried(
    admin_client, fake, on_commit
):
    with on_commit():
        record_membership("Missing1", [{"email": "ada@example.com"}], action="add")
    event = MembershipEvent.objects.get()
    page = admin_client.get("/admin/klaviyo_consent/membershipevent/").content.decode()
    assert "Missing1" in page and "failed" in page
    fake.add_list("Missing1", "Late", "single_opt_in")
    admin_client.post(
        "/admin/klaviyo_consent/membershipevent/",
        {"action": "retry_action", "_selected_action": [event.pk]},
    )
    assert MembershipDelivery.objects.get().status == "pending"
    call_command("klaviyo_consent_sync")
    assert MembershipDelivery.objects.get().status == "applied"
    assert fake.is_member("Missing1", email="ada@example.com")
