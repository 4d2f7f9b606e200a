"""Issue 11: erasure that keeps the proof; evidence retention; Klaviyo's deletion job."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, models
from django.utils import timezone
from rest_framework.test import APIClient

from klaviyo_consent.choices import DeliveryStatus
from klaviyo_consent.exceptions import ErasureRefused, ImmutableConsentEvent, KlaviyoAPIError
from klaviyo_consent.models import (
    ConsentEvent,
    Delivery,
    Erasure,
    ErasureDelivery,
    EventPersonalData,
    IdentityEvent,
    LedgerEntry,
    Profile,
    WebhookDelivery,
)
from klaviyo_consent.receipts import verify_receipt
from klaviyo_consent.services import checkpoints, payloads
from klaviyo_consent.services.erasure import (
    ERASED,
    ErasureRequest,
    erase_expired_evidence,
    erase_profile,
    scrub,
)
from klaviyo_consent.services.erasure_push import push_erasures
from klaviyo_consent.services.health import note_answer
from klaviyo_consent.services.ledger import ConsentRequest, Evidence, record_consent
from klaviyo_consent.services.sync import sync
from tests.helpers import FAKE_HEADERS, SUBSCRIBE, body, post_to_fake, pull

pytestmark = pytest.mark.django_db

ADA_EMAIL = "ada@example.com"
ADA_PHONE = "+447400123456"
ADA_NEW_PHONE = "+447400654321"
#: The number staff gave her in the admin, with a reason.
ADA_ADMIN_PHONE = "+447400111222"
ADA_EXTERNAL = "crm-ada-4711"
ADA_IP = "203.0.113.77"
ADA_AGENT = "AdaBrowser/9.1 (Lovelace)"
ADA_PAGE = "https://shop.example/ada-landing?ref=ada-campaign"
#: Everything that identifies Ada; none may remain anywhere after her erasure.
ADA = (
    ADA_EMAIL,
    ADA_PHONE,
    ADA_NEW_PHONE,
    ADA_ADMIN_PHONE,
    ADA_EXTERNAL,
    ADA_IP,
    ADA_AGENT,
    ADA_PAGE,
)
#: A list she was added to through the lists API (a membership is not a consent).
ADA_LIST = "Single"
ERASE = "/api/consent/profiles/{}/erase/"
CHECK = "/api/consent/check/"


@pytest.fixture
def eraser(django_user_model: Any) -> Any:
    user = django_user_model.objects.create_user("dpo", password="pw")
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="klaviyo_consent", codename="erase_profile"
        )
    )
    return user


@pytest.fixture
def ada(api, fake, on_commit, admin_client) -> Profile:
    """Ada: email and SMS consent with evidence, an external id, a replaced number, a number
    staff changed in the admin with a reason, a list membership, Klaviyo's mirror, a Klaviyo
    error quoting her email, Klaviyo's health naming her, and a webhook naming her."""
    with on_commit():
        response = api.post(
            SUBSCRIBE,
            body(
                profile={"email": ADA_EMAIL, "phone_number": ADA_PHONE, "external_id": ADA_EXTERNAL}
            ),
            format="json",
            REMOTE_ADDR=ADA_IP,
            HTTP_USER_AGENT=ADA_AGENT,
            HTTP_REFERER=ADA_PAGE,
        )
    assert response.status_code == 201, response.data
    profile = Profile.objects.get(pk=response.data["profile"]["id"])
    with on_commit():
        changed = api.post(
            f"/api/consent/profiles/{profile.pk}/phone-number/",
            {"phone_number": ADA_NEW_PHONE},
            format="json",
        )
    assert changed.status_code == 200, changed.data
    with on_commit():
        added = api.post(
            f"/api/consent/lists/{ADA_LIST}/members/",
            {"profiles": [{"email": ADA_EMAIL}]},
            format="json",
        )
    assert added.status_code == 201, added.content
    sync()
    with on_commit():
        admin_client.post(
            "/admin/klaviyo_consent/profile/",
            {
                "action": "replace_phone_number_action",
                "_selected_action": [profile.pk],
                "confirm": "yes",
                "phone_number": ADA_ADMIN_PHONE,
                "country": "",
                "reason": "customer asked on the phone, ticket 4821",
            },
            follow=True,  # staff read the confirmation message, which names the new number
        )
    assert Profile.objects.get(pk=profile.pk).phone_number == ADA_ADMIN_PHONE
    sync()
    pull(profile.pk)
    profile.refresh_from_db()
    assert profile.subscriptions and profile.klaviyo_id
    # Klaviyo's error detail quoting her address, and a webhook body naming her.
    Delivery.objects.filter(profile=profile).update(
        reason=f"Klaviyo: {ADA_EMAIL.upper()} is invalid",
        errors=[{"detail": f"Invalid email {ADA_EMAIL}", "source": {"pointer": "/data"}}],
    )
    WebhookDelivery.objects.create(
        webhook_id="wh-1",
        signature="a" * 64,
        klaviyo_timestamp="1",
        topics=["profile.subscribed"],
        body={"data": [{"attributes": {"email": ADA_EMAIL, "phone_number": ADA_NEW_PHONE}}]},
        error=f"could not match {ADA_EXTERNAL}",
    )
    note_answer(
        KlaviyoAPIError(status=429, errors=[{"detail": f"Slow down on {ADA_ADMIN_PHONE}"}]),
        "get_profiles",
    )
    return profile


