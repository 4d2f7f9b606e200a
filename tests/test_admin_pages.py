"""The admin's pages as staff read them: the profile grid and timeline in human words and
local times, the dashboard's figures, and query counts that do not grow with the rows."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from klaviyo_consent.choices import DeliveryStatus
from klaviyo_consent.exceptions import KlaviyoAPIError
from klaviyo_consent.models import Checkpoint, ConsentEvent, Delivery, Profile, VerificationRun
from klaviyo_consent.services import outbox
from klaviyo_consent.services.health import note_answer
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from klaviyo_consent.services.push import push_pending
from klaviyo_consent.services.reports import dashboard
from klaviyo_consent.services.verify import pull_profiles

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/klaviyo_consent/profile/"
SLOVENIA = "SMS is not available in Slovenia (SI)"


def subscribe(email, phone=None, **extra):
    subscriptions = {"email": {"marketing": True}}
    if phone:
        subscriptions["sms"] = {"marketing": True}
    return record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions=subscriptions,
            email=email,
            phone_number=phone,
            custom_source="Footer signup",
            list_id="Single",
            **extra,
        )
    )


@pytest.fixture
def person(fake, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        profile = subscribe("ada@example.com", "+447400123456").profile
    sms = Delivery.objects.filter(profile=profile, channel="sms")
    outbox.record_verdict(sms, DeliveryStatus.NOT_APPLIED, SLOVENIA, next_attempt_at=None)
    profile.refresh_from_db()
    return profile


def page_of(client, profile):
    response = client.get(f"{CHANGELIST}{profile.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def text_of(html):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def grid_row(html, key):
    start = html.index(f'<tr id="kc-{key}">')
    return text_of(html[start : html.index("</tr>", start)])


def test_each_subscription_shows_klaviyo_beside_the_ledger_in_words(admin_client, person):
    html = page_of(admin_client, person)
    email = grid_row(html, "email.marketing")
    assert email.split()[:2] == ["Email", "marketing"]
    assert "Subscribed" in email and "Footer signup" in email  # Klaviyo's custom_method_detail
    assert "Applied" in email and "API" in email  # Klaviyo's method, as a word
    sms = grid_row(html, "sms.marketing")
    assert "Not applied" in sms and SLOVENIA in sms  # the verdict with its reason
    never = grid_row(html, "sms.transactional")
    assert "Never subscribed" in never and "No event" in never
    assert "Cannot receive: never subscribed" in never


def test_the_grid_speaks_no_api_field_names_and_shows_no_iso_times(admin_client, person):
    html = page_of(admin_client, person)
    grid = html[html.index('class="kc-grid"') : html.index("</table>", html.index("kc-grid"))]
    for raw in ("custom_method_detail", "method_detail", "consent_timestamp", "can_receive_"):
        assert raw not in text_of(grid)
    assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d+", text_of(html))  # no ISO microseconds
    assert not re.search(r"\d{4}-\d{2}-\d{2}T\d{2}", text_of(html))
    when = timezone.localtime(person.mirrored_at).strftime("%H:%M")
    assert when in grid_row(html, "email.marketing")


def test_times_follow_the_site_time_zone(admin_client, person, settings):
    settings.TIME_ZONE = "America/New_York"
    html = page_of(admin_client, person)
    assert " EST" in grid_row(html, "email.marketing")


def test_the_page_links_to_the_person_in_klaviyo(admin_client, person):
    html = page_of(admin_client, person)
    assert person.klaviyo_id
    assert f'href="https://www.klaviyo.com/profile/{person.klaviyo_id}"' in html
    assert "View in Klaviyo" in html


def test_a_profile_klaviyo_has_not_seen_says_so_instead_of_a_dead_link(admin_client, fake):
    profile = Profile.objects.create(email="new@example.com")
    html = page_of(admin_client, profile)
    assert "klaviyo.com/profile" not in html and "Not in Klaviyo yet" in html


def test_the_timeline_titles_events_in_words_with_channel_named_verdicts(
    admin_client, person, fake
):
    fake.reply_stop("+447400123456")
    pull_profiles([person])
    html = page_of(admin_client, person)
    timeline = text_of(html[html.index('class="kc-timeline"') :])
    assert "SMS marketing: Unsubscribed (in Klaviyo)" in timeline  # drift, newest first
    assert "Email marketing: Subscribed" in timeline
    assert "Email marketing: applied" in timeline  # the badge names its channel
    assert "for " + str(person.pk) + " (#" not in text_of(html)


def test_events_are_titled_in_words(person):
    event = ConsentEvent.objects.filter(channel="email").get()
    assert str(event) == f"Email marketing: Subscribed (event {event.pk})"


def test_the_grid_fits_1280_px_by_a_fixed_layout(admin_client, person):
    from django.contrib.staticfiles import finders

    html = page_of(admin_client, person)
    assert "klaviyo_consent/admin.css" in html
    css = open(finders.find("klaviyo_consent/admin.css")).read()
    assert "table-layout: fixed" in css and "white-space: nowrap; }" not in css.split(".kc-grid")[1]


# --- the dashboard --------------------------------------------------------------------------


def test_the_dashboard_counts_verdicts_drift_dead_letters_and_outbox_age(fake, person):
    now = timezone.now()
    waiting = subscribe("bo@example.com").events[0]  # stays pending: no on_commit push
    dead = subscribe("cy@example.com").events[0]
    outbox.dead_letter(Delivery.objects.filter(pk=dead.pk), attempts=8, reason="gave up", errors=[])
    fake.reply_stop("+447400123456")
    pull_profiles([person])  # one drift event now
    report = dashboard(now=now + timedelta(hours=1))
    assert report.verdicts["applied"] == 2  # the email consent, and the drift Klaviyo shows
    assert report.verdicts["not_applied"] == 1
    assert report.verdicts["pending"] == 1
    assert report.verdicts["failed"] == 1
    assert report.drift_last_7_days == 1
    assert report.dead_letters == 1
    assert report.outbox_oldest_at == ConsentEvent.objects.get(pk=waiting.pk).recorded_at
    assert report.outbox_age >= timedelta(minutes=59)
    assert dashboard(now=now + timedelta(days=8)).drift_last_7_days == 0  # out of the window


def test_the_dashboard_shows_klaviyo_health_checkpoint_and_verification(admin_client, fake):
    subscribe("dee@example.com")
    fake.fail_next(429, count=1, retry_after=3)
    push_pending()
    note_answer(KlaviyoAPIError(status=401, errors=[{"detail": "Invalid key"}]), "get_profiles")
    note_answer(KlaviyoAPIError(status=500), "get_profiles")  # not watched: not kept
    Checkpoint.objects.create(
        tree_size=7, root_hash="ab" * 32, timestamp="x", key_id="k", signature="s", public_key="p"
    )
    VerificationRun.objects.create(finished_at=timezone.now(), ok=True, events=7)
    report = dashboard()
    assert set(report.klaviyo_health) == {401, 429}
    assert report.klaviyo_health[429].operation == "subscribe"
    assert report.last_checkpoint.tree_size == 7 and report.last_verification.ok
    html = text_of(admin_client.get("/admin/klaviyo_consent/").content.decode())
    assert "Last 401 (key refused)" in html and "Invalid key" in html
    assert "Last 403 (scope missing) never" in html
    assert "Last checkpoint 7 events" in html and "Last verification OK" in html
    assert "Not applied" in html and "Dead letters" in html


def test_the_dashboard_costs_the_same_queries_however_many_rows(admin_client, fake):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/klaviyo_consent/").status_code == 200
        return len(captured)

    subscribe("p0@example.com")
    few = queries()
    for index in range(1, 30):
        subscribe(f"p{index}@example.com", f"+4474001{index:05d}")
    assert queries() == few


# --- big tables -----------------------------------------------------------------------------


def test_the_profile_page_costs_the_same_queries_for_a_long_history(admin_client, fake):
    profile = subscribe("long@example.com", "+447400100000").profile

    def queries():
        with CaptureQueriesContext(connection) as captured:
            page_of(admin_client, profile)
        return len(captured)

    short = queries()
    for _ in range(30):
        subscribe("long@example.com", "+447400100000")
    assert ConsentEvent.objects.filter(profile=profile).count() == 62
    assert queries() == short


def test_the_event_list_costs_the_same_queries_for_5_rows_as_for_50(admin_client, fake):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get("/admin/klaviyo_consent/consentevent/")
        assert response.status_code == 200
        return len(captured)

    for index in range(5):
        subscribe(f"e{index}@example.com")
    few = queries()
    for index in range(5, 50):
        subscribe(f"e{index}@example.com")
    assert queries() == few


def test_changelists_never_count_the_whole_table(admin_client, fake):
    subscribe("a@example.com")
    for url in (CHANGELIST, "/admin/klaviyo_consent/consentevent/"):
        with CaptureQueriesContext(connection) as captured:
            admin_client.get(url, {"q": "a@example.com"})
        counts = [q["sql"] for q in captured if "COUNT(" in q["sql"].upper()]
        # Only the filtered count, capped by a LIMIT; never the full COUNT(*).
        assert counts and all("LIMIT" in sql.upper() for sql in counts), counts


def test_the_consent_filter_uses_the_indexed_expression(admin_client, person):
    from klaviyo_consent.models.profiles import mirrored_consent

    matched = Profile.objects.alias(m=mirrored_consent("email", "marketing")).filter(m="SUBSCRIBED")
    assert list(matched) == [person]
    page = admin_client.get(CHANGELIST, {"consent": "email.marketing.SUBSCRIBED"})
    assert "ada@example.com" in page.content.decode()
    none = admin_client.get(CHANGELIST, {"consent": "email.marketing.UNSUBSCRIBED"})
    assert "ada@example.com" not in none.content.decode()


@pytest.mark.parametrize(
    "term", ["Ada@Example.com", "+44 7400 123456", "ada@", "example.com", "7400123456"]
)
def test_profile_search_finds_by_whole_identifier_or_by_part(admin_client, person, term):
    page = admin_client.get(CHANGELIST, {"q": term}).content.decode()
    assert "ada@example.com" in page


def test_a_whole_identifier_search_uses_the_unique_index_not_a_substring_scan(admin_client, person):
    with CaptureQueriesContext(connection) as captured:
        admin_client.get(CHANGELIST, {"q": "Ada@Example.com"})
    profile_queries = [q["sql"] for q in captured if 'FROM "klaviyo_consent_profile"' in q["sql"]]
    assert profile_queries and not any("LIKE" in sql.upper() for sql in profile_queries)


def test_the_event_list_titles_events_and_names_the_verdicts_subscription(admin_client, person):
    page = text_of(admin_client.get("/admin/klaviyo_consent/consentevent/").content.decode())
    assert "SMS marketing: Subscribed (event" in page
    assert "SMS marketing: not applied" in page and SLOVENIA in page


def test_a_filtered_changelist_counts_only_up_to_the_cap(monkeypatch, fake):
    from klaviyo_consent.admin import pagination

    monkeypatch.setattr(pagination, "COUNT_CAP", 3)
    for index in range(5):
        subscribe(f"cap{index}@example.com")
    filtered = pagination.EstimatedCountPaginator(
        Profile.objects.filter(email__startswith="cap"), 2
    )
    assert filtered.count == 4 and filtered.capped
    small = pagination.EstimatedCountPaginator(Profile.objects.all(), 2)
    assert small.count == 5 and not small.capped and not small.estimated


@pytest.mark.parametrize(
    "path",
    ["profile/", "consentevent/", "profile/{profile}/change/", "consentevent/{event}/change/"],
)
def test_every_page_with_verdict_badges_loads_their_styles(admin_client, person, path):
    event = ConsentEvent.objects.filter(profile=person).first()
    url = "/admin/klaviyo_consent/" + path.format(profile=person.pk, event=event.pk)
    html = admin_client.get(url).content.decode()
    assert html.count("klaviyo_consent/admin.css") == 1


def test_times_inside_a_verdicts_reason_are_shown_local_to_the_minute(settings):
    from klaviyo_consent.admin.labels import humanize_reason

    settings.TIME_ZONE = "Europe/London"
    reason = (
        "Klaviyo shows UNSUBSCRIBED (TEXT / STOP) since 2026-07-01T08:16:37.962739+00:00, after"
    )
    assert humanize_reason(reason) == (
        "Klaviyo shows UNSUBSCRIBED (TEXT / STOP) since 1 Jul 2026, 09:16 BST, after"
    )


def test_the_timeline_shows_a_re_judged_reason_without_iso_times(admin_client, person, fake):
    fake.reply_stop("+447400123456")
    pull_profiles([person])  # the SMS consent is re-judged: "since <ISO time>, after the push"
    html = page_of(admin_client, person)
    assert "since " in text_of(html)
    assert not re.search(r"\d{4}-\d{2}-\d{2}T\d{2}", text_of(html))


def test_changelists_show_their_columns_in_words(admin_client, person):
    profiles = text_of(admin_client.get(CHANGELIST).content.decode())
    assert "In Klaviyo (marketing)" in profiles and "Email: Subscribed" in profiles
    assert "SMS marketing: not applied" in profiles  # the verdict names its subscription
    events = text_of(admin_client.get("/admin/klaviyo_consent/consentevent/").content.decode())
    assert "By verdict" in events and "By status" not in events


def test_dead_letters_of_every_delivery_kind_are_counted_and_the_link_opens_only_them(
    admin_client, fake, person
):
    from klaviyo_consent.models import ErasureDelivery, MembershipDelivery
    from klaviyo_consent.services.erasure import ErasureRequest, erase_profile
    from klaviyo_consent.services.membership import record_membership

    dead = subscribe("cy@example.com").events[0]
    refused = subscribe("di@example.com").events[0]  # failed, not dead-lettered
    outbox.dead_letter(Delivery.objects.filter(pk=dead.pk), attempts=8, reason="gave up", errors=[])
    outbox.mark_failed(Delivery.objects.filter(pk=refused.pk), "Klaviyo refused it", [])
    [member] = record_membership("Single", [{"email": "ed@example.com"}], action="add").events
    outbox.dead_letter(
        MembershipDelivery.objects.filter(pk=member.pk), attempts=8, reason="x", errors=[]
    )
    erase_profile(ErasureRequest(profile_id=person.pk, source="command"))
    outbox.dead_letter(ErasureDelivery.objects.all(), attempts=8, reason="gave up", errors=[])
    report = dashboard()
    assert report.dead_letters_by_kind == {
        "consent": 1,
        "identity": 0,
        "membership": 1,
        "erasure": ErasureDelivery.objects.count(),
    }
    assert report.dead_letters == 2 + ErasureDelivery.objects.count()
    index = admin_client.get("/admin/klaviyo_consent/").content.decode()
    link = re.search(r'href="([^"]+)">Dead letters', index).group(1).replace("&amp;", "&")
    shown = admin_client.get(link).content.decode()
    assert f"/consentevent/{dead.pk}/change/" in shown
    assert f"/consentevent/{refused.pk}/change/" not in shown
    for model in ("membershipevent", "erasuredelivery"):
        assert f"/admin/klaviyo_consent/{model}/?dead_letter=yes" in index
