"""Verdicts keep following Klaviyo's state: re-judged on every read-back, with a history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from klaviyo_consent.models import ConsentEvent, Delivery
from klaviyo_consent.services.verdicts import judge
from tests.helpers import SUBSCRIBE, body, ledger, pull, subscribe

pytestmark = pytest.mark.django_db

EMAIL_ONLY = {"email": {"marketing": True}}


def _delivery(profile_id: int, channel: str = "email") -> Delivery:
    return (
        Delivery.objects.filter(profile_id=profile_id, channel=channel)
        .exclude(event__method="klaviyo")
        .latest("event_id")
    )


def test_a_not_applied_verdict_becomes_applied_when_the_person_confirms_the_default_double_opt_in(
    api, fake, on_commit
):
    # Field case 4: no list, so the account's default (double opt-in) applies.
    profile_id = subscribe(
        api, on_commit, profile={"email": "omar@example.org"}, subscriptions=EMAIL_ONLY, list_id=""
    )
    delivery = _delivery(profile_id)
    assert delivery.status == "not_applied"

    fake.confirm_double_optin(email="omar@example.org")
    pull(profile_id)

    delivery.refresh_from_db()
    assert delivery.status == "applied"
    assert [(h["from"], h["status"]) for h in delivery.history] == [
        ("pushed", "not_applied"),
        ("not_applied", "applied"),
    ]
    assert delivery.history[-1]["source"] == "pull"
    assert not ConsentEvent.objects.filter(profile_id=profile_id, method="klaviyo").exists()
    leaf = ledger(api, profile_id)["email"]["marketing"]
    assert leaf["delivery"] == "applied" and leaf["can_receive"] is True


def test_the_verdict_history_is_shown_in_the_events_api(api, fake, on_commit):
    profile_id = subscribe(
        api, on_commit, profile={"email": "omar@example.org"}, subscriptions=EMAIL_ONLY, list_id=""
    )
    fake.confirm_double_optin(email="omar@example.org")
    pull(profile_id)
    events = api.get(f"/api/consent/events/?profile={profile_id}").json()["results"]
    [history] = [e["delivery"]["history"] for e in events if e["method"] != "klaviyo"]
    assert [h["status"] for h in history] == ["not_applied", "applied"]


def test_a_not_applied_event_superseded_by_a_later_one_is_left_alone(api, fake, on_commit):
    profile_id = subscribe(
        api, on_commit, profile={"email": "omar@example.org"}, subscriptions=EMAIL_ONLY, list_id=""
    )
    first = _delivery(profile_id)
    subscribe(api, on_commit, profile={"email": "omar@example.org"}, subscriptions=EMAIL_ONLY)
    fake.confirm_double_optin(email="omar@example.org")
    pull(profile_id)
    first.refresh_from_db()
    assert first.status == "not_applied"


def test_a_resubscribe_klaviyo_did_not_apply_is_not_blamed_on_a_suppression_it_lifts(
    api, fake, on_commit
):
    # Field case: the person had unsubscribed in Klaviyo; the site's resubscribe was accepted
    # but the job did not apply. An UNSUBSCRIBE suppression is lifted by a subscribe: not a cause.
    subscribe(api, on_commit, profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY)
    fake.click_unsubscribe("ada@example.com")
    # No list: the account's default double opt-in holds the job, Klaviyo answered 202.
    profile_id = subscribe(
        api, on_commit, profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY, list_id=""
    )
    leaf = ledger(api, profile_id)["email"]["marketing"]
    assert leaf["delivery"] == "not_applied"
    assert "profile is suppressed" not in leaf["reason"]
    assert "UNSUBSCRIBE suppression a subscribe lifts is still listed" in leaf["reason"]


@pytest.mark.parametrize("lifted", ["UNSUBSCRIBE", "SPAM_COMPLAINT", "USER_SUPPRESSED"])
def test_no_suppression_a_subscribe_lifts_is_named_as_the_cause(lifted):
    leaf = {
        "consent": "UNSUBSCRIBED",
        "suppression": [{"reason": lifted, "timestamp": "2026-01-01T00:00:00+00:00"}],
    }
    for opt_in in (None, "single_opt_in", "double_opt_in"):
        verdict = judge(
            channel="email",
            consent="SUBSCRIBED",
            historical_import=False,
            phone_number="",
            leaf=leaf,
            profile_found=True,
            opt_in_process=opt_in,
            last_try=True,
        )
        assert "profile is suppressed" not in verdict.reason


def test_a_sticky_suppression_beside_a_lifted_one_names_only_the_sticky_one():
    leaf = {
        "consent": "UNSUBSCRIBED",
        "suppression": [{"reason": "UNSUBSCRIBE"}, {"reason": "HARD_BOUNCE"}],
    }
    verdict = judge(
        channel="email",
        consent="SUBSCRIBED",
        historical_import=False,
        phone_number="",
        leaf=leaf,
        profile_found=True,
        opt_in_process="single_opt_in",
        last_try=True,
    )
    assert verdict.status == "not_applied"
    assert verdict.reason == "profile is suppressed (HARD_BOUNCE)"


def test_an_unsupported_country_is_not_blamed_when_klaviyo_shows_the_person_texted_stop():
    later = (timezone.now() + timedelta(minutes=5)).isoformat()
    leaf = {
        "consent": "UNSUBSCRIBED",
        "method": "TEXT",
        "method_detail": "STOP",
        "consent_timestamp": later,
    }
    verdict = judge(
        channel="sms",
        consent="SUBSCRIBED",
        historical_import=False,
        phone_number="+38640123456",  # Slovenia: Klaviyo does not text it
        leaf=leaf,
        profile_found=True,
        opt_in_process="single_opt_in",
        last_try=True,
        pushed_at=timezone.now(),
    )
    assert "Slovenia" not in verdict.reason
    assert verdict.reason.startswith("Klaviyo shows UNSUBSCRIBED (TEXT / STOP) since")


def test_a_withdrawal_klaviyo_shows_resubscribed_since_names_that_change_not_unknown():
    pushed = timezone.now()
    leaf = {
        "consent": "SUBSCRIBED",
        "method": "FORM",
        "consent_timestamp": (pushed + timedelta(hours=1)).isoformat(),
    }
    verdict = judge(
        channel="email",
        consent="UNSUBSCRIBED",
        historical_import=False,
        phone_number="",
        leaf=leaf,
        profile_found=True,
        opt_in_process=None,
        last_try=True,
        pushed_at=pushed,
    )
    assert verdict.status == "not_applied"
    assert verdict.reason.startswith("Klaviyo shows SUBSCRIBED (FORM) since")


# --- pending confirmation ends ----------------------------------------------------------------


class Clock:
    """An injected clock for ``django.utils.timezone.now``."""

    def __init__(self, monkeypatch):
        self.now = timezone.now()
        monkeypatch.setattr(timezone, "now", lambda: self.now)

    def advance(self, **kwargs):
        self.now += timedelta(**kwargs)


def test_pending_confirmation_rereads_back_off_and_end_not_applied_after_the_window(
    api, fake, on_commit, monkeypatch, settings
):
    from klaviyo_consent.services.verify import verify_pushed

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "CONFIRMATION_WINDOW": 3 * 86400}
    clock = Clock(monkeypatch)
    profile_id = subscribe(
        api,
        on_commit,
        profile={"email": "vip@example.org"},
        subscriptions=EMAIL_ONLY,
        list_id="Double",
    )
    delivery = _delivery(profile_id)
    assert delivery.status == "pending_confirmation"
    deadline = delivery.pushed_at + timedelta(days=3)

    gaps = []
    reads = 0
    while delivery.status == "pending_confirmation":
        gaps.append(delivery.next_attempt_at - clock.now)
        clock.now = delivery.next_attempt_at
        verify_pushed()
        reads += 1
        delivery.refresh_from_db()
        assert reads < 40, "re-reads must back off, not poll forever"

    waits = gaps[:-1]  # the last read falls on the window's end
    assert waits == sorted(waits) and waits[0] < waits[-1], "the waits grow"
    assert max(gaps) <= timedelta(hours=12)
    assert clock.now == deadline
    assert delivery.status == "not_applied"
    assert delivery.reason.startswith("the person never confirmed")
    assert "3 days" in delivery.reason

    # A confirmation after the window still shows up: the verdict follows Klaviyo.
    fake.confirm_double_optin(email="vip@example.org")
    pull(profile_id)
    delivery.refresh_from_db()
    assert delivery.status == "applied"
    assert [h["status"] for h in delivery.history][-2:] == ["not_applied", "applied"]


def test_pending_confirmation_is_not_given_when_klaviyo_shows_the_person_unsubscribed_since(
    api, fake, on_commit, monkeypatch
):
    profile_id = subscribe(
        api,
        on_commit,
        profile={"email": "vip@example.org"},
        subscriptions=EMAIL_ONLY,
        list_id="Double",
    )
    fake.add_profile(email="vip@example.org")
    fake.click_unsubscribe("vip@example.org")
    pull(profile_id)
    delivery = _delivery(profile_id)
    assert delivery.status == "not_applied"
    assert delivery.reason.startswith("Klaviyo shows UNSUBSCRIBED (PREFERENCE_PAGE) since")


# --- drift: NEVER_SUBSCRIBED and suppressions -------------------------------------------------


def test_klaviyo_showing_never_subscribed_where_the_ledger_says_subscribed_is_drift(
    api, fake, on_commit
):
    profile_id = subscribe(api, on_commit)
    # Klaviyo forgets the SMS consent (the number changed on Klaviyo's side).
    fake.change_phone_number("ada@example.com", "+447400654321")
    pull(profile_id)
    inbound = ConsentEvent.objects.filter(profile_id=profile_id, method="klaviyo", channel="sms")
    assert {(e.purpose, e.consent) for e in inbound} >= {("marketing", "NEVER_SUBSCRIBED")}
    leaf = ledger(api, profile_id)["sms"]["marketing"]
    assert leaf["consent"] == "NEVER_SUBSCRIBED" and leaf["can_receive"] is False
    pull(profile_id)
    assert inbound.count() == len({e.purpose for e in inbound}), "recorded once, not per pull"


def test_a_manual_suppression_reported_by_webhook_is_an_inbound_event_and_check_says_why(
    api, fake, on_commit, settings
):
    # Field case 5.
    from klaviyo_consent.testing.webhooks import signed_webhook
    from tests.helpers import post_webhook as post

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "WEBHOOK_SECRET": "s"}
    subscribe(api, on_commit, profile={"email": "ines@example.org"}, subscriptions=EMAIL_ONLY)
    fake.suppress("ines@example.org", reason="USER_SUPPRESSED")
    response = post(
        *signed_webhook(
            "event:klaviyo.manually_suppressed_from_email_marketing",
            email="ines@example.org",
            secret="s",
        )
    )
    assert response.status_code == 200, response.content

    [event] = ConsentEvent.objects.filter(method="klaviyo")
    assert event.channel == "email" and event.consent == "SUBSCRIBED"
    assert event.method_detail == "suppressed in Klaviyo (USER_SUPPRESSED)"
    assert [s["reason"] for s in event.klaviyo_data["suppression"]] == ["USER_SUPPRESSED"]
    assert event.klaviyo_data["can_receive_email_marketing"] is False

    [result] = api.post(
        "/api/consent/check/", {"emails": ["ines@example.org"]}, format="json"
    ).json()["results"]
    leaf = result["consent"]["email"]["marketing"]
    assert leaf["can_receive"] is False
    assert leaf["cannot_receive_reason"] == "suppressed in Klaviyo (USER_SUPPRESSED)"


@pytest.mark.parametrize("reason", ["HARD_BOUNCE", "INVALID_EMAIL", "USER_SUPPRESSED"])
def test_every_suppression_that_leaves_consent_alone_is_recorded_and_its_removal_too(
    api, fake, on_commit, reason
):
    profile_id = subscribe(
        api, on_commit, profile={"email": "ines@example.org"}, subscriptions=EMAIL_ONLY
    )
    fake.suppress("ines@example.org", reason=reason)
    pull(profile_id)
    pull(profile_id)
    inbound = ConsentEvent.objects.filter(profile_id=profile_id, method="klaviyo")
    assert [e.method_detail for e in inbound] == [f"suppressed in Klaviyo ({reason})"]
    fake.unsuppress("ines@example.org", reason=reason)
    pull(profile_id)
    assert inbound.order_by("id").last().method_detail == (
        f"suppression lifted in Klaviyo ({reason})"
    )
    leaf = ledger(api, profile_id)["email"]["marketing"]
    assert leaf["can_receive"] is True and leaf["cannot_receive_reason"] == ""


def test_a_site_unsubscribe_is_not_reported_back_as_a_suppression(api, fake, on_commit):
    from tests.helpers import UNSUBSCRIBE

    profile_id = subscribe(
        api, on_commit, profile={"email": "ines@example.org"}, subscriptions=EMAIL_ONLY
    )
    with on_commit():
        api.post(
            UNSUBSCRIBE,
            body(profile={"email": "ines@example.org"}, subscriptions=EMAIL_ONLY),
            format="json",
        )
    pull(profile_id)
    assert not ConsentEvent.objects.filter(profile_id=profile_id, method="klaviyo").exists()
    leaf = ledger(api, profile_id)["email"]["marketing"]
    assert leaf["can_receive"] is False and leaf["cannot_receive_reason"] == "unsubscribed"


def test_the_profile_api_says_whether_each_channel_can_receive_marketing(api, fake, on_commit):
    profile_id = subscribe(api, on_commit)
    leaves = ledger(api, profile_id)
    assert leaves["email"]["marketing"]["can_receive"] is True
    assert leaves["sms"]["marketing"]["can_receive"] is True
    assert leaves["sms"]["transactional"]["can_receive"] is False
    assert leaves["sms"]["transactional"]["cannot_receive_reason"] == "never subscribed"
    assert SUBSCRIBE


def test_the_admin_event_page_shows_the_verdict_history(admin_client, api, fake, on_commit):
    profile_id = subscribe(
        api, on_commit, profile={"email": "omar@example.org"}, subscriptions=EMAIL_ONLY, list_id=""
    )
    fake.confirm_double_optin(email="omar@example.org")
    pull(profile_id)
    delivery = _delivery(profile_id)
    page = admin_client.get(f"/admin/klaviyo_consent/consentevent/{delivery.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "verdict history" in html.lower()
    assert html.index("not_applied") < html.rindex("applied")
    assert "<td>pull</td>" in html


def test_a_webhook_read_back_re_judges_a_not_applied_verdict_and_says_so_in_the_history(
    api, fake, on_commit, settings
):
    from klaviyo_consent.testing.webhooks import signed_webhook
    from tests.helpers import post_webhook as post

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "WEBHOOK_SECRET": "s"}
    profile_id = subscribe(
        api, on_commit, profile={"email": "omar@example.org"}, subscriptions=EMAIL_ONLY, list_id=""
    )
    fake.confirm_double_optin(email="omar@example.org")
    response = post(
        *signed_webhook(
            "event:klaviyo.subscribed_to_email_marketing", email="omar@example.org", secret="s"
        )
    )
    assert response.status_code == 200, response.content
    delivery = _delivery(profile_id)
    assert delivery.status == "applied"
    assert delivery.history[-1]["source"] == "webhook"


def test_a_double_opt_in_list_with_a_hard_bounce_is_not_pending_but_not_applied():
    verdict = judge(
        channel="email",
        consent="SUBSCRIBED",
        historical_import=False,
        phone_number="",
        leaf={"consent": "NEVER_SUBSCRIBED", "suppression": [{"reason": "HARD_BOUNCE"}]},
        profile_found=True,
        opt_in_process="double_opt_in",
        last_try=False,
    )
    assert verdict.status == "not_applied"
    assert verdict.reason == "profile is suppressed (HARD_BOUNCE)"


def test_an_applied_verdict_is_not_turned_into_not_applied_by_a_later_change_in_klaviyo(
    api, fake, on_commit
):
    # A later unsubscribe is drift (an inbound event), not a new verdict on the old consent.
    profile_id = subscribe(
        api, on_commit, profile={"email": "ada@example.com"}, subscriptions=EMAIL_ONLY
    )
    fake.click_unsubscribe("ada@example.com")
    pull(profile_id)
    delivery = _delivery(profile_id)
    assert delivery.status == "applied"
    assert ConsentEvent.objects.filter(profile_id=profile_id, method="klaviyo").count() == 1


def test_a_verdict_that_does_not_change_adds_no_history_line(api, fake, on_commit):
    profile_id = subscribe(
        api, on_commit, profile={"email": "omar@example.org"}, subscriptions=EMAIL_ONLY, list_id=""
    )
    before = _delivery(profile_id).history
    pull(profile_id)
    pull(profile_id)
    assert _delivery(profile_id).history == before


def test_never_subscribed_is_not_drift_for_a_consent_klaviyo_never_showed(
    api, fake, on_commit, settings
):
    # Klaviyo silently dropped the SMS consent (Slovenia): not_applied, and no inbound event.
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "SMS_COUNTRIES": ["GB", "SI"]}
    profile_id = subscribe(
        api, on_commit, profile={"email": "ana@example.si", "phone_number": "+38640123456"}
    )
    pull(profile_id)
    assert not ConsentEvent.objects.filter(profile_id=profile_id, method="klaviyo").exists()
    assert ledger(api, profile_id)["sms"]["marketing"]["delivery"] == "not_applied"


def test_a_pending_email_applied_without_a_double_opt_in_is_not_called_confirmed(
    api, fake, on_commit
):
    # The person subscribed again through a single opt-in form in Klaviyo: double_optin false.
    profile_id = subscribe(
        api,
        on_commit,
        profile={"email": "vip@example.org"},
        subscriptions=EMAIL_ONLY,
        list_id="Double",
    )
    from klaviyo_consent.backends import get_backend
    from klaviyo_consent.services import payloads

    entry = payloads.profile_entry(
        email="vip@example.org",
        phone_number=None,
        klaviyo_id=None,
        consents=[("email", "marketing", "SUBSCRIBED", None)],
    )
    get_backend().bulk_subscribe_profiles(payloads.subscribe_job([entry], list_id="Single"))
    assert (
        fake.get_profile(email="vip@example.org")["subscriptions"]["email"]["marketing"][
            "double_optin"
        ]
        is False
    )
    pull(profile_id)

    [inbound] = ConsentEvent.objects.filter(profile_id=profile_id, method="klaviyo")
    assert inbound.method_detail != "double opt-in confirmed"
    assert inbound.method_detail == "API"
    delivery = _delivery(profile_id)
    assert delivery.status == "applied" and delivery.reason == "API"


def test_a_not_applied_verdict_goes_back_to_waiting_only_on_evidence_of_the_consent(
    api, fake, on_commit
):
    # Refused by a hard bounce on a double opt-in list; the bounce is lifted later in Klaviyo.
    # Klaviyo sends no confirmation for a job it did not take: the verdict stays not_applied.
    fake.add_profile(email="vip@example.org")
    fake.suppress("vip@example.org", reason="HARD_BOUNCE")
    profile_id = subscribe(
        api,
        on_commit,
        profile={"email": "vip@example.org"},
        subscriptions=EMAIL_ONLY,
        list_id="Double",
    )
    assert _delivery(profile_id).status == "not_applied"
    fake.unsuppress("vip@example.org", reason="HARD_BOUNCE")
    pull(profile_id)
    delivery = _delivery(profile_id)
    assert delivery.status == "not_applied"
    assert "HARD_BOUNCE" not in delivery.reason  # no longer shown by Klaviyo: not named
    assert delivery.reason.startswith("Klaviyo shows NEVER_SUBSCRIBED; the job was not applied")
    assert delivery.history[0]["reason"] == "profile is suppressed (HARD_BOUNCE)"