@pytest.fixture
def bob(fake) -> Profile:
    events = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email="bob@example.com",
            evidence=Evidence(ip_address="198.51.100.9", user_agent="BobAgent/1"),
        )
    ).events
    return events[0].profile


def _text_columns(model: type[models.Model]) -> list[str]:
    return [
        field.attname
        for field in model._meta.concrete_fields
        if isinstance(
            field,
            models.CharField | models.TextField | models.JSONField | models.GenericIPAddressField,
        )
    ]


def _leftovers(values: tuple[str, ...]) -> list[str]:
    """Every (table, column, row) of the app, and of Django's tables, still holding a value."""
    found = []
    for model in apps.get_models():
        columns = _text_columns(model)
        if not columns:
            continue
        for row in model._base_manager.values_list("pk", *columns).iterator():
            for column, cell in zip(columns, row[1:], strict=True):
                text = json.dumps(cell) if not isinstance(cell, str) else cell
                for value in values:
                    if value.lower() in (text or "").lower() or json.dumps(value)[1:-1] in text:
                        found.append(f"{model._meta.db_table}.{column} #{row[0]}: {value}")
    return found


def _admin_pages(client: Any) -> str:
    """Every admin changelist, and the change page of every row, as one text."""
    pages = []
    for model in admin.site._registry:
        if model._meta.app_label != "klaviyo_consent":
            continue
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        pages.append(client.get(base).content.decode())
        for pk in model._base_manager.values_list("pk", flat=True):
            page = client.get(f"{base}{pk}/change/")
            assert page.status_code == 200, (base, pk)
            pages.append(page.content.decode())
            if "447400111222" in pages[-1]:
                print(
                    "HIT",
                    base,
                    pk,
                    pages[-1][max(0, pages[-1].index("447400111222") - 1500) :][:1800],
                )
    return "\n".join(pages)


def _api_pages(api: APIClient, profile: Profile) -> str:
    paths = [
        "/api/consent/profiles/",
        f"/api/consent/profiles/{profile.pk}/",
        "/api/consent/events/",
        f"/api/consent/events/?profile={profile.pk}",
        f"/api/consent/profiles/{profile.pk}/receipts/",
        "/api/consent/checkpoints/",
    ]
    paths += [
        "/api/consent/events/export/?format=csv",
        "/api/consent/events/export/?format=jsonl",
        f"/api/consent/events/export/?format=jsonl&profile={profile.pk}",
    ]
    pages = []
    for path in paths:
        page = api.get(path)
        assert page.status_code == 200, (path, page.status_code)
        pages.append(b"".join(page.streaming_content) if page.streaming else page.content)
    pages = [page.decode() for page in pages]
    # members/?email= echoes the address it is asked about (as check/ does): the rest may not
    # name her.
    for query in ({"email": ADA_EMAIL}, {"phone_number": ADA_ADMIN_PHONE}):
        page = api.get(f"/api/consent/lists/{ADA_LIST}/members/", query)
        assert page.status_code == 200, page.content
        for member in page.json()["members"]:
            member.pop("email"), member.pop("phone_number")
            pages.append(json.dumps(member))
    for event in ConsentEvent.objects.filter(profile=profile):
        pages.append(api.get(f"/api/consent/events/{event.pk}/receipt/").content.decode())
    # (check/ echoes the identifiers it is asked about: its own test asks it.)
    return "\n".join(pages)


