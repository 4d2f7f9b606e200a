"""Issue 11: erasing one person on a 1,000,000-event ledger (goal <= 1 s, not counting Klaviyo).

One run on one database:
  * seed: --events consent events over --events/4 profiles (4 events each), their erasable
    rows and outbox rows, by INSERT ... SELECT over a generated series (seconds, not minutes);
  * build: the first checkpoint over every event, dated two hours back as if the ledger had
    been running (its leaves are the proof erasure must keep);
  * erase (in ledger): ``erase_profile`` of --people seeded people whose events all have a
    leaf, median and max;
  * erase (fresh): of --people people recorded just now (2 events each, not yet in the
    ledger): the erasure first runs the incremental checkpoint that gives them their leaves;
  * baseline: ``record_consent`` of one new person (email + SMS) on the same ledger, median;
    the ratios erase / baseline are reported.
The Klaviyo side is not counted: PUSH_ON_COMMIT is off, the deletion jobs stay queued.

    .venv/bin/python benchmarks/erasure.py [--events 1000000] [--database sqlite|postgres]
        [--people 5]
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

import common

SERIES = (
    "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) "
    "SELECT i FROM n"
)


def seed(events: int) -> None:
    """``events`` events over ``events // 4`` profiles, in a handful of INSERT ... SELECTs."""
    from django.db import connection, transaction
    from django.utils import timezone

    from klaviyo_consent.models import ConsentText

    text = ConsentText.objects.create(key="bench", version=1, body="Bench consent words.")
    now = timezone.now()
    people = max(1, events // 4)
    concat = "||"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO klaviyo_consent_profile (email, klaviyo_id, subscriptions, created_at, "
            f"updated_at) SELECT 'p' {concat} i {concat} '@bench.example', '', '{{}}', %s, %s "
            f"FROM ({SERIES.format(last=people - 1)}) s",
            [now, now],
        )
        cursor.execute("SELECT MIN(id) FROM klaviyo_consent_profile")
        first = cursor.fetchone()[0]
        consent = "CASE WHEN i %% 4 = 1 THEN 'UNSUBSCRIBED' ELSE 'SUBSCRIBED' END"
        cursor.execute(
            "INSERT INTO klaviyo_consent_consentevent (profile_id, channel, purpose, consent, "
            "method, method_detail, custom_source, consent_text, consent_text_version_id, "
            "recorded_at, list_id, historical_import, klaviyo_data, recorded_by_label) "
            f"SELECT %s + (i / 4), 'email', 'marketing', {consent}, 'form', '', 'footer', %s, "
            f"%s, %s, '', %s, '{{}}', '' FROM ({SERIES.format(last=events - 1)}) s",
            [first, text.body, text.pk, now, False],
        )
        cursor.execute(
            "INSERT INTO klaviyo_consent_eventpersonaldata (event_id, email, phone_number, "
            "ip_address, user_agent, page_url) SELECT e.id, p.email, '', '203.0.113.7', "
            "'Mozilla/5.0 (bench)', 'https://shop.example/signup' "
            "FROM klaviyo_consent_consentevent e JOIN klaviyo_consent_profile p "
            "ON p.id = e.profile_id"
        )
        cursor.execute(
            "INSERT INTO klaviyo_consent_delivery (event_id, profile_id, channel, purpose, "
            "status, reason, errors, attempts, deferrals, lease_token, verify_attempts, "
            "history, updated_at, pushed_at, verified_at) SELECT id, profile_id, channel, "
            "purpose, 'applied', '', '[]', 1, 0, '', 1, '[]', %s, %s, %s "
            "FROM klaviyo_consent_consentevent",
            [now, now, now],
        )


def record_person(index: int) -> int:
    from klaviyo_consent.services.ledger import ConsentRequest, Evidence, record_consent

    result = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}, "sms": {"marketing": True}},
            email=f"fresh{index}@bench.example",
            phone_number=common.phone(900_000 + index),
            consent_text="Bench consent words.",
            evidence=Evidence(ip_address="198.51.100.4", user_agent="Bench/1"),
        )
    )
    return result.profile.pk


