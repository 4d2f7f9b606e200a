"""Issue 2: push 100,000 pending consent events through the in-process fake Klaviyo.

Reports the HTTP requests sent (counted at the fake; goal <= 101), wall time, the time spent
inside the fake, and our own overhead in events/s = events / (wall - fake time) (goal >= 5,000/s
on the 2-core benchmark machine). In the same run, a naive push sends one request per event
(a 1-profile subscribe job, through the same HTTP backend and fake) and marks that event's row.

    cd /work/main && .venv/bin/python benchmarks/push_throughput.py [--events N]
        [--database sqlite|postgres] [--naive-events N] [--naive-budget SECONDS] [--profile FILE]
"""

from __future__ import annotations

import cProfile
import math
import time

import common

LISTS = ["BenchA", "BenchB"]
SOURCES = ["footer", "checkout", "popup"]


def naive_push(events: int, budget: float) -> dict:
    """One POST per event, as the docs' sample does, plus marking the event's outbox row."""
    from django.utils import timezone

    from klaviyo_consent.backends.fake import FakeKlaviyoBackend
    from klaviyo_consent.choices import DeliveryStatus
    from klaviyo_consent.models import ConsentEvent, Delivery
    from klaviyo_consent.services import payloads
    from klaviyo_consent.testing.fake import FakeKlaviyo

    fake = FakeKlaviyo(enforce_rate_limits=False)
    for list_id in LISTS:
        fake.add_list(list_id, list_id, "single_opt_in")
    watch = common.time_fake(fake)
    backend = FakeKlaviyoBackend(fake=fake)  # RATE_LIMITER is None: no client-side waits
    done = 0
    started = time.perf_counter()
    rows = ConsentEvent.objects.order_by("id").values_list(
        "id", "email", "phone_number", "channel", "purpose", "consent", "list_id", "custom_source"
    )
    for pk, email, phone_number, channel, purpose, consent, list_id, source in rows[:events]:
        payload = payloads.subscribe_job(
            [
                payloads.profile_entry(
                    email=email or None,
                    phone_number=phone_number or None,
                    consents=[(channel, purpose, consent, None)],
                )
            ],
            list_id=list_id or None,
            custom_source=source or None,
        )
        backend.bulk_subscribe_profiles(payload)
        now = timezone.now()
        Delivery.objects.filter(pk=pk).update(
            status=DeliveryStatus.PUSHED, pushed_at=now, updated_at=now
        )
        done += 1
        if time.perf_counter() - started > budget:
            break
    wall = time.perf_counter() - started
    requests = sum(fake.counts.values())
    return {
        "events": done,
        "extrapolated": done < events,
        "requests": requests,
        "requests_for_all": events,
        "wall_seconds": round(wall, 3),
        "fake_seconds": round(watch.seconds, 3),
        "events_per_second": round(done / wall),
        "overhead_events_per_second": round(done / (wall - watch.seconds)),
        "wall_seconds_for_all": round(wall * events / done, 1),
    }


def main() -> None:
    parser = common.arguments(__doc__.splitlines()[0], events=100_000)
    parser.add_argument("--naive-events", type=int, default=None, help="default: --events")
    parser.add_argument(
        "--naive-budget",
        type=float,
        default=240.0,
        help="stop the naive push after this many seconds and extrapolate (>= 10,000 events)",
    )
    parser.add_argument("--claim-size", type=int, default=None, help="default: push.CLAIM_SIZE")
    parser.add_argument("--profile", help="write a cProfile of push_pending() to this file")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="skip ANALYZE after the bulk load (planner without statistics)",
    )
    args = parser.parse_args()
    common.setup(args.database)

    from klaviyo_consent.choices import DeliveryStatus
    from klaviyo_consent.models import Delivery
    from klaviyo_consent.services import push
    from klaviyo_consent.testing.fake import FakeKlaviyo

    fake = FakeKlaviyo(enforce_rate_limits=False)
    for list_id in LISTS:
        fake.add_list(list_id, list_id, "single_opt_in")
    with common.use_fake(fake, RATE_LIMITER=None):
        with common.timer() as seeding:
            seeded = common.seed_pending(args.events, lists=LISTS, sources=SOURCES)
            if not args.no_analyze:
                common.analyze()
        watch = common.time_fake(fake)
        claim_size = args.claim_size or push.CLAIM_SIZE
        profiler = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        report = push.push_pending(claim_size=claim_size)
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - started
        if profiler:
            profiler.dump_stats(args.profile)
        pending = Delivery.objects.exclude(status=DeliveryStatus.PUSHED).count()
        requests = sum(fake.counts.values())
        applied = sum(fake.applied.values())
        info = common.machine()
        result = {
            "machine": info,
            "seeded": seeded,
            "seed_seconds": round(seeding["seconds"], 2),
            "claim_size": claim_size,
            "analyzed": not args.no_analyze,
            "events": seeded["events"],
            "pushed": report.pushed,
            "not_pushed": pending,
            "applied_at_fake": applied,
            "requests": requests,
            "requests_goal": math.ceil(seeded["events"] / 1000) + 1,
            "jobs": len(fake.jobs),
            "wall_seconds": round(wall, 3),
            "fake_seconds": round(watch.seconds, 3),
            "overhead_seconds": round(wall - watch.seconds, 3),
            "overhead_events_per_second": round(seeded["events"] / (wall - watch.seconds)),
            "events_per_second": round(seeded["events"] / wall),
        }
        if not args.skip_naive:
            naive_events = args.naive_events or seeded["events"]
            result["naive"] = naive_push(naive_events, args.naive_budget)
    naive = result.get("naive")
    naive_cells = (
        f"{naive['requests_for_all']:,}{'*' if naive['extrapolated'] else ''} | "
        f"{naive['events_per_second']:,} | {naive['overhead_events_per_second']:,}"
        if naive
        else "- | - | -"
    )
    row = (
        f"| push_throughput | {common.database_label(info)} | {seeded['events']:,} | "
        f"{requests} | {wall:.2f} | {watch.seconds:.2f} | "
        f"**{result['overhead_events_per_second']:,}** | {naive_cells} |"
    )
    print(
        "| benchmark | database | events | requests | wall s | in fake s | our overhead ev/s "
        "| naive requests | naive ev/s (wall) | naive overhead ev/s |"
    )
    common.emit("push_throughput", row, result)


if __name__ == "__main__":
    main()