def test_erasure_removes_the_person_from_every_table_api_and_admin_page_and_keeps_the_proof(
    ada, bob, api, eraser, admin_client, fake, on_commit
):
    checkpoints.checkpoint()
    assert _leftovers(ADA), "the fixture must leave Ada everywhere first"
    client = APIClient()
    client.force_authenticate(eraser)
    with on_commit():
        response = client.post(ERASE.format(ada.pk), {"reason": "ticket 42"}, format="json")
    assert response.status_code == 202, response.data
    assert response.data["events"] == ConsentEvent.objects.filter(profile=ada).count()
    assert response.data["klaviyo_deletion"][0]["status"] == DeliveryStatus.PENDING  # queued
    assert api.get(f"/api/consent/profiles/{ada.pk}/").data["erased_at"]
    # Pushed as the erasure committed: Klaviyo accepted the job.
    assert ErasureDelivery.objects.get().status == DeliveryStatus.APPLIED
    assert fake.deletion_jobs == [
        {"field": "id", "value": ada.klaviyo_id, "deleted": [ada.klaviyo_id]}
    ]
    assert fake._find(ada.klaviyo_id, ADA_EMAIL, ADA_NEW_PHONE) is None  # Klaviyo forgot her

    checkpoints.checkpoint()  # the erasure record becomes a leaf
    assert LedgerEntry.objects.filter(erasure_id=response.data["erasure_id"]).exists()
    assert _leftovers(ADA) == []
    admin_pages = _admin_pages(admin_client).lower()
    assert [value for value in ADA if value.lower() in admin_pages] == []
    api_pages = _api_pages(api, ada).lower()
    assert [value for value in ADA if value.lower() in api_pages] == []

    call_command("klaviyo_consent_verify")  # every leaf, root and signature still holds
    receipts = api.get(f"/api/consent/profiles/{ada.pk}/receipts/").json()
    assert len(receipts["receipts"]) == ConsentEvent.objects.filter(profile=ada).count()
    for receipt in receipts["receipts"]:
        verify_receipt(receipt)
        assert receipt["subject"]["email"] is None and receipt["subject"]["erased_at"]
        principal = receipt["record"]["pii_principal_id"]
        assert principal["email"] or principal["phone_number"]  # digests stand in
    # Kept: channel, purpose, consent, times, text version and verdicts.
    kept = ConsentEvent.objects.filter(profile=ada, method="form").first()
    assert kept.consent == "SUBSCRIBED" and kept.consent_text and kept.delivery.status
    # Bob was not touched.
    assert ConsentEvent.objects.get(profile=bob).email == "bob@example.com"
    assert ConsentEvent.objects.get(profile=bob).ip_address == "198.51.100.9"


def test_copies_on_other_rows_and_in_the_admin_history_are_erased_too(ada, bob, admin_user):
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.contenttypes.models import ContentType

    # A bulk job's error that names no profile is kept on every row of the job: Bob's too.
    Delivery.objects.filter(profile=bob).update(
        reason=f"Will retry: Klaviyo could not read {ADA_EMAIL}",
        errors=[{"detail": f"profile {ADA_NEW_PHONE} rejected"}],
    )
    LogEntry.objects.create(
        user=admin_user,
        content_type=ContentType.objects.get_for_model(Profile),
        object_id=str(ada.pk),
        object_repr=str(ada),
        action_flag=CHANGE,
        change_message=f"looked at {ADA_EMAIL}",
    )
    erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))
    assert _leftovers(ADA) == []
    bobs = Delivery.objects.get(profile=bob)
    assert bobs.reason == f"Will retry: Klaviyo could not read {ERASED}"  # the rest kept
    assert ConsentEvent.objects.get(profile=bob).email == "bob@example.com"


def test_check_answers_erased_with_the_date_by_digest_without_storing_the_email(ada, api, eraser):
    checkpoints.checkpoint()
    erasure = erase_profile(ErasureRequest(profile_id=ada.pk, source="api", requested_by=eraser))
    answer = api.post(
        CHECK, {"emails": [" Ada@Example.com "], "phone_numbers": [ADA_NEW_PHONE]}, format="json"
    )
    assert answer.status_code == 200
    for result in answer.data["results"]:
        assert result["erased"] is True
        assert result["erased_at"].startswith(erasure.requested_at.date().isoformat())
        assert result["consent"] is None
    assert _leftovers((ADA_EMAIL, ADA_NEW_PHONE)) == []
    other = api.post(CHECK, {"emails": ["nobody@example.com"]}, format="json").data["results"]
    assert other[0]["erased"] is False and other[0]["consent"] is not None


def test_erasing_needs_the_erase_profile_permission(ada, api, fake):
    response = api.post(ERASE.format(ada.pk), {}, format="json")  # view + change_profile only
    assert response.status_code == 403
    assert "erase_profile" in str(response.data)
    assert Profile.objects.get(pk=ada.pk).erased_at is None
    assert APIClient().post(ERASE.format(ada.pk), {}, format="json").status_code in (401, 403)


def test_the_admin_erase_action_asks_for_confirmation_and_needs_the_permission(
    ada, admin_client, client, staff, fake
):
    url = "/admin/klaviyo_consent/profile/"
    asked = admin_client.post(url, {"action": "erase_action", "_selected_action": [ada.pk]})
    assert asked.status_code == 200 and "cannot be undone" in asked.content.decode()
    assert Profile.objects.get(pk=ada.pk).erased_at is None  # nothing before the confirmation
    unticked = {"action": "erase_action", "_selected_action": [ada.pk], "confirm": "yes"}
    admin_client.post(url, {**unticked, "reason": "ticket 7"})
    assert Profile.objects.get(pk=ada.pk).erased_at is None  # the box was not ticked
    admin_client.post(url, {**unticked, "understood": "on"})
    assert Profile.objects.get(pk=ada.pk).erased_at is None  # no reason given
    admin_client.post(url, {**unticked, "understood": "on", "reason": "ticket 7"})
    assert Profile.objects.get(pk=ada.pk).erased_at is not None
    assert Erasure.objects.get(profile=ada).recorded_by_label == "admin"
    # The admin history names the erased profile, not the email it had.
    history = LogEntry.objects.get(object_id=str(ada.pk), change_message__contains="ticket 7")
    assert ADA_EMAIL not in history.object_repr
    # A staff member without erase_profile is not offered the action.
    staff.is_staff = True
    staff.save()
    client.force_login(staff)
    assert "erase_action" not in client.get(url).content.decode()


