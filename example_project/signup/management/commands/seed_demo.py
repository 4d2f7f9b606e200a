"""Seed the demo: an admin user and one person in each state the product reports.

Every person goes through the real pipeline: the API's serializer builds the service request,
``record_consent`` writes the ledger, the push and the read-back talk to the fake Klaviyo, and
the verdicts come from what Klaviyo's state shows. What people and Klaviyo do outside the API
(a STOP reply, Klaviyo refusing an address) is played on the fake, as its scenarios.

==========================  ==================================================================
ada@example.com             applied: email and UK SMS on a single opt-in list
grace@example.com           pending confirmation: the double opt-in (VIP) list, not confirmed
ana@example.si              email applied; SMS not applied: "SMS is not available in Slovenia"
                            (recorded while the site's SMS countries still listed Slovenia;
                            Klaviyo accepted the job and dropped the SMS consent)
pat@example.com             not applied: signed up for the VIP list four days ago and never
                            confirmed (CONFIRMATION_WINDOW is three days)
ren@example.com             failed: Klaviyo refused the address ("Invalid email address")
linus@example.com           drift: SMS applied, then Linus texted STOP; Klaviyo's change comes
                            back as an inbound ledger event and the verdict follows it
hedy@example.com            suppressed: subscribed, then suppressed from the site
                            (USER_SUPPRESSED), can no longer receive email
==========================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from unittest import mock

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.test.utils import override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token

from klaviyo_consent.api.serializers import ConsentRequestSerializer
from klaviyo_consent.backends import get_backend
from klaviyo_consent.choices import Consent, Method, Suppression
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.models import ConsentEvent, Profile
from klaviyo_consent.services.ledger import Evidence, latest_events, record_consent
from klaviyo_consent.services.suppressions import record_suppression
from klaviyo_consent.services.sync import sync
from klaviyo_consent.services.verify import pull_profiles

USERNAME, PASSWORD = "admin", "admin"

APPLIED = "ada@example.com"
PENDING = "grace@example.com"
UNSUPPORTED_COUNTRY = "ana@example.si"
NEVER_CONFIRMED = "pat@example.com"
REFUSED = "ren@example.com"
STOP_REPLY = "linus@example.com"
SUPPRESSED = "hedy@example.com"

#: Each seed is a ``subscribe/`` body, built into the service request by the API's serializer.
SEEDS = [
    {
        "profile": {"email": APPLIED, "phone_number": "+447400900123"},
        "subscriptions": {"email": {"marketing": True}, "sms": {"marketing": True}},
        "list_id": "DemoLs",
    },
    {
        "profile": {"email": PENDING},
        "subscriptions": {"email": {"marketing": True}},
        "list_id": "DblOpt",
    },
    {
        "profile": {"email": UNSUPPORTED_COUNTRY, "phone_number": "+38640123456"},
        "subscriptions": {"email": {"marketing": True}, "sms": {"marketing": True}},
        "list_id": "DemoLs",
    },
    {
        "profile": {"email": NEVER_CONFIRMED},
        "subscriptions": {"email": {"marketing": True}},
        "list_id": "DblOpt",
    },
    {
        "profile": {"email": REFUSED},
        "subscriptions": {"email": {"marketing": True}},
        "list_id": "DemoLs",
    },
    {
        "profile": {"email": STOP_REPLY, "phone_number": "+12025550143"},
        "subscriptions": {"sms": {"marketing": True, "transactional": True}},
        "list_id": "DemoLs",
        "method": Method.IMPORT,
        "historical_import": True,
    },
    {
        "profile": {"email": SUPPRESSED},
        "subscriptions": {"email": {"marketing": True}},
        "list_id": "DemoLs",
    },
]
#: What every seed says besides its own fields.
SEED_DEFAULTS = {
    "method": Method.ADMIN,
    "method_detail": "demo seed",
    "custom_source": "Demo seed",
    "consent_text": "Seeded by make demo.",
}

#: How long ago Pat signed up: past the default three-day CONFIRMATION_WINDOW.
NEVER_CONFIRMED_AGO = timedelta(days=4)


@contextmanager
def as_of(moment: Any) -> Iterator[None]:
    """Run the pipeline with its clock at ``moment`` (a person who signed up days ago)."""
    offset = moment - timezone.now()
    real_now = timezone.now
    with mock.patch.object(timezone, "now", lambda: real_now() + offset):
        yield


@contextmanager
def sms_countries_listing(region: str) -> Iterator[None]:
    """The site's settings as a site whose SMS country lists still named ``region``."""
    current = dict(getattr(settings, "KLAVIYO_CONSENT", {}))
    sending = consent_settings.SMS_SENDING_COUNTRIES
    current["SMS_COUNTRIES"] = [*consent_settings.SMS_COUNTRIES, region]
    current["SMS_SENDING_COUNTRIES"] = None if sending is None else [*sending, region]
    with override_settings(KLAVIYO_CONSENT=current):
        yield


