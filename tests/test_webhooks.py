"""Klaviyo webhooks: only signed, fresh, first-time deliveries get in; they only nudge a re-read."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from klaviyo_consent.models import ConsentEvent, Profile, WebhookDelivery
from klaviyo_consent.services.webhooks import (
    CONSENT_TOPICS,
    extract_identifiers,
    parse_timestamp,
    sign,
)
from klaviyo_consent.testing.webhooks import signed_webhook
from tests.helpers import SUBSCRIBE, body, post_webhook

pytestmark = pytest.mark.django_db

URL = "/api/consent/webhooks/klaviyo/"
SECRET = "s3cret"
PHONE = "+447400123456"
SMS_STOP = "event:klaviyo.unsubscribed_from_sms_marketing"


@pytest.fixture
def secret(fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "WEBHOOK_SECRET": SECRET}
    return SECRET


@pytest.fixture
def subscribed(api, fake, on_commit):
    """A profile subscribed to email and SMS, pushed to the fake and mirrored back."""
    with on_commit():
        response = api.post(SUBSCRIBE, body(), format="json")
    assert response.status_code == 201, response.content
    return Profile.objects.get(pk=response.data["profile"]["id"])


def assert_nothing_stored(events_before: int) -> None:
    assert WebhookDelivery.objects.count() == 0
    assert ConsentEvent.objects.count() == events_before


def test_a_signed_stop_reply_ends_in_the_ledger_as_an_inbound_sms_unsubscribe(
    secret, subscribed, fake, api
):
    fake.reply_stop(PHONE)
    response = post_webhook(*signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret))

    assert response.status_code == 200, response.content
    assert response.json() == {"received": 1, "profiles_refreshed": 1, "ignored": 0}
    detail = api.get(f"/api/consent/profiles/{subscribed.pk}/").data
    assert detail["ledger"]["sms"]["marketing"]["consent"] == "UNSUBSCRIBED"
    assert detail["ledger"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    inbound = ConsentEvent.objects.get(profile=subscribed, method="klaviyo")
    assert (inbound.channel, inbound.purpose, inbound.consent) == (
        "sms",
        "marketing",
        "UNSUBSCRIBED",
    )
    assert "STOP" in inbound.method_detail
    delivery = WebhookDelivery.objects.get()
    assert delivery.topics == [SMS_STOP] and delivery.webhook_id == "wh_test"
    assert delivery.processed_at is not None and delivery.error == ""


def test_the_payload_consent_is_never_trusted_only_klaviyos_profile(secret, subscribed, fake):
    # Klaviyo still shows SMS subscribed: an unsubscribe webhook alone changes nothing.
    response = post_webhook(*signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret))
    assert response.json()["profiles_refreshed"] == 1
    assert not ConsentEvent.objects.filter(method="klaviyo").exists()


def test_profiles_are_matched_by_klaviyo_id_and_email_too(secret, subscribed, fake):
    fake.click_unsubscribe("ada@example.com")
    subscribed.refresh_from_db()
    by_id = post_webhook(
        *signed_webhook(CONSENT_TOPICS[1], profile_id=subscribed.klaviyo_id, secret=secret)
    )
    assert by_id.json() == {"received": 1, "profiles_refreshed": 1, "ignored": 0}
    by_email = post_webhook(
        *signed_webhook(CONSENT_TOPICS[1], email="ADA@example.com", secret=secret)
    )
    assert by_email.json()["profiles_refreshed"] == 1
    assert ConsentEvent.objects.get(method="klaviyo").channel == "email"


def test_unknown_profiles_and_other_topics_are_ignored_and_counted(secret, subscribed, fake):
    unknown = post_webhook(*signed_webhook(SMS_STOP, email="nobody@example.com", secret=secret))
    assert unknown.status_code == 200
    assert unknown.json() == {"received": 1, "profiles_refreshed": 0, "ignored": 1}
    other = post_webhook(
        *signed_webhook("event:klaviyo.opened_email", phone_number=PHONE, secret=secret)
    )
    assert other.json() == {"received": 1, "profiles_refreshed": 0, "ignored": 1}
    assert WebhookDelivery.objects.count() == 2


def test_a_failed_re_read_is_recorded_on_the_delivery_and_still_answered_200(
    secret, subscribed, fake
):
    fake.fail_next(status=403)
    response = post_webhook(*signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret))
    assert response.status_code == 200
    assert "Could not re-read" in response.json()["error"]
    delivery = WebhookDelivery.objects.get()
    assert delivery.processed_at is None and "403" in delivery.error


def test_an_iso_8601_timestamp_is_accepted(secret, subscribed):
    now = datetime.now(UTC).replace(microsecond=0)
    response = post_webhook(
        *signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret, timestamp=now)
    )
    assert response.status_code == 200, response.content


def rejected(response, code: str) -> None:
    assert response.status_code == 403, response.content
    assert response.json()["code"] == code
    assert SECRET not in response.content.decode()


def test_a_missing_signature_is_refused_and_nothing_is_stored(secret, subscribed):
    events = ConsentEvent.objects.count()
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    del headers["Klaviyo-Signature"]
    rejected(post_webhook(payload, headers), "missing_header")
    assert_nothing_stored(events)


@pytest.mark.parametrize("header", ["Klaviyo-Webhook-Id", "Klaviyo-Timestamp"])
def test_every_klaviyo_header_is_required(secret, subscribed, header):
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    del headers[header]
    rejected(post_webhook(payload, headers), "missing_header")
    assert WebhookDelivery.objects.count() == 0


def test_a_wrong_signature_is_refused_and_nothing_is_stored(secret, subscribed):
    events = ConsentEvent.objects.count()
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    headers["Klaviyo-Signature"] = "0" * 64
    rejected(post_webhook(payload, headers), "bad_signature")
    assert_nothing_stored(events)


def test_a_tampered_body_is_refused(secret, subscribed):
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    rejected(post_webhook(payload.replace(b"+44", b"+33"), headers), "bad_signature")
    assert WebhookDelivery.objects.count() == 0


def test_a_delivery_signed_with_another_secret_is_refused(secret, subscribed):
    events = ConsentEvent.objects.count()
    rejected(
        post_webhook(*signed_webhook(SMS_STOP, phone_number=PHONE, secret="not-the-secret")),
        "bad_signature",
    )
    assert_nothing_stored(events)


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_a_timestamp_outside_the_tolerance_is_refused(secret, subscribed, fake, offset):
    fake.reply_stop(PHONE)
    events = ConsentEvent.objects.count()
    stamp = int(time.time()) + offset
    rejected(
        post_webhook(*signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret, timestamp=stamp)),
        "stale_timestamp",
    )
    assert_nothing_stored(events)


def test_an_unreadable_timestamp_is_refused(secret, subscribed):
    rejected(
        post_webhook(*signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret, timestamp="nan")),
        "bad_timestamp",
    )
    assert WebhookDelivery.objects.count() == 0


def test_a_replayed_delivery_is_refused(secret, subscribed, fake):
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    assert post_webhook(payload, headers).status_code == 200
    fake.reply_stop(PHONE)
    events = ConsentEvent.objects.count()
    rejected(post_webhook(payload, headers), "replay")
    assert WebhookDelivery.objects.count() == 1
    assert ConsentEvent.objects.count() == events


def test_a_replay_with_an_upper_case_signature_is_still_a_replay(secret, subscribed):
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    assert post_webhook(payload, headers).status_code == 200
    headers["Klaviyo-Signature"] = headers["Klaviyo-Signature"].upper()
    rejected(post_webhook(payload, headers), "replay")


def test_a_webhook_id_header_that_differs_from_the_body_is_refused(secret, subscribed, fake):
    fake.reply_stop(PHONE)
    events = ConsentEvent.objects.count()
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    headers["Klaviyo-Webhook-Id"] = "wh_other"
    rejected(post_webhook(payload, headers), "webhook_id_mismatch")
    assert_nothing_stored(events)


def test_without_a_configured_secret_every_delivery_is_refused(fake, subscribed):
    events = ConsentEvent.objects.count()
    rejected(
        post_webhook(*signed_webhook(SMS_STOP, phone_number=PHONE, secret="anything")),
        "not_configured",
    )
    assert_nothing_stored(events)


def test_signed_malformed_json_is_a_400_and_nothing_is_stored(secret):
    stamp = str(int(time.time()))
    payload = b'{"data": ['
    headers = {
        "Klaviyo-Webhook-Id": "wh_test",
        "Klaviyo-Timestamp": stamp,
        "Klaviyo-Signature": sign(payload, stamp, secret),
    }
    response = post_webhook(payload, headers)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed"
    assert WebhookDelivery.objects.count() == 0


def test_the_endpoint_needs_no_login_or_csrf_token(secret, subscribed):
    client = APIClient(enforce_csrf_checks=True)
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    response = client.post(URL, payload, content_type="application/json", headers=headers)
    assert response.status_code == 200


def test_identifiers_are_found_in_any_reasonable_payload_shape():
    found = extract_identifiers(
        {
            "profile": {"$email": "A@Example.com", "$phone_number": "+44 7400 123456"},
            "attributes": {"profile_id": "01KLAV"},
            "relationships": {"profile": {"data": {"type": "profile", "id": "01REL"}}},
            "noise": {"id": "not-a-profile", "type": "event", "phone_number": "not a phone"},
        }
    )
    assert found.emails == {"a@example.com"}
    assert found.phone_numbers == {PHONE}
    assert found.profile_ids == {"01KLAV", "01REL"}
    assert not extract_identifiers(None) and not extract_identifiers("text")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1700000000", 1700000000.0),
        ("1700000000.5", 1700000000.5),
        ("1700000000000", 1700000000.0),
        ("2023-11-14T22:13:20Z", 1700000000.0),
        ("2023-11-14T22:13:20", 1700000000.0),
        ("2023-11-14T23:13:20+01:00", 1700000000.0),
        ("inf", None),
        ("yesterday", None),
    ],
)
def test_timestamps_are_read_as_unix_seconds_milliseconds_or_iso_8601(value, expected):
    assert parse_timestamp(value) == expected


def test_deliveries_are_listed_read_only_in_the_admin(admin_client, secret, subscribed):
    post_webhook(*signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret))
    delivery = WebhookDelivery.objects.get()
    listing = admin_client.get("/admin/klaviyo_consent/webhookdelivery/")
    assert listing.status_code == 200 and "wh_test" in listing.content.decode()
    page = admin_client.get(f"/admin/klaviyo_consent/webhookdelivery/{delivery.pk}/change/")
    assert page.status_code == 200
    assert admin_client.get("/admin/klaviyo_consent/webhookdelivery/add/").status_code == 403


def test_a_clock_slightly_ahead_within_the_tolerance_is_accepted(secret, subscribed):
    stamp = datetime.now(UTC) + timedelta(seconds=200)
    response = post_webhook(
        *signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret, timestamp=stamp)
    )
    assert response.status_code == 200


def _raise_once(monkeypatch):
    """Make the next processing raise, as a bug or a dropped database connection would."""
    from klaviyo_consent.services import webhooks

    real = webhooks.pull_profiles
    calls = []

    def flaky(profiles, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return real(profiles, *args, **kwargs)

    monkeypatch.setattr(webhooks, "pull_profiles", flaky)


def test_a_resend_of_a_delivery_whose_processing_raised_is_processed_not_refused(
    secret, subscribed, fake, monkeypatch
):
    fake.reply_stop(PHONE)
    _raise_once(monkeypatch)
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)

    first = post_webhook(payload, headers)
    assert first.status_code == 500
    delivery = WebhookDelivery.objects.get()
    assert delivery.processed_at is None
    assert delivery.attempts == 1 and "database went away" in delivery.error
    assert delivery.failed_at is not None

    resend = post_webhook(payload, headers)
    assert resend.status_code == 200, resend.content
    delivery.refresh_from_db()
    assert delivery.processed_at is not None and delivery.error == ""
    assert delivery.attempts == 2
    assert ConsentEvent.objects.filter(method="klaviyo", channel="sms").exists()


def test_a_copy_of_a_processed_delivery_is_still_a_replay(secret, subscribed, fake):
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    assert post_webhook(payload, headers).status_code == 200
    again = post_webhook(payload, headers)
    assert again.status_code == 403 and again.json()["code"] == "replay"
    assert WebhookDelivery.objects.get().attempts == 1


def test_the_retry_command_processes_deliveries_that_failed(secret, subscribed, fake, monkeypatch):
    from io import StringIO

    from django.core.management import call_command

    fake.reply_stop(PHONE)
    _raise_once(monkeypatch)
    assert (
        post_webhook(*signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)).status_code
        == 500
    )
    assert not ConsentEvent.objects.filter(method="klaviyo").exists()

    out = StringIO()
    call_command("klaviyo_consent_retry_webhooks", stdout=out)

    assert "retried 1, processed 1, still failing 0" in out.getvalue()
    delivery = WebhookDelivery.objects.get()
    assert delivery.processed_at is not None and delivery.attempts == 2
    assert ConsentEvent.objects.filter(method="klaviyo", channel="sms").exists()


def test_a_klaviyo_outage_while_processing_is_recorded_and_retried_by_the_resend(
    secret, subscribed, fake
):
    fake.reply_stop(PHONE)
    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    fake.fail_next(status=403)
    assert post_webhook(payload, headers).status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert delivery.processed_at is None and "403" in delivery.error and delivery.attempts == 1

    assert post_webhook(payload, headers).status_code == 200
    delivery.refresh_from_db()
    assert delivery.processed_at is not None and delivery.attempts == 2


def test_the_admin_processes_a_failed_delivery_again(
    admin_client, secret, subscribed, fake, monkeypatch
):
    fake.reply_stop(PHONE)
    _raise_once(monkeypatch)
    post_webhook(*signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret))
    delivery = WebhookDelivery.objects.get()
    listing = admin_client.get("/admin/klaviyo_consent/webhookdelivery/")
    assert "database went away" in listing.content.decode()

    response = admin_client.post(
        "/admin/klaviyo_consent/webhookdelivery/",
        {"action": "retry_action", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert "Processed 1 delivery(ies); 0 still failing." in response.content.decode()
    delivery.refresh_from_db()
    assert delivery.processed_at is not None and delivery.attempts == 2


def test_a_rejected_webhook_is_a_suspicious_operation_django_answers_400(secret, subscribed):
    from django.core.exceptions import SuspiciousOperation

    from klaviyo_consent.exceptions import WebhookRejected
    from klaviyo_consent.services.webhooks import verify_webhook

    payload, headers = signed_webhook(SMS_STOP, phone_number=PHONE, secret=secret)
    headers["Klaviyo-Signature"] = "0" * 64
    with pytest.raises(SuspiciousOperation) as caught:
        verify_webhook(payload, headers)
    assert isinstance(caught.value, WebhookRejected)
    assert caught.value.code == "bad_signature"
