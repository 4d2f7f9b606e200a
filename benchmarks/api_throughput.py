"""Issue 4 (3): ``POST /api/consent/subscribe/`` throughput against a bare DRF create endpoint.

The bare endpoint is the floor a DRF site pays for any write: a ModelSerializer and a
CreateAPIView on a tiny model (no unique fields, so no validator queries); a second one does
the same on Profile itself (its unique email/phone checks included). A third writes the rows a
subscribe writes (a profile, two events, two outbox rows) the bare way: a plain serializer whose
``create()`` makes them with the ORM in one transaction (``Profile.objects.create`` and
``ConsentEvent.objects.append``: two bulk INSERTs), without our validation, evidence,
identity checks, signal or ledger; it is the floor for any ORM implementation of the endpoint.
All use the same authentication (token) and permission (IsAuthenticated) as the consent API,
on the same database, in the same run, through the same client (Django's test Client: the full
handler, middleware and URL stack, no sockets). The subscribe calls record an email + SMS
consent for a new person each time (profile, two events, two outbox rows, the 201 with the
ledger); PUSH_ON_COMMIT is False: pushing is asynchronous work, not part of the request. The
endpoints take turns in rounds so that none gets a warmer machine. Goal: ratio to the tiny
model >= 0.8.

    cd /work/main && .venv/bin/python benchmarks/api_throughput.py [--events N]
        [--database sqlite|postgres] [--rounds R] [--profile FILE]

``--events`` = requests per endpoint.
"""

from __future__ import annotations

import cProfile
import json
import time

import common


