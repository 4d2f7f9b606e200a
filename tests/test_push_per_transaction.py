"""One on-commit push per transaction, however many events or people a bulk path records."""

from __future__ import annotations

import pytest
from django.db import transaction

from klaviyo_consent.choices import Method, Suppression
from klaviyo_consent.models import Profile
from klaviyo_consent.services.identity import merge_profiles, replace_phone_number
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from klaviyo_consent.services.suppressions import record_suppression

pytestmark = pytest.mark.django_db

EMAIL_MARKETING = {"email": {"marketing": True}}


def pushes(callbacks) -> int:
    """How many pushes the captured on-commit callbacks schedule."""
    return sum(1 for callback in callbacks if callback.__name__ == "enqueue_push")


@pytest.fixture
def enqueued(monkeypatch) -> list[str]:
    """Pushes enqueued as transactions commit (tests with real commits)."""
    calls: list[str] = []
    monkeypatch.setattr("klaviyo_consent.receivers.enqueue_push", lambda: calls.append("push"))
    return calls


def test_one_transaction_recording_many_people_schedules_one_push(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        for n in range(5):
            record_consent(
                ConsentRequest(
                    consent="SUBSCRIBED",
                    subscriptions=EMAIL_MARKETING,
                    email=f"p{n}@example.org",
                )
            )
    assert pushes(callbacks) == 1


@pytest.mark.django_db(transaction=True)
def test_each_transaction_schedules_its_own_push(enqueued):
    for n in range(3):
        record_consent(
            ConsentRequest(
                consent="SUBSCRIBED", subscriptions=EMAIL_MARKETING, email=f"p{n}@example.org"
            )
        )
    assert enqueued == ["push"] * 3


def test_a_push_of_a_rolled_back_savepoint_is_scheduled_again_by_the_next_record(
    django_capture_on_commit_callbacks,
):
    request = ConsentRequest(
        consent="SUBSCRIBED", subscriptions=EMAIL_MARKETING, email="a@example.org"
    )
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        try:
            with transaction.atomic():
                record_consent(request)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        record_consent(request)
    assert pushes(callbacks) == 1


def test_suppressing_a_thousand_emails_schedules_one_push(django_capture_on_commit_callbacks):
    emails = [f"s{n}@example.org" for n in range(1000)]
    with django_capture_on_commit_callbacks() as callbacks:
        result = record_suppression(emails, action=Suppression.SUPPRESS, method=Method.ADMIN)
    assert len(result.events) == 1000
    assert pushes(callbacks) == 1


@pytest.mark.django_db(transaction=True)
def test_a_consent_that_adds_an_identifier_schedules_one_push(enqueued):
    record_consent(
        ConsentRequest(consent="SUBSCRIBED", subscriptions=EMAIL_MARKETING, email="a@example.org")
    )
    enqueued.clear()
    record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"sms": {"marketing": True}},
            email="a@example.org",
            phone_number="+447400123456",
        )
    )
    assert Profile.objects.get().phone_number == "+447400123456"
    assert enqueued == ["push"]


@pytest.mark.django_db(transaction=True)
def test_a_number_change_closing_sms_consent_schedules_one_push(enqueued):
    result = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"sms": {"marketing": True}},
            phone_number="+447400123456",
        )
    )
    enqueued.clear()
    changed = replace_phone_number(result.profile, "+447400123457")
    assert changed.events  # the old number's withdrawal and the identity change
    assert enqueued == ["push"]


def test_a_merge_schedules_one_push(django_capture_on_commit_callbacks):
    first = Profile.objects.create(email="a@example.org")
    second = Profile.objects.create(phone_number="+447400123456")
    with django_capture_on_commit_callbacks() as callbacks:
        merge_profiles(first, second)
    assert pushes(callbacks) == 1
