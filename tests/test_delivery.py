"""Delivery as Klaviyo really answers: partial refusals, 429s, refusals of the request itself,
lists only when asked, and a signup that never waits on Klaviyo (issue 7, field cases 3, 6, 7,
9 and 13)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.utils import timezone

from klaviyo_consent.backends.base import BaseKlaviyoBackend, JobAccepted, RawResponse
from klaviyo_consent.models import Delivery
from klaviyo_consent.ratelimit import LocalRateLimiter
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from klaviyo_consent.services.outbox import backoff, claim
from klaviyo_consent.services.push import Pusher, push_pending
from klaviyo_consent.services.reports import SyncReport
from klaviyo_consent.signals import consent_not_applied, klaviyo_request_refused

pytestmark = pytest.mark.django_db

PHONE_POINTER = "/data/attributes/profiles/data/0/attributes/phone_number"


@pytest.fixture(autouse=True)
def no_push_on_commit(settings: Any) -> None:
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}


def record(email: str | None = None, phone: str | None = None, **kwargs: Any) -> list[Any]:
    kwargs.setdefault("consent", "SUBSCRIBED")
    kwargs.setdefault("list_id", "Single")
    if "subscriptions" not in kwargs:
        subscriptions: dict[str, Any] = {}
        if email:
            subscriptions["email"] = {"marketing": True}
        if phone:
            subscriptions["sms"] = {"marketing": True}
        kwargs["subscriptions"] = subscriptions
    return record_consent(ConsentRequest(email=email, phone_number=phone, **kwargs)).events


def by_channel(events: list[Any]) -> dict[str, Delivery]:
    return {e.channel: Delivery.objects.get(pk=e.pk) for e in events}


def refusal(pointer: str, detail: str = "no sending number for this region") -> list[dict]:
    return [{"status": 400, "code": "invalid", "detail": detail, "source": {"pointer": pointer}}]


def due_now() -> None:
    Delivery.objects.filter(status="pending").update(next_attempt_at=timezone.now())


# --- one channel's refusal never takes the other down (field case 3) ----------------------


def test_a_refused_phone_number_fails_only_the_sms_event_and_the_email_is_resent(fake):
    events = record("max@example.org", "+12025550143")
    fake.fail_next(400, errors=refusal(PHONE_POINTER))
    report = push_pending()
    rows = by_channel(events)
    assert rows["email"].status == "pushed"
    assert fake.applied[("max@example.org", "email", "marketing", "SUBSCRIBED")] == 1
    assert rows["sms"].status == "failed"
    assert "no sending number for this region" in rows["sms"].reason
    assert rows["sms"].errors[0]["source"]["pointer"] == PHONE_POINTER
    assert report.failed == 1 and report.pushed == 1
    # The re-sent entry no longer carries the refused phone number.
    assert fake.get_profile(email="max@example.org")["phone_number"] is None


@pytest.mark.parametrize(
    "pointer",
    [
        "/data/attributes/profiles/data/0/attributes/subscriptions/sms",
        "/data/attributes/profiles/data/0/attributes/subscriptions/sms/marketing/consent",
    ],
)
def test_a_refusal_of_the_sms_subscription_fails_only_the_sms_event(fake, pointer):
    events = record("max@example.org", "+12025550143")
    fake.fail_next(400, errors=refusal(pointer, "SMS is not enabled"))
    push_pending()
    rows = by_channel(events)
    assert (rows["email"].status, rows["sms"].status) == ("pushed", "failed")


def test_a_refused_email_fails_only_the_email_event_and_the_sms_is_resent(fake):
    events = record("max@example.org", "+12025550143")
    pointer = "/data/attributes/profiles/data/0/attributes/email"
    fake.fail_next(400, errors=refusal(pointer, "Invalid email address"))
    push_pending()
    rows = by_channel(events)
    assert (rows["email"].status, rows["sms"].status) == ("failed", "pushed")
    assert fake.applied[("+12025550143", "sms", "marketing", "SUBSCRIBED")] == 1


def test_a_refusal_of_the_whole_entry_fails_all_its_events_and_only_them(fake):
    events = record("max@example.org", "+12025550143")
    other = record("ida@example.org")
    fake.fail_next(400, errors=refusal("/data/attributes/profiles/data/0", "Profile is invalid"))
    push_pending()
    assert {d.status for d in by_channel(events).values()} == {"failed"}
    assert Delivery.objects.get(pk=other[0].pk).status == "pushed"


def test_an_account_without_a_sending_number_refuses_sms_but_applies_the_email(fake):
    fake.sms_sending_countries = frozenset({"GB"})
    events = record("max@example.org", "+12025550143")
    push_pending()
    rows = by_channel(events)
    assert rows["email"].status == "pushed" and rows["sms"].status == "failed"
    assert "sending number" in rows["sms"].reason
    assert fake.applied[("max@example.org", "email", "marketing", "SUBSCRIBED")] == 1


def test_an_older_revision_drops_the_sms_silently_and_the_email_goes_through(fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "REVISION": "2024-02-15"}
    fake.sms_sending_countries = frozenset({"GB"})
    events = record("max@example.org", "+12025550143")
    push_pending()
    rows = by_channel(events)
    assert rows["email"].status == rows["sms"].status == "pushed"
    assert fake.applied[("+12025550143", "sms", "marketing", "SUBSCRIBED")] == 0


def test_a_partial_failure_header_makes_the_named_part_not_applied_with_a_reason(fake):
    fake.partial_failure_header = True
    fake.rejected_phone_numbers.add("+12025550143")
    heard = []
    consent_not_applied.connect(lambda **kw: heard.append(kw["reason"]), weak=False)
    try:
        events = record("max@example.org", "+12025550143")
        report = push_pending()
    finally:
        consent_not_applied.receivers.clear()
    rows = by_channel(events)
    assert rows["email"].status == "pushed"
    assert rows["sms"].status == "not_applied"
    assert "X-Klaviyo-Partial-Failure: phone_number" in rows["sms"].reason
    assert report.requests == 1 and heard == [rows["sms"].reason]


def test_a_partial_failure_among_several_phones_leaves_each_verdict_to_the_read_back(fake):
    fake.partial_failure_header = True
    fake.rejected_phone_numbers.add("+12025550143")
    first = record("max@example.org", "+12025550143")
    second = record("ida@example.org", "+12025550144")
    push_pending()
    statuses = {d.status for d in [*by_channel(first).values(), *by_channel(second).values()]}
    assert statuses == {"pushed"}


def test_the_accepted_job_reads_klaviyos_partial_failure_header():
    response = RawResponse(202, {"x-klaviyo-partial-failure": "phone_number, email"}, b"")
    assert JobAccepted.from_response(response).partial_failure == ("phone_number", "email")
    assert JobAccepted.from_response(RawResponse(202, {}, b"")).partial_failure == ()


# --- 429 never dead-letters (field case 6) ----------------------------------------------------


def test_a_burst_of_429s_never_dead_letters_and_spends_no_attempts(fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "MAX_ATTEMPTS": 2}
    events = [record(f"p{i}@example.com")[0] for i in range(3)]
    fake.fail_next(429, count=10, retry_after=1)
    for _ in range(10):
        push_pending()
        due_now()
    rows = Delivery.objects.filter(pk__in=[e.pk for e in events])
    assert {(d.status, d.attempts, d.deferrals) for d in rows} == {("pending", 0, 10)}
    push_pending()
    assert set(rows.values_list("status", flat=True)) == {"pushed"}


def test_retry_after_is_a_floor_under_the_growing_backoff_not_a_replacement(settings):
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "RETRY_BACKOFF_BASE": 2.0,
        "RETRY_BACKOFF_MAX": 900.0,
    }
    assert backoff(0, retry_after=7) >= 7  # the floor
    assert backoff(6, retry_after=1) >= 64  # the backoff still grows: 2·2⁶/2
    assert backoff(6, retry_after=0) >= 64  # Retry-After: 0 is a floor too, not "now"


def test_repeated_429s_wait_longer_each_time(fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "RETRY_BACKOFF_BASE": 10.0}
    [event] = record("a@example.com")
    waits = []
    for _ in range(4):
        fake.fail_next(429, retry_after=1)
        push_pending()
        delivery = Delivery.objects.get(pk=event.pk)
        waits.append((delivery.next_attempt_at - timezone.now()).total_seconds())
        due_now()
    assert waits[-1] > 80 and waits[0] < 25  # 10·2⁴/2 = 80 after the fourth; ≤ 20 after one


# --- refusals of the request itself (field case 7) -------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_costs_one_request_and_every_event_is_retried_later(fake, status, caplog):
    events = [record(f"p{i}@example.com", list_id="Single")[0] for i in range(40)]
    fake.fail_next(status, count=10000)
    heard = []
    klaviyo_request_refused.connect(lambda **kw: heard.append(kw), weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="klaviyo_consent.sync"):
            report = push_pending()
    finally:
        klaviyo_request_refused.receivers.clear()
    assert fake.counts["bulk_subscribe_profiles"] == 1 and report.requests == 1
    rows = Delivery.objects.filter(pk__in=[e.pk for e in events])
    assert {(d.status, d.attempts, d.deferrals) for d in rows} == {("pending", 0, 1)}
    assert all(d.next_attempt_at > timezone.now() for d in rows)
    assert all("refused the subscribe request itself" in d.reason for d in rows)
    [signal] = heard
    assert len(signal["events"]) == 40 and signal["error"].status == status
    assert signal["operation"] == "subscribe" and signal["retry_at"] > timezone.now()
    assert any("refused a subscribe request as a whole" in r.message for r in caplog.records)


def test_a_refused_request_is_never_dead_lettered_and_goes_once_klaviyo_accepts(fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "MAX_ATTEMPTS": 2}
    [event] = record("a@example.com")
    fake.fail_next(403, count=5)
    for _ in range(5):
        push_pending()
        due_now()
    assert Delivery.objects.get(pk=event.pk).status == "pending"
    push_pending()
    assert Delivery.objects.get(pk=event.pk).status == "pushed"


def test_a_refusal_that_names_no_profile_is_not_bisected(fake):
    for i in range(8):
        record(f"p{i}@example.com")
    errors = [{"code": "invalid", "title": "Invalid input", "detail": "Something is wrong"}]
    fake.fail_next(400, count=100, errors=errors)
    report = push_pending()
    assert report.requests == 1 and report.failed == 0 and report.retried == 8
    assert set(Delivery.objects.values_list("status", flat=True)) == {"pending"}


def test_a_refusal_with_a_pointer_outside_the_profiles_is_about_the_request(fake):
    for i in range(3):
        record(f"p{i}@example.com")
    pointer = "/data/relationships/list/data/id"
    fake.fail_next(400, count=100, errors=refusal(pointer, "Unknown list"))
    report = push_pending()
    assert report.requests == 1 and report.failed == 0
    assert set(Delivery.objects.values_list("status", flat=True)) == {"pending"}


def test_a_non_json_refusal_is_about_the_request_and_is_retried(fake):
    for i in range(5):
        record(f"p{i}@example.com")
    calls = []

    def send(job: Any, payload: dict[str, Any]) -> None:
        calls.append(payload)
        BaseKlaviyoBackend.raise_for_status(
            RawResponse(400, {"Content-Type": "text/html"}, b"<html>Bad Request</html>")
        )

    report = SyncReport()
    Pusher(report, send=send).push(claim("pending", limit=100))
    assert len(calls) == 1 and report.failed == 0 and report.retried == 5
    assert set(Delivery.objects.values_list("deferrals", flat=True)) == {1}


# --- lists only when the request names one (field case 9) -----------------------------------


def test_a_withdrawal_carries_no_list_unless_the_request_names_one(fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "DEFAULT_LIST_ID": "Single"}
    record("ana@example.org", "+447400123456", list_id="")
    push_pending()
    record(
        "ana@example.org",
        "+447400123456",
        consent="UNSUBSCRIBED",
        list_id="",
        subscriptions={"sms": {"marketing": True}},
    )
    push_pending()
    unsubscribe = [job for job in fake.jobs if job["type"].endswith("delete-job")]
    assert [job["list_id"] for job in unsubscribe] == [None]
    subscribe = [job for job in fake.jobs if job["type"].endswith("create-job")]
    assert [job["list_id"] for job in subscribe] == ["Single"]  # signups still get the default


def test_a_withdrawal_that_names_a_list_carries_it(fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "DEFAULT_LIST_ID": "Single"}
    record("ana@example.org", consent="UNSUBSCRIBED", list_id="Double")
    push_pending()
    assert [job["list_id"] for job in fake.jobs] == ["Double"]


# --- a signup never waits on Klaviyo (field case 13) -----------------------------------------


class CountingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def inline_push(settings: Any, monkeypatch: Any, virtual_time: Any) -> CountingSleep:
    """Push on commit on the immediate backend; every sleep anywhere is counted, never slept.

    The limiter's time stands still (``virtual_time``): its window never frees up."""
    sleep = CountingSleep()
    monkeypatch.setattr("klaviyo_consent.backends.base.time.sleep", sleep)
    monkeypatch.setattr("klaviyo_consent.services.sync.time.sleep", sleep)
    limiter = LocalRateLimiter(
        {"bulk_subscribe_profiles": ((1, 1.0),), "get_profiles": ((1, 1.0),)},
        margin=0.0,
        sleep=sleep,
    )
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "PUSH_ON_COMMIT": True,
        "RATE_LIMITER": limiter,
    }
    return sleep


