"""The ledger is append-only on every database, and outlives the users who recorded it."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from klaviyo_consent.models import ConsentEvent
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from tests.helpers import SUBSCRIBE, body

pytestmark = pytest.mark.django_db


@pytest.fixture
def event(fake, staff):
    result = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email="ada@example.com",
            recorded_by=staff,
        )
    )
    return result.events[0]


def test_the_database_refuses_to_delete_a_consent_event_after_its_outbox_row(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM klaviyo_consent_delivery WHERE event_id = %s", [event.pk])
            cursor.execute("DELETE FROM klaviyo_consent_consentevent WHERE id = %s", [event.pk])
    assert ConsentEvent.objects.filter(pk=event.pk).exists()


def test_the_database_refuses_to_delete_every_consent_event_at_once(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM klaviyo_consent_delivery")
            cursor.execute("DELETE FROM klaviyo_consent_consentevent")
    assert ConsentEvent.objects.count() == 1


def test_the_database_still_refuses_to_update_a_consent_event(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE klaviyo_consent_consentevent SET recorded_by_label = 'mallory' "
                "WHERE id = %s",
                [event.pk],
            )


def test_the_event_keeps_who_recorded_it(event):
    assert ConsentEvent.objects.get(pk=event.pk).recorded_by_label == "staff"


def test_a_user_who_recorded_consent_can_be_deleted_and_is_still_named(event, staff):
    staff.delete()
    stored = ConsentEvent.objects.get(pk=event.pk)
    assert stored.recorded_by_label == "staff" and stored.recorded_by_name == "staff"


def test_the_admin_deletes_a_recording_user_and_still_shows_who_it_was(admin_client, event, staff):
    response = admin_client.post(f"/admin/auth/user/{staff.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    page = admin_client.get(f"/admin/klaviyo_consent/consentevent/{event.pk}/change/")
    assert page.status_code == 200
    assert "staff" in page.content.decode()
    listing = admin_client.get("/admin/klaviyo_consent/consentevent/")
    assert listing.status_code == 200


def test_the_api_names_who_recorded_an_event_after_the_user_is_gone(api, fake, staff, admin_user):
    from rest_framework.test import APIClient

    assert api.post(SUBSCRIBE, body(), format="json").status_code == 201
    staff.delete()
    reader = APIClient()
    reader.force_authenticate(admin_user)
    events = reader.get("/api/consent/events/").json()["results"]
    assert {e["recorded_by"] for e in events} == {"staff"}


def test_a_user_who_replaced_a_phone_number_can_be_deleted_and_is_still_named(fake, staff):
    # The sibling of the consent ledger's rule: identity events are append-only too, so a
    # deleted user cannot be SET_NULL on them (that was a 500 in the admin).
    from klaviyo_consent.models import IdentityEvent
    from klaviyo_consent.services.identity import replace_phone_number

    profile = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"sms": {"marketing": True}},
            phone_number="+447400123456",
            recorded_by=staff,
        )
    ).profile
    replace_phone_number(profile, "+447400654321", recorded_by=staff)
    staff.delete()
    change = IdentityEvent.objects.get(profile=profile, change="phone_number_replaced")
    assert change.recorded_by_name == "staff"
