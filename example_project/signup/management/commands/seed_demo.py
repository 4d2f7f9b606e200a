"""Create the demo admin and a few profiles, each through the same service as the API."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone
from rest_framework.authtoken.models import Token

from klaviyo_consent.choices import Consent, Method, Suppression
from klaviyo_consent.models import ConsentEvent, Profile
from klaviyo_consent.services.ledger import ConsentRequest, Evidence, record_consent
from klaviyo_consent.services.suppressions import record_suppression
from klaviyo_consent.services.sync import sync

USERNAME, PASSWORD = "admin", "admin"

SEEDS = [
    (
        "ada@example.com",
        "+447400900123",
        {"email": {"marketing": True}, "sms": {"marketing": True}},
        "DemoLs",
        False,
    ),
    ("grace@example.com", None, {"email": {"marketing": True}}, "DblOpt", False),
    (
        "linus@example.com",
        "+12025550143",
        {"sms": {"marketing": True, "transactional": True}},
        "DemoLs",
        True,
    ),
    ("hedy@example.com", None, {"email": {"marketing": True}}, "DemoLs", False),
]

#: Klaviyo's developer guide, "Suppressing a profile via API": one person subscribed, then
#: suppressed from the site (a USER_SUPPRESSED suppression job), who can no longer receive email.
SUPPRESSED = "hedy@example.com"


class Command(BaseCommand):
    help = "Seed the demo: an admin user and a few consented profiles (idempotent)."

    def handle(self, *args, **options):
        user_model = get_user_model()
        user = user_model.objects.filter(username=USERNAME).first()
        if user is None:
            user = user_model.objects.create_superuser(USERNAME, "admin@example.com", PASSWORD)
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo admin: username {USERNAME!r}, password {PASSWORD!r}, API token {token.key}"
            )
        )
        for email, phone, subscriptions, list_id, historical in SEEDS:
            if Profile.objects.filter(email=email).exists():
                continue
            record_consent(
                ConsentRequest(
                    consent=Consent.SUBSCRIBED,
                    subscriptions=subscriptions,
                    email=email,
                    phone_number=phone,
                    list_id=list_id,
                    method=Method.IMPORT if historical else Method.ADMIN,
                    method_detail="demo seed",
                    custom_source="Demo seed",
                    consent_text="Seeded by make demo.",
                    historical_import=historical,
                    consented_at=timezone.now() - timedelta(days=30) if historical else None,
                    evidence=Evidence(user_agent="seed_demo"),
                    recorded_by=user,
                )
            )
        if not ConsentEvent.objects.filter(email=SUPPRESSED, suppression__isnull=False).exists():
            sync(wait=True, max_wait=30)  # subscribed first, then suppressed
            record_suppression(
                [SUPPRESSED],
                action=Suppression.SUPPRESS,
                method=Method.ADMIN,
                method_detail="demo seed: Suppressing a profile via API",
                evidence=Evidence(user_agent="seed_demo"),
                recorded_by=user,
            )
        sync(wait=True, max_wait=30)
        self.stdout.write(
            f"{Profile.objects.count()} profiles, pushed to the fake Klaviyo and read back."
        )
        self.stdout.write(
            "Try the API:\n"
            f"  curl -H 'Authorization: Token {token.key}' -H 'Content-Type: application/json' \\\n"
            """    -d '{"profile": {"email": "you@example.com", "phone_number": "+447400123456"},"""
            """ "subscriptions": {"email": {"marketing": true}, "sms": {"marketing": true}},"""
            """ "consent_text": "Yes, send me offers."}' \\\n"""
            "    http://127.0.0.1:8000/api/consent/subscribe/"
        )
