"""The drop-in consent form and ``{% consent_form %}`` (issue 12, "Drop-in capture")."""

from __future__ import annotations

import html as markup
import re
from pathlib import Path

import pytest
from django.template import Context, RequestContext, Template
from django.test import Client, RequestFactory

from klaviyo_consent.forms import ConsentForm, country_choices, example_number
from klaviyo_consent.models import ConsentEvent, ConsentText, Profile
from klaviyo_consent.services.signup import RECORDED_APART, TEXT_KEYS

pytestmark = pytest.mark.django_db

SIGNUP = "/consent/signup/"
DEVELOPER_WORDS = re.compile(
    r"SMS_COUNTRIES|SMS_SENDING|E\.164|E164|default region|DEFAULT_PHONE_REGION|profile\.|"
    r"phone_number|ConsentValidationError",
    re.I,
)


def post(client: Client, **fields: str) -> str:
    """Submit the form from the page ``/shop/`` and return the page it sends the shopper to."""
    data = {"next": "/shop/", **fields}
    response = client.post(SIGNUP, data)
    assert response.status_code == 302, response.content
    assert response["Location"] == "/shop/#kc-consent-form"
    return render_tag(client)


def render_tag(client: Client) -> str:
    """The form as the page shows it, with the session the submission left."""
    request = RequestFactory().get("/shop/")
    request.session = client.session
    html = Template("{% load klaviyo_consent %}{% consent_form %}").render(
        RequestContext(request, {})
    )
    request.session.save()
    return markup.unescape(html)


def errors(html: str) -> list[str]:
    return re.findall(r'class="kc-error[s]?"[^>]*>(?:<p>)?([^<]+)', html)


# --- rendering -----------------------------------------------------------------------------


def test_the_tag_renders_the_active_texts_unticked_boxes_labels_and_csrf(fake):
    ConsentText.objects.create(key=TEXT_KEYS["email"], version=1, body="Old words.")
    ConsentText.objects.create(key=TEXT_KEYS["email"], version=2, body="Email me offers, please.")
    request = RequestFactory().get("/shop/")
    request.session = Client().session
    html = Template("{% load klaviyo_consent %}{% consent_form %}").render(
        RequestContext(request, {})
    )
    assert "Email me offers, please." in html and "Old words." not in html
    assert 'name="csrfmiddlewaretoken"' in html
    for label, field_id in [
        ("Email address", "kc-email"),
        ("Mobile number", "kc-phone_number"),
        ("Country", "kc-country"),
    ]:
        assert f'<label for="{field_id}">{label}</label>' in html
    assert re.search(r'<input type="checkbox" name="email_marketing" id="kc-email_marketing"', html)
    assert "checked" not in html
    assert "<legend>Emails</legend>" in html and "<legend>Text messages</legend>" in html
    assert 'aria-describedby="kc-phone_number-hint"' in html
    assert 'action="/consent/signup/"' in html
    assert 'class="kc-trap" aria-hidden="true"' in html and 'tabindex="-1"' in html


def test_the_country_selector_offers_the_texted_countries_first_then_every_other():
    [(texted_label, texted), (other_label, others)] = country_choices()
    assert {code for code, _ in texted} == {
        "US",
        "CA",
        "GB",
        "IE",
        "DE",
        "NL",
        "FR",
        "BE",
        "AT",
        "ES",
        "CH",
        "DK",
        "SE",
        "NO",
        "FI",
        "IT",
        "PT",
        "AU",
        "NZ",
    }
    names = dict(others)
    assert names["SI"] == "Slovenia" and "GB" not in names
    assert all(name != code for code, name in others)


# --- national numbers, and the hint the form gives -----------------------------------------


@pytest.mark.parametrize(
    "country, typed, stored",
    [("US", "(415) 555-0123", "+14155550123"), ("GB", "07400 123457", "+447400123457")],
)
def test_national_numbers_are_read_in_the_country_chosen(client, fake, country, typed, stored):
    html = post(
        client,
        email="ada@example.com",
        country=country,
        phone_number=typed,
        sms_marketing="on",
    )
    assert "You're signed up for our text messages" in html
    assert Profile.objects.get().phone_number == stored
    assert ConsentEvent.objects.get(channel="sms").consent == "SUBSCRIBED"


