"""Issue 3: reconcile 100,000 profiles against the fake Klaviyo with ``pull_all()``.

The fake holds 100,000 subscribed profiles; the database holds the 100,000 matching local
profiles in the steady state after earlier pushes (their events applied, Klaviyo ids known),
with 1 % drifted in Klaviyo (unsubscribe link / STOP reply) and 2 % of events still ``pushed``
and waiting for a verdict. ``pull_all()`` pages ``GET /api/profiles`` 100 at a time.

Reports requests (goal ceil(100000/100) = 1000) and wall time against the bound Klaviyo's steady
limit for get_profiles sets (750/min: 1000 requests need >= 80 s), as a ratio, twice:
  (a) unthrottled: the fake does not enforce limits, no client limiter: our own cost;
  (b) realistic: the fake enforces Klaviyo's limits and the client uses a LocalRateLimiter,
      both with time compressed by the same factor: --time-scales 10 (a minute lasts 6 s,
      bound 8 s) and 1 (real time, bound 80 s) by default.

    cd /work/main && .venv/bin/python benchmarks/reconcile.py [--events N] [--database ...]
        [--time-scales 10,1] [--modes a,b] [--profile FILE]

``--events`` is the number of profiles.
"""

from __future__ import annotations

import cProfile
import json
import math
import time

import common

LIST_ID = "BenchA"
STEADY_PER_MINUTE = 750


def load_fake(fake, profiles: int) -> list[tuple[str | None, str | None]]:
    """Subscribe ``profiles`` people through the fake's own endpoint, 1000 per job."""
    from klaviyo_consent.services import payloads

    people = []
    for i in range(profiles):
        kind = i % 10
        if kind < 7:
            people.append((f"r{i}@example.com", None))
        elif kind < 9:
            people.append((f"r{i}@example.com", common.phone(i)))
        else:
            people.append((None, common.phone(i)))
    for start in range(0, len(people), 1000):
        entries = []
        for email, phone_number in people[start : start + 1000]:
            consents = []
            if email:
                consents.append(("email", "marketing", "SUBSCRIBED", None))
            if phone_number:
                consents.append(("sms", "marketing", "SUBSCRIBED", None))
            entries.append(
                payloads.profile_entry(email=email, phone_number=phone_number, consents=consents)
            )
        body = json.dumps(payloads.subscribe_job(entries, list_id=LIST_ID)).encode()
        answer = fake.handle(
            "POST",
            "/api/profile-subscription-bulk-create-jobs",
            {"Authorization": "Klaviyo-API-Key pk_bench", "revision": "2026-07-15"},
            body,
        )
        assert answer.status == 202, answer.body
    # Drift made in Klaviyo: 1 % unsubscribe by link or reply STOP.
    for i in range(0, profiles, 100):
        email, phone_number = people[i + 3] if i + 3 < profiles else people[i]
        if email:
            fake.click_unsubscribe(email)
        elif phone_number:
            fake.reply_stop(phone_number)
    return people


def klaviyo_id(fake, email: str | None, phone_number: str | None) -> str:
    """The fake's id for a person, read from its index (get_profile() builds a whole resource)."""
    return (fake._by_email[email] if email else fake._by_phone[phone_number]).id


def seed_local(fake, people: list[tuple[str | None, str | None]]) -> dict[str, int]:
    """The local side after earlier pushes: profiles, applied events, a few awaiting a verdict."""
    from django.db import transaction
    from django.utils import timezone

    from klaviyo_consent.models import ConsentEvent, Delivery, KlaviyoList, Profile
    from klaviyo_consent.models.erasable import insert_with_rows

    KlaviyoList.objects.create(list_id=LIST_ID, name=LIST_ID, opt_in_process="single_opt_in")
    now = timezone.now()
    events = outstanding = 0
    for start in range(0, len(people), 5000):
        chunk = people[start : start + 5000]
        with transaction.atomic():
            profiles = Profile.objects.bulk_create(
                Profile(
                    email=email,
                    phone_number=phone_number,
                    klaviyo_id=klaviyo_id(fake, email, phone_number),
                )
                for email, phone_number in chunk
            )
            rows = []
            for profile in profiles:
                if profile.email:
                    rows.append((profile, "email"))
                if profile.phone_number:
                    rows.append((profile, "sms"))
            saved = insert_with_rows(  # the events and their erasable rows
                ConsentEvent.objects.all(),
                [
                    ConsentEvent(
                        profile=profile,
                        email=profile.email or "",
                        phone_number=profile.phone_number or "",
                        channel=channel,
                        purpose="marketing",
                        consent="SUBSCRIBED",
                        method="form",
                        custom_source="footer",
                        consent_text="Yes, send me news and offers.",
                        recorded_at=now,
                        list_id=LIST_ID,
                    )
                    for profile, channel in rows
                ],
            )
            deliveries = []
            for n, event in enumerate(saved):
                waiting = (start + n) % 50 == 7  # 2 % pushed, awaiting their verdict
                outstanding += waiting
                deliveries.append(
                    Delivery(
                        event=event,
                        profile_id=event.profile_id,
                        channel=event.channel,
                        purpose=event.purpose,
                        status="pushed" if waiting else "applied",
                        attempts=1,
                        pushed_at=now,
                        verified_at=None if waiting else now,
                        next_attempt_at=now if waiting else None,
                    )
                )
            Delivery.objects.bulk_create(deliveries)
            events += len(saved)
    return {"profiles": len(people), "events": events, "awaiting_verdict": outstanding}