class Command(BaseCommand):
    help = "Seed the demo: an admin user and one person in each consent state (idempotent)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the demo is served, for the example it prints.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.base_url = options["base_url"].rstrip("/")
        user = self.admin_user()
        fake = getattr(get_backend(), "fake", None)
        if fake is None:
            self.stdout.write(
                self.style.WARNING(
                    "The real Klaviyo is configured: the states that need the fake Klaviyo "
                    "(a refused address, a STOP reply) are not seeded."
                )
            )
        for seed in SEEDS:
            email = seed["profile"]["email"]
            if Profile.objects.filter(email=email).exists():
                continue
            if email == REFUSED:
                if fake is None:
                    continue
                with fake.editing():  # Klaviyo's own address check refuses this one
                    fake.rejected_emails.add(REFUSED)
            if email == UNSUPPORTED_COUNTRY:
                with sms_countries_listing("SI"):
                    self.record(seed, user)
                    sync(wait=True, max_wait=30)
            elif email == NEVER_CONFIRMED:
                with as_of(timezone.now() - NEVER_CONFIRMED_AGO):
                    self.record(seed, user)
                    sync(wait=True, max_wait=30)
            else:
                self.record(seed, user)
        sync(wait=True, max_wait=30)  # everyone pushed and read back
        if fake is not None:
            self.stop_reply(fake)
        self.suppress(user)
        sync(wait=True, max_wait=30)
        self.report()

    def admin_user(self) -> Any:
        user_model = get_user_model()
        user = user_model.objects.filter(username=USERNAME).first()
        if user is None:
            user = user_model.objects.create_superuser(USERNAME, "admin@example.com", PASSWORD)
        token, _ = Token.objects.get_or_create(user=user)
        self.token = token.key
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo admin: username {USERNAME!r}, password {PASSWORD!r}, API token {token.key}"
            )
        )
        return user

    def record(self, seed: dict[str, Any], user: Any) -> None:
        body = {**SEED_DEFAULTS, **seed}
        if body.get("historical_import"):
            body["consented_at"] = timezone.now() - timedelta(days=30)
        serializer = ConsentRequestSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        record_consent(
            serializer.to_request(
                consent=Consent.SUBSCRIBED,
                evidence=Evidence(user_agent="seed_demo"),
                recorded_by=user,
            )
        )

    def stop_reply(self, fake: Any) -> None:
        """Linus texts STOP; reading his profile back records Klaviyo's change as drift."""
        linus = Profile.objects.filter(email=STOP_REPLY).first()
        if linus is None or ConsentEvent.objects.filter(profile=linus, method=Method.KLAVIYO):
            return
        with fake.editing():
            fake.reply_stop(linus.phone_number)
        pull_profiles([linus])

    def suppress(self, user: Any) -> None:
        hedy = Profile.objects.filter(email=SUPPRESSED).first()
        if hedy is None or ConsentEvent.objects.filter(
            profile=hedy, suppression=Suppression.SUPPRESS
        ):
            return
        record_suppression(
            [SUPPRESSED],
            action=Suppression.SUPPRESS,
            method=Method.ADMIN,
            method_detail="demo seed: Suppressing a profile via API",
            evidence=Evidence(user_agent="seed_demo"),
            recorded_by=user,
        )

    def report(self) -> None:
        """Who is who: each person's latest event per channel and purpose, and its verdict."""
        self.stdout.write(f"{Profile.objects.count()} profiles, pushed to Klaviyo and read back:")
        for profile in Profile.objects.order_by("pk"):
            said = []
            for event in latest_events([profile.pk])[profile.pk]:
                key = f"{event.channel} {event.purpose}"
                if event.method == Method.KLAVIYO:
                    said.append(f"{key}: {event.consent} in Klaviyo ({event.method_detail})")
                    continue
                if event.suppression:
                    key += f" {event.suppression}"
                delivery = getattr(event, "delivery", None)
                verdict = delivery.status if delivery else "no delivery"
                reason = f" ({delivery.reason})" if delivery and delivery.reason else ""
                said.append(f"{key}: {verdict}{reason}")
            self.stdout.write(f"  {profile.email or profile.phone_number}: {'; '.join(said)}")
        self.stdout.write(
            "Try the API:\n"
            f"  curl -H 'Authorization: Token {self.token}' "
            "-H 'Content-Type: application/json' \\\n"
            """    -d '{"profile": {"email": "you@example.com", "phone_number": "+447400123456"},"""
            """ "subscriptions": {"email": {"marketing": true}, "sms": {"marketing": true}},"""
            """ "consent_text": "Yes, send me offers."}' \\\n"""
            f"    {self.base_url}/api/consent/subscribe/"
        )