def test_the_command_erases_by_email_phone_or_profile_and_names_a_bad_one(ada, bob, fake):
    with pytest.raises(CommandError, match="No profile has this email"):
        call_command("klaviyo_consent_erase", "--email", "nobody@example.com")
    call_command("klaviyo_consent_erase", "--email", "ADA@example.com")
    assert Profile.objects.get(pk=ada.pk).erased_at is not None
    with pytest.raises(CommandError, match="already erased on"):
        call_command("klaviyo_consent_erase", "--email", ADA_EMAIL)
    call_command("klaviyo_consent_erase", "--profile", str(bob.pk))
    assert Profile.objects.get(pk=bob.pk).erased_at is not None
    with pytest.raises(CommandError, match="--profile 999999"):
        call_command("klaviyo_consent_erase", "--profile", "999999")


def test_every_event_gets_its_leaf_before_its_raw_values_go(ada, fake):
    assert LedgerEntry.objects.count() == 0  # nothing checkpointed yet
    erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))
    assert not ConsentEvent.objects.filter(profile=ada, ledger_entry__isnull=True).exists()
    checkpoints.checkpoint()
    call_command("klaviyo_consent_verify")


def test_an_erasure_record_is_append_only_and_a_changed_one_breaks_verify(ada, fake):
    erasure = erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))
    checkpoints.checkpoint()
    with pytest.raises(ImmutableConsentEvent):
        erasure.save()
    with pytest.raises(ImmutableConsentEvent):
        Erasure.objects.filter(pk=erasure.pk).update(source="api")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Erasure._meta.db_table} SET requested_at = %s WHERE id = %s",
            [erasure.requested_at - timedelta(days=30), erasure.pk],
        )
    with pytest.raises(CommandError, match=f"Erasure {erasure.pk} .*no longer matches"):
        call_command("klaviyo_consent_verify")


def test_pending_consent_pushes_stop_when_the_person_is_erased(fake):
    [event] = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED", subscriptions={"email": {"marketing": True}}, email=ADA_EMAIL
        )
    ).events
    erase_profile(ErasureRequest(profile_id=event.profile_id, source="command"))
    delivery = Delivery.objects.get(pk=event.pk)
    assert delivery.status == DeliveryStatus.FAILED and "erased" in delivery.reason
    sync()
    assert fake.jobs == []  # no subscribe job naming a blank identifier
    # Klaviyo never knew her id: the deletion names her by the identifier she gave.
    assert fake.deletion_jobs == [{"field": "email", "value": ADA_EMAIL, "deleted": []}]


# --- the deletion job's outbox: retries and its own state -------------------------------------


@pytest.fixture
def queued(ada) -> ErasureDelivery:
    erasure = erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))
    return erasure.deliveries.get()


def _due(row: ErasureDelivery) -> None:
    ErasureDelivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())


def test_a_5xx_spends_an_attempt_and_the_next_run_deletes(queued, fake):
    fake.fail_next(503)
    assert push_erasures() == 0
    queued.refresh_from_db()
    assert (queued.status, queued.attempts, queued.deferrals) == ("pending", 1, 0)
    assert queued.next_attempt_at > timezone.now() and queued.target_value
    _due(queued)
    assert push_erasures() == 1
    queued.refresh_from_db()
    assert queued.status == DeliveryStatus.APPLIED and queued.pushed_at
    assert queued.target_value == ""  # the identifier was kept only for the request
    assert fake.deletion_jobs[0]["deleted"]


def test_a_429_waits_without_spending_an_attempt(queued, fake):
    fake.fail_next(429, retry_after=30)
    push_erasures()
    queued.refresh_from_db()
    assert (queued.status, queued.attempts, queued.deferrals) == ("pending", 0, 1)
    assert queued.next_attempt_at >= timezone.now() + timedelta(seconds=29)


def test_retries_that_run_out_dead_letter_and_an_operator_can_requeue(queued, fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "MAX_ATTEMPTS": 2}
    for _ in range(2):
        fake.fail_next(500)
        push_erasures()
        _due(queued)
    queued.refresh_from_db()
    assert queued.status == DeliveryStatus.FAILED and queued.dead_lettered_at
    from klaviyo_consent.services.erasure_push import retry_failed

    assert retry_failed() == 1
    assert push_erasures() == 1


