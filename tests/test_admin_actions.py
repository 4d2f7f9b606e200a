"""Admin actions: a confirmation page with a required reason, the permission they need, and
the record each leaves (recorded_by, the reason on the event and in the admin history)."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission

from klaviyo_consent.models import ConsentEvent, ConsentText, IdentityEvent, Profile
from klaviyo_consent.services.ledger import ConsentRequest, record_consent

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/klaviyo_consent/profile/"
REASON = "customer asked by phone, ticket 4821"


@pytest.fixture
def person(fake, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return record_consent(
            ConsentRequest(
                consent="SUBSCRIBED",
                subscriptions={"email": {"marketing": True}, "sms": {"marketing": True}},
                email="ada@example.com",
                phone_number="+447400123456",
                custom_source="Footer signup",
            )
        ).profile


@pytest.fixture
def text(db):
    return ConsentText.objects.create(key="newsletter", version=3, body="Yes, email me offers.")


def run(client, action, profile_ids, **data):
    """Post an action to the changelist, as the page's buttons and the actions menu do."""
    return client.post(
        CHANGELIST, {"action": action, "_selected_action": list(profile_ids), **data}
    )


def confirm(client, action, profile_ids, **data):
    return run(client, action, profile_ids, confirm="yes", **data)


def new_events(before):
    return list(ConsentEvent.objects.filter(pk__gt=before).order_by("id"))


def last_event_id():
    return ConsentEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


ACTIONS = {
    # action: (form data beside the reason, what each new consent event must say)
    "record_consent_action": (
        {"subscriptions": ["email.marketing"]},
        {"consent": "SUBSCRIBED", "channel": "email", "suppression": None},
    ),
    "withdraw_action": (
        {"subscriptions": ["sms.marketing"]},
        {"consent": "UNSUBSCRIBED", "channel": "sms", "suppression": None},
    ),
    "suppress_action": ({}, {"suppression": "suppress", "channel": "email"}),
    "unsuppress_action": ({}, {"suppression": "unsuppress", "channel": "email"}),
}


@pytest.mark.parametrize(
    "action",
    [
        "record_consent_action",
        "withdraw_action",
        "suppress_action",
        "unsuppress_action",
        "replace_phone_number_action",
        "reverify_action",
    ],
)
def test_each_action_first_shows_a_confirmation_page_asking_for_a_reason(
    admin_client, person, text, fake, action
):
    before = (last_event_id(), IdentityEvent.objects.count(), len(fake.request_log))
    page = run(admin_client, action, [person.pk])
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="reason"' in html and 'name="confirm" value="yes"' in html
    assert str(person) in html  # who it is for
    assert (last_event_id(), IdentityEvent.objects.count(), len(fake.request_log)) == before


@pytest.mark.parametrize("action", [*ACTIONS, "replace_phone_number_action", "reverify_action"])
def test_an_action_without_a_reason_records_nothing_and_says_the_reason_is_required(
    admin_client, person, text, action
):
    data = {"consent_text_version": text.pk, "phone_number": "+447400999888"}
    data.update(ACTIONS.get(action, ({}, {}))[0])
    before = (last_event_id(), IdentityEvent.objects.count(), LogEntry.objects.count())
    page = confirm(admin_client, action, [person.pk], reason="  ", **data)
    assert page.status_code == 200
    assert "This field is required" in page.content.decode()
    assert (last_event_id(), IdentityEvent.objects.count(), LogEntry.objects.count()) == before


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_confirmed_action_records_an_event_with_recorded_by_and_the_reason(
    admin_client, admin_user, person, text, action
):
    extra, expected = ACTIONS[action]
    before = last_event_id()
    response = confirm(
        admin_client, action, [person.pk], reason=REASON, consent_text_version=text.pk, **extra
    )
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}{person.pk}/change/"
    [event] = new_events(before)
    assert event.recorded_by_id == admin_user.pk and event.recorded_by_name == "admin"
    assert event.method == "admin" and event.method_detail == REASON
    for name, value in expected.items():
        assert getattr(event, name) == value, name
    entry = LogEntry.objects.get(object_id=str(person.pk))
    assert entry.user_id == admin_user.pk and REASON in entry.get_change_message()


def test_record_consent_keeps_the_consent_text_version_chosen(admin_client, person, text):
    before = last_event_id()
    confirm(
        admin_client,
        "record_consent_action",
        [person.pk],
        reason=REASON,
        consent_text_version=text.pk,
        subscriptions=["email.marketing", "sms.transactional"],
    )
    events = new_events(before)
    assert {(e.channel, e.purpose) for e in events} == {
        ("email", "marketing"),
        ("sms", "transactional"),
    }
    assert {e.consent_text_version_id for e in events} == {text.pk}
    assert {e.consent_text for e in events} == {"Yes, email me offers."}


