"""``seed_demo`` leaves one person in each state, through the fake Klaviyo and the real
pipeline (issue 12, "The demo shows everything")."""

from __future__ import annotations

import io

import pytest
from django.contrib.admin.sites import site
from django.core.management import call_command
from django.test import RequestFactory

from klaviyo_consent.admin.base import VerdictFilter
from klaviyo_consent.models import ConsentEvent, Delivery, Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(fake, settings):
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "example_project.signup"]
    # The demo's lists, as the example project's fake has them.
    fake.add_list("DemoLs", "Newsletter (single opt-in)", "single_opt_in")
    fake.add_list("DblOpt", "VIP (double opt-in)", "double_opt_in")
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def verdicts(email: str) -> dict[str, tuple[str, str]]:
    profile = Profile.objects.get(email=email)
    return {
        ".".join(filter(None, (d.event.channel, d.event.purpose, d.event.suppression))): (
            d.status,
            d.reason,
        )
        for d in Delivery.objects.filter(profile=profile).select_related("event")
    }


def test_seed_demo_leaves_one_person_in_each_state(seeded, fake):
    assert {k: v[0] for k, v in verdicts("ada@example.com").items()} == {
        "email.marketing": "applied",
        "sms.marketing": "applied",
    }
    assert verdicts("grace@example.com")["email.marketing"][0] == "pending_confirmation"

    ana = verdicts("ana@example.si")
    assert ana["email.marketing"][0] == "applied"
    assert ana["sms.marketing"] == ("not_applied", "SMS is not available in Slovenia (SI)")
    # Klaviyo kept the number and dropped the consent: the famous silent drop.
    assert fake.get_profile(email="ana@example.si")["phone_number"] == "+38640123456"

    status, reason = verdicts("pat@example.com")["email.marketing"]
    assert status == "not_applied" and reason.startswith("the person never confirmed")

    status, reason = verdicts("ren@example.com")["email.marketing"]
    assert status == "failed" and "Invalid email address" in reason

    linus = Profile.objects.get(email="linus@example.com")
    [stop] = ConsentEvent.objects.filter(
        profile=linus, method="klaviyo", channel="sms", purpose="marketing"
    )
    assert stop.consent == "UNSUBSCRIBED" and "STOP" in stop.method_detail
    assert linus.subscriptions["sms"]["marketing"]["consent"] == "UNSUBSCRIBED"

    assert verdicts("hedy@example.com")["email.marketing.suppress"][0] == "applied"
    hedy = Profile.objects.get(email="hedy@example.com")
    reasons = [s["reason"] for s in hedy.subscriptions["email"]["marketing"]["suppression"]]
    assert reasons == ["USER_SUPPRESSED"]


def test_the_admin_verdict_filters_each_find_someone_after_the_seed(seeded):
    request = RequestFactory().get("/admin/klaviyo_consent/profile/")
    model_admin = site._registry[Profile]
    found = {}
    for value in ("not_applied", "pending_confirmation", "failed", "drift"):
        chosen = VerdictFilter(request, {"verdict": [value]}, Profile, model_admin)
        found[value] = {p.email for p in chosen.queryset(request, Profile.objects.all())}
    # Linus's STOP is drift: an inbound event after his applied consent, not a verdict on it.
    assert found == {
        "not_applied": {"ana@example.si", "pat@example.com"},
        "pending_confirmation": {"grace@example.com"},
        "failed": {"ren@example.com"},
        "drift": {"linus@example.com"},
    }


def test_seed_demo_says_who_is_who_and_runs_again_without_adding_anyone(seeded):
    assert (
        "ana@example.si: email marketing: applied; sms marketing: not_applied (SMS is not "
        "available in Slovenia (SI))" in seeded
    )
    assert (
        "linus@example.com: sms transactional: applied; sms marketing: UNSUBSCRIBED in " in seeded
    )
    before = (Profile.objects.count(), ConsentEvent.objects.count())
    call_command("seed_demo", stdout=io.StringIO())
    assert (Profile.objects.count(), ConsentEvent.objects.count()) == before
