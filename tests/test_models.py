"""The ledger's invariants hold at the model layer, whoever writes."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from klaviyo_consent.exceptions import ImmutableConsentEvent
from klaviyo_consent.models import ConsentEvent, Profile
from klaviyo_consent.services.ledger import ConsentRequest, record_consent

pytestmark = pytest.mark.django_db


@pytest.fixture
def event(fake):
    result = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email="ada@example.com",
        )
    )
    return result.events[0]


def test_a_consent_event_cannot_be_changed(event):
    event.consent_text = "something else"
    with pytest.raises(ImmutableConsentEvent):
        event.save()


def test_a_consent_event_cannot_be_deleted(event):
    with pytest.raises(ImmutableConsentEvent):
        event.delete()
    with pytest.raises(ImmutableConsentEvent):
        ConsentEvent.objects.all().delete()


def test_consent_events_cannot_be_bulk_updated(event):
    with pytest.raises(ImmutableConsentEvent):
        ConsentEvent.objects.filter(pk=event.pk).update(consent="UNSUBSCRIBED")
    assert ConsentEvent.objects.get(pk=event.pk).consent == "SUBSCRIBED"


def test_a_profile_with_consent_cannot_be_deleted_out_from_under_its_ledger(event):
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        Profile.objects.filter(pk=event.profile_id).delete()


def test_the_database_refuses_email_transactional(event):
    with pytest.raises(IntegrityError), transaction.atomic():
        ConsentEvent.objects.create(
            profile=event.profile, channel="email", purpose="transactional", consent="SUBSCRIBED"
        )


def test_every_event_gets_its_outbox_row_in_the_same_transaction(fake):
    result = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={
                "email": {"marketing": True},
                "sms": {"marketing": True, "transactional": True},
            },
            email="b@example.com",
            phone_number="+12025550143",
        )
    )
    assert [e.delivery.status for e in result.events] == ["pending"] * 3


def test_the_database_itself_refuses_to_change_a_consent_event(event):
    from django.db import DatabaseError, connection

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE klaviyo_consent_consentevent SET consent = 'UNSUBSCRIBED' WHERE id = %s",
                [event.pk],
            )
    assert ConsentEvent.objects.get(pk=event.pk).consent == "SUBSCRIBED"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_requests_for_the_same_new_person_at_once_make_one_profile(fake, settings, monkeypatch):
    import threading

    from django.db import connection

    from klaviyo_consent.services import ledger

    if connection.vendor != "postgresql":
        pytest.skip("needs real row locks and concurrent connections (set DATABASE_URL)")
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    both_looked = threading.Barrier(2, timeout=10)
    looked: set[int] = set()
    find = ledger._find_profile

    def find_then_wait_for_the_other(*args):
        found = find(*args)
        if threading.get_ident() not in looked:  # both see no profile before either creates one
            looked.add(threading.get_ident())
            both_looked.wait()
        return found

    monkeypatch.setattr(ledger, "_find_profile", find_then_wait_for_the_other)
    results, errors = [], []

    def subscribe(channel: str, purpose: str) -> None:
        try:
            results.append(
                record_consent(
                    ConsentRequest(
                        consent="SUBSCRIBED",
                        subscriptions={channel: {purpose: True}},
                        email="ada@example.com",
                        phone_number="+447400123456",
                    )
                )
            )
        except Exception as error:  # noqa: BLE001 - the assertion below shows it
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=subscribe, args=args)
        for args in (("email", "marketing"), ("sms", "marketing"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    [profile] = Profile.objects.all()
    assert {result.profile.pk for result in results} == {profile.pk}
    assert sorted(result.created for result in results) == [False, True]
    assert ConsentEvent.objects.filter(profile=profile).count() == 2


def test_an_integrity_error_that_is_not_a_profile_race_is_not_retried(fake):
    from klaviyo_consent.signals import consent_recorded

    calls = []

    def receiver_that_breaks(sender, **kwargs):
        calls.append(kwargs["profile"].email)
        raise IntegrityError("a receiver's own constraint")

    consent_recorded.connect(receiver_that_breaks)
    try:
        with pytest.raises(IntegrityError, match="a receiver's own constraint"):
            record_consent(
                ConsentRequest(
                    consent="SUBSCRIBED",
                    subscriptions={"email": {"marketing": True}},
                    email="ada@example.com",
                )
            )
    finally:
        consent_recorded.disconnect(receiver_that_breaks)
    assert calls == ["ada@example.com"]  # run once, not rerun with its side effects
    assert not Profile.objects.exists()  # and the transaction rolled back whole