def erase(profile_id: int) -> float:
    from klaviyo_consent.services.erasure import ErasureRequest, erase_profile

    started = time.perf_counter()
    erase_profile(ErasureRequest(profile_id=profile_id, source="command"))
    return time.perf_counter() - started


def main() -> None:
    parser = common.arguments(__doc__.splitlines()[0], events=1_000_000)
    parser.add_argument("--people", type=int, default=5)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Keep the database a previous run built (BENCH_SQLITE_PATH / BENCH_PG_NAME): "
        "migrate it and measure again, without seeding and building.",
    )
    args = parser.parse_args()
    common.setup(args.database, flush=not args.reuse)

    from django.conf import settings
    from django.test.utils import override_settings
    from django.utils import timezone

    from klaviyo_consent.models import ConsentEvent, EventPersonalData, Profile
    from klaviyo_consent.services import checkpoints

    info = common.machine()
    result: dict = {"machine": info, "events": args.events}
    erased_before = EventPersonalData.objects.filter(erased_at__isnull=False).count()
    if args.reuse:
        result.update(seed_seconds=0.0, build_seconds=0.0, reused=True)
        common.analyze()
    else:
        with common.timer() as t:
            seed(args.events)
        result["seed_seconds"] = t["seconds"]
        common.analyze()
        with common.timer() as t:
            build = checkpoints.checkpoint(now=timezone.now() - timedelta(hours=2))
        result["build_seconds"] = t["seconds"]
        assert build.appended == args.events, build
    run = 1000 * (1 + Profile.objects.filter(email__startswith="fresh").count())

    consent = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    with override_settings(KLAVIYO_CONSENT=consent):
        baseline = []
        for i in range(args.people):
            started = time.perf_counter()
            record_person(run + 100 + i)
            baseline.append(time.perf_counter() - started)
        # People spread over the ledger, all of whose events have leaves (not erased before).
        seeded = Profile.objects.filter(email__startswith="p", erased_at__isnull=True)
        ordered = seeded.order_by("pk").values_list("pk", flat=True)
        step = max(1, seeded.count() // (args.people + 1))
        targets = [ordered[step * (n + 1)] for n in range(args.people)]
        in_ledger = [erase(pk) for pk in targets]
        checkpoints.checkpoint()  # the baseline people and the erasure records get leaves
        fresh_people = [record_person(run + n) for n in range(args.people)]
        fresh = [erase(pk) for pk in fresh_people]
    erased = EventPersonalData.objects.filter(erased_at__isnull=False).count() - erased_before
    assert erased == 4 * args.people + 2 * args.people, erased
    assert ConsentEvent.objects.filter(ledger_entry__isnull=True).count() == 0

    base = statistics.median(baseline)
    result.update(
        baseline_record_consent_ms=round(base * 1000, 1),
        erase_in_ledger_median_ms=round(statistics.median(in_ledger) * 1000, 1),
        erase_in_ledger_max_ms=round(max(in_ledger) * 1000, 1),
        erase_fresh_median_ms=round(statistics.median(fresh) * 1000, 1),
        erase_fresh_max_ms=round(max(fresh) * 1000, 1),
        ratio_in_ledger=round(statistics.median(in_ledger) / base, 2),
        ratio_fresh=round(statistics.median(fresh) / base, 2),
    )
    row = (
        f"| {info['date']} | {common.database_label(info)} | {args.events:,} | "
        f"{result['seed_seconds']:.0f} s | {result['build_seconds']:.0f} s | "
        f"{result['erase_in_ledger_median_ms']} ms (max {result['erase_in_ledger_max_ms']}) | "
        f"{result['erase_fresh_median_ms']} ms (max {result['erase_fresh_max_ms']}) | "
        f"{result['baseline_record_consent_ms']} ms | {result['ratio_in_ledger']}× / "
        f"{result['ratio_fresh']}× |"
    )
    common.emit("erasure", row, result)


if __name__ == "__main__":
    main()