def test_a_signup_never_sleeps_for_the_rate_limit_and_the_rest_stays_queued(
    fake, inline_push, django_capture_on_commit_callbacks
):
    for i in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            record(f"p{i}@example.com")
    assert inline_push.calls == []
    assert fake.counts["bulk_subscribe_profiles"] == 1  # the limiter's one slot
    assert Delivery.objects.filter(status="pending").count() == 2
    assert Delivery.objects.filter(status="pending", lease_token="").count() == 2
    assert set(Delivery.objects.values_list("attempts", flat=True)) == {0}


def test_a_signup_never_sleeps_for_retry_after_on_a_read_back(
    fake, inline_push, settings, django_capture_on_commit_callbacks
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "RATE_LIMITER": None}
    record("old@example.com")
    push_pending()  # pushed; its read-back is due (VERIFY_DELAY 0)
    fake.fail_next(429, count=100, retry_after=30)
    with django_capture_on_commit_callbacks(execute=True):
        record("new@example.com")
    assert inline_push.calls == []
    assert Delivery.objects.filter(status="pushed", lease_token="").exists()


def test_a_push_on_commit_makes_a_bounded_number_of_requests(
    fake, inline_push, settings, django_capture_on_commit_callbacks
):
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "RATE_LIMITER": None,
        "PUSH_ON_COMMIT_MAX_REQUESTS": 2,
        "VERIFY_DELAY": 3600,
    }
    for i in range(6):  # six custom sources: six jobs
        record(f"p{i}@example.com", custom_source=f"Form {i}")
    before = len(fake.request_log)
    with django_capture_on_commit_callbacks(execute=True):
        record("last@example.com", custom_source="Form 0")
    assert len(fake.request_log) - before == 2
    # Two jobs went (Form 0 with two people, Form 1); the other four wait in the outbox.
    assert Delivery.objects.filter(status="pushed").count() == 3
    assert Delivery.objects.filter(status="pending", lease_token="").count() == 4
    assert inline_push.calls == []