@pytest.mark.parametrize("country", ["US", "GB", "IE", "AU", "SI", "JP"])
def test_the_hint_number_is_one_the_form_accepts(fake, country):
    form = ConsentForm({"country": country})
    assert form.phone_hint() == f"For example {example_number(country)}"
    accepted = ConsentForm(
        {
            "country": country,
            "phone_number": example_number(country),
            "email": "a@example.com",
            "email_marketing": "on",
        }
    )
    assert accepted.is_valid(), accepted.errors
    assert accepted.e164.startswith("+")


# --- errors in plain words -----------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, field, message",
    [
        (
            {"email": "ada@localhost", "email_marketing": "on"},
            "email",
            "Enter a valid email address, like name@example.com.",
        ),
        ({"email_marketing": "on"}, "email", "Enter your email address to get our emails."),
        (
            {"email": "ada@example.com", "sms_marketing": "on"},
            "phone_number",
            "Enter your mobile number to get our text messages.",
        ),
        (
            {"country": "GB", "phone_number": "0740", "sms_marketing": "on"},
            "phone_number",
            "We couldn't read that as a phone number from United Kingdom. Check the number, or "
            "choose the country it is from.",
        ),
        (
            {"phone_number": "+99 123", "sms_marketing": "on"},
            "phone_number",
            "We couldn't read that as a phone number. Check it, including the country code "
            "after +.",
        ),
        (
            {"country": "GB", "phone_number": "+44 7400 123456 ext. 12", "sms_marketing": "on"},
            "phone_number",
            "Give a mobile number without an extension.",
        ),
        (
            {"country": "ZZ", "phone_number": "07400 123457", "sms_marketing": "on"},
            "country",
            "Choose a country from the list.",
        ),
        (
            {"email": "ada@example.com"},
            "__all__",
            "Tick at least one box to choose what we may send you.",
        ),
        (
            {"country": "SI", "phone_number": "040 123 456", "sms_marketing": "on"},
            "phone_number",
            "We can't send text messages to numbers in Slovenia yet.",
        ),
        (
            {"country": "GB", "phone_number": "020 7946 0018", "sms_marketing": "on"},
            "phone_number",
            "This number can't receive text messages. Give a mobile number.",
        ),
    ],
)
def test_each_error_is_in_plain_words_on_its_field_and_nothing_is_recorded(
    client, fake, fields, field, message
):
    html = post(client, **fields)
    assert message in html
    assert not DEVELOPER_WORDS.search(" ".join(errors(html))), errors(html)
    if field != "__all__":
        assert f'id="kc-{field}-error"' in html
        assert re.search(rf'id="kc-{field}"[^>]*aria-invalid="true"', html) or re.search(
            rf'aria-invalid="true"[^>]*id="kc-{field}"', html
        )
        assert f"kc-{field}-error" in re.search(rf'<[^>]*id="kc-{field}"[^>]*>', html).group(0)
    else:
        assert 'role="alert"' in html
    assert not ConsentEvent.objects.exists()


def test_what_was_typed_is_shown_again_with_the_errors(client, fake):
    html = post(
        client,
        email="ada@example.com",
        country="GB",
        phone_number="0740",
        sms_marketing="on",
        email_marketing="on",
    )
    assert 'value="ada@example.com"' in html and 'value="0740"' in html
    assert re.search(r'<option value="GB"[^>]*selected', html)


def test_the_email_is_kept_when_only_the_sms_part_is_refused_and_the_page_says_so(client, fake):
    html = post(
        client,
        email="ana@example.si",
        email_marketing="on",
        country="SI",
        phone_number="040 123 456",
        sms_marketing="on",
    )
    assert (
        "Thank you! You're signed up for our marketing emails at ana@example.si. We can't send "
        "text messages to numbers in Slovenia yet, so your mobile number was not signed up for "
        "texts." in html
    )
    [event] = ConsentEvent.objects.all()
    assert (event.channel, event.consent, event.email) == ("email", "SUBSCRIBED", "ana@example.si")


