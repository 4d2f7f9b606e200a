"""Input a user would expect to work: national numbers with a country, numbers that cannot
receive texts, timestamps without a zone, and every import failure naming its line."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from klaviyo_consent.models import ConsentEvent, Profile
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from tests.helpers import SUBSCRIBE, UNSUBSCRIBE, body

pytestmark = pytest.mark.django_db

SMS = {"sms": {"marketing": True}}


def test_a_national_number_is_read_in_the_country_given(api, fake):
    response = api.post(
        SUBSCRIBE,
        body(profile={"phone_number": "(202) 555-0143", "country": "US"}, subscriptions=SMS),
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Profile.objects.get().phone_number == "+12025550143"


def test_the_country_wins_over_the_default_phone_region(api, fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "DEFAULT_PHONE_REGION": "GB"}
    response = api.post(
        SUBSCRIBE,
        body(profile={"phone_number": "(202) 555-0143", "country": "us"}, subscriptions=SMS),
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.data["profile"]["phone_number"] == "+12025550143"


@pytest.mark.parametrize("country", ["USA", "XX", "1"])
def test_a_bad_country_is_a_400_naming_profile_country(api, fake, country):
    response = api.post(
        SUBSCRIBE,
        body(profile={"phone_number": "(202) 555-0143", "country": country}, subscriptions=SMS),
        format="json",
    )
    assert response.status_code == 400
    assert "country" in response.json()["profile"]
    assert not ConsentEvent.objects.exists()


def test_the_profile_list_reads_a_national_number_in_the_country_given(api, fake):
    api.post(
        SUBSCRIBE, body(profile={"phone_number": "+12025550143"}, subscriptions=SMS), format="json"
    )
    found = api.get("/api/consent/profiles/", {"phone_number": "202-555-0143", "country": "US"})
    assert found.status_code == 200, found.content
    assert [p["phone_number"] for p in found.json()["results"]] == ["+12025550143"]
    bad = api.get("/api/consent/profiles/", {"phone_number": "202-555-0143", "country": "ZZ"})
    assert bad.status_code == 400 and "country" in bad.json()


@pytest.mark.parametrize(
    "number, kind",
    [
        ("+442079460123", "landline"),
        ("+18005550100", "toll-free"),
        ("+19005550100", "premium-rate"),
    ],
)
def test_a_number_that_cannot_receive_texts_is_refused_for_sms_with_reason(api, fake, number, kind):
    response = api.post(
        SUBSCRIBE, body(profile={"phone_number": number}, subscriptions=SMS), format="json"
    )
    assert response.status_code == 400
    [message] = response.json()["profile"]["phone_number"]
    assert kind in message and "cannot receive text messages" in message
    assert not ConsentEvent.objects.exists()


def test_a_landline_may_still_be_given_for_email_consent_and_withdraw_sms(api, fake):
    landline = {"email": "ada@example.org", "phone_number": "+442079460123"}
    given = api.post(
        SUBSCRIBE,
        body(profile=landline, subscriptions={"email": {"marketing": True}}),
        format="json",
    )
    assert given.status_code == 201, given.content
    withdrawn = api.post(UNSUBSCRIBE, body(profile=landline, subscriptions=SMS), format="json")
    assert withdrawn.status_code == 201, withdrawn.content


def test_sms_consent_named_by_external_id_checks_the_profiles_own_number(api, fake):
    landline = {"email": "ada@example.org", "phone_number": "+442079460123", "external_id": "c1"}
    api.post(
        SUBSCRIBE,
        body(profile=landline, subscriptions={"email": {"marketing": True}}),
        format="json",
    )
    response = api.post(
        SUBSCRIBE, body(profile={"external_id": "c1"}, subscriptions=SMS), format="json"
    )
    assert response.status_code == 400
    assert "landline" in response.json()["profile"]["phone_number"][0]


def test_a_consented_at_without_a_zone_is_read_in_the_sites_time_zone(api, fake, settings):
    settings.TIME_ZONE = "Europe/London"
    response = api.post(
        SUBSCRIBE,
        body(
            profile={"email": "ana@example.org"},
            subscriptions={"email": {"marketing": True}},
            consented_at="2023-04-01T09:30:00",
            historical_import=True,
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    event = ConsentEvent.objects.get()
    assert event.consented_at.isoformat() == "2023-04-01T08:30:00+00:00"  # BST is UTC+1


def test_a_service_caller_may_pass_a_naive_consented_at(fake, settings):
    settings.TIME_ZONE = "America/New_York"
    result = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email="ana@example.org",
            consented_at=datetime(2023, 4, 1, 9, 30),
            historical_import=True,
        )
    )
    stored = ConsentEvent.objects.get(pk=result.events[0].pk).consented_at
    assert stored.astimezone(UTC).isoformat() == "2023-04-01T13:30:00+00:00"


# --- the CSV import -----------------------------------------------------------------------------


def write(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "consent.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_a_csv_time_without_a_zone_is_read_in_the_sites_time_zone(tmp_path, fake):
    path = write(
        tmp_path, "email,email_marketing,consented_at\nana@example.org,yes,2023-04-01 09:30:00\n"
    )
    call_command("klaviyo_consent_import", str(path), "--historical-import")
    assert ConsentEvent.objects.get().consented_at.isoformat() == "2023-04-01T09:30:00+00:00"


def test_a_csv_time_without_a_zone_is_read_in_the_timezone_option(tmp_path, fake):
    path = write(
        tmp_path, "email,email_marketing,consented_at\nana@example.org,yes,2023-04-01 09:30:00\n"
    )
    call_command(
        "klaviyo_consent_import", str(path), "--historical-import", "--timezone", "Europe/Berlin"
    )
    assert ConsentEvent.objects.get().consented_at.isoformat() == "2023-04-01T07:30:00+00:00"


@pytest.mark.parametrize(
    "stamp, expected",
    [
        ("2014-09-30 13:34:08", "2014-09-30T13:34:08+00:00"),
        ("2014-09-30 13:34:08+02:00", "2014-09-30T11:34:08+00:00"),
        ("09/30/2014 13:34:08", "2014-09-30T13:34:08+00:00"),
        ("09/30/14 13:34:08", "2014-09-30T13:34:08+00:00"),
        ("09/30/2014 13:34", "2014-09-30T13:34:00+00:00"),
        ("09/30/14 13:34", "2014-09-30T13:34:00+00:00"),
        ("2014-09-30T13:34:08", "2014-09-30T13:34:08+00:00"),
        ("2014-09-30 13:34:08.000001", "2014-09-30T13:34:08.000001+00:00"),
        ("2014-09-30 13:34:08.000001-04:00", "2014-09-30T17:34:08.000001+00:00"),
        ("2014-09-30", "2014-09-30T00:00:00+00:00"),
        ("1412098448", "2014-09-30T17:34:08+00:00"),
    ],
)
def test_klaviyos_documented_csv_date_formats_are_accepted(tmp_path, fake, stamp, expected):
    path = write(tmp_path, f'email,email_marketing,consented_at\nana@example.org,yes,"{stamp}"\n')
    call_command("klaviyo_consent_import", str(path), "--historical-import")
    assert ConsentEvent.objects.get().consented_at.isoformat() == expected


def test_a_csv_country_column_reads_national_numbers(tmp_path, fake):
    path = write(
        tmp_path,
        "phone_number,country,sms_marketing\n(202) 555-0143,US,yes\n07400 123456,GB,yes\n",
    )
    call_command("klaviyo_consent_import", str(path))
    assert sorted(Profile.objects.values_list("phone_number", flat=True)) == [
        "+12025550143",
        "+447400123456",
    ]


@pytest.mark.parametrize(
    "text, args, expected",
    [
        (
            "email,email_marketing,consented_at\na@example.org,yes,2023-01-01\n"
            "b@example.org,yes,2023-02-30 10:00:00\n",
            ["--historical-import"],
            r"line 3: consented_at",
        ),
        (
            "email,email_marketing\na@example.org,yes\nb@example.org,yes,extra\n",
            [],
            r"line 3: row: 1 value\(s\) more than the header",
        ),
        (
            "phone_number,country,sms_marketing\n(202) 555-0143,United States,yes\n",
            [],
            r"line 2: profile.country",
        ),
        (
            "email,email_marketing\na@example.org,yes\n",
            ["--timezone", "Mars/Olympus"],
            r"--timezone 'Mars/Olympus' is not an IANA time zone",
        ),
    ],
)
def test_every_import_failure_is_a_command_error_naming_the_line(
    tmp_path, fake, text, args, expected
):
    path = write(tmp_path, text)
    with pytest.raises(CommandError, match=expected):
        call_command("klaviyo_consent_import", str(path), "--all-or-nothing", *args)
    assert not ConsentEvent.objects.exists()


def test_a_file_that_is_not_utf8_is_a_command_error_not_a_traceback(tmp_path, fake):
    path = write(tmp_path, "email,email_marketing\nzoë@example.org,yes\n", encoding="latin-1")
    with pytest.raises(CommandError, match=r"not UTF-8"):
        call_command("klaviyo_consent_import", str(path))
    assert not ConsentEvent.objects.exists()


def test_the_readme_curl_example_does_not_conflict_with_the_demo_seed(api, fake, settings):
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "example_project.signup"]
    # The demo's lists, as the example project's fake has them (else the seed's jobs are
    # refused and its sync waits for retries).
    fake.add_list("DemoLs", "Newsletter (single opt-in)", "single_opt_in")
    fake.add_list("DblOpt", "VIP (double opt-in)", "double_opt_in")
    call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = json.loads(re.search(r"-d '(\{.*?\})'", readme, re.S).group(1))
    response = api.post(SUBSCRIBE, example, format="json")
    assert response.status_code == 201, response.content


def test_check_reads_national_numbers_in_the_country_given(api, fake):
    api.post(
        SUBSCRIBE, body(profile={"phone_number": "+12025550143"}, subscriptions=SMS), format="json"
    )
    response = api.post(
        "/api/consent/check/", {"phone_numbers": ["(202) 555-0143"], "country": "US"}, format="json"
    )
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    assert result["normalized"] == "+12025550143"
    assert result["consent"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    bad = api.post(
        "/api/consent/check/", {"phone_numbers": ["(202) 555-0143"], "country": "ZZ"}, format="json"
    )
    assert bad.status_code == 400 and "country" in bad.json()
