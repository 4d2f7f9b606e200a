"""Issue 12: the admin on big tables (default 1,000,000 profiles, 1,200,000 events), PostgreSQL.

Builds the data with COPY (once; ``--reuse`` keeps it), runs ANALYZE, then times, through
Django's test client logged in as a superuser (the whole request: middleware, queries,
templates), each page ``--rounds`` times after two warm-up requests:

  * the profile changelist: plain, filtered by verdict (not applied), by Klaviyo consent
    (SMS marketing unsubscribed), by drift, and a search for one email;
  * a profile's change page (the grid, the timeline, identity changes);
  * the event changelist, plain and filtered by verdict;
  * the app index (the dashboard).

Baseline in the same run: ``--baseline-code DIR`` times the same pages with the admin code in
DIR (e.g. ``git archive <commit> | tar -x -C DIR``), on the same database, in a subprocess.

    .venv/bin/python benchmarks/admin_pages.py [--profiles 1000000] [--events 1200000]
        [--rounds 7] [--reuse] [--baseline-code /tmp/kc-old]
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import common

#: Delivery statuses of the site's events, as a live account spreads them (per mille).
STATUS_MIX = (
    ("applied", 880),
    ("pending", 20),
    ("pushed", 15),
    ("pending_confirmation", 30),
    ("not_applied", 40),
    ("failed", 15),
)


def setup(database_name: str, migrate: bool) -> None:
    os.environ["BENCH_DATABASE"] = "postgres"
    os.environ["BENCH_PG_NAME"] = database_name
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.admin_settings"
    common._ensure_postgres_database(database_name)
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)


def _status(i: int) -> str:
    slot = (i * 7919) % 1000
    for status, share in STATUS_MIX:
        if slot < share:
            return status
        slot -= share
    return "applied"


def _leaf(consent: str, when: str, sms: str | None = None) -> dict[str, Any]:
    leaf = {
        "consent": consent,
        "consent_timestamp": when,
        "last_updated": when,
        "method": "API",
        "method_detail": None,
        "custom_method_detail": "Footer signup",
        "double_optin": False,
    }
    if sms is None:
        leaf.update(can_receive_email_marketing=consent == "SUBSCRIBED", suppression=[])
    else:
        leaf[f"can_receive_sms_{sms}"] = consent == "SUBSCRIBED"
    return leaf


def _copy(table: str, columns: list[str], rows: Any) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg 3
        with raw.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def build(profiles: int, events: int) -> dict[str, float]:
    """Profiles 1..N (each with Klaviyo's mirror), one email event each, SMS events for the
    first ``events - profiles``, 1 % of them inbound drift, with outbox rows in STATUS_MIX."""
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    timings: dict[str, float] = {}
    call_command("flush", verbosity=0, interactive=False)
    now = timezone.now()
    when = now.isoformat()
    sms_count = events - profiles
    started = time.perf_counter()
    with transaction.atomic():
        _copy(
            "klaviyo_consent_profile",
            [
                "id",
                "email",
                "phone_number",
                "klaviyo_id",
                "subscriptions",
                "mirrored_at",
                "created_at",
                "updated_at",
            ],
            (
                (
                    i,
                    f"p{i}@bench.example",
                    common.phone(i) if i <= sms_count else None,
                    f"01BENCH{i:019d}",
                    json.dumps(
                        {
                            "email": {"marketing": _leaf("SUBSCRIBED", when)},
                            "sms": {
                                "marketing": _leaf(
                                    "UNSUBSCRIBED"
                                    if i % 50 == 0
                                    else ("SUBSCRIBED" if i <= sms_count else "NEVER_SUBSCRIBED"),
                                    when,
                                    "marketing",
                                ),
                                "transactional": _leaf("NEVER_SUBSCRIBED", when, "transactional"),
                            },
                        }
                    ),
                    now,
                    now,
                    now,
                )
                for i in range(1, profiles + 1)
            ),
        )
    timings["profiles_s"] = time.perf_counter() - started
    started = time.perf_counter()
    plan = [(i, i, "email") for i in range(1, profiles + 1)] + [
        (profiles + i, i, "sms") for i in range(1, sms_count + 1)
    ]
    event_columns = [
        "id", "profile_id", "email", "phone_number", "channel", "purpose", "consent", "method",
        "method_detail", "custom_source", "consent_text", "recorded_at", "list_id",
        "historical_import", "user_agent", "page_url", "klaviyo_data", "recorded_by_label",
    ]  # fmt: skip
    with transaction.atomic():
        _copy(
            "klaviyo_consent_consentevent",
            event_columns,
            (
                (
                    pk,
                    profile,
                    f"p{profile}@bench.example" if channel == "email" else "",
                    common.phone(profile) if channel == "sms" else "",
                    channel,
                    "marketing",
                    "UNSUBSCRIBED" if pk % 100 == 0 else "SUBSCRIBED",
                    "klaviyo" if pk % 100 == 0 else "form",
                    "TEXT / STOP" if pk % 100 == 0 else "footer form",
                    "Footer signup",
                    "Yes, send me offers.",
                    now,
                    "Single",
                    False,
                    "Mozilla/5.0 (bench)",
                    "https://shop.example/signup",
                    "{}",
                    "",
                )
                for pk, profile, channel in plan
            ),
        )
        _copy(
            "klaviyo_consent_delivery",
            [
                "event_id",
                "profile_id",
                "channel",
                "purpose",
                "status",
                "reason",
                "errors",
                "attempts",
                "deferrals",
                "history",
                "verify_attempts",
                "updated_at",
                "dead_lettered_at",
                "lease_token",
            ],
            (
                (
                    pk,
                    profile,
                    channel,
                    "marketing",
                    status := ("applied" if pk % 100 == 0 else _status(pk)),
                    "SMS is not available in Slovenia (SI)" if status == "not_applied" else "",
                    "[]",
                    1,
                    0,
                    "[]",
                    1,
                    now,
                    now if status == "failed" and pk % 3 == 0 else None,
                    "",
                )
                for pk, profile, channel in plan
            ),
        )
    timings["events_s"] = time.perf_counter() - started
    with connection.cursor() as cursor:
        for table in ("klaviyo_consent_profile", "klaviyo_consent_consentevent"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # autocommit: what autovacuum does after a load
    timings["analyze_s"] = time.perf_counter() - started
    return timings


PROFILES = "/admin/klaviyo_consent/profile/"
EVENTS = "/admin/klaviyo_consent/consentevent/"
PAGES = [
    ("profile changelist", PROFILES, {}),
    ("… filtered: verdict not applied", PROFILES, {"verdict": "not_applied"}),
    ("… filtered: SMS marketing unsubscribed", PROFILES, {"consent": "sms.marketing.UNSUBSCRIBED"}),
    ("… filtered: drift", PROFILES, {"verdict": "drift"}),
    ("… search one email", PROFILES, {"q": "p777777@bench.example"}),
    ("profile change page", PROFILES + "{pk}/change/", {}),
    ("event changelist", EVENTS, {}),
    ("… filtered: verdict failed", EVENTS, {"delivery__status__exact": "failed"}),
    ("app index (dashboard)", "/admin/klaviyo_consent/", {}),
]


def measure(rounds: int, profile_pk: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    results: dict[str, Any] = {}
    for name, url, params in PAGES:
        url = url.format(pk=profile_pk)
        for _ in range(2):
            response = client.get(url, params)
        samples = []
        for _ in range(rounds):
            reset_queries()
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get(url, params)
                samples.append((time.perf_counter() - started) * 1000)
        results[name] = {
            "status": response.status_code,
            "median_ms": round(statistics.median(samples), 1),
            "max_ms": round(max(samples), 1),
            "queries": len(captured),
        }
        print(f"{name}: {results[name]}", file=sys.stderr)
    return results


def main() -> None:
    parser = common.arguments("Admin pages on big tables", events=1_200_000)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="keep the data already built")
    parser.add_argument("--database-name", default=os.environ.get("BENCH_PG_NAME", "kc_admin"))
    parser.add_argument("--baseline-code", help="a checkout of the code to compare against")
    parser.add_argument("--measure-only", action="store_true", help=argparse_hidden())
    args = parser.parse_args()
    if args.measure_only:
        setup(args.database_name, migrate=False)
        print(json.dumps(measure(args.rounds, args.profiles // 2)))
        return
    setup(args.database_name, migrate=True)
    from klaviyo_consent.models import ConsentEvent, Profile

    timings: dict[str, float] = {}
    if not (args.reuse and Profile.objects.filter(pk=args.profiles).exists()):
        timings = build(args.profiles, args.events)
    assert ConsentEvent.objects.order_by("-id").values_list("id", flat=True)[0] == args.events
    ours = measure(args.rounds, args.profiles // 2)
    baseline = None
    if args.baseline_code:
        env = {**os.environ, "PYTHONPATH": args.baseline_code}
        out = subprocess.run(
            [sys.executable, __file__, "--measure-only", "--rounds", str(args.rounds),
             "--profiles", str(args.profiles), "--database-name", args.database_name],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        baseline = json.loads(out.strip().splitlines()[-1])
    info = common.machine()
    info["load_average_1_5_15"] = [round(x, 1) for x in os.getloadavg()]
    lines = io.StringIO()
    lines.write("| page | this branch: median (max) ms, queries | baseline: median ms, queries "
                "| ratio |\n|---|---|---|---|\n")  # fmt: skip
    for name, _, _ in PAGES:
        mine = ours[name]
        old = (baseline or {}).get(name)
        then = "— | — |"
        if old:
            ratio = old["median_ms"] / mine["median_ms"]
            then = f"{old['median_ms']}, {old['queries']} | {ratio:.1f}× |"
        lines.write(
            f"| {name} | {mine['median_ms']} ({mine['max_ms']}), {mine['queries']} | {then}\n"
        )
    common.emit(
        "admin_pages",
        lines.getvalue(),
        {"machine": info, "profiles": args.profiles, "events": args.events, "build": timings,
         "ours": ours, "baseline": baseline},
    )  # fmt: skip


def argparse_hidden() -> str:
    return "internal: time the pages only (used for the baseline subprocess)"


if __name__ == "__main__":
    if os.environ.get("PYTHONPATH") and "--measure-only" in sys.argv:
        # The baseline's code first, before the editable install of this checkout.
        sys.path.insert(0, os.environ["PYTHONPATH"].split(os.pathsep)[0])
    main()