def test_the_confirmation_says_in_words_what_was_recorded(client, fake):
    html = post(
        client,
        email="Ada@Example.com",
        email_marketing="on",
        country="GB",
        phone_number="07400 123457",
        sms_marketing="on",
    )
    assert (
        "Thank you! You're signed up for our marketing emails at ada@example.com and our text "
        "messages at +44 7400 123457." in html
    )
    assert "consent(s)" not in html
    events = {e.channel: e for e in ConsentEvent.objects.select_related("consent_text_version")}
    # Each channel records the exact words of its own box, by version.
    assert events["email"].consent_text_version.key == TEXT_KEYS["email"]
    assert events["sms"].consent_text_version.key == TEXT_KEYS["sms"]
    assert events["sms"].method == "form"
    # The confirmation is shown once.
    assert "You're signed up" not in render_tag(client)


def test_evidence_is_captured_from_the_request_and_the_page_the_form_was_on(fake):
    client = Client(HTTP_USER_AGENT="Mozilla/5.0 (Phone)", REMOTE_ADDR="203.0.113.9")
    post(client, email="ada@example.com", email_marketing="on")
    event = ConsentEvent.objects.get()
    assert event.ip_address == "203.0.113.9"
    assert event.user_agent == "Mozilla/5.0 (Phone)"
    assert event.page_url == "http://testserver/shop/"


def test_a_foreign_next_page_is_not_followed(client, fake):
    response = client.post(SIGNUP, {"next": "https://evil.example/", "email_marketing": "on"})
    assert response["Location"] == "/#kc-consent-form"


def test_the_words_shown_are_recorded_even_if_staff_publish_new_ones_meanwhile(client, fake):
    form = ConsentForm()
    shown = form.texts["email"]
    ConsentText.objects.create(key=TEXT_KEYS["email"], version=shown.version + 1, body="New.")
    post(client, email="ada@example.com", email_marketing="on", email_text=str(shown.pk))
    assert ConsentEvent.objects.get().consent_text_version_id == shown.pk


def test_a_text_version_of_another_key_is_refused(client, fake):
    other = ConsentText.objects.create(key="terms", version=1, body="Terms.")
    html = post(client, email="ada@example.com", email_marketing="on", email_text=str(other.pk))
    assert "The wording of this form has changed since you opened it." in html
    assert not ConsentEvent.objects.exists()


def test_the_honeypot_answers_like_a_signup_and_records_nothing(client, fake):
    html = post(client, email="bot@example.com", email_marketing="on", website="http://spam")
    assert "Thank you!" in html
    junk = post(client, email="not an email", phone_number="x", website="http://spam")
    assert "Thank you!" in junk and "kc-error" not in junk
    assert not ConsentEvent.objects.exists() and not Profile.objects.exists()


def test_the_form_needs_the_csrf_token(fake):
    client = Client(enforce_csrf_checks=True)
    response = client.post(SIGNUP, {"email": "ada@example.com", "email_marketing": "on"})
    assert response.status_code == 403
    assert not ConsentEvent.objects.exists()


def test_the_form_is_throttled_per_ip_with_a_plain_message(client, fake, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"klaviyo_consent_public": "2/min"},
    }
    for n in range(2):
        assert "You're signed up" in post(client, email=f"p{n}@example.com", email_marketing="on")
    html = post(client, email="p2@example.com", email_marketing="on")
    assert "too many sign-ups from your connection just now" in html
    assert ConsentEvent.objects.count() == 2