def test_a_4xx_naming_the_request_fails_with_klaviyos_errors(queued, fake):
    fake.fail_next(400, errors=[{"detail": "bad profile", "status": 400}])
    push_erasures()
    queued.refresh_from_db()
    assert queued.status == DeliveryStatus.FAILED
    assert queued.errors[0]["detail"] == "bad profile" and "bad profile" in queued.reason


# --- the fake Klaviyo models the endpoint --------------------------------------------------


def test_the_fake_deletes_every_matching_profile_and_refuses_two_identifiers(fake):
    body_ = payloads.profile_deletion("email", ADA_EMAIL)
    both = json.loads(json.dumps(body_))
    both["data"]["attributes"]["profile"]["data"]["attributes"]["phone_number"] = ADA_PHONE
    refused = post_to_fake(fake, "/api/data-privacy-deletion-jobs", both)
    assert refused.status == 400
    wrong_type = json.loads(json.dumps(body_))
    wrong_type["data"]["type"] = "profile-deletion-job"
    assert post_to_fake(fake, "/api/data-privacy-deletion-jobs", wrong_type).status == 400
    accepted = post_to_fake(fake, "/api/data-privacy-deletion-jobs", body_)
    assert accepted.status == 202 and accepted.body == b""
    with pytest.raises(ValueError):
        payloads.profile_deletion("external_id", ADA_EXTERNAL)
    assert FAKE_HEADERS["revision"]


# --- evidence retention ----------------------------------------------------------------------


def test_evidence_past_retention_is_erased_and_the_consent_kept(bob, fake, settings):
    [old] = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email="old@example.com",
            evidence=Evidence(ip_address="192.0.2.1", user_agent="OldAgent", page_url="https://o"),
        )
    ).events
    checkpoints.checkpoint()
    assert erase_expired_evidence() is None  # EVIDENCE_RETENTION_DAYS unset: kept forever
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "EVIDENCE_RETENTION_DAYS": 30}
    later = timezone.now() + timedelta(days=31)
    erasure = erase_expired_evidence(now=later)
    assert erasure.events == 2 and erasure.evidence_before == later - timedelta(days=30)
    old = ConsentEvent.objects.get(pk=old.pk)
    assert (old.ip_address, old.user_agent, old.page_url) == (None, "", "")
    assert old.email == "old@example.com" and old.consent == "SUBSCRIBED"  # consent kept
    assert erase_expired_evidence(now=later) is None  # nothing left to erase
    checkpoints.checkpoint()
    call_command("klaviyo_consent_verify")


def test_the_retention_command_reports_and_a_bad_setting_is_named(bob, fake, settings):
    call_command("klaviyo_consent_erase", "--expired-evidence")  # unset: nothing, no error
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "EVIDENCE_RETENTION_DAYS": "30"}
    with pytest.raises(CommandError, match="EVIDENCE_RETENTION_DAYS"):
        call_command("klaviyo_consent_erase", "--expired-evidence")


def test_a_bad_retention_setting_is_a_system_check_error(settings):
    from django.core import checks

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "EVIDENCE_RETENTION_DAYS": 0}
    assert "klaviyo_consent.E012" in [m.id for m in checks.run_checks()]
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "EVIDENCE_RETENTION_DAYS": 365}
    assert "klaviyo_consent.E012" not in [m.id for m in checks.run_checks()]


def test_without_a_signing_key_events_outside_the_ledger_are_not_erased(ada, fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "LEDGER_SIGNING_KEY": None}
    with pytest.raises(ErasureRefused, match="lose their proof"):
        erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))
    assert not EventPersonalData.objects.filter(erased_at__isnull=False).exists()
    assert Profile.objects.get(pk=ada.pk).email == ADA_EMAIL


def test_evidence_not_yet_in_the_ledger_is_kept_until_it_is(fake, settings):
    record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email="new@example.com",
            evidence=Evidence(ip_address="192.0.2.2"),
        )
    )
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "EVIDENCE_RETENTION_DAYS": 1}
    assert erase_expired_evidence(now=timezone.now() + timedelta(days=2)) is None
    assert EventPersonalData.objects.get().ip_address == "192.0.2.2"


# --- the data split keeps the attribute API --------------------------------------------------


def test_events_keep_their_attribute_api_over_the_erasable_row(fake):
    event = ConsentEvent(email="x@example.com", ip_address="192.0.2.5")
    assert (event.email, event.ip_address, event.phone_number, event.external_id) == (
        "x@example.com",
        "192.0.2.5",
        "",
        None,
    )
    [stored] = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email="x@example.com",
        )
    ).events
    assert ConsentEvent.objects.filter(personal_data__email="x@example.com").get() == stored
    assert EventPersonalData.objects.get(event=stored).email == "x@example.com"
    assert IdentityEvent.objects.filter(personal_data__new_value="x@example.com").count() == 0


