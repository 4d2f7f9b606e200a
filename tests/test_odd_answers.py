"""Klaviyo's odd 2xx answers are counted attempts with a reason, never an escaped exception."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from klaviyo_consent.backends import get_backend
from klaviyo_consent.backends.base import RawResponse
from klaviyo_consent.backends.http import KlaviyoBackend
from klaviyo_consent.exceptions import KlaviyoMalformedResponse
from klaviyo_consent.models import Delivery
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from klaviyo_consent.services.push import push_pending
from klaviyo_consent.services.sync import sync

pytestmark = pytest.mark.django_db

ODD_BODIES = {
    "html": b"<html><body>Service Unavailable</body></html>",
    "cut short": b'{"data": {"type": "profile-subscription-bulk-create-job", "id": "0',
    "not UTF-8": b"\xff\xfe{}",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.fixture(autouse=True)
def no_push_on_commit(settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}


def answer(monkeypatch, status: int, body: bytes, *, only: str = "") -> None:
    """Make every request (or only those whose URL holds ``only``) answer ``status``/``body``."""
    real_send = KlaviyoBackend.send

    def send(self, method, url, **kwargs):
        if only and only not in url:
            return real_send(self, method, url, **kwargs)
        return RawResponse(status=status, headers={}, body=body, url=url)

    monkeypatch.setattr(KlaviyoBackend, "send", send)


def record(email="ada@example.com"):
    return record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            email=email,
            subscriptions={"email": {"marketing": True}},
            list_id="Single",
        )
    ).events


@pytest.mark.parametrize("name", list(ODD_BODIES))
def test_a_2xx_job_answer_that_is_not_json_is_a_counted_attempt_with_its_reason(
    fake, monkeypatch, name
):
    [event] = record()
    answer(monkeypatch, 202, ODD_BODIES[name], only="bulk-create-jobs")
    push_pending()
    delivery = Delivery.objects.get(pk=event.pk)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "not JSON" in delivery.reason
    assert delivery.next_attempt_at is not None


def test_every_later_sync_after_an_odd_answer_runs_and_the_retry_delivers(fake, monkeypatch):
    [event] = record()
    answer(monkeypatch, 202, ODD_BODIES["cut short"], only="bulk-create-jobs")
    sync()
    sync()  # each sync raised again before
    monkeypatch.undo()
    past = timezone.now() - timedelta(seconds=1)
    Delivery.objects.filter(pk=event.pk).update(next_attempt_at=past)  # the backoff is over
    sync()
    delivery = Delivery.objects.get(pk=event.pk)
    assert delivery.pushed_at is not None and delivery.status == "applied"


@pytest.mark.parametrize(
    "operation, call",
    [
        ("get_profiles", lambda b: b.get_profiles({})),
        ("get_list", lambda b: b.get_list("Single")),
        ("get_lists", lambda b: list(b.get_lists())),
        ("bulk_suppress_profiles", lambda b: b.bulk_suppress_profiles({"data": {}})),
    ],
)
@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"data": "x"}', b'{"data": null}', b'{"data": [1, 2]}', b"", b"{}"],
)
def test_a_2xx_without_the_expected_shape_is_a_malformed_response_naming_the_operation(
    fake, monkeypatch, operation, call, body
):
    if operation in ("get_list", "bulk_suppress_profiles") and body == b'{"data": [1, 2]}':
        body = b'{"data": [1]}'
    answer(monkeypatch, 200, body)
    backend = get_backend()
    backend.read_retries = 0
    with pytest.raises(KlaviyoMalformedResponse, match=operation) as raised:
        call(backend)
    assert raised.value.retryable


def test_an_odd_read_back_leaves_the_row_with_a_reason_not_an_exception(fake, monkeypatch):
    from klaviyo_consent.services.verify import verify_pushed

    [event] = record()
    push_pending()
    answer(monkeypatch, 200, b'{"data": {"oops": true}}', only="/api/profiles")
    get_backend().read_retries = 0
    report = verify_pushed()  # must not raise
    delivery = Delivery.objects.get(pk=event.pk)
    assert delivery.status == "pushed" and delivery.verify_attempts == 1
    assert "get_profiles" in delivery.reason and report.retried == 1
    assert delivery.next_attempt_at is not None and not delivery.lease_token


@pytest.mark.parametrize(
    "status, body",
    [
        (400, b'{"errors": ["not an object", {"source": "a string", "detail": "Bad"}]}'),
        (400, b'{"errors": "a string"}'),
        (400, b'{"errors": [{"source": {"pointer": 7}, "detail": 5}]}'),
        (400, b"[" * 100_000 + b"]" * 100_000),
        (500, b"\xff\xfe not utf-8"),
    ],
)
def test_an_odd_error_body_is_still_a_classified_attempt(fake, monkeypatch, status, body):
    [event, *_] = record() + record("bob@example.com")  # two: a 400 is bisected by pointer
    answer(monkeypatch, status, body, only="bulk-create-jobs")
    push_pending()
    delivery = Delivery.objects.get(pk=event.pk)
    assert delivery.reason
    # Neither names a profile: a 400 without a usable pointer is a refusal of the request
    # itself (issue 7), retried later like the 500, never failed or bisected.
    assert delivery.status == "pending"
    assert delivery.next_attempt_at > timezone.now()


@pytest.mark.parametrize("retry_after", ["inf", "nan", "-5", "1e400", "soon", "99999999"])
def test_an_odd_retry_after_is_bounded_not_an_overflow(fake, monkeypatch, retry_after):
    [event] = record()
    real_send = KlaviyoBackend.send

    def send(self, method, url, **kwargs):
        if "bulk-create-jobs" not in url:
            return real_send(self, method, url, **kwargs)
        return RawResponse(status=429, headers={"Retry-After": retry_after}, body=b"", url=url)

    monkeypatch.setattr(KlaviyoBackend, "send", send)
    push_pending()
    delivery = Delivery.objects.get(pk=event.pk)
    # A 429 defers without spending an attempt (issue 7); the odd Retry-After is bounded.
    assert delivery.status == "pending" and delivery.attempts == 0 and delivery.deferrals == 1
    assert delivery.next_attempt_at <= timezone.now() + timedelta(hours=1, seconds=1)


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"type": "profile", "id": "01X", "attributes": {"email": "a\\u0000@x.com"}}]}',
        b'{"data": [{"type": "profile", "id": "01X", "attributes": {"n": 1e400}}]}',
        b'{"data": [{"type": "profile", "id": "01X", "attributes": {"n": NaN}}]}',
        b'{"data": [], "data": [{"type": "profile"}]}',
    ],
)
def test_a_read_back_the_database_could_not_store_is_a_malformed_response(fake, monkeypatch, body):
    answer(monkeypatch, 200, body)
    backend = get_backend()
    backend.read_retries = 0
    with pytest.raises(KlaviyoMalformedResponse, match="get_profiles"):
        backend.get_profiles({})


def test_an_error_body_with_nul_bytes_is_quoted_without_them(fake, monkeypatch):
    [event] = record()
    answer(monkeypatch, 400, b"bad\x00request\x01", only="bulk-create-jobs")
    push_pending()
    delivery = Delivery.objects.get(pk=event.pk)
    assert delivery.status == "pending"  # a non-JSON refusal names no profile: retried later
    assert "\x00" not in delivery.reason and "bad\ufffdrequest" in delivery.reason
