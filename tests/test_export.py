"""Issue 11, export: the ledger as CSV or JSON Lines, every proof field, checkable row by row."""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from klaviyo_consent import csvsafe, merkle
from klaviyo_consent.models import Checkpoint, ConsentEvent, LedgerEntry, Profile
from klaviyo_consent.receipts import record_leaf_hash, text_sha256
from klaviyo_consent.services import checkpoints, export, proofs
from klaviyo_consent.services.identity import merge_profiles
from klaviyo_consent.services.ledger import ConsentRequest, Evidence, record_consent

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
EXPORT = "/api/consent/events/export/"
WORDS = "Yes, email me offers."
EVIDENCE = Evidence("203.0.113.7", "Mozilla/5.0 (test)", "https://shop.example/signup")


def record(email: str = "ada@example.com", **overrides: Any) -> list[ConsentEvent]:
    fields: dict[str, Any] = {
        "consent": "SUBSCRIBED",
        "subscriptions": {"email": {"marketing": True}},
        "email": email,
        "consent_text": WORDS,
        "evidence": EVIDENCE,
        "method": "form",
        "method_detail": "footer form",
        "custom_source": "Footer",
        **overrides,
    }
    return record_consent(ConsentRequest(**fields)).events


def inbound(profile: Profile) -> ConsentEvent:
    """A change Klaviyo made (method klaviyo, Klaviyo's data kept) with no consent text."""
    [event] = ConsentEvent.objects.append(
        [
            ConsentEvent(
                profile=profile,
                email=profile.email,
                channel="email",
                purpose="marketing",
                consent="UNSUBSCRIBED",
                method="klaviyo",
                klaviyo_data={"method": "PREFERENCE_PAGE", "timestamp": "2026-01-02T03:04:05Z"},
            )
        ]
    )
    return event


def legacy(profile: Profile) -> ConsentEvent:
    """An event from before versioned texts: its words, no ConsentText version."""
    [event] = ConsentEvent.objects.append(
        [
            ConsentEvent(
                profile=profile,
                email=profile.email,
                channel="email",
                purpose="marketing",
                consent="SUBSCRIBED",
                consent_text="Old words.",
            )
        ]
    )
    return event


def jsonl(**options: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    call_command("klaviyo_consent_export", format="jsonl", no_progress=True, stdout=out, **options)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def reader(user_perms: tuple[str, ...], django_user_model: Any) -> APIClient:
    user = django_user_model.objects.create_user("-".join(user_perms), password="pw")
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="klaviyo_consent", codename__in=user_perms
        )
    )
    client = APIClient()
    client.force_authenticate(user)
    return client


def streamed(response: Any) -> str:
    return b"".join(response.streaming_content).decode("utf-8")


# -- every field --------------------------------------------------------------------------------


def test_each_row_holds_every_proof_field_the_text_hash_and_version_the_verdict_and_the_leaf():
    [event] = record(phone_number="+447400123456", subscriptions={"sms": {"marketing": True}})
    checkpoints.checkpoint()
    entry = LedgerEntry.objects.get(event=event)
    text = event.consent_text_version

    [row] = jsonl()

    assert list(row) == list(export.COLUMNS)
    assert row["id"] == event.pk and row["profile_id"] == event.profile_id
    assert (row["email"], row["phone_number"]) == ("ada@example.com", "+447400123456")
    assert (row["channel"], row["purpose"], row["consent"]) == ("sms", "marketing", "SUBSCRIBED")
    assert (row["method"], row["method_detail"], row["custom_source"]) == (
        "form",
        "footer form",
        "Footer",
    )
    assert row["ip_address"] == "203.0.113.7"
    assert row["user_agent"] == "Mozilla/5.0 (test)"
    assert row["page_url"] == "https://shop.example/signup"
    assert row["consent_text"] == WORDS
    assert row["consent_text_sha256"] == text_sha256(WORDS)
    assert (row["consent_text_id"], row["consent_text_key"], row["consent_text_version"]) == (
        text.pk,
        text.key,
        text.version,
    )
    assert row["recorded_at"] == event.recorded_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert row["consented_at"] is None and row["historical_import"] is False
    assert row["verdict"] == event.delivery.status == "pending"
    assert row["leaf_index"] == entry.leaf_index
    assert row["leaf_hash"] == entry.leaf_hash
    assert row["digests"] == entry.digests