def test_an_unknown_or_already_erased_profile_is_refused(fake):
    with pytest.raises(Profile.DoesNotExist):
        erase_profile(ErasureRequest(profile_id=123456, source="api"))
    [event] = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED", subscriptions={"email": {"marketing": True}}, email=ADA_EMAIL
        )
    ).events
    erase_profile(ErasureRequest(profile_id=event.profile_id, source="api"))
    with pytest.raises(ErasureRefused, match="already erased"):
        erase_profile(ErasureRequest(profile_id=event.profile_id, source="api"))


def test_a_merged_away_profile_is_erased_through_its_survivor(fake):
    from klaviyo_consent.services.identity import merge_profiles

    def person(**identifiers: str) -> Profile:
        channel = "email" if "email" in identifiers else "sms"
        request = ConsentRequest(
            consent="SUBSCRIBED", subscriptions={channel: {"marketing": True}}, **identifiers
        )
        return record_consent(request).profile

    survivor, other = person(email=ADA_EMAIL), person(phone_number=ADA_PHONE)
    merge_profiles(survivor, other)
    with pytest.raises(ErasureRefused, match=f"merged into profile {survivor.pk}"):
        erase_profile(ErasureRequest(profile_id=other.pk, source="api"))
    erase_profile(ErasureRequest(profile_id=survivor.pk, source="api"))
    assert Profile.objects.get(pk=other.pk).erased_at is not None
    # Until Klaviyo accepts the deletion jobs, each keeps the one identifier it must name.
    assert len(_leftovers((ADA_EMAIL, ADA_PHONE))) == 2
    assert push_erasures() == 2  # both Klaviyo profiles (the mirror knew neither id)
    assert _leftovers((ADA_EMAIL, ADA_PHONE)) == []


def test_scrub_replaces_identifiers_in_text_and_json_whatever_their_case():
    value = {"Ada@Example.com": ["x ADA@EXAMPLE.COM y", 3, None]}
    assert scrub(value, ["ada@example.com"]) == {ERASED: [f"x {ERASED} y", 3, None]}


# --- the migration: existing rows move, the append-only triggers hold ------------------------


@pytest.mark.django_db(transaction=True)
def test_migration_0013_moves_existing_values_and_keeps_the_append_only_triggers():
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("klaviyo_consent", "0012_admin_indexes")])  # the one before 0013
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO klaviyo_consent_profile (email, klaviyo_id, subscriptions, created_at, "
            "updated_at) VALUES ('old@example.com', '', '{}', %s, %s)",
            [timezone.now(), timezone.now()],
        )
        cursor.execute("SELECT id FROM klaviyo_consent_profile")
        [(profile_id,)] = cursor.fetchall()
        cursor.execute(
            "INSERT INTO klaviyo_consent_consentevent (profile_id, email, phone_number, "
            "external_id, channel, purpose, consent, method, method_detail, custom_source, "
            "consent_text, recorded_at, list_id, historical_import, ip_address, user_agent, "
            "page_url, klaviyo_data, recorded_by_label) VALUES (%s, 'old@example.com', '', "
            "'crm-1', 'email', 'marketing', 'SUBSCRIBED', 'api', '', '', '', %s, '', %s, "
            "'192.0.2.9', 'OldAgent', 'https://old', '{}', '')",
            [profile_id, timezone.now(), False],
        )
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    event = ConsentEvent.objects.get()
    assert (event.email, event.external_id, event.ip_address, event.user_agent) == (
        "old@example.com",
        "crm-1",
        "192.0.2.9",
        "OldAgent",
    )
    with pytest.raises(Exception, match="append-only"), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {ConsentEvent._meta.db_table} SET consent = 'UNSUBSCRIBED'")
    with pytest.raises(Exception, match="append-only"), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {ConsentEvent._meta.db_table}")
    checkpoints.checkpoint()
    with pytest.raises(Exception, match="append-only"), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {LedgerEntry._meta.db_table} SET leaf_hash = 'x'")


# --- what an erasure left behind, and what could bring it back ---------------------------------


def test_retry_failed_never_resends_an_erased_persons_stopped_pushes(api, fake, on_commit):
    from klaviyo_consent.models import MembershipDelivery
    from klaviyo_consent.services.sync import retry_failed

    with on_commit():
        response = api.post(
            SUBSCRIBE, body(profile={"email": ADA_EMAIL, "phone_number": ADA_PHONE}), format="json"
        )
        members = api.post(
            "/api/consent/lists/Single/members/",
            {"profiles": [{"email": ADA_EMAIL}]},
            format="json",
        )
    assert members.status_code == 201, members.content
    profile_id = response.data["profile"]["id"]
    # Nothing pushed yet: the erasure stops every pending consent and membership push.
    Delivery.objects.filter(profile_id=profile_id).update(status=DeliveryStatus.PENDING)
    MembershipDelivery.objects.filter(profile_id=profile_id).update(status=DeliveryStatus.PENDING)
    jobs_before = len(fake.jobs)
    erase_profile(ErasureRequest(profile_id=profile_id, source="command"))
    assert retry_failed() == 0
    call_command("klaviyo_consent_sync", "--retry-failed")
    assert Delivery.objects.filter(profile_id=profile_id, status="pending").count() == 0
    assert MembershipDelivery.objects.filter(profile_id=profile_id, status="pending").count() == 0
    assert len(fake.jobs) == jobs_before  # no job names her again


