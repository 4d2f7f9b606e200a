"""CSV import: every row recorded with its evidence, or none, with the failing line named."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from klaviyo_consent.models import ConsentEvent

pytestmark = pytest.mark.django_db

HEADER = "email,phone_number,email_marketing,sms_marketing,consented_at,consent_text\n"


def write(tmp_path, text):
    path = tmp_path / "consent.csv"
    path.write_text(HEADER + text, encoding="utf-8")
    return path


def test_a_historical_import_records_every_row(tmp_path, fake):
    path = write(
        tmp_path,
        "a@example.com,,yes,no,2024-03-01T10:00:00Z,Old footer form\n"
        "b@example.com,+12025550143,yes,yes,2024-03-02T10:00:00Z,Old checkout\n",
    )
    call_command("klaviyo_consent_import", str(path), "--historical-import", "--list-id", "Single")
    events = ConsentEvent.objects.order_by("id")
    assert [(e.email, e.channel) for e in events] == [
        ("a@example.com", "email"),
        ("b@example.com", "email"),
        ("b@example.com", "sms"),
    ]
    assert all(e.method == "import" and e.historical_import for e in events)
    assert events[0].consent_text == "Old footer form"
    assert events[0].consented_at.isoformat() == "2024-03-01T10:00:00+00:00"


@pytest.mark.parametrize(
    "bad_row,expected",
    [
        ("not-an-email,,yes,no,2024-03-01T10:00:00Z,x\n", "line 3: profile.email"),
        ("c@example.com,12,no,yes,2024-03-01T10:00:00Z,x\n", "line 3: profile.phone_number"),
        ("c@example.com,,maybe,no,2024-03-01T10:00:00Z,x\n", "line 3: email_marketing"),
        ("c@example.com,,yes,no,last tuesday,x\n", "line 3: consented_at"),
        (
            "c@example.com,,yes,no,,x\n",
            "line 3: consented_at: historical_import needs consented_at",
        ),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_imported(tmp_path, fake, bad_row, expected):
    path = write(tmp_path, "a@example.com,,yes,no,2024-03-01T10:00:00Z,ok\n" + bad_row)
    with pytest.raises(CommandError, match=expected):
        call_command("klaviyo_consent_import", str(path), "--historical-import", "--all-or-nothing")
    assert ConsentEvent.objects.count() == 0


def test_unknown_columns_are_refused(tmp_path, fake):
    path = tmp_path / "x.csv"
    path.write_text("email,favourite_colour\na@example.com,blue\n")
    with pytest.raises(CommandError, match="line 1: unknown column"):
        call_command("klaviyo_consent_import", str(path))


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("klaviyo_consent_import", str(tmp_path / "nope.csv"))
