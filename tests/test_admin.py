"""The admin shows Klaviyo's mirror beside the ledger, read-only, with working actions."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from klaviyo_consent.models import ConsentEvent, Delivery, Profile
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from tests.helpers import SUBSCRIBE, body

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_with_profile(admin_client, api, fake, on_commit):
    with on_commit():
        profile_id = api.post(SUBSCRIBE, body(), format="json").data["profile"]["id"]
    return admin_client, Profile.objects.get(pk=profile_id)


def test_profile_page_renders_the_mirror_beside_the_ledger(admin_client_with_profile):
    client, profile = admin_client_with_profile
    page = client.get(f"/admin/klaviyo_consent/profile/{profile.pk}/change/").content.decode()
    assert 'class="kc-grid"' in page
    assert "Email marketing" in page and "SMS transactional" in page
    assert "Subscribed" in page and "Footer signup" in page  # custom_method_detail from Klaviyo
    assert "Applied" in page


def test_profiles_are_searchable_and_filterable(admin_client_with_profile):
    client, profile = admin_client_with_profile
    found = client.get("/admin/klaviyo_consent/profile/", {"q": "+447400123456"}).content.decode()
    assert "ada@example.com" in found
    subscribed = client.get(
        "/admin/klaviyo_consent/profile/", {"consent": "sms.marketing.SUBSCRIBED"}
    )
    assert "ada@example.com" in subscribed.content.decode()
    never = client.get(
        "/admin/klaviyo_consent/profile/", {"consent": "sms.transactional.SUBSCRIBED"}
    )
    assert "ada@example.com" not in never.content.decode()


def test_events_are_read_only_in_the_admin(admin_client_with_profile):
    client, profile = admin_client_with_profile
    event = ConsentEvent.objects.first()
    assert client.get(f"/admin/klaviyo_consent/consentevent/{event.pk}/delete/").status_code == 403
    assert client.get("/admin/klaviyo_consent/consentevent/add/").status_code == 403
    page = client.get(f"/admin/klaviyo_consent/consentevent/{event.pk}/change/")
    assert page.status_code == 200
    assert b'name="consent_text"' not in page.content  # displayed, not editable


def test_reverify_action_reads_klaviyo_back(admin_client_with_profile, fake):
    client, profile = admin_client_with_profile
    fake.reply_stop("+447400123456")
    client.post(
        "/admin/klaviyo_consent/profile/",
        {
            "action": "reverify_action",
            "_selected_action": [profile.pk],
            "confirm": "yes",
            "reason": "the customer says they texted STOP",
        },
    )
    profile.refresh_from_db()
    assert profile.klaviyo_leaf("sms", "marketing")["consent"] == "UNSUBSCRIBED"


def test_push_action_pushes_the_selected_profiles_now(admin_client, api, fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    profile_id = api.post(SUBSCRIBE, body(), format="json").data["profile"]["id"]
    admin_client.post(
        "/admin/klaviyo_consent/profile/",
        {"action": "push_pending_action", "_selected_action": [profile_id]},
    )
    assert set(Delivery.objects.values_list("status", flat=True)) == {"pushed"}


def _profiles_with_ledgers(first: int, count: int) -> None:
    """``count`` profiles, each with email and SMS events (pending deliveries, never pushed)."""
    for index in range(first, first + count):
        record_consent(
            ConsentRequest(
                consent="SUBSCRIBED",
                subscriptions={"email": {"marketing": True}, "sms": {"marketing": True}},
                email=f"person{index}@example.com",
                phone_number=f"+4474001{index:05d}",
                custom_source="Footer signup",
            )
        )


def _changelist_queries(client) -> int:
    with CaptureQueriesContext(connection) as captured:
        page = client.get("/admin/klaviyo_consent/profile/")
    assert page.status_code == 200
    assert page.content.decode().count("Email marketing: pending") == Profile.objects.count()
    return len(captured)


def test_the_profile_list_costs_the_same_queries_for_5_rows_as_for_50(admin_client, fake):
    _profiles_with_ledgers(0, 5)
    for_five = _changelist_queries(admin_client)
    _profiles_with_ledgers(5, 45)
    for_fifty = _changelist_queries(admin_client)
    assert Profile.objects.count() == 50
    assert for_fifty == for_five


@pytest.mark.parametrize(
    "action",
    [
        "suppress_action",
        "unsuppress_action",
        "push_pending_action",
        "reverify_action",
        "replace_phone_number_action",
        "merge_action",
    ],
)
def test_staff_who_may_only_view_cannot_run_an_action_that_writes(
    client, django_user_model, fake, action
):
    # Viewing the ledger is not operating on it: the API asks change_profile for the identity
    # operations, and so does every admin action that records or calls Klaviyo.
    from django.contrib.auth.models import Permission

    profile = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED", subscriptions={"email": {"marketing": True}}, email="a@b.org"
        )
    ).profile
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_profile"))
    client.force_login(viewer)
    before = (ConsentEvent.objects.count(), len(fake.request_log))
    response = client.post(
        "/admin/klaviyo_consent/profile/",
        {"action": action, "_selected_action": [profile.pk]},
    )
    assert response.status_code in (200, 302, 403)  # 403: a page naming the permission
    assert (ConsentEvent.objects.count(), len(fake.request_log)) == before
    page = client.get("/admin/klaviyo_consent/profile/").content.decode()
    assert f'value="{action}"' not in page