def test_the_admin_retry_action_leaves_an_erased_persons_pushes_stopped(admin_client, fake):
    [event] = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED", subscriptions={"email": {"marketing": True}}, email=ADA_EMAIL
        )
    ).events
    erase_profile(ErasureRequest(profile_id=event.profile_id, source="command"))
    admin_client.post(
        "/admin/klaviyo_consent/consentevent/",
        {"action": "retry_action", "_selected_action": [event.pk]},
    )
    assert Delivery.objects.get(pk=event.pk).status == DeliveryStatus.FAILED


@pytest.mark.parametrize("dead", [False, True])
def test_a_refused_deletion_job_keeps_no_identifier_klaviyo_quoted(queued, fake, settings, dead):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "MAX_ATTEMPTS": 1}
    quoted = [{"detail": f"profile {ADA_EMAIL} / {ADA_NEW_PHONE} not deletable", "status": 400}]
    fake.fail_next(500 if dead else 400, errors=quoted)
    push_erasures()
    queued.refresh_from_db()
    assert queued.status == DeliveryStatus.FAILED and bool(queued.dead_lettered_at) is dead
    assert _leftovers((ADA_EMAIL, ADA_NEW_PHONE)) == []
    assert ERASED in queued.reason and queued.errors[0]["detail"].count(ERASED) == 2
    assert queued.target_value  # kept until Klaviyo accepts the job


def test_klaviyos_health_detail_naming_the_person_is_scrubbed(ada, fake):
    from klaviyo_consent.models import KlaviyoHealth

    KlaviyoHealth.objects.create(
        status=403,
        seen=1,
        operation="get_profiles",
        detail=f"No scope to read {ADA_EMAIL}",
        last_seen_at=timezone.now(),
    )
    erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))
    assert KlaviyoHealth.objects.get(status=403).detail == f"No scope to read {ERASED}"
    assert ADA_ADMIN_PHONE not in KlaviyoHealth.objects.get(status=429).detail


def test_the_admin_history_of_any_object_naming_the_person_is_scrubbed(ada, admin_user):
    from django.contrib.admin.models import CHANGE
    from django.contrib.contenttypes.models import ContentType

    event = ConsentEvent.objects.filter(profile=ada).first()
    LogEntry.objects.create(
        user=admin_user,
        content_type=ContentType.objects.get_for_model(ConsentEvent),
        object_id=str(event.pk),
        object_repr=f"event of {ADA_EMAIL}",
        action_flag=CHANGE,
        change_message=f"Withdrawn. Reason: asked from {ADA_NEW_PHONE}",
    )
    erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))
    entry = LogEntry.objects.get(content_type__model="consentevent")
    assert entry.object_repr == f"event of {ERASED}"
    assert entry.change_message == f"Withdrawn. Reason: asked from {ERASED}"


@pytest.mark.parametrize("reason", [f"asked by {ADA_EMAIL}", "called from +44 7400 123456"])
def test_a_reason_naming_an_email_or_phone_number_is_refused(reason, fake):
    from klaviyo_consent.admin.confirm import ReasonForm
    from klaviyo_consent.exceptions import ConsentValidationError
    from klaviyo_consent.services.membership import record_membership

    form = ReasonForm({"reason": reason})
    assert not form.is_valid()
    assert "must not contain an email address or phone number" in str(form.errors["reason"])
    assert ReasonForm({"reason": "customer asked by phone, ticket 4821"}).is_valid()
    with pytest.raises(ConsentValidationError) as refused:
        record_membership(
            "Single", [{"email": "bob@example.com"}], action="add", method_detail=reason
        )
    assert refused.value.field == "method_detail"
    assert "kept after erasure" in str(refused.value)


def test_an_identity_events_reason_is_erasable_and_erased_with_the_person(ada, fake):
    from klaviyo_consent.models import IdentityPersonalData

    changed = IdentityEvent.objects.filter(profile=ada).first()
    assert "reason" not in {f.name for f in IdentityEvent._meta.concrete_fields}
    assert changed.reason == changed.personal_data.reason  # the attribute API is kept
    erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))
    assert set(IdentityPersonalData.objects.values_list("reason", flat=True)) <= {None, ""}


