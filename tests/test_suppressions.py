"""Suppress and unsuppress from the site: recorded in the ledger, sent through the outbox."""

from __future__ import annotations

import pytest

from klaviyo_consent.models import ConsentEvent, Delivery, Profile
from tests.helpers import ledger, subscribe

pytestmark = pytest.mark.django_db

SUPPRESS = "/api/consent/suppress/"
UNSUPPRESS = "/api/consent/unsuppress/"
EMAIL_ONLY = {"email": {"marketing": True}}


def suppressions(fake, email):
    shown = fake.get_profile(email=email)
    return [s["reason"] for s in shown["subscriptions"]["email"]["marketing"]["suppression"]]


def test_suppress_records_an_event_pushes_a_suppression_job_and_is_applied(api, fake, on_commit):
    profile_id = subscribe(
        api, on_commit, profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY
    )
    with on_commit():
        response = api.post(SUPPRESS, {"emails": [" Ada@Example.com"]}, format="json")
    assert response.status_code == 201, response.content
    [event] = response.json()["events"]
    assert event["suppression"] == "suppress"
    assert event["consent"] == "SUBSCRIBED"  # consent is carried over, not changed
    assert event["channel"] == "email" and event["email"] == "ada@example.com"
    assert fake.counts["bulk_suppress_profiles"] == 1
    assert suppressions(fake, "ada@example.com") == ["USER_SUPPRESSED"]

    assert Delivery.objects.get(pk=event["id"]).status == "applied"
    leaf = ledger(api, profile_id)["email"]["marketing"]
    assert leaf["consent"] == "SUBSCRIBED"
    assert leaf["can_receive"] is False
    assert leaf["cannot_receive_reason"] == "suppressed from the site (USER_SUPPRESSED)"
    # Klaviyo's USER_SUPPRESSED is the site's own request: not drift.
    assert not ConsentEvent.objects.filter(method="klaviyo").exists()


def test_unsuppress_lifts_it_and_the_person_can_receive_again(api, fake, on_commit):
    profile_id = subscribe(
        api, on_commit, profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY
    )
    with on_commit():
        api.post(SUPPRESS, {"emails": ["ada@example.com"]}, format="json")
    with on_commit():
        response = api.post(UNSUPPRESS, {"emails": ["ada@example.com"]}, format="json")
    assert response.status_code == 201, response.content
    assert fake.counts["bulk_unsuppress_profiles"] == 1
    assert suppressions(fake, "ada@example.com") == []
    leaf = ledger(api, profile_id)["email"]["marketing"]
    assert leaf["delivery"] == "applied" and leaf["can_receive"] is True
    assert not ConsentEvent.objects.filter(method="klaviyo").exists()


def test_suppressing_an_unknown_email_creates_the_profile_unsuppressing_one_is_skipped(
    api, fake, on_commit
):
    with on_commit():
        response = api.post(SUPPRESS, {"emails": ["new@example.org"]}, format="json")
    assert response.status_code == 201
    assert Profile.objects.filter(email="new@example.org").exists()
    assert response.json()["events"][0]["consent"] == "NEVER_SUBSCRIBED"

    response = api.post(UNSUPPRESS, {"emails": ["ghost@example.org"]}, format="json")
    assert response.status_code == 201
    assert response.json()["events"] == []
    assert [s["email"] for s in response.json()["skipped"]] == ["ghost@example.org"]


def test_a_malformed_email_is_a_400_naming_it_and_nothing_is_recorded(api, fake):
    response = api.post(SUPPRESS, {"emails": ["ok@example.org", "not-an-email"]}, format="json")
    assert response.status_code == 400
    assert "1" in response.json()["emails"]
    assert not ConsentEvent.objects.exists()


@pytest.mark.parametrize("body", [{}, {"emails": []}, {"emails": ["a@example.org"], "x": 1}])
def test_bad_bodies_are_400s(api, body):
    assert api.post(SUPPRESS, body, format="json").status_code == 400


def test_suppress_needs_the_write_permission(fake):
    from rest_framework.test import APIClient

    response = APIClient().post(SUPPRESS, {"emails": ["a@example.org"]}, format="json")
    assert response.status_code in (401, 403)
    assert not ConsentEvent.objects.exists()


