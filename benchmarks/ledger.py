"""Issue 10: the Merkle ledger on a large ledger (default 1,000,000 events).

Measures, in one run on one database:
  * build: the first checkpoint over every event (sequencing + signing), for scale;
  * incremental: a checkpoint after 1,000 new events (goal <= 1 s);
  * verify: klaviyo_consent_verify's full recomputation (goal <= 60 s on SQLite);
  * receipt: ``services.proofs.receipt()`` with its inclusion proof, p50/p95 over
    --receipts random events (goal p95 <= 50 ms);
  * subscribe throughput with a checkpointer running every --checkpoint-every seconds in a
    second thread (own connection) vs none (goal: ratio >= 0.95).

    cd /work/main && .venv/bin/python benchmarks/ledger.py [--events N] [--database sqlite|postgres]
        [--receipts 200] [--subscribes 600] [--checkpoint-every 1.0] [--rounds 3]
"""

from __future__ import annotations

import random
import statistics
import threading
import time

import common


def seed(events: int, batch: int = 20_000) -> None:
    """``events`` consent events (with profiles, texts and outbox rows), bulk-inserted."""
    from django.db import transaction
    from django.utils import timezone

    from klaviyo_consent.models import ConsentEvent, ConsentText, Delivery, Profile
    from klaviyo_consent.models.erasable import insert_with_rows

    texts = [
        ConsentText.objects.create(key="bench", version=v, body=f"Bench consent words v{v}.")
        for v in (1, 2, 3)
    ]
    now = timezone.now()
    made = 0
    while made < events:
        size = min(batch, events - made)
        with transaction.atomic():
            profiles = Profile.objects.bulk_create(
                [Profile(email=f"p{made + i}@bench.example") for i in range(size)]
            )
            rows = insert_with_rows(
                ConsentEvent.objects.all(),
                [
                    ConsentEvent(
                        profile=p,
                        email=p.email,
                        channel="email",
                        purpose="marketing",
                        consent="SUBSCRIBED",
                        method="form",
                        custom_source="footer",
                        consent_text=texts[i % 3].body,
                        consent_text_version=texts[i % 3],
                        recorded_at=now,
                        ip_address="203.0.113.7",
                        user_agent="Mozilla/5.0 (bench)",
                        page_url="https://shop.example/signup",
                    )
                    for i, p in enumerate(profiles)
                ],
            )
            Delivery.objects.bulk_create(
                [
                    Delivery(event=e, profile_id=e.profile_id, channel="email", purpose="marketing")
                    for e in rows
                ]
            )
        made += size


def subscribe_run(count: int, offset: int, checkpoint_every: float | None) -> dict:
    """``count`` record_consent calls, with or without a checkpointer thread beside them."""
    from django.db import connection

    from klaviyo_consent.services import checkpoints as ledger
    from klaviyo_consent.services.ledger import ConsentRequest, Evidence, record_consent

    stop = threading.Event()
    made = []

    def checkpointer() -> None:
        try:
            while not stop.wait(checkpoint_every):
                result = ledger.checkpoint()
                made.append(result.appended)
            made.append(ledger.checkpoint().appended)
        finally:
            connection.close()

    thread = threading.Thread(target=checkpointer) if checkpoint_every else None
    if thread:
        thread.start()
    started = time.perf_counter()
    for i in range(count):
        record_consent(
            ConsentRequest(
                consent="SUBSCRIBED",
                subscriptions={"email": {"marketing": True}},
                email=f"s{offset + i}@bench.example",
                consent_text="Bench consent words v1.",
                evidence=Evidence("203.0.113.7", "Mozilla/5.0 (bench)", "https://shop.example/"),
            )
        )
    seconds = time.perf_counter() - started
    stop.set()
    if thread:
        thread.join()
    return {"seconds": seconds, "per_second": count / seconds, "checkpointed": sum(made)}