@pytest.mark.django_db(transaction=True)
def test_migration_0015_moves_identity_reasons_and_keeps_the_append_only_triggers():
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("klaviyo_consent", "0014_delivery_history")])
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO klaviyo_consent_profile (email, klaviyo_id, subscriptions, created_at, "
            "updated_at) VALUES ('old@example.com', '', '{}', %s, %s)",
            [now, now],
        )
        cursor.execute("SELECT id FROM klaviyo_consent_profile")
        [(profile_id,)] = cursor.fetchall()
        cursor.execute(
            "INSERT INTO klaviyo_consent_identityevent (profile_id, change, field, method, "
            "reason, recorded_at, recorded_by_label) VALUES (%s, 'phone_number_replaced', "
            "'phone_number', 'admin', 'ticket 9', %s, '')",
            [profile_id, now],
        )
        cursor.execute("SELECT id FROM klaviyo_consent_identityevent")
        [(event_id,)] = cursor.fetchall()
        cursor.execute(
            "INSERT INTO klaviyo_consent_consentevent (profile_id, channel, purpose, consent, "
            "method, method_detail, custom_source, consent_text, recorded_at, list_id, "
            "historical_import, klaviyo_data, recorded_by_label) VALUES (%s, 'email', "
            "'marketing', 'SUBSCRIBED', 'api', '', '', '', %s, '', %s, '{}', '')",
            [profile_id, now, False],
        )
        cursor.execute(
            "INSERT INTO klaviyo_consent_identitypersonaldata (event_id, old_value, new_value, "
            "moved) VALUES (%s, '+447400123456', '+447400654321', '{}')",
            [event_id],
        )
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    event = IdentityEvent.objects.get()
    assert (event.reason, event.old_value) == ("ticket 9", "+447400123456")
    with pytest.raises(Exception, match="append-only"), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {ConsentEvent._meta.db_table} SET consent = 'UNSUBSCRIBED'")
    with pytest.raises(Exception, match="append-only"), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {ConsentEvent._meta.db_table}")


def test_a_consent_method_detail_naming_an_email_or_phone_number_is_refused(api, fake):
    from klaviyo_consent.exceptions import ConsentValidationError

    with pytest.raises(ConsentValidationError) as refused:
        record_consent(
            ConsentRequest(
                consent="SUBSCRIBED",
                subscriptions={"email": {"marketing": True}},
                email="bob@example.com",
                method_detail=f"forwarded by {ADA_EMAIL}",
            )
        )
    assert refused.value.field == "method_detail"
    answer = api.post(SUBSCRIBE, body(method_detail=f"phoned from {ADA_PHONE}"), format="json")
    assert answer.status_code == 400 and "method_detail" in answer.data
    assert not ConsentEvent.objects.exists()


def test_an_erasure_reason_naming_an_email_or_phone_number_is_refused(ada, eraser, fake):
    client = APIClient()
    client.force_authenticate(eraser)
    answer = client.post(ERASE.format(ada.pk), {"reason": f"asked by {ADA_EMAIL}"}, format="json")
    assert answer.status_code == 400 and "kept after erasure" in str(answer.data["reason"])
    with pytest.raises(CommandError, match="reason"):
        call_command("klaviyo_consent_erase", "--profile", str(ada.pk), "--reason", ADA_PHONE)
    assert Profile.objects.get(pk=ada.pk).erased_at is None
    assert not Erasure.objects.exists()


def test_no_failed_push_of_an_erased_person_of_any_kind_is_requeued(ada, fake):
    from klaviyo_consent.models import IdentityDelivery, MembershipDelivery
    from klaviyo_consent.services import identity_push, outbox
    from klaviyo_consent.services.sync import retry_failed

    erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))
    kinds = (Delivery, IdentityDelivery, MembershipDelivery)
    for model in kinds:
        assert model.objects.filter(profile=ada).exists()
        outbox.mark_failed(model.objects.filter(profile=ada), "Klaviyo refused it", [])
    assert retry_failed() == 0 and identity_push.retry_failed() == 0
    for model in kinds:
        assert not model.objects.filter(profile=ada).exclude(status="failed").exists()


def test_an_erased_persons_page_and_ledger_say_erased_and_keep_the_consent(ada, api, admin_client):
    before = api.get(f"/api/consent/profiles/{ada.pk}/").json()["ledger"]
    assert before["email"]["marketing"]["consent"] == "SUBSCRIBED"
    erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))

    # The ledger still says what she had agreed to, not NEVER_SUBSCRIBED.
    after = api.get(f"/api/consent/profiles/{ada.pk}/").json()
    assert after["erased_at"] is not None
    assert after["ledger"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert after["ledger"]["email"]["marketing"]["event_id"] is not None
    # The admin page says so and offers no action.
    html = admin_client.get(f"/admin/klaviyo_consent/profile/{ada.pk}/change/").content.decode()
    assert "Erased on" in html and "Nothing more can be recorded" in html
    assert 'name="action" value="withdraw_action"' not in html


def test_a_number_change_on_an_erased_profile_is_a_400_naming_the_profile(ada, api):
    erase_profile(ErasureRequest(profile_id=ada.pk, source="command"))
    response = api.post(
        f"/api/consent/profiles/{ada.pk}/phone-number/",
        {"phone_number": "07400 654321", "country": "GB"},
        format="json",
    )
    assert response.status_code == 400
    assert "erased" in str(response.json()["profile"])
