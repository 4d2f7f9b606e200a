"""Issue 4 (1): sustained push rate against the fake enforcing Klaviyo's limits.

Bulk subscribe allows 75 jobs/s (burst) and 750 jobs/min (steady). Time is compressed by
--time-scale on both the fake and the client's LocalRateLimiter (20: a minute lasts 3 s). Every
event carries its own custom_source, so every event is its own job (the smallest jobs: the
worst case for the request budget). push_pending() sends them all; goal: >= 95 % of the steady
limit, with zero 429s. The rate is measured at the fake: 750 jobs divided by the mean scaled
time the fake saw between job i and job i + 750, over the whole run.

    cd /work/main && .venv/bin/python benchmarks/sustained_rate.py [--events N]
        [--database sqlite|postgres] [--time-scale 20] [--workers 1] [--limiter local|redis://…]

``--workers N`` pushes from N threads at once, each with its own backend and database
connection, all held by one limiter: ``local`` (limits' memory storage, shared by the threads)
or a Redis URL (limits' Redis storage, as separate worker processes would share it).

``--events`` = jobs; the default 3,750 is five scaled minutes at 750/min.
"""

from __future__ import annotations

import threading
import time

import common

STEADY = 750
LIST_ID = "BenchA"


def seed(events: int) -> None:
    """``events`` email signups, each from its own custom_source: one job each."""
    from django.utils import timezone

    from klaviyo_consent.models import ConsentEvent, Profile

    now = timezone.now()
    profiles = Profile.objects.bulk_create(
        Profile(email=f"s{i}@example.com") for i in range(events)
    )
    ConsentEvent.objects.append(
        [
            ConsentEvent(
                profile=profile,
                email=profile.email,
                channel="email",
                purpose="marketing",
                consent="SUBSCRIBED",
                method="form",
                custom_source=f"landing-page-{i}",
                consent_text="Yes, send me news and offers.",
                recorded_at=now,
                list_id=LIST_ID,
            )
            for i, profile in enumerate(profiles)
        ],
        next_attempt_at=now,
    )


def main() -> None:
    parser = common.arguments(__doc__.splitlines()[0], events=5 * STEADY)
    parser.add_argument("--time-scale", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--limiter", default="local", help='"local" or a redis:// URL')
    args = parser.parse_args()
    common.setup(args.database)

    from django.db import connection

    from klaviyo_consent.choices import DeliveryStatus
    from klaviyo_consent.models import Delivery
    from klaviyo_consent.ratelimit import LocalRateLimiter, RedisRateLimiter
    from klaviyo_consent.services.push import push_pending
    from klaviyo_consent.services.reports import SyncReport
    from klaviyo_consent.testing.fake import FakeKlaviyo

    scale = args.time_scale
    fake = FakeKlaviyo(enforce_rate_limits=True, time_scale=scale)
    fake.add_list(LIST_ID, LIST_ID, "single_opt_in")
    seed(args.events)
    common.analyze()

    accepted: list[float] = []  # real monotonic time each accepted job reached the fake
    handle = fake.handle

    def recording(method, url, headers, body):  # type: ignore[no-untyped-def]
        arrived = time.monotonic()
        answer = handle(method, url, headers, body)
        if answer.status == 202:
            accepted.append(arrived)
        return answer

    fake.handle = recording
    if args.limiter == "local":
        limiter = LocalRateLimiter(time_scale=scale)
    else:
        prefix = f"kc-bench:{time.time_ns()}"
        limiter = RedisRateLimiter(args.limiter, time_scale=scale, prefix=prefix)
    report = SyncReport()
    lock = threading.Lock()

    def work() -> None:
        try:
            # Rows a 429 reschedules come back after Retry-After: keep pushing until done.
            while Delivery.objects.filter(status=DeliveryStatus.PENDING).exists():
                done = push_pending(include_scheduled=True)
                with lock:
                    report.merge(done)
        finally:
            connection.close()

    with common.use_fake(fake, RATE_LIMITER=limiter):
        started = time.monotonic()
        threads = [threading.Thread(target=work) for _ in range(args.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started

    first = accepted[0]
    scaled = [(t - first) * scale for t in accepted]  # scaled seconds since the first job
    # The sustained rate: how long the fake waited for each further 750 jobs. A client held to
    # 750 per minute by a limiter takes >= 60 scaled s for every 750 consecutive jobs; the mean
    # of those spans, over the whole run, is the rate it keeps up (the first burst is free).
    spans = [scaled[i + STEADY] - scaled[i] for i in range(len(scaled) - STEADY)]
    mean_span = sum(spans) / len(spans) if spans else float("nan")
    rate = STEADY * 60 / mean_span if spans else 0.0
    # Jobs in each full scaled minute counted from the first job (Klaviyo counts fixed windows).
    full_minutes = int(scaled[-1] // 60)
    per_minute = [0] * full_minutes
    for moment in scaled:
        minute = int(moment // 60)
        if minute < full_minutes:
            per_minute[minute] += 1
    info = common.machine()
    result = {
        "machine": info,
        "time_scale": scale,
        "workers": args.workers,
        "limiter": "local" if args.limiter == "local" else "redis",
        "rate_limit_margin_real_seconds": limiter.margin,
        "events": args.events,
        "jobs_accepted": len(accepted),
        "requests": sum(fake.counts.values()),
        "throttled_429": fake.throttled,
        "wall_seconds": round(wall, 2),
        "scaled_minutes": round(scaled[-1] / 60, 2),
        "jobs_per_scaled_minute": round(rate, 1),
        "percent_of_steady": round(100 * rate / STEADY, 1),
        "mean_scaled_seconds_per_750_jobs": round(mean_span, 2),
        "min_scaled_seconds_per_750_jobs": round(min(spans), 2) if spans else None,
        "jobs_in_each_full_scaled_minute": per_minute,
        "not_pushed": Delivery.objects.exclude(status=DeliveryStatus.PUSHED).count(),
        "report": report.as_dict(),
    }
    print(
        "| benchmark | database | workers | limiter | time scale | jobs | scaled minutes "
        "| jobs/scaled min | % of steady | min scaled s per 750 | 429s |"
    )
    row = (
        f"| sustained_rate | {common.database_label(info)} | {args.workers} | "
        f"{result['limiter']} | x{scale:g} | {len(accepted):,} | "
        f"{scaled[-1] / 60:.1f} | {rate:.0f} | **{result['percent_of_steady']}** | "
        f"{result['min_scaled_seconds_per_750_jobs']} | **{fake.throttled}** |"
    )
    common.emit("sustained_rate", row, result)


if __name__ == "__main__":
    main()