def test_an_event_not_yet_in_the_ledger_has_no_leaf_until_the_next_checkpoint():
    record("first@example.com")
    checkpoints.checkpoint()
    [later] = record("later@example.com")

    rows = {row["id"]: row for row in jsonl()}

    assert rows[later.pk]["leaf_index"] is None
    assert rows[later.pk]["leaf_hash"] is None
    assert rows[later.pk]["digests"] is None
    checkpoints.checkpoint()
    assert {row["id"]: row for row in jsonl()}[later.pk]["leaf_hash"] == (
        LedgerEntry.objects.get(event=later).leaf_hash
    )


def test_every_exported_row_rebuilds_its_leaf_and_proves_its_inclusion_in_the_checkpoint():
    [subscribed] = record(external_id="crm-1")
    legacy(subscribed.profile)
    inbound(subscribed.profile)
    record(
        "old@example.com",
        historical_import=True,
        consented_at=datetime(2020, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    )
    checkpoints.checkpoint()
    head = Checkpoint.objects.get()
    rows = jsonl()
    assert len(rows) == 4

    for row in rows:
        assert record_leaf_hash(export.leaf_record(row)) == row["leaf_hash"], row["id"]
        path = merkle.inclusion_proof(
            row["leaf_index"], head.tree_size, proofs.DatabaseTree().subtree
        )
        merkle.verify_inclusion(
            row["leaf_index"],
            head.tree_size,
            bytes.fromhex(row["leaf_hash"]),
            path,
            bytes.fromhex(head.root_hash),
        )


def test_an_event_from_before_versioned_texts_carries_its_words_hash():
    [event] = record()
    old = legacy(event.profile)

    row = {row["id"]: row for row in jsonl()}[old.pk]

    assert row["consent_text_sha256"] == text_sha256("Old words.")
    assert row["consent_text_id"] is None and row["consent_text_version"] is None


def test_a_tampered_row_no_longer_rebuilds_its_leaf():
    record()
    checkpoints.checkpoint()
    [row] = jsonl()

    row["consent"] = "UNSUBSCRIBED"

    assert record_leaf_hash(export.leaf_record(row)) != row["leaf_hash"]


# -- filters ------------------------------------------------------------------------------------


def test_since_and_until_select_by_recorded_at_and_a_date_until_includes_that_day():
    [jan] = record("jan@example.com")
    [feb] = record("feb@example.com")
    [mar] = record("mar@example.com")
    stamps = {
        jan.pk: datetime(2026, 1, 31, 23, 0, tzinfo=UTC),
        feb.pk: datetime(2026, 2, 1, 0, 0, tzinfo=UTC),
        mar.pk: datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
    }
    with connection.cursor() as cursor:
        # Test fixture only: back-date the rows (the append-only trigger refuses UPDATE).
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        else:
            cursor.execute("DROP TRIGGER klaviyo_consent_append_only")
        for pk, stamp in stamps.items():
            cursor.execute(
                "UPDATE klaviyo_consent_consentevent SET recorded_at = %s WHERE id = %s",
                [stamp, pk],
            )

    def ids(**options: Any) -> list[int]:
        return [row["id"] for row in jsonl(**options)]

    assert ids(since="2026-02-01") == [feb.pk, mar.pk]
    assert ids(until="2026-01-31") == [jan.pk]
    assert ids(until="2026-02-01T00:00:00Z") == [jan.pk]
    assert ids(since="2026-02-01T00:00:00Z", until="2026-02-28") == [feb.pk]


def test_channel_selects_one_channel():
    record(
        phone_number="+447400123456",
        subscriptions={"email": {"marketing": True}, "sms": {"marketing": True}},
    )

    assert {row["channel"] for row in jsonl(channel="sms")} == {"sms"}
    assert {row["channel"] for row in jsonl(channel="email")} == {"email"}
    assert len(jsonl()) == 2


def test_profile_selects_one_persons_events_including_those_of_profiles_merged_into_it():
    [ada] = record("ada@example.com")
    [other] = record(None, phone_number="+447400123456", subscriptions={"sms": {"marketing": True}})
    [stranger] = record("bob@example.com")
    merge_profiles(ada.profile, other.profile)

    assert [row["id"] for row in jsonl(profile=str(ada.profile_id))] == [ada.pk, other.pk]
    assert stranger.pk not in [row["id"] for row in jsonl(profile=str(ada.profile_id))]


def test_rows_are_read_in_chunks_by_id_not_all_at_once():
    made = [record(f"p{i}@example.com")[0].pk for i in range(5)]

    with CaptureQueriesContext(connection) as queries:
        chunks = list(export.lines(export.ExportFilters(), "jsonl", chunk_size=2))

    assert [[json.loads(line)["id"] for line in chunk] for chunk in chunks] == [
        made[0:2],
        made[2:4],
        made[4:],
    ]
    reads = [q["sql"] for q in queries.captured_queries if "LIMIT 2" in q["sql"]]
    assert len(reads) == 3  # 2 + 2 + 1 rows, one keyset query each


def test_each_page_bounds_its_joins_by_its_id_range_not_only_the_events():
    """Without the bound in the join, PostgreSQL merge-joined each page against the outbox and
    the ledger from their first row: quadratic in the ledger's size."""
    sql = str(export.select(export.ExportFilters(), after=41, through=99).query)

    for table in ("page_delivery", "page_leaf"):
        on = re.search(rf'JOIN "\w+" "?{table}"? ON \((.*?)\) (LEFT|WHERE)', sql)
        assert on, table
        assert re.search(rf'{table}"?\."event_id" > 41', on[1]), table
        assert re.search(rf'{table}"?\."event_id" <= 99', on[1]), table


def test_the_export_is_a_lazy_generator():
    record("a@example.com")
    with CaptureQueriesContext(connection) as queries:
        pieces = export.export(export.ExportFilters(), "jsonl", chunk_size=1)
    assert inspect.isgenerator(pieces)
    assert not queries.captured_queries  # nothing is read before the first piece is asked for

    assert [json.loads(line)["email"] for line in "".join(pieces).splitlines()] == ["a@example.com"]


def test_keyset_pages_hold_events_up_to_the_newest_id_when_they_began():
    record("a@example.com")
    pages = export.lines(export.ExportFilters(), "jsonl", chunk_size=1)
    first = next(pages)
    record("b@example.com")

    rest = [line for page in pages for line in page]

    assert [json.loads(line)["email"] for line in first + rest] == ["a@example.com"]


def test_an_export_closed_half_way_leaves_the_connection_usable():
    record("a@example.com")
    record("b@example.com")
    pieces = export.export(export.ExportFilters(), "jsonl", chunk_size=1)
    next(pieces)

    pieces.close()  # the client went away

    assert ConsentEvent.objects.count() == 2


# -- formats ------------------------------------------------------------------------------------


def test_csv_has_a_header_of_every_column_and_one_row_per_event(tmp_path: Path):
    record("a@example.com")
    record("b@example.com", historical_import=True, consented_at=datetime(2020, 1, 1, tzinfo=UTC))
    checkpoints.checkpoint()
    target = tmp_path / "events.csv"

    call_command(
        "klaviyo_consent_export", output=str(target), no_progress=True, stdout=io.StringIO()
    )

    with target.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == list(export.COLUMNS)
    assert [row["email"] for row in rows] == ["a@example.com", "b@example.com"]
    assert rows[1]["historical_import"] == "true"
    assert rows[1]["consented_at"] == "2020-01-01T00:00:00.000000Z"
    assert json.loads(rows[0]["digests"]) == LedgerEntry.objects.get(leaf_index=0).digests
    assert rows[0]["leaf_hash"] == LedgerEntry.objects.get(leaf_index=0).leaf_hash
    assert not (tmp_path / "events.csv.partial").exists()


def test_csv_cells_never_carry_a_live_spreadsheet_formula():
    record(
        "=cmd@example.com",
        method_detail='=HYPERLINK("http://evil.example","click")',
        custom_source="@SUM(A1:A9)",
        consent_text="+1 more offer",
        evidence=Evidence("203.0.113.7", "-ua", "=page"),
    )
    out = io.StringIO()

    call_command("klaviyo_consent_export", no_progress=True, stdout=out, stderr=io.StringIO())

    [row] = list(csv.DictReader(io.StringIO(out.getvalue())))
    for column in ("method_detail", "custom_source", "consent_text", "user_agent", "page_url"):
        assert row[column].startswith("'"), column
    assert row["method_detail"] == '\'=HYPERLINK("http://evil.example","click")'
    # JSON Lines keeps the exact values (it is not opened by spreadsheets).
    [line] = jsonl()
    assert line["custom_source"] == "@SUM(A1:A9)"


HOSTILE = 'He said "yes, please",\r\nthen \\ left; ünïcödé ☃ \t tab'


def test_text_with_quotes_commas_newlines_and_backslashes_comes_back_exactly():
    [event] = record(method_detail=HOSTILE, custom_source="a,b", consent_text=HOSTILE + " words")
    profile = event.profile
    [klaviyo] = ConsentEvent.objects.append(
        [
            ConsentEvent(
                profile=profile,
                email=profile.email,
                channel="email",
                purpose="marketing",
                consent="SUBSCRIBED",
                method="klaviyo",
                klaviyo_data={"method_detail": HOSTILE, "nested": {"n": [1, None, True]}},
            )
        ]
    )
    out = io.StringIO()
    call_command("klaviyo_consent_export", no_progress=True, stdout=out, stderr=io.StringIO())
    by_csv = {int(row["id"]): row for row in csv.DictReader(io.StringIO(out.getvalue()))}
    by_json = {row["id"]: row for row in jsonl()}

    assert by_csv[event.pk]["method_detail"] == HOSTILE
    assert by_csv[event.pk]["custom_source"] == "a,b"
    assert by_json[event.pk]["method_detail"] == HOSTILE
    assert by_json[event.pk]["consent_text"] == HOSTILE + " words"
    assert by_json[klaviyo.pk]["klaviyo_data"] == klaviyo.klaviyo_data
    assert json.loads(by_csv[klaviyo.pk]["klaviyo_data"]) == klaviyo.klaviyo_data


@pytest.mark.parametrize("prefix", csvsafe.FORMULA_PREFIXES)
def test_every_formula_prefix_in_every_text_column_is_neutralized(prefix: str):
    record(
        "ada@example.com",
        method_detail=prefix + "1",
        custom_source=prefix + "2",
        consent_text=prefix + "3",
        evidence=Evidence("203.0.113.7", prefix + "4", prefix + "5"),
        external_id=prefix + "6",
    )
    out = io.StringIO()
    call_command("klaviyo_consent_export", no_progress=True, stdout=out, stderr=io.StringIO())
    [row] = list(csv.DictReader(io.StringIO(out.getvalue())))

    for column, value in (
        ("method_detail", prefix + "1"),
        ("custom_source", prefix + "2"),
        ("consent_text", prefix + "3"),
        ("user_agent", prefix + "4"),
        ("page_url", prefix + "5"),
        ("external_id", prefix + "6"),
    ):
        assert row[column] == csvsafe.neutralize(value) == "'" + value, column


def test_the_command_names_a_bad_option():
    with pytest.raises(CommandError, match="--since"):
        call_command("klaviyo_consent_export", since="yesterday", no_progress=True)
    with pytest.raises(CommandError, match="--channel"):
        call_command("klaviyo_consent_export", channel="fax", no_progress=True)
    with pytest.raises(CommandError, match="--profile"):
        call_command("klaviyo_consent_export", profile="999999", no_progress=True)
    with pytest.raises(CommandError, match="--until"):
        call_command(
            "klaviyo_consent_export", since="2026-02-01", until="2026-01-01", no_progress=True
        )


def test_the_command_shows_progress_on_standard_error_and_keeps_standard_output_the_export():
    record("a@example.com")
    out, err = io.StringIO(), io.StringIO()

    call_command("klaviyo_consent_export", format="jsonl", stdout=out, stderr=err)

    assert [json.loads(line)["email"] for line in out.getvalue().splitlines()] == ["a@example.com"]
    assert "Exported 1 events to standard output." in err.getvalue()


def test_an_unwritable_output_is_a_command_error_naming_it(tmp_path: Path):
    with pytest.raises(CommandError, match="--output"):
        call_command(
            "klaviyo_consent_export",
            output=str(tmp_path / "missing" / "events.csv"),
            no_progress=True,
        )


def test_an_output_that_is_not_a_regular_file_is_written_in_place_not_replaced():
    record("a@example.com")

    call_command(
        "klaviyo_consent_export", output=os.devnull, no_progress=True, stdout=io.StringIO()
    )

    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert not os.path.exists(f"{os.devnull}.partial")


def test_starting_the_app_does_not_load_the_phone_geodata():
    """phonenumbers' geocoder holds about 100 MB: a process (an export, a worker) pays for it
    only when a refusal needs a country's name."""
    code = (
        "import sys, django; django.setup(); "
        "from django.core.management import call_command; call_command('check'); "
        "sys.exit('phonenumbers.geocoder' in sys.modules)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True)

    assert done.returncode == 0, done.stderr.decode()[-2000:]


# -- the endpoint -------------------------------------------------------------------------------


def test_the_endpoint_streams_jsonl_from_a_generator(api: APIClient):
    [event] = record()
    checkpoints.checkpoint()

    response = api.get(EXPORT, {"format": "jsonl"})

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("application/jsonl")
    assert 'filename="consent-events.jsonl"' in response["Content-Disposition"]
    [row] = [json.loads(line) for line in streamed(response).splitlines()]
    assert row["id"] == event.pk
    assert row["leaf_hash"] == LedgerEntry.objects.get(event=event).leaf_hash


def test_the_endpoint_streams_csv_by_default_with_the_filters(api: APIClient):
    record(
        phone_number="+447400123456",
        subscriptions={"email": {"marketing": True}, "sms": {"marketing": True}},
    )
    record("bob@example.com")
    bob = Profile.objects.get(email="bob@example.com")

    response = api.get(EXPORT, {"channel": "email", "profile": bob.pk, "since": "2000-01-01"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(streamed(response))))
    assert [(row["email"], row["channel"]) for row in rows] == [("bob@example.com", "email")]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"format": "xml"}, "format"),
        ({"since": "last tuesday"}, "since"),
        ({"until": "2026-13-45"}, "until"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "until"),
        ({"channel": "fax"}, "channel"),
        ({"profile": "abc"}, "profile"),
        ({"profile": "99999999999999999999"}, "profile"),
        ({"profile": "424242"}, "profile"),
        ({"chanel": "sms"}, "chanel"),
    ],
)
def test_a_bad_query_parameter_is_a_400_naming_it(api: APIClient, query: dict, field: str):
    response = api.get(EXPORT, query)

    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"until": "9999-12-31"}, "until"),  # the day after is past the calendar
        ({"since": "0001-01-01T00:00:00+14:00"}, "since"),  # its UTC is before the calendar
        ({"since": "2026-01-01\x00"}, "since"),
        ({"channel": "email\x00"}, "channel"),
    ],
)
def test_a_date_past_the_calendar_or_a_nul_is_a_400_naming_it(api: APIClient, query, field):
    response = api.get(EXPORT, query)

    assert response.status_code == 400
    assert field in response.json()


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    params=st.dictionaries(
        st.sampled_from(["format", "since", "until", "channel", "profile", "page"]),
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(["csv", "jsonl", "email", "sms", "1", "2026-01-01", "9999-12-31"]),
            st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
        ),
        max_size=4,
    )
)
def test_no_query_string_reaches_a_5xx_even_once_streamed(api: APIClient, params: dict):
    response = api.get(EXPORT, params)

    assert response.status_code < 500
    if response.status_code == 200:
        streamed(response)  # an error while streaming would raise here


def test_a_repeated_query_parameter_is_a_400_naming_it(api: APIClient):
    response = api.get(f"{EXPORT}?channel=email&channel=sms")

    assert response.status_code == 400
    assert "channel" in response.json()


def test_the_endpoint_needs_the_view_permission_for_consent_events(django_user_model: Any):
    record()
    assert APIClient().get(EXPORT).status_code in (401, 403)
    profiles_only = reader(("view_profile",), django_user_model)
    assert profiles_only.get(EXPORT).status_code == 403

    allowed = reader(("view_consentevent",), django_user_model)
    assert allowed.get(EXPORT).status_code == 200


def test_times_are_utc_whatever_the_sites_time_zone(settings: Any):
    settings.TIME_ZONE = "America/New_York"
    [event] = record()

    [row] = jsonl(since=(event.recorded_at - timedelta(minutes=1)).isoformat())

    assert row["recorded_at"].endswith("Z")
