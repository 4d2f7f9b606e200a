"""Create the demo admin and a few profiles, each through the same service as the API."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone
from rest_framework.authtoken.models import Token

from klaviyo_consent.api.serializers import ConsentRequestSerializer
from klaviyo_consent.choices import Consent, Method, Suppression
from klaviyo_consent.models import ConsentEvent, Profile
from klaviyo_consent.services.ledger import Evidence, record_consent
from klaviyo_consent.services.suppressions import record_suppression
from klaviyo_consent.services.sync import sync

USERNAME, PASSWORD = "admin", "admin"

#: Each seed is a ``subscribe/`` body, built into the service request by the API's serializer.
SEEDS = [
    {
        "profile": {"email": "ada@example.com", "phone_number": "+447400900123"},
        "subscriptions": {"email": {"marketing": True}, "sms": {"marketing": True}},
        "list_id": "DemoLs",
    },
    {
        "profile": {"email": "grace@example.com"},
        "subscriptions": {"email": {"marketing": True}},
        "list_id": "DblOpt",
    },
    {
        "profile": {"email": "linus@example.com", "phone_number": "+12025550143"},
        "subscriptions": {"sms": {"marketing": True, "transactional": True}},
        "list_id": "DemoLs",
        "method": Method.IMPORT,
        "historical_import": True,
    },
    {
        "profile": {"email": "hedy@example.com"},
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
        for seed in SEEDS:
            if Profile.objects.filter(email=seed["profile"]["email"]).exists():
                continue
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
        if not ConsentEvent.objects.filter(
            personal_data__email=SUPPRESSED, suppression__isnull=False
        ).exists():
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