def test_a_push_inside_a_signup_gives_each_request_only_the_time_left(fake, monkeypatch):
    # A Klaviyo that hangs must not hold a signup for TIMEOUT per request: each request's
    # timeout is what is left of the push's time budget, and none goes out once it is spent.
    from klaviyo_consent.backends import get_backend
    from klaviyo_consent.backends.base import no_wait
    from klaviyo_consent.exceptions import PushDeferred

    now = [100.0]
    timeouts: list[float] = []
    backend = get_backend()
    real = backend.session.request

    def slow_request(method, url, **kwargs):
        timeouts.append(kwargs["timeout"])
        now[0] += 0.75  # each answer takes three quarters of a second
        return real(method, url, **kwargs)

    monkeypatch.setattr(backend.session, "request", slow_request)
    with no_wait(max_seconds=1.5, clock=lambda: now[0]):
        backend.get_profiles({})
        backend.get_profiles({})
        with pytest.raises(PushDeferred, match="time budget"):
            backend.get_profiles({})
    assert timeouts == [1.5, 0.75]
    backend.get_profiles({})  # outside a signup: the whole TIMEOUT again
    assert timeouts[-1] == backend.timeout


def test_a_signup_whose_time_budget_is_spent_sends_nothing_and_keeps_the_consent_queued(
    fake, inline_push, settings, django_capture_on_commit_callbacks
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT_MAX_SECONDS": 0}
    with django_capture_on_commit_callbacks(execute=True):
        record("ada@example.com")
    assert fake.request_log == []
    assert Delivery.objects.filter(status="pending", lease_token="", attempts=0).count() == 1


def test_a_worker_outside_a_signup_still_waits_its_turn_at_the_rate_limit(
    fake, settings, virtual_time
):
    sleep = CountingSleep()

    def advance(seconds: float) -> None:
        sleep(seconds)
        virtual_time.now += seconds

    limiter = LocalRateLimiter({"bulk_subscribe_profiles": ((1, 1.0),)}, margin=0.0, sleep=advance)
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "RATE_LIMITER": limiter}
    for i in range(3):
        record(f"p{i}@example.com", custom_source=f"Form {i}")
    report = push_pending()
    assert report.pushed == 3 and len(sleep.calls) == 2