def run(mode: str, fake, people, *, time_scale: float, profile_to: str | None) -> dict:
    """One reconcile from the same starting state: mode "a" unthrottled, "b" realistic."""
    from django.core.management import call_command

    from klaviyo_consent.ratelimit import LocalRateLimiter
    from klaviyo_consent.services.verify import pull_all

    call_command("flush", verbosity=0, interactive=False)
    with common.timer() as seeding:
        seeded = seed_local(fake, people)
        common.analyze()
    realistic = mode == "b"
    fake.enforce_rate_limits = realistic
    fake.time_scale = time_scale if realistic else 1.0
    fake.throttled = 0
    fake.counts.clear()
    fake._windows.clear()  # rate-limit windows of an earlier run (private, benchmark only)
    limiter = LocalRateLimiter(time_scale=time_scale) if realistic else None
    watch = common.time_fake(fake)
    bound = math.ceil(len(people) / 100) / STEADY_PER_MINUTE * 60 / (time_scale if realistic else 1)
    profiler = cProfile.Profile() if profile_to else None
    with common.use_fake(fake, RATE_LIMITER=limiter):
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        report = pull_all()
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - started
    if profiler:
        profiler.dump_stats(f"{profile_to}.{mode}{time_scale:g}")
    fake.handle = type(fake).handle.__get__(fake)  # unwrap the stopwatch
    requests = sum(fake.counts.values())
    return {
        "mode": "realistic" if realistic else "unthrottled",
        "time_scale": time_scale if realistic else 1.0,
        "seeded": seeded,
        "seed_seconds": round(seeding["seconds"], 1),
        "requests": requests,
        "requests_goal": math.ceil(len(people) / 100),
        "throttled_429": fake.throttled,
        "wall_seconds": round(wall, 3),
        "fake_seconds": round(watch.seconds, 3),
        "bound_seconds": round(bound, 2),
        "ratio_wall_to_bound": round(wall / bound, 3),
        "profiles_per_second": round(report.profiles_read / wall),
        "overhead_profiles_per_second": round(report.profiles_read / (wall - watch.seconds)),
        "report": report.as_dict(),
    }


def main() -> None:
    parser = common.arguments(__doc__.splitlines()[0], events=100_000)
    parser.add_argument(
        "--time-scales",
        default="10,1",
        help="realistic runs, one per time scale (10: a minute lasts 6 s; 1: real time)",
    )
    parser.add_argument("--modes", default="a,b", help="a (unthrottled), b (realistic) or both")
    parser.add_argument("--profile", help="write cProfiles of pull_all() to FILE.<mode><scale>")
    args = parser.parse_args()
    common.setup(args.database)

    from klaviyo_consent.testing.fake import FakeKlaviyo

    fake = FakeKlaviyo(enforce_rate_limits=False)
    fake.add_list(LIST_ID, LIST_ID, "single_opt_in")
    with common.timer() as loading:
        people = load_fake(fake, args.events)
    info = common.machine()
    plan = []
    for mode in args.modes.split(","):
        scales = [float(x) for x in args.time_scales.split(",")] if mode == "b" else [1.0]
        plan += [(mode, scale) for scale in scales]
    results = [
        run(mode, fake, people, time_scale=scale, profile_to=args.profile) for mode, scale in plan
    ]
    print(
        "| benchmark | database | profiles | mode | requests | 429s | wall s | in fake s "
        "| bound s | wall/bound |"
    )
    rows = []
    for result in results:
        label = (
            "unthrottled"
            if result["mode"] == "unthrottled"
            else f"realistic (x{result['time_scale']:g})"
        )
        rows.append(
            f"| reconcile | {common.database_label(info)} | {args.events:,} | {label} | "
            f"{result['requests']} | {result['throttled_429']} | {result['wall_seconds']:.2f} | "
            f"{result['fake_seconds']:.2f} | {result['bound_seconds']:g} | "
            f"**{result['ratio_wall_to_bound']:.2f}** |"
        )
    common.emit(
        "reconcile",
        "\n".join(rows),
        {"machine": info, "fake_load_seconds": round(loading["seconds"], 1), "runs": results},
    )


if __name__ == "__main__":
    main()