def main() -> None:
    parser = common.arguments(__doc__.splitlines()[0], events=1_000_000)
    parser.add_argument("--receipts", type=int, default=200)
    parser.add_argument("--subscribes", type=int, default=600)
    parser.add_argument("--checkpoint-every", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    common.setup(args.database)

    from klaviyo_consent.models import ConsentEvent, LedgerEntry
    from klaviyo_consent.services import checkpoints as ledger
    from klaviyo_consent.services import ledger_verify, proofs

    info = common.machine()
    result: dict = {"machine": info, "events": args.events}
    with common.timer() as t:
        seed(args.events)
    result["seed_seconds"] = t["seconds"]
    common.analyze()
    # The build is dated two hours back, as if the ledger had been running: its tip is then
    # past LEDGER_COMMIT_HORIZON and later checkpoints search only above it.
    from datetime import timedelta

    from django.utils import timezone

    with common.timer() as t:
        build = ledger.checkpoint(now=timezone.now() - timedelta(hours=2))
    result["build_seconds"] = t["seconds"]
    assert build.appended == args.events

    seed_more = 1_000
    from django.db import transaction

    with transaction.atomic():
        seed_offset = ConsentEvent.objects.count()
    # 1,000 more events, then the incremental checkpoint that takes exactly them.
    from klaviyo_consent.models import ConsentText, Delivery, Profile
    from klaviyo_consent.models.erasable import insert_with_rows

    text = ConsentText.objects.get(key="bench", version=1)
    profiles = Profile.objects.bulk_create(
        [Profile(email=f"more{seed_offset + i}@bench.example") for i in range(seed_more)]
    )
    rows = insert_with_rows(
        ConsentEvent.objects.all(),
        [
            ConsentEvent(
                profile=p,
                email=p.email,
                channel="email",
                purpose="marketing",
                consent="SUBSCRIBED",
                consent_text=text.body,
                consent_text_version=text,
            )
            for p in profiles
        ],
    )
    Delivery.objects.bulk_create(
        [
            Delivery(event=e, profile_id=e.profile_id, channel="email", purpose="marketing")
            for e in rows
        ]
    )
    with common.timer() as t:
        incremental = ledger.checkpoint()
    result["incremental_seconds"] = t["seconds"]
    assert incremental.appended == seed_more

    with common.timer() as t:
        verified = ledger_verify.verify_ledger()
    result["verify_seconds"] = t["seconds"]
    assert verified.events == args.events + seed_more

    size = LedgerEntry.objects.count()
    rng = random.Random(10)
    picks = [rng.randrange(size) for _ in range(args.receipts)]
    ids = dict(
        LedgerEntry.objects.filter(leaf_index__in=picks).values_list("leaf_index", "event_id")
    )
    timings = []
    for index in picks:
        started = time.perf_counter()
        event = ConsentEvent.objects.select_related(
            "consent_text_version", "delivery", "profile"
        ).get(pk=ids[index])
        proofs.receipt(event)
        timings.append(time.perf_counter() - started)
    timings.sort()
    result["receipt_p50_ms"] = statistics.median(timings) * 1000
    result["receipt_p95_ms"] = timings[int(len(timings) * 0.95) - 1] * 1000

    # Warm up, then alternate off / on runs (each starting with nothing pending) and take
    # the median of each: the order of the runs then does not decide the ratio.
    subscribe_run(50, 10_000_000, None)
    ledger.checkpoint()
    offs, ons, offset = [], [], 0
    for _ in range(args.rounds):
        offs.append(subscribe_run(args.subscribes, offset, None))
        ledger.checkpoint()
        offset += args.subscribes
        ons.append(subscribe_run(args.subscribes, offset, args.checkpoint_every))
        offset += args.subscribes
    result["subscribe_off_runs"] = [r["per_second"] for r in offs]
    result["subscribe_on_runs"] = [r["per_second"] for r in ons]
    result["subscribe_off_per_s"] = statistics.median(result["subscribe_off_runs"])
    result["subscribe_on_per_s"] = statistics.median(result["subscribe_on_runs"])
    result["subscribe_ratio"] = result["subscribe_on_per_s"] / result["subscribe_off_per_s"]
    result["checkpointed_during_on"] = [r["checkpointed"] for r in ons]

    row = (
        f"| {info['date']} | {common.database_label(info)} | {args.events:,} | "
        f"{result['build_seconds']:.1f} s | {result['incremental_seconds']:.2f} s | "
        f"{result['verify_seconds']:.1f} s | {result['receipt_p50_ms']:.1f} / "
        f"{result['receipt_p95_ms']:.1f} ms | {result['subscribe_off_per_s']:.0f} / "
        f"{result['subscribe_on_per_s']:.0f} /s = {result['subscribe_ratio']:.2f} |"
    )
    common.emit("ledger", row, result)


if __name__ == "__main__":
    main()
