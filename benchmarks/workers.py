"""Issue 4, benchmark (2): 100,000 events pushed by 1, 2 and 4 worker processes on PostgreSQL.

Each round loads the same backlog (benchmarks.common.seed_pending: email, email + SMS and
phone-only signups over 2 lists x 3 forms), starts N ``klaviyo_consent_sync --loop`` processes
(tests.worker_settings: the real HTTP backend) against one fake Klaviyo served over HTTP from
this process, releases the backlog once every worker is polling, and times until no event is
pending. The fake enforces Klaviyo's published limits and counts what it was sent. Prints a
markdown table, then the JSON it was built from.

    cd /work/main && .venv/bin/python benchmarks/workers.py [--events N] [--workers 1 2 4]
        [--rate-limiter redis://127.0.0.1:6379/5]

Needs PostgreSQL at 127.0.0.1:5432 (user postgres); uses database ``bench_workers``
(``BENCH_PG_NAME`` overrides it), created when missing and emptied each round.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import common

LISTS = ["BenchA", "BenchB"]
SOURCES = ["footer", "checkout", "popup"]


def run_round(workers: int, events: int, rate_limiter: str | None, logs: Path) -> dict[str, Any]:
    """Seed ``events``, let ``workers`` processes push them all; what it took."""
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from klaviyo_consent.choices import DeliveryStatus
    from klaviyo_consent.models import Delivery
    from klaviyo_consent.testing.fake import FakeKlaviyo
    from tests.workers import SYNC_LOOP, Worker, database_url, serving, wait_until, worker_env

    call_command("flush", verbosity=0, interactive=False)
    seeded = common.seed_pending(events, lists=LISTS, sources=SOURCES)
    # Held back until every worker polls, so start-up time is not counted as pushing time.
    Delivery.objects.update(next_attempt_at=timezone.now() + timedelta(days=1))
    common.analyze()

    fake = FakeKlaviyo(enforce_rate_limits=True)
    for list_id in LISTS:
        fake.add_list(list_id, list_id, "single_opt_in")
    watch = common.time_fake(fake)
    consent = {"VERIFY_DELAY": 86400, "PUSH_ON_COMMIT": False, "RATE_LIMITER": rate_limiter}
    with serving(fake) as server:
        env = worker_env(
            db_url=database_url(connection.settings_dict), api_url=server.url, consent=consent
        )
        pool = [
            Worker(SYNC_LOOP, env, logs / f"w{workers}-{n}.log").start() for n in range(workers)
        ]
        try:
            if not wait_until(lambda: all(w.tail(1).startswith("pushed") for w in pool), 120):
                raise RuntimeError("workers did not start:\n" + pool[0].tail())
            started = time.perf_counter()
            Delivery.objects.update(next_attempt_at=timezone.now())
            done = wait_until(
                lambda: not Delivery.objects.filter(status=DeliveryStatus.PENDING).exists(),
                3600,
                0.05,
            )
            wall = time.perf_counter() - started
        finally:
            for worker in pool:
                worker.stop()
    if not done:
        raise RuntimeError("the backlog did not drain:\n" + pool[0].tail())
    pushed = Delivery.objects.filter(status=DeliveryStatus.PUSHED).count()
    posts = fake.counts["bulk_subscribe_profiles"] + fake.counts["bulk_unsubscribe_profiles"]
    return {
        "workers": workers,
        "events": seeded["events"],
        "pushed": pushed,
        "applied_at_fake": sum(fake.applied.values()),
        "duplicates_at_fake": sum(count - 1 for count in fake.applied.values() if count > 1),
        "requests": posts,
        "throttled": fake.throttled,
        "wall_seconds": round(wall, 2),
        "fake_seconds": round(watch.seconds, 2),
        "events_per_second": round(seeded["events"] / wall),
    }


def main() -> None:
    parser = common.arguments(__doc__.splitlines()[0], events=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--rate-limiter", default=None, help="RATE_LIMITER for the workers (default: none)"
    )
    args = parser.parse_args()
    os.environ.setdefault("BENCH_PG_NAME", "bench_workers")
    common.setup("postgres")
    logs = Path(tempfile.mkdtemp(prefix="kc-bench-workers-"))

    rounds = [run_round(n, args.events, args.rate_limiter, logs) for n in args.workers]
    info = common.machine()
    base = rounds[0]["events_per_second"]
    lines = [
        f"benchmark (2), {common.database_label(info)}, {info['nproc']} CPUs ({info['cpu']}), "
        f"Python {info['python']}, Django {info['django']}, {info['date']}; "
        f"rate limiter: {args.rate_limiter or 'none'}; worker logs in {logs}",
        "",
        "| workers | events | wall s | events/s | speed-up | requests | 429s | in fake s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rounds:
        lines.append(
            f"| {row['workers']} | {row['events']:,} | {row['wall_seconds']:.2f} | "
            f"{row['events_per_second']:,} | {row['events_per_second'] / base:.2f}x | "
            f"{row['requests']} | {row['throttled']} | {row['fake_seconds']:.2f} |"
        )
    common.emit(
        "workers",
        "\n".join(lines),
        {"machine": info, "rate_limiter": args.rate_limiter, "rounds": rounds},
    )


if __name__ == "__main__":
    main()