def test_a_known_email_with_a_new_number_is_recorded_apart_and_the_page_says_the_same(client, fake):
    post(
        client,
        email="ada@example.com",
        email_marketing="on",
        country="GB",
        phone_number="07400 123456",
        sms_marketing="on",
    )
    html = post(
        client,
        email="ada@example.com",
        email_marketing="on",
        country="GB",
        phone_number="07400 654321",
        sms_marketing="on",
    )
    assert (
        "Thank you! You're signed up for our marketing emails at ada@example.com and our text "
        "messages at +44 7400 654321." in html
    )
    ada = Profile.objects.get(email="ada@example.com")
    assert ada.phone_number == "+447400123456"  # never overwritten
    apart = ConsentEvent.objects.get(personal_data__phone_number="+447400654321", channel="sms")
    assert apart.profile_id != ada.pk and RECORDED_APART in apart.method_detail


def test_the_template_tag_works_without_a_request_in_the_context(fake):
    html = Template("{% load klaviyo_consent %}{% consent_form %}").render(Context({}))
    assert 'name="email"' in html


def test_a_signup_the_ledger_refuses_after_the_form_accepted_it_is_plain_words_not_a_500(
    client, fake, monkeypatch
):
    from klaviyo_consent import views
    from klaviyo_consent.exceptions import IdentityConflict

    def refuse(request):
        raise IdentityConflict("Other requests kept changing ...", fields=["profile.email"])

    monkeypatch.setattr(views, "record_signup", refuse)
    html = post(client, email="ada@example.com", email_marketing="on")
    assert "We couldn't sign you up just now. Please try again in a moment." in html
    assert "profile.email" not in html and "Other requests" not in html


def test_the_example_signup_page_is_the_drop_in_form_and_mobile_ready(client, fake, settings):
    settings.ROOT_URLCONF = "example_project.urls"
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "example_project.signup"]
    page = client.get("/").content.decode()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert 'id="kc-consent-form"' in page and 'action="/consent/signup/"' in page
    css = (
        Path(__file__).parent.parent / "klaviyo_consent/static/klaviyo_consent/consent-form.css"
    ).read_text()
    assert "@media" in css and "font-size: max(1rem, 16px)" in css and "width: 100%" in css


def test_each_label_names_one_field_only(fake):
    # Browser tests find the fields by label text; no consent text may contain another label.
    form = ConsentForm()
    labels = ["Email address", "Mobile number", "Country"]
    texts = [form.texts["email"].body.lower(), form.texts["sms"].body.lower()]
    assert not [label for label in labels for text in texts if label.lower() in text]


@pytest.mark.parametrize(
    "accept_language, setting, expected",
    [
        ("en-GB,en;q=0.9", None, "GB"),
        ("sl-SI", None, "SI"),
        ("en", None, "US"),  # LANGUAGE_CODE en-us
        ("en-GB", "IE", "IE"),  # DEFAULT_PHONE_REGION wins
    ],
)
def test_the_country_starts_on_the_visitors_region(
    fake, settings, accept_language, setting, expected
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "DEFAULT_PHONE_REGION": setting}
    request = RequestFactory().get("/shop/", HTTP_ACCEPT_LANGUAGE=accept_language)
    request.session = Client().session
    html = Template("{% load klaviyo_consent %}{% consent_form %}").render(
        RequestContext(request, {})
    )
    assert re.search(rf'<option value="{expected}" selected', html)
    assert f"For example {example_number(expected)}" in markup.unescape(html)


def test_the_hint_number_of_every_texted_country_signs_up_for_texts(fake):
    from klaviyo_consent.forms import textable_regions
    from klaviyo_consent.services.ledger import Evidence
    from klaviyo_consent.services.signup import Outcome, record_signup

    regions = sorted(textable_regions())
    for region in regions:
        form = ConsentForm(
            {"country": region, "phone_number": example_number(region), "sms_marketing": "on"}
        )
        assert form.is_valid(), (region, form.errors)
        outcome = record_signup(form.to_signup(evidence=Evidence()))
        assert outcome.sms == Outcome.SUBSCRIBED, region
    assert ConsentEvent.objects.filter(channel="sms").count() == len(regions) == 19