def test_record_consent_offers_only_texts_still_in_use(admin_client, person, text):
    from django.utils import timezone

    retired = ConsentText.objects.create(
        key="old", version=1, body="Old words", retired_at=timezone.now()
    )
    page = run(admin_client, "record_consent_action", [person.pk]).content.decode()
    assert "newsletter v3" in page and str(retired) not in page
    before = last_event_id()
    refused = confirm(
        admin_client,
        "record_consent_action",
        [person.pk],
        reason=REASON,
        consent_text_version=retired.pk,
        subscriptions=["email.marketing"],
    )
    assert refused.status_code == 200 and new_events(before) == []


def test_changing_the_phone_number_records_who_and_why(admin_client, admin_user, person):
    before = last_event_id()
    response = confirm(
        admin_client,
        "replace_phone_number_action",
        [person.pk],
        reason=REASON,
        phone_number="07400 999888",
        country="GB",
    )
    assert response.status_code == 302
    person.refresh_from_db()
    assert person.phone_number == "+447400999888"
    change = IdentityEvent.objects.get(change="phone_number_replaced")
    assert change.reason == REASON and change.recorded_by_id == admin_user.pk
    [closing] = new_events(before)  # the old number's SMS marketing consent ends
    assert closing.consent == "UNSUBSCRIBED" and closing.recorded_by_id == admin_user.pk
    page = admin_client.get(f"{CHANGELIST}{person.pk}/change/").content.decode()
    assert "Phone number replaced" in page and REASON in page
    assert "+447400123456 → +447400999888" in page


def test_a_refused_phone_number_is_shown_on_the_form_not_a_500(admin_client, person):
    page = confirm(
        admin_client,
        "replace_phone_number_action",
        [person.pk],
        reason=REASON,
        phone_number="+447400123456",  # the number it already has
    )
    assert page.status_code == 200
    assert "already this profile" in page.content.decode()
    assert not IdentityEvent.objects.filter(change="phone_number_replaced").exists()


def test_reverify_reads_klaviyo_back_and_logs_the_reason(admin_client, admin_user, person, fake):
    fake.reply_stop("+447400123456")
    response = confirm(admin_client, "reverify_action", [person.pk], reason=REASON)
    assert response.status_code == 302
    person.refresh_from_db()
    assert person.klaviyo_leaf("sms", "marketing")["consent"] == "UNSUBSCRIBED"
    entry = LogEntry.objects.get(object_id=str(person.pk))
    assert entry.user_id == admin_user.pk and REASON in entry.get_change_message()


def test_merge_records_the_reason_on_the_identity_event(admin_client, admin_user, fake):
    by_email = Profile.objects.create(email="x@example.org")
    by_phone = Profile.objects.create(phone_number="+447400555666")
    response = confirm(
        admin_client,
        "merge_action",
        [by_email.pk, by_phone.pk],
        reason=REASON,
        survivor=by_email.pk,
    )
    assert response.status_code == 302
    merge = IdentityEvent.objects.get(change="merged")
    assert merge.reason == REASON and merge.recorded_by_id == admin_user.pk
    assert Profile.objects.get(pk=by_email.pk).phone_number == "+447400555666"


@pytest.fixture
def viewer(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_profile"))
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "action",
    [
        *ACTIONS,
        "replace_phone_number_action",
        "reverify_action",
        "merge_action",
        "add_to_list_action",
    ],
)
def test_staff_without_change_profile_get_a_refusal_that_names_the_permission(
    viewer, person, text, fake, action
):
    before = (last_event_id(), IdentityEvent.objects.count(), len(fake.request_log))
    response = confirm(
        viewer,
        action,
        [person.pk],
        reason=REASON,
        consent_text_version=text.pk,
        subscriptions=["email.marketing"],
        phone_number="+447400999888",
    )
    assert response.status_code == 403
    html = response.content.decode()
    assert "Can change profile" in html and "Nothing was recorded" in html
    assert (last_event_id(), IdentityEvent.objects.count(), len(fake.request_log)) == before


def test_a_viewer_sees_why_the_profile_page_offers_no_actions(viewer, person):
    page = viewer.get(f"{CHANGELIST}{person.pk}/change/").content.decode()
    assert 'name="action"' not in page
    assert "needs the “Can change profile” permission" in page


def test_the_profile_page_offers_each_action_as_a_button(admin_client, person):
    page = admin_client.get(f"{CHANGELIST}{person.pk}/change/").content.decode()
    for action in [*ACTIONS, "replace_phone_number_action", "reverify_action"]:
        assert f'name="action" value="{action}"' in page


def test_the_confirmation_page_labels_every_field(admin_client, person, text):
    html = run(admin_client, "record_consent_action", [person.pk]).content.decode()
    assert '<label for="id_reason"' in html and '<label for="id_consent_text_version"' in html
    assert "<legend" in html and "Subscriptions" in html
    for index in range(3):  # each checkbox inside its own label
        assert f'<label for="id_subscriptions_{index}">' in html
    assert 'aria-describedby="id_reason_helptext"' in html