# --- "Klaviyo does not text there" vs "this account has no sending number there" -------------


def subscribe_sms(api: Any, phone: str) -> Any:
    return api.post(
        "/api/consent/subscribe/",
        {
            "profile": {"email": "ana@example.org", "phone_number": phone},
            "subscriptions": {"email": {"marketing": True}, "sms": {"marketing": True}},
            "consent_text": "Yes, text me offers.",
        },
        format="json",
    )


def test_sms_for_a_country_without_a_sending_number_is_refused_naming_the_setting(
    api, fake, settings
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "SMS_SENDING_COUNTRIES": ["GB"]}
    response = subscribe_sms(api, "+49 1512 3456789")
    assert response.status_code == 400
    [message] = response.json()["profile"]["phone_number"]
    assert "this account has no SMS sending number for Germany (DE)" in message
    assert "SMS_SENDING_COUNTRIES" in message
    assert subscribe_sms(api, "+44 7400 123456").status_code == 201


def test_a_country_klaviyo_does_not_text_keeps_its_own_reason(api, fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "SMS_SENDING_COUNTRIES": ["GB", "SI"]}
    response = subscribe_sms(api, "+386 40 123 456")
    [message] = response.json()["profile"]["phone_number"]
    assert "SMS is not available in Slovenia (SI)" in message
    assert "SMS_COUNTRIES" in message and "SMS_SENDING_COUNTRIES" not in message