def test_a_suppression_is_sent_in_jobs_of_at_most_100_emails(api, fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    from klaviyo_consent.services.push import push_pending

    emails = [f"p{i}@example.org" for i in range(250)]
    assert api.post(SUPPRESS, {"emails": emails}, format="json").status_code == 201
    report = push_pending()
    assert report.pushed == 250
    sizes = [
        job["profile_count"] for job in fake.jobs if job["type"].startswith("profile-suppression")
    ]
    assert sorted(sizes) == [50, 100, 100]


def test_a_rate_limited_suppression_stays_in_the_outbox_and_is_retried(api, fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    from django.utils import timezone

    from klaviyo_consent.services.push import push_pending

    api.post(SUPPRESS, {"emails": ["ada@example.com"]}, format="json")
    fake.fail_next(429, retry_after=0)
    push_pending()
    delivery = Delivery.objects.get()
    assert delivery.status == "pending"
    Delivery.objects.update(next_attempt_at=timezone.now())
    push_pending()
    delivery.refresh_from_db()
    assert delivery.status in ("pushed", "applied")
    assert suppressions(fake, "ada@example.com") == ["USER_SUPPRESSED"]


def test_admin_actions_suppress_and_unsuppress_the_selected_profiles(
    admin_client, api, fake, on_commit
):
    profile_id = subscribe(
        api, on_commit, profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY
    )
    with on_commit():
        response = admin_client.post(
            "/admin/klaviyo_consent/profile/",
            {
                "action": "suppress_action",
                "_selected_action": [profile_id],
                "confirm": "yes",
                "reason": "bounced at the front desk",
            },
            follow=True,
        )
    assert "1 suppress request(s) recorded" in response.content.decode()
    assert suppressions(fake, "ada@example.com") == ["USER_SUPPRESSED"]
    event = ConsentEvent.objects.filter(suppression="suppress").get()
    assert event.method == "admin"
    with on_commit():
        admin_client.post(
            "/admin/klaviyo_consent/profile/",
            {
                "action": "unsuppress_action",
                "_selected_action": [profile_id],
                "confirm": "yes",
                "reason": "address fixed",
            },
        )
    assert suppressions(fake, "ada@example.com") == []


def test_a_pending_subscribe_is_not_superseded_by_a_later_suppression(api, fake, on_commit):
    profile_id = subscribe(
        api,
        on_commit,
        profile={"email": "vip@example.org"},
        subscriptions=EMAIL_ONLY,
        list_id="Double",
    )
    with on_commit():
        api.post(SUPPRESS, {"emails": ["vip@example.org"]}, format="json")
    subscribe_delivery = Delivery.objects.filter(
        profile_id=profile_id, event__suppression__isnull=True
    ).get()
    assert subscribe_delivery.status == "pending_confirmation"
    assert "superseded" not in subscribe_delivery.reason


def test_the_fake_checks_suppression_jobs_with_the_sdk_models(fake):
    from klaviyo_consent.backends import get_backend
    from klaviyo_consent.exceptions import KlaviyoAPIError
    from klaviyo_consent.services import payloads

    wrong = payloads.unsuppress_job(["ada@example.com"])
    wrong["data"]["type"] = "profile-suppression-bulk-create-job"  # a delete job's wrong type
    with pytest.raises(KlaviyoAPIError) as refused:
        get_backend().bulk_unsuppress_profiles(wrong)
    assert refused.value.status == 400
    get_backend().bulk_unsuppress_profiles(payloads.unsuppress_job(["ada@example.com"]))


@pytest.mark.parametrize("path", [SUPPRESS, "/api/consent/unsuppress/"])
def test_a_public_form_setting_does_not_let_anyone_suppress_or_unsuppress(fake, settings, path):
    # WRITE_PERMISSION_CLASSES = AllowAny is the natural setting for a public signup form; it
    # must not let a stranger suppress anyone's email, or lift an operator's suppression.
    from rest_framework.test import APIClient

    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "WRITE_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    }
    response = APIClient().post(path, {"emails": ["a@example.org"]}, format="json")
    assert response.status_code in (401, 403)
    assert not ConsentEvent.objects.exists()
