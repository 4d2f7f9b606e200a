"""Issue 13: list membership without consent, recorded and pushed, against subscribing as many.

Records ``--events`` people as members of one list through the service the API calls
(``record_membership``, one person a request), pushes them (``push_memberships``: bulk
import jobs of up to 10,000) and reads the list back (``verify_memberships``). The baseline,
in the same run and database: as many email consents recorded through ``record_consent``,
pushed by ``push_pending`` (bulk subscribe jobs of 1000) and read back by ``verify_pushed``.
The fake does not enforce rate limits here (this measures our cost); the time inside the fake
is reported apart.

    cd /work/main && .venv/bin/python benchmarks/membership.py [--events 5000]
        [--database sqlite|postgres]
"""

from __future__ import annotations

import time

import common

LIST_ID = "BenchL"


def main() -> None:
    args = common.arguments(__doc__.splitlines()[0], events=5_000).parse_args()
    common.setup(args.database)

    from klaviyo_consent.choices import Consent
    from klaviyo_consent.models import MembershipDelivery
    from klaviyo_consent.services.ledger import ConsentRequest, record_consent
    from klaviyo_consent.services.membership import record_membership
    from klaviyo_consent.services.membership_push import push_memberships, verify_memberships
    from klaviyo_consent.services.push import push_pending
    from klaviyo_consent.services.verify import verify_pushed
    from klaviyo_consent.testing.fake import FakeKlaviyo

    n = args.events
    fake = FakeKlaviyo(enforce_rate_limits=False)
    fake.add_list(LIST_ID, LIST_ID, "single_opt_in")
    inside = common.Stopwatch()
    fake.handle = inside.wrap(fake.handle)
    timings: dict[str, float] = {}
    with common.use_fake(fake, PUSH_ON_COMMIT=False, VERIFY_DELAY=0, VERIFY_ATTEMPTS=1):
        started = time.perf_counter()
        for i in range(n):  # one person a request, as the baseline's subscribe/ records
            record_membership(LIST_ID, [{"email": f"m{i}@example.com"}], action="add")
        timings["membership_record"] = time.perf_counter() - started
        fake_before = inside.seconds
        started = time.perf_counter()
        push = push_memberships()
        verify_memberships()
        timings["membership_push_verify"] = time.perf_counter() - started
        timings["membership_inside_fake"] = inside.seconds - fake_before
        applied = MembershipDelivery.objects.filter(status="applied").count()
        membership_requests = dict(fake.counts)

        fake.counts.clear()
        started = time.perf_counter()
        for i in range(n):
            record_consent(
                ConsentRequest(
                    email=f"s{i}@example.com",
                    subscriptions={"email": {"marketing": True}},
                    consent=Consent.SUBSCRIBED,
                    list_id=LIST_ID,
                )
            )
        timings["subscribe_record"] = time.perf_counter() - started
        fake_before = inside.seconds
        started = time.perf_counter()
        push_pending()
        verify_pushed()
        timings["subscribe_push_verify"] = time.perf_counter() - started
        timings["subscribe_inside_fake"] = inside.seconds - fake_before
        subscribe_requests = dict(fake.counts)

    info = common.machine()
    ours_m = timings["membership_push_verify"] - timings["membership_inside_fake"]
    ours_s = timings["subscribe_push_verify"] - timings["subscribe_inside_fake"]
    ratio_record = timings["membership_record"] / timings["subscribe_record"]
    ratio_push = ours_m / ours_s if ours_s else float("nan")
    row = (
        f"| membership | {info['date']} | {common.database_label(info)} | {n:,} people | "
        f"record {n / timings['membership_record']:,.0f}/s (x{ratio_record:.2f} of subscribe) | "
        f"push+verify, ours {n / ours_m:,.0f}/s (x{ratio_push:.2f} of subscribe) | "
        f"{sum(membership_requests.values())} requests vs {sum(subscribe_requests.values())} | "
        f"{applied:,} applied |"
    )
    common.emit(
        "membership",
        row,
        {
            "machine": info,
            "events": n,
            "timings": timings,
            "membership_requests": membership_requests,
            "subscribe_requests": subscribe_requests,
            "applied": applied,
            "pushed": push.memberships_pushed,
        },
    )


if __name__ == "__main__":
    main()
