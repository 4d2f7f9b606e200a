"""Faults: whatever Klaviyo answers, or fails to, every event reaches it once and none is lost.

These run in the test process on SQLite and PostgreSQL, against the fake Klaviyo over real HTTP
(so a dropped connection is a closed socket and a timeout is a read that never ends). Counting is
done at the fake: ``fake.applied`` is what Klaviyo applied, keyed (identifier, channel, purpose,
consent); ``fake.jobs`` lists every job it accepted.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from klaviyo_consent.models import Delivery
from klaviyo_consent.services.push import push_pending
from klaviyo_consent.services.sync import sync
from klaviyo_consent.services.verify import verify_pushed
from klaviyo_consent.testing.fake import FAULT_CHOICES, INVALID_EMAIL_DETAIL, FakeKlaviyo
from tests.workers import bulk_record, emails, list_fake, serving

pytestmark = pytest.mark.django_db

#: The client gives up on an answer after this many seconds; the fake's "timeout" holds longer.
CLIENT_TIMEOUT = 0.5


#: The faults every run draws, so a failure replays; KLAVIYO_CONSENT_FAULT_SEED picks others
#: ("random" draws a fresh seed, printed on failure).
FAULT_SEED = 20261130


def _seed() -> int:
    given = os.environ.get("KLAVIYO_CONSENT_FAULT_SEED")
    if given == "random":
        return random.randrange(2**32)
    return int(given) if given else FAULT_SEED


@pytest.fixture
def seed() -> int:
    return _seed()


@pytest.fixture
def fake(seed: int) -> FakeKlaviyo:
    return list_fake(enforce_rate_limits=False, seed=seed)


@pytest.fixture
def klaviyo(fake: FakeKlaviyo, settings: Any) -> Iterator[FakeKlaviyo]:
    """The fake over HTTP, and settings that make retries quick but keep every rule of them."""
    with serving(fake, timeout_delay=CLIENT_TIMEOUT * 2) as server:
        settings.KLAVIYO_CONSENT = {
            **settings.KLAVIYO_CONSENT,
            "BACKEND": "klaviyo_consent.backends.http.KlaviyoBackend",
            "BACKEND_OPTIONS": {},
            "API_URL": server.url,
            "API_KEY": "pk_fault_tests",
            "TIMEOUT": CLIENT_TIMEOUT,
            "PUSH_ON_COMMIT": False,
            "VERIFY_DELAY": 0,
            # Backoff stays exponential with jitter, just in hundredths of a second; a 429's
            # Retry-After (1 s from the fake) is still honoured as given.
            "RETRY_BACKOFF_BASE": 0.01,
            "RETRY_BACKOFF_MAX": 0.2,
            # At 30 % faults a batch fails 10 times in a row with p = 0.3**10 = 6e-6; dead-letter
            # is tested elsewhere, here it must not hide a lost event.
            "MAX_ATTEMPTS": 30,
        }
        yield fake


def _consent_of(fake: FakeKlaviyo, email: str) -> str:
    return fake.get_profile(email=email)["subscriptions"]["email"]["marketing"]["consent"]


@pytest.mark.random_faults
@pytest.mark.slow
def test_ten_thousand_events_under_thirty_percent_faults_are_each_applied_exactly_once(
    klaviyo: FakeKlaviyo, seed: int
) -> None:
    fake = klaviyo
    # 8,000 subscriptions from 20 sign-up forms (20 jobs a round, not 8), then 2,000 of the same
    # people withdraw: unsubscribe jobs take 100 profiles, and each must wait for its subscribe.
    subscribers = emails(8000)
    withdrawn = subscribers[::4]
    bulk_record(subscribers, custom_source=lambda index: f"form-{index % 20}")
    bulk_record(withdrawn, consent="UNSUBSCRIBED")
    assert Delivery.objects.count() == 10_000

    # Every kind of fault at least once, then 30 % of all requests fail at random.
    for kind in FAULT_CHOICES:
        if isinstance(kind, int):
            fake.fail_next(kind, retry_after=1 if kind == 429 else None)
        else:
            fake.fail_next(kind=kind, applies=False)
    fake.fault_rate = 0.3

    report = sync(verify=False, wait=True, max_wait=300)

    context = f"seed={seed} faults={dict(fake.injected_faults)} report={report.as_dict()}"
    statuses = Counter(Delivery.objects.values_list("status", flat=True))
    assert statuses == {"pushed": 10_000}, context
    expected = {(email, "email", "marketing", "SUBSCRIBED") for email in subscribers} | {
        (email, "email", "marketing", "UNSUBSCRIBED") for email in withdrawn
    }
    # Exactly once each, and nothing Klaviyo applied that we did not record.
    assert set(fake.applied) == expected, context
    assert set(fake.applied.values()) == {1}, context
    # No accepted job carried a profile twice: accepted profiles == events.
    assert sum(job["profile_count"] for job in fake.jobs) == 10_000, context
    # The faults really happened, every kind of them, at about the rate asked for.
    assert {str(kind) for kind in FAULT_CHOICES} <= set(fake.injected_faults), context
    requests = fake.counts["bulk_subscribe_profiles"] + fake.counts["bulk_unsubscribe_profiles"]
    assert report.retried > 0 and sum(fake.injected_faults.values()) >= 0.15 * requests, context
    # Order held under retries: the withdrawal is what Klaviyo ends with.
    assert {_consent_of(fake, email) for email in withdrawn} == {"UNSUBSCRIBED"}, context
    kept = set(subscribers) - set(withdrawn)
    assert {_consent_of(fake, email) for email in kept} == {"SUBSCRIBED"}, context

    print(
        f"\nfaults: seed={seed}, {requests} job requests, faults {dict(fake.injected_faults)}, "
        f"{report.retried} row retries, every event applied once"
    )

    # Once Klaviyo answers again, reading back gives every event the verdict "applied".
    fake.fault_rate = 0.0
    verify_pushed()
    # A withdrawn subscription stays "pushed": its verdict is the withdrawal's.
    assert Counter(Delivery.objects.values_list("status", flat=True)) == {
        "applied": 8000,
        "pushed": 2000,
    }
    superseded = Delivery.objects.filter(status="pushed")
    assert {d.event.email for d in superseded.select_related("event")} == set(withdrawn)
    assert all(d.reason.startswith("superseded by event") for d in superseded)


def test_an_answer_lost_after_klaviyo_applied_the_job_is_pushed_again_and_ends_right(
    klaviyo: FakeKlaviyo,
) -> None:
    """The one duplicate we cannot see: Klaviyo applied the job, its 202 never reached us.

    A subscribe or unsubscribe applied twice leaves the same consent, so the final state is
    still right; this pins down that it is the only way a profile reaches Klaviyo twice.
    """
    fake = klaviyo
    people = emails(300)
    bulk_record(people)
    fake.fail_next(kind="timeout", applies=True)

    sync(verify=False, wait=True, max_wait=60)

    assert Counter(Delivery.objects.values_list("status", flat=True)) == {"pushed": 300}
    # The lost answer's job was applied, then sent again: its 300 profiles twice, none more.
    assert Counter(fake.applied.values()) == {2: 300}
    assert [job["profile_count"] for job in fake.jobs] == [300, 300]
    assert {_consent_of(fake, email) for email in people} == {"SUBSCRIBED"}


def test_one_bad_profile_in_a_batch_of_a_thousand_fails_alone_with_klaviyos_error(
    klaviyo: FakeKlaviyo, settings: Any
) -> None:
    fake = klaviyo
    # No timeout is injected here, so the client waits as long as a loaded machine needs: a
    # request that merely ran slow must not count as a timeout and a third request.
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "TIMEOUT": 60}
    people = emails(1000)
    bad = people[637]
    bulk_record(people)
    fake.rejected_emails.add(bad)

    report = push_pending()

    assert report.pushed == 999 and report.failed == 1
    failed = Delivery.objects.get(status="failed")
    assert failed.event.email == bad
    assert failed.errors[0]["detail"] == INVALID_EMAIL_DETAIL
    assert (
        failed.errors[0]["source"]["pointer"]
        == "/data/attributes/profiles/data/637/attributes/email"
    )
    assert INVALID_EMAIL_DETAIL in failed.reason
    # The other 999 were applied, once, in one more request (isolated by Klaviyo's pointer,
    # not by bisecting the batch into many requests against the rate limit).
    good = {(email, "email", "marketing", "SUBSCRIBED") for email in people if email != bad}
    assert dict(fake.applied) == dict.fromkeys(good, 1)
    assert fake.counts["bulk_subscribe_profiles"] == 2
    assert Delivery.objects.filter(status="pushed").count() == 999
