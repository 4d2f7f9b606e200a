"""Pushing the outbox: jobs are batched and grouped, order holds, failures are never silent."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from klaviyo_consent.models import Delivery
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from klaviyo_consent.services.outbox import claim
from klaviyo_consent.services.push import push_pending
from klaviyo_consent.signals import consent_pushed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_push_on_commit(settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}


def record(email, consent="SUBSCRIBED", **kwargs):
    kwargs.setdefault("subscriptions", {"email": {"marketing": True}})
    kwargs.setdefault("list_id", "Single")
    return record_consent(ConsentRequest(consent=consent, email=email, **kwargs)).events


def test_a_thousand_and_one_subscribers_go_in_two_jobs(fake):
    for i in range(1001):
        record(f"p{i}@example.com", list_id="Single")
    report = push_pending()
    assert report.pushed == 1001
    assert fake.counts["bulk_subscribe_profiles"] == 2
    assert sorted(j["profile_count"] for j in fake.jobs) == [1, 1000]


def test_unsubscribes_go_in_jobs_of_at_most_a_hundred(fake):
    for i in range(150):
        record(f"p{i}@example.com", consent="UNSUBSCRIBED")
    push_pending()
    assert fake.counts["bulk_unsubscribe_profiles"] == 2


def test_one_job_per_list_historical_import_and_custom_source(fake):
    past = timezone.now() - timedelta(days=10)
    record("a@example.com", list_id="Single", custom_source="Footer")
    record("b@example.com", list_id="Single", custom_source="Footer")
    record("c@example.com", list_id="Single", custom_source="Checkout")
    record("d@example.com", list_id="Double", custom_source="Footer")
    record(
        "e@example.com",
        list_id="Single",
        custom_source="Footer",
        historical_import=True,
        consented_at=past,
    )
    push_pending()
    groups = sorted(
        (j["list_id"] or "", j["custom_source"] or "", j["historical_import"], j["profile_count"])
        for j in fake.jobs
    )
    assert groups == [
        ("Double", "Footer", False, 1),
        ("Single", "Checkout", False, 1),
        ("Single", "Footer", False, 2),
        ("Single", "Footer", True, 1),
    ]


def test_channels_of_one_profile_share_one_profile_entry(fake):
    record(
        "a@example.com",
        phone_number="+12025550143",
        subscriptions={
            "email": {"marketing": True},
            "sms": {"marketing": True, "transactional": True},
        },
    )
    push_pending()
    assert fake.counts["bulk_subscribe_profiles"] == 1
    assert fake.jobs[0]["profile_count"] == 1


def test_a_withdrawal_never_overtakes_the_subscription_it_withdraws(fake):
    [subscribed] = record("a@example.com")
    [withdrawn] = record("a@example.com", consent="UNSUBSCRIBED")
    first = claim("pending", limit=10)
    assert [d.pk for d in first] == [subscribed.pk]
    Delivery.objects.update(lease_token="", lease_expires_at=None)
    push_pending()
    assert [j["type"] for j in fake.jobs] == [
        "profile-subscription-bulk-create-job",
        "profile-subscription-bulk-delete-job",
    ]
    assert (
        fake.get_profile(email="a@example.com")["subscriptions"]["email"]["marketing"]["consent"]
        == "UNSUBSCRIBED"
    )


def test_a_leased_row_cannot_be_claimed_twice_until_its_lease_expires(fake):
    record("a@example.com")
    assert len(claim("pending", limit=10)) == 1
    assert claim("pending", limit=10) == []
    Delivery.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert len(claim("pending", limit=10)) == 1


def _push_with_a_pause_after_each_job(settings, jobs, pause):
    """Record ``jobs`` jobs (one per sign-up form), push them under a 0.3 s lease, and run
    ``pause`` after each job is marked pushed: where a test plays a slow Klaviyo, a stalled
    worker, or a second worker claiming rows."""
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "LEASE_SECONDS": 0.3}
    for i in range(jobs):
        record(f"p{i}@example.com", custom_source=f"form-{i}")
    consent_pushed.connect(pause)
    try:
        return push_pending()
    finally:
        consent_pushed.disconnect(pause)


def test_a_worker_still_pushing_keeps_its_lease_so_no_other_worker_takes_its_rows(fake, settings):
    taken_over = []

    def slow_klaviyo_then_another_worker_claims(sender, **kwargs):
        time.sleep(0.15)  # five jobs take 0.75 s: more than two leases
        taken_over.extend(claim("pending", limit=10))

    report = _push_with_a_pause_after_each_job(settings, 5, slow_klaviyo_then_another_worker_claims)

    assert taken_over == []
    assert report.pushed == 5 and fake.counts["bulk_subscribe_profiles"] == 5
    assert sorted(fake.applied.values()) == [1] * 5


def test_a_worker_whose_lease_ran_out_sends_only_the_rows_still_its_own(fake, settings):
    from klaviyo_consent.services.push import Pusher
    from klaviyo_consent.services.reports import SyncReport

    taken_over = []

    def stall_then_another_worker_takes_over(sender, **kwargs):
        if not taken_over:
            time.sleep(0.35)  # the first worker stalls past its lease after its first job
            taken_over.extend(claim("pending", limit=10))

    _push_with_a_pause_after_each_job(settings, 3, stall_then_another_worker_takes_over)

    assert len(taken_over) == 2 and fake.counts["bulk_subscribe_profiles"] == 1
    assert set(
        Delivery.objects.filter(pk__in=[d.pk for d in taken_over]).values_list(
            "status", "lease_token"
        )
    ) == {("pending", taken_over[0].lease_token)}
    Pusher(SyncReport()).push(taken_over)  # the second worker sends what it took
    assert sorted(fake.applied.values()) == [1, 1, 1]


def test_klaviyo_names_the_bad_profile_and_only_it_fails(fake):
    for i in range(10):
        record(f"p{i}@example.com")
    fake.rejected_emails.add("p4@example.com")
    report = push_pending()
    assert report.failed == 1 and report.pushed == 9
    failed = Delivery.objects.get(status="failed")
    assert failed.event.email == "p4@example.com"
    assert failed.errors[0]["detail"] == "Invalid email address"
    assert failed.errors[0]["source"]["pointer"].endswith("/email")


def test_a_refusal_without_pointers_is_retried_whole_later_not_bisected(fake):
    for i in range(8):
        record(f"p{i}@example.com")
    fake.fail_next(
        400,
        count=1,
        errors=[{"code": "invalid", "title": "Invalid input", "detail": "Something is wrong"}],
    )
    report = push_pending()
    # The 400 names nobody: it is about the request (issue 7), so one request, no bisection,
    # and the whole batch goes again once it is due.
    assert report.requests == 1 and report.retried == 8 and report.failed == 0
    Delivery.objects.update(next_attempt_at=timezone.now())
    assert push_pending().pushed == 8


def test_retries_back_off_and_honour_retry_after(fake):
    [event] = record("a@example.com")
    fake.fail_next(429, count=1, retry_after=7)
    push_pending()
    delivery = Delivery.objects.get(pk=event.pk)
    # A 429 does not spend an attempt (issue 7); Retry-After is the floor of the wait.
    assert delivery.status == "pending" and delivery.attempts == 0 and delivery.deferrals == 1
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 5 < wait <= 7
    assert "429" in delivery.reason


@pytest.mark.parametrize("kind", ["connection", "timeout"])
def test_dropped_connections_and_timeouts_are_retried_not_marked_pushed(fake, kind):
    [event] = record("a@example.com")
    fake.fail_next(kind=kind, count=1)
    push_pending()
    delivery = Delivery.objects.get(pk=event.pk)
    assert delivery.status == "pending" and delivery.pushed_at is None and delivery.attempts == 1


def test_after_max_attempts_work_goes_dead_letter_and_can_be_retried(fake, settings):
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "MAX_ATTEMPTS": 2,
        "PUSH_ON_COMMIT": False,
    }
    [event] = record("a@example.com")
    fake.fail_next(503, count=2)
    push_pending()
    Delivery.objects.update(next_attempt_at=timezone.now())
    push_pending()
    delivery = Delivery.objects.get(pk=event.pk)
    assert delivery.status == "failed" and delivery.dead_lettered_at is not None
    assert "Gave up after 2 attempts" in delivery.reason
    call_command("klaviyo_consent_sync", "--retry-failed")
    assert Delivery.objects.get(pk=event.pk).status == "applied"


def test_sync_command_pushes_everything_pending_and_exits(fake):
    for i in range(3):
        record(f"p{i}@example.com")
    call_command("klaviyo_consent_sync")
    assert set(Delivery.objects.values_list("status", flat=True)) == {"applied"}


def test_pull_command_refreshes_one_profile_or_all(fake, capsys):
    [event] = record("a@example.com")
    push_pending()
    fake.click_unsubscribe("a@example.com")
    call_command("klaviyo_consent_pull", "--profile", str(event.profile_id))
    event.profile.refresh_from_db()
    assert event.profile.klaviyo_leaf("email", "marketing")["consent"] == "UNSUBSCRIBED"
    call_command("klaviyo_consent_pull", "--all", "--no-progress")
    out = capsys.readouterr().out
    assert "lists mirrored 2" in out and "profiles read 1" in out


def test_pull_command_names_an_unknown_profile(fake):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="No local profile with id 424242"):
        call_command("klaviyo_consent_pull", "--profile", "424242")


def _strand(rows):
    """What a worker killed mid-push leaves: rows still leased to it, the lease now expired."""
    Delivery.objects.filter(pk__in=[d.pk for d in rows]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


def test_rows_a_killed_worker_already_sent_are_not_sent_twice(fake):
    from klaviyo_consent.services.jobs import build_jobs
    from klaviyo_consent.services.push import _send

    for i in range(3):
        record(f"p{i}@example.com")
    claimed = claim("pending", limit=10)
    for job, chunks in build_jobs(claimed):  # the job reaches Klaviyo; then the worker dies
        _send(job, job.payload(chunks[0]))
    _strand(claimed)
    assert fake.counts["bulk_subscribe_profiles"] == 1

    report = push_pending()

    assert fake.counts["bulk_subscribe_profiles"] == 1  # no second job
    assert report.recovered == 3 and report.pushed == 3
    assert set(Delivery.objects.values_list("status", "reason")) == {
        ("pushed", "found applied in Klaviyo after a worker stopped mid-push")
    }


def test_rows_a_killed_worker_never_sent_are_sent(fake):
    for i in range(3):
        record(f"p{i}@example.com")
    _strand(claim("pending", limit=10))  # the worker died before its POST

    report = push_pending()

    assert fake.counts["bulk_subscribe_profiles"] == 1
    assert report.recovered == 0 and report.pushed == 3


def test_sync_does_not_sleep_for_a_retry_that_falls_due_after_its_wait(fake, settings, monkeypatch):
    # A request Klaviyo keeps refusing (a list that does not exist) is retried with a growing
    # backoff, forever: `klaviyo_consent_sync` must return, not sleep out its whole budget.
    from klaviyo_consent.services import sync as sync_service

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    record("ada@example.com", list_id="Nope12")
    Delivery.objects.update(next_attempt_at=timezone.now() + timedelta(hours=1))

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"sync slept {seconds} s for a retry due after its wait")

    monkeypatch.setattr(sync_service.time, "sleep", no_sleep)
    sync_service.sync(wait=True, max_wait=300)
    assert Delivery.objects.get().status == "pending"  # kept for the next run, not dropped


def test_sync_waits_for_a_retry_that_falls_due_within_its_wait(fake, settings, monkeypatch):
    from klaviyo_consent.services import sync as sync_service

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    record("ada@example.com")
    Delivery.objects.update(next_attempt_at=timezone.now() + timedelta(seconds=2))
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the retry falls due while sync sleeps
        slept.append(seconds)
        Delivery.objects.update(next_attempt_at=timezone.now())

    monkeypatch.setattr(sync_service.time, "sleep", sleep)
    sync_service.sync(wait=True, max_wait=300)
    assert len(slept) == 1 and 0 < slept[0] <= 5.0
    assert Delivery.objects.get().status == "applied"
