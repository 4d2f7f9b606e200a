"""Every consent gets a verdict from Klaviyo's own state, and drift is written into the ledger."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from klaviyo_consent.models import ConsentEvent, KlaviyoList
from klaviyo_consent.signals import consent_applied, consent_not_applied, drift_detected
from tests.helpers import (
    PHONE,
    UNSUBSCRIBE,
    body,
    ledger,
    pull,
    subscribe,
)

pytestmark = pytest.mark.django_db


def test_single_opt_in_consent_is_applied(api, fake, on_commit):
    profile_id = subscribe(api, on_commit)
    assert ledger(api, profile_id)["email"]["marketing"]["delivery"] == "applied"
    assert ledger(api, profile_id)["sms"]["marketing"]["delivery"] == "applied"


def test_unsupported_sms_country_klaviyo_drops_is_not_applied_with_reason(
    api, fake, on_commit, settings
):
    # The site believes Klaviyo texts Slovenia; Klaviyo does not and drops the consent silently.
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "SMS_COUNTRIES": ["GB", "US", "SI"],
    }
    profile_id = subscribe(
        api, on_commit, profile={"email": "ana@example.si", "phone_number": "+38640123456"}
    )
    leaf = ledger(api, profile_id)["sms"]["marketing"]
    assert leaf["delivery"] == "not_applied"
    assert leaf["reason"] == "SMS is not available in Slovenia (SI)"
    assert fake.get_profile(email="ana@example.si")["phone_number"] == "+38640123456"


def test_double_opt_in_is_pending_confirmation_until_the_person_confirms(api, fake, on_commit):
    profile_id = subscribe(api, on_commit, list_id="Double")
    assert KlaviyoList.objects.get(list_id="Double").opt_in_process == "double_opt_in"
    leaf = ledger(api, profile_id)["email"]["marketing"]
    assert leaf["delivery"] == "pending_confirmation"
    confirmed_event = leaf["event_id"]

    fake.confirm_double_optin(phone_number=PHONE)  # confirming by text opts into SMS and email
    pull(profile_id)

    assert ConsentEvent.objects.get(pk=confirmed_event).delivery.status == "applied"
    inbound = ConsentEvent.objects.filter(profile_id=profile_id, method="klaviyo")
    assert {(e.channel, e.consent, e.method_detail) for e in inbound} == {
        ("email", "SUBSCRIBED", "double opt-in confirmed"),
        ("sms", "SUBSCRIBED", "double opt-in confirmed"),
    }
    assert ledger(api, profile_id)["email"]["marketing"]["consent"] == "SUBSCRIBED"


def test_a_stop_reply_is_recorded_as_inbound_drift(api, fake, on_commit):
    profile_id = subscribe(api, on_commit)
    seen = []
    drift_detected.connect(
        lambda sender, event, **kw: seen.append(event), weak=False, dispatch_uid="t1"
    )
    try:
        fake.reply_stop(PHONE)
        pull(profile_id)
    finally:
        drift_detected.disconnect(dispatch_uid="t1")
    [event] = seen
    assert (event.channel, event.purpose, event.consent, event.method) == (
        "sms",
        "marketing",
        "UNSUBSCRIBED",
        "klaviyo",
    )
    assert event.klaviyo_data["method"] == "TEXT"
    assert "STOP" in event.method_detail
    assert event.klaviyo_data["consent_timestamp"]
    leaf = ledger(api, profile_id)["sms"]["marketing"]
    assert leaf["consent"] == "UNSUBSCRIBED" and leaf["event_id"] == event.pk
    assert leaf["consented_at"] == event.klaviyo_data["consent_timestamp"]


def test_drift_is_recorded_once_not_on_every_pull(api, fake, on_commit):
    profile_id = subscribe(api, on_commit)
    fake.click_unsubscribe("ada@example.com")
    pull(profile_id)
    pull(profile_id)
    assert ConsentEvent.objects.filter(profile_id=profile_id, method="klaviyo").count() == 1


@pytest.mark.parametrize(
    "action,channel",
    [("click_unsubscribe", "email"), ("report_spam", "email"), ("reply_stop", "sms")],
)
def test_changes_made_in_klaviyo_end_up_in_the_ledger(api, fake, on_commit, action, channel):
    profile_id = subscribe(api, on_commit)
    getattr(fake, action)(PHONE if channel == "sms" else "ada@example.com")
    call_command("klaviyo_consent_pull", "--all", "--no-progress")
    assert ledger(api, profile_id)[channel]["marketing"]["consent"] == "UNSUBSCRIBED"
    events = api.get("/api/consent/events/", {"profile": profile_id, "channel": channel}).data
    assert events["results"][0]["method"] == "klaviyo"


def test_a_hard_bounced_profile_is_not_applied_because_it_is_suppressed(api, fake, on_commit):
    fake.add_profile(email="ada@example.com")
    fake.suppress("ada@example.com", reason="HARD_BOUNCE")
    profile_id = subscribe(api, on_commit, subscriptions={"email": {"marketing": True}})
    leaf = ledger(api, profile_id)["email"]["marketing"]
    assert leaf["delivery"] == "not_applied"
    assert leaf["reason"] == "profile is suppressed (HARD_BOUNCE)"


def test_a_refused_request_stays_pending_with_klaviyos_error(api, fake, on_commit):
    # An error naming no profile is about the request (issue 7): nothing is judged "failed",
    # the event waits for a retry and its reason quotes Klaviyo.
    fake.fail_next(
        400, errors=[{"code": "invalid", "title": "Invalid input.", "detail": "Bad list id."}]
    )
    profile_id = subscribe(api, on_commit, subscriptions={"email": {"marketing": True}})
    leaf = ledger(api, profile_id)["email"]["marketing"]
    assert leaf["delivery"] == "pending"
    assert "Bad list id." in leaf["reason"]
    assert "refused the subscribe request itself" in leaf["reason"]


def test_signals_announce_applied_and_not_applied(api, fake, on_commit, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "SMS_COUNTRIES": ["GB", "SI"]}
    applied, not_applied = [], []
    consent_applied.connect(
        lambda sender, event, **kw: applied.append(event.channel), weak=False, dispatch_uid="a"
    )
    consent_not_applied.connect(
        lambda sender, event, reason, **kw: not_applied.append((event.channel, reason)),
        weak=False,
        dispatch_uid="n",
    )
    try:
        subscribe(
            api, on_commit, profile={"email": "ana@example.si", "phone_number": "+38640123456"}
        )
    finally:
        consent_applied.disconnect(dispatch_uid="a")
        consent_not_applied.disconnect(dispatch_uid="n")
    assert applied == ["email"]
    assert not_applied == [("sms", "SMS is not available in Slovenia (SI)")]


def test_a_withdrawal_is_verified_too(api, fake, on_commit):
    profile_id = subscribe(api, on_commit)
    with on_commit():
        api.post(UNSUBSCRIBE, body(subscriptions={"email": {"marketing": True}}), format="json")
    leaf = ledger(api, profile_id)["email"]["marketing"]
    assert (leaf["consent"], leaf["delivery"]) == ("UNSUBSCRIBED", "applied")
    assert not ConsentEvent.objects.filter(method="klaviyo").exists()


def test_a_confirmation_drift_finds_during_a_read_back_releases_the_lease(api, fake, on_commit):
    # The read-back claims the awaiting row under a lease; drift then applies it. The row must
    # come out of the read-back free (no lease left to run out) and stamped, like every verdict.
    from django.utils import timezone

    from klaviyo_consent.models import Delivery
    from klaviyo_consent.services.verify import verify_pushed

    profile_id = subscribe(api, on_commit, list_id="Double")
    event_id = ledger(api, profile_id)["email"]["marketing"]["event_id"]
    Delivery.objects.filter(pk=event_id).update(next_attempt_at=timezone.now())
    before = Delivery.objects.get(pk=event_id).updated_at
    fake.confirm_double_optin(email="ada@example.com")

    verify_pushed()

    delivery = Delivery.objects.get(pk=event_id)
    assert delivery.status == "applied"
    assert (delivery.lease_token, delivery.lease_expires_at) == ("", None)
    assert delivery.updated_at > before
    assert delivery.history[-1]["status"] == "applied"


def test_lists_are_read_before_any_verdict_is_judged_never_from_inside_the_loop(
    api, fake, on_commit, monkeypatch, settings
):
    # One read-back judges a consent on a list the mirror knows, then one on a list it does
    # not know yet: that list is read from Klaviyo before the first verdict, not between them.
    from klaviyo_consent.backends import get_backend
    from klaviyo_consent.services import verify
    from klaviyo_consent.services.sync import sync

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    KlaviyoList.objects.create(list_id="Single", opt_in_process="single_opt_in")
    email_only = {"email": {"marketing": True}}
    known = subscribe(
        api, on_commit, profile={"email": "ada@example.com"}, subscriptions=email_only
    )
    unknown = subscribe(
        api,
        on_commit,
        list_id="Double",
        profile={"email": "grace@example.com"},
        subscriptions=email_only,
    )
    order: list[str] = []
    judge, backend = verify.judge, get_backend()
    get_list = backend.get_list
    monkeypatch.setattr(verify, "judge", lambda **kw: (order.append("judge"), judge(**kw))[1])
    monkeypatch.setattr(
        backend, "get_list", lambda list_id: (order.append("get_list"), get_list(list_id))[1]
    )

    sync()

    assert order == ["get_list", "judge", "judge"]
    assert ledger(api, known)["email"]["marketing"]["delivery"] == "applied"
    assert ledger(api, unknown)["email"]["marketing"]["delivery"] == "pending_confirmation"