def main() -> None:
    parser = common.arguments(__doc__.splitlines()[0], events=3000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--profile", help="write a cProfile of the subscribe requests to FILE")
    args = parser.parse_args()
    common.setup(args.database)

    from django.contrib.auth import get_user_model
    from django.db import connection, models, transaction
    from django.test import Client
    from django.urls import clear_url_caches, path
    from django.utils import timezone
    from rest_framework import generics, serializers
    from rest_framework.authtoken.models import Token
    from rest_framework.permissions import IsAuthenticated

    from benchmarks import urls
    from klaviyo_consent.models import ConsentEvent, Profile

    class BenchSignup(models.Model):
        email = models.EmailField(max_length=254)
        phone_number = models.CharField(max_length=32, blank=True)
        consent_text = models.TextField(blank=True)
        created_at = models.DateTimeField(auto_now_add=True)

        class Meta:
            app_label = "benchmarks"

    class BenchSignupSerializer(serializers.ModelSerializer):
        class Meta:
            model = BenchSignup
            fields = ["id", "email", "phone_number", "consent_text", "created_at"]

    class BareCreate(generics.CreateAPIView):
        serializer_class = BenchSignupSerializer
        permission_classes = [IsAuthenticated]

    class ProfileCreateSerializer(serializers.ModelSerializer):
        class Meta:
            model = Profile
            fields = ["id", "email", "phone_number", "external_id", "created_at"]

    class BareProfileCreate(generics.CreateAPIView):
        serializer_class = ProfileCreateSerializer
        permission_classes = [IsAuthenticated]

    class SameRowsSerializer(serializers.Serializer):
        id = serializers.IntegerField(read_only=True)
        email = serializers.EmailField()
        phone_number = serializers.CharField(max_length=32)
        consent_text = serializers.CharField(write_only=True)

        def create(self, validated_data: dict) -> Profile:
            now = timezone.now()
            with transaction.atomic():
                profile = Profile.objects.create(
                    email=validated_data["email"], phone_number=validated_data["phone_number"]
                )
                ConsentEvent.objects.append(
                    [
                        ConsentEvent(
                            profile=profile,
                            email=profile.email,
                            phone_number=profile.phone_number,
                            channel=channel,
                            purpose="marketing",
                            consent="SUBSCRIBED",
                            consent_text=validated_data["consent_text"],
                            recorded_at=now,
                        )
                        for channel in ("email", "sms")
                    ],
                    next_attempt_at=now,
                )
            return profile

    class BareSameRows(generics.CreateAPIView):
        serializer_class = SameRowsSerializer
        permission_classes = [IsAuthenticated]

    if BenchSignup._meta.db_table in connection.introspection.table_names():
        with connection.schema_editor() as editor:
            editor.delete_model(BenchSignup)
    with connection.schema_editor() as editor:
        editor.create_model(BenchSignup)
    urls.urlpatterns += [
        path("bare/", BareCreate.as_view()),
        path("bare-profile/", BareProfileCreate.as_view()),
        path("bare-same-rows/", BareSameRows.as_view()),
    ]
    clear_url_caches()

    user = get_user_model().objects.create_user("bench", password="bench")
    token = Token.objects.create(user=user)
    client = Client(HTTP_AUTHORIZATION=f"Token {token.key}")

    def subscribe_body(i: int) -> str:
        return json.dumps(
            {
                "profile": {"email": f"u{i}@example.com", "phone_number": common.phone(i)},
                "subscriptions": {"email": {"marketing": True}, "sms": {"marketing": True}},
                "list_id": "BenchA",
                "method": "form",
                "method_detail": "footer form",
                "custom_source": "Footer signup",
                "consent_text": "Yes, text me offers. Reply STOP to cancel.",
            }
        )

    def bare_body(i: int) -> str:
        return json.dumps(
            {
                "email": f"u{i}@example.com",
                "phone_number": common.phone(i),
                "consent_text": "Yes, text me offers. Reply STOP to cancel.",
            }
        )

    def bare_profile_body(i: int) -> str:
        # Other numbers than the subscribe calls use: Profile's phone_number is unique.
        phone_number = common.phone(3_000_000 + i)
        return json.dumps({"email": f"p{i}@example.com", "phone_number": phone_number})

    def same_rows_body(i: int) -> str:
        return json.dumps(
            {
                "email": f"s{i}@example.com",
                "phone_number": common.phone(5_000_000 + i),
                "consent_text": "Yes, text me offers. Reply STOP to cancel.",
            }
        )

    endpoints = {
        "bare": ("/bare/", bare_body),
        "bare_profile": ("/bare-profile/", bare_profile_body),
        "bare_same_rows": ("/bare-same-rows/", same_rows_body),
        "subscribe": ("/api/consent/subscribe/", subscribe_body),
    }
    extra = {
        "HTTP_USER_AGENT": "Mozilla/5.0 (benchmark)",
        "HTTP_REFERER": "https://shop.example.com/signup",
        "REMOTE_ADDR": "203.0.113.7",
    }
    seconds = {name: 0.0 for name in endpoints}
    done = {name: 0 for name in endpoints}
    profiler = cProfile.Profile() if args.profile else None

    def batch(name: str, start: int, count: int, *, timed: bool = True) -> None:
        url, make = endpoints[name]
        bodies = [make(i) for i in range(start, start + count)]
        use_profiler = profiler is not None and name == "subscribe" and timed
        began = time.perf_counter()
        if use_profiler:
            profiler.enable()
        for data in bodies:
            response = client.post(url, data, content_type="application/json", **extra)
            if response.status_code != 201:
                raise SystemExit(f"{url} answered {response.status_code}: {response.content!r}")
        if use_profiler:
            profiler.disable()
        if timed:
            seconds[name] += time.perf_counter() - began
            done[name] += count

    warmup = 50
    for name in endpoints:
        batch(name, 1_000_000, warmup, timed=False)
    per_round = max(1, args.events // args.rounds)
    for round_number in range(args.rounds):
        order = list(endpoints) if round_number % 2 == 0 else list(reversed(endpoints))
        for name in order:
            batch(name, round_number * per_round, per_round)
    if profiler:
        profiler.dump_stats(args.profile)

    rates = {name: done[name] / seconds[name] for name in endpoints}
    ratio = rates["subscribe"] / rates["bare"]
    ratio_profile = rates["subscribe"] / rates["bare_profile"]
    ratio_same_rows = rates["subscribe"] / rates["bare_same_rows"]
    ceiling = rates["bare_same_rows"] / rates["bare"]
    info = common.machine()
    result = {
        "machine": info,
        "client": "django.test.Client (in-process WSGI handler, full middleware)",
        "requests_per_endpoint": done,
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "requests_per_second": {name: round(value, 1) for name, value in rates.items()},
        "ms_per_request": {name: round(1000 / value, 3) for name, value in rates.items()},
        "ratio_subscribe_to_bare": round(ratio, 3),
        "ratio_subscribe_to_bare_profile": round(ratio_profile, 3),
        "ratio_subscribe_to_bare_same_rows": round(ratio_same_rows, 3),
        "ratio_bare_same_rows_to_bare": round(ceiling, 3),
    }
    print(
        "| database | requests each | bare (tiny) req/s | bare (Profile) req/s "
        "| bare (same rows) req/s | subscribe req/s | ratio to tiny | ratio to Profile "
        "| ratio to same rows | same rows to tiny |"
    )
    row = (
        f"| {common.database_label(info)} | {done['subscribe']:,} | "
        f"{rates['bare']:.0f} | {rates['bare_profile']:.0f} | {rates['bare_same_rows']:.0f} | "
        f"{rates['subscribe']:.0f} | **{ratio:.2f}** | {ratio_profile:.2f} | "
        f"{ratio_same_rows:.2f} | {ceiling:.2f} |"
    )
    common.emit("api_throughput", row, result)


if __name__ == "__main__":
    main()