def test_the_read_back_reason_names_the_missing_sending_number(settings):
    from klaviyo_consent.phone import sms_unsupported_reason

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "SMS_SENDING_COUNTRIES": ["GB"]}
    reason = sms_unsupported_reason("+4915123456789", published_too=True)
    assert reason == "this account has no SMS sending number for Germany (DE)"
    assert sms_unsupported_reason("+447400123456", published_too=True) is None


def _check_ids() -> list[str]:
    from django.core import checks

    return [m.id for m in checks.run_checks(tags=["klaviyo_consent"])]


def test_a_check_says_when_the_sending_countries_are_not_stated(settings):
    assert "klaviyo_consent.I001" in _check_ids()
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "SMS_SENDING_COUNTRIES": ["US"]}
    assert not {"klaviyo_consent.I001", "klaviyo_consent.W003"} & set(_check_ids())


def test_a_check_warns_of_a_sending_country_klaviyo_does_not_text(settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "SMS_SENDING_COUNTRIES": ["US", "si"]}
    assert "klaviyo_consent.W003" in _check_ids()


def test_a_read_back_backs_off_under_retry_after_zero_instead_of_hammering(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("klaviyo_consent.backends.base.time.sleep", sleeps.append)
    answers = [RawResponse(429, {"Retry-After": "0"}, b"")] * 3 + [
        RawResponse(200, {}, b'{"data": []}')
    ]

    class Scripted(BaseKlaviyoBackend):
        def send(self, method, url, *, headers, params, body):
            return answers.pop(0)

    backend = Scripted(api_key="pk_test", limiter=None)
    assert backend.get_profiles({}) == {"data": []}
    assert sleeps == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_unsubscribe_request_is_retried_too(fake, status):
    [event] = record("a@example.com", consent="UNSUBSCRIBED")
    fake.fail_next(status)
    report = push_pending()
    delivery = Delivery.objects.get(pk=event.pk)
    assert (report.requests, delivery.status, delivery.deferrals) == (1, "pending", 1)
    assert "refused the unsubscribe request itself" in delivery.reason


def test_the_admin_shows_that_klaviyo_refused_the_request_itself(admin_client, fake):
    [event] = record("a@example.com")
    fake.fail_next(403, errors=[{"status": 403, "detail": "API key lacks scope subscriptions"}])
    push_pending()
    page = admin_client.get(f"/admin/klaviyo_consent/consentevent/{event.pk}/change/")
    text = page.content.decode()
    assert "refused the subscribe request itself" in text
    assert "API key lacks scope subscriptions" in text
    assert "waits (429s, refused requests) 1" in text


def test_a_withdrawal_whose_phone_klaviyo_refuses_still_withdraws_the_email(fake):
    events = record(
        "max@example.org",
        "+12025550143",
        consent="UNSUBSCRIBED",
        list_id="",
        subscriptions={"email": {"marketing": True}, "sms": {"marketing": True}},
    )
    fake.rejected_phone_numbers.add("+12025550143")
    push_pending()
    rows = by_channel(events)
    assert (rows["email"].status, rows["sms"].status) == ("pushed", "failed")
    assert rows["sms"].errors[0]["source"]["pointer"] == PHONE_POINTER
    assert fake.applied[("max@example.org", "email", "marketing", "UNSUBSCRIBED")] == 1


def test_a_push_on_commit_claims_a_bounded_share_of_a_backlog(
    fake, inline_push, settings, django_capture_on_commit_callbacks
):
    from klaviyo_consent.services import push as push_service

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "RATE_LIMITER": None}
    for i in range(push_service.NO_WAIT_CLAIM_SIZE + 50):
        record(f"p{i}@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        record("last@example.com")
    assert Delivery.objects.exclude(status="pending").count() == push_service.NO_WAIT_CLAIM_SIZE
    assert Delivery.objects.filter(status="pending", lease_token="").count() == 51
