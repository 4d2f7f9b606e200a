"""The bulk writers' instances and INSERTs (models/bulk.py) are the ORM's, only cheaper."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.utils import timezone

from klaviyo_consent.models import ConsentEvent, Delivery, Profile
from klaviyo_consent.models.bulk import insert, new

pytestmark = pytest.mark.django_db

WHEN = datetime(2024, 5, 1, 12, tzinfo=UTC)


def _event_values(profile: Profile) -> dict:
    return {
        "profile": profile,
        "email": "ada@example.com",
        "phone_number": "+12125550100",
        "external_id": "A-1",
        "channel": "email",
        "purpose": "marketing",
        "consent": "SUBSCRIBED",
        "method": "import",
        "method_detail": "CSV f.csv",
        "custom_source": "",
        "consent_text": "Yes",
        "consented_at": WHEN,
        "recorded_at": WHEN,
        "list_id": "",
        "historical_import": True,
        "ip_address": None,
        "user_agent": "",
        "page_url": "file:f.csv",
    }


def _fields(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}


def test_new_builds_what_the_model_constructor_builds_erasable_values_included():
    profile = Profile.objects.create(email="ada@example.com")
    built, expected = (
        new(ConsentEvent, **_event_values(profile)),
        ConsentEvent(**_event_values(profile)),
    )
    assert _fields(built) == _fields(expected)
    assert built.profile is profile
    assert (built.email, built.phone_number, built.external_id, built.page_url) == (
        "ada@example.com",
        "+12125550100",
        "A-1",
        "file:f.csv",
    )
    assert built.klaviyo_data == {} and built.klaviyo_data is not expected.klaviyo_data


def test_new_gives_each_instance_its_own_callable_default():
    first, second = new(Delivery), new(Delivery)
    assert first.errors == [] and first.errors is not second.errors
    assert first.next_attempt_at <= timezone.now()


def test_new_refuses_a_name_that_is_no_field_or_property():
    with pytest.raises(TypeError, match="colour"):
        new(Profile, colour="red")


def test_an_unsaved_profile_given_to_new_is_the_events_profile_once_inserted():
    profile = new(Profile, email="bob@example.com")
    event = new(ConsentEvent, **{**_event_values(profile), "email": "bob@example.com"})
    insert(Profile, [profile])
    ConsentEvent.objects.append([event])
    stored = ConsentEvent.objects.get(pk=event.pk)
    assert stored.profile_id == profile.pk
    assert stored.email == "bob@example.com" and stored.page_url == "file:f.csv"
    assert stored.delivery.status == "pending"
