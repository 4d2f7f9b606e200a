"""CSV written by the app never holds a live spreadsheet formula."""

from __future__ import annotations

import csv
import io

import pytest

from klaviyo_consent import csvsafe


@pytest.mark.parametrize(
    "value",
    ["=1+1", "+447400123456", "-2+3", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("x")', "＝1+1"],
)
def test_a_cell_a_spreadsheet_would_run_gets_a_leading_apostrophe(value):
    assert csvsafe.neutralize(value) == "'" + value


@pytest.mark.parametrize("value", ["ada@example.com", "Yes, text me", "", "'=quoted", 5, -3, None])
def test_other_cells_pass_unchanged(value):
    assert csvsafe.neutralize(value) == value


def test_the_writer_neutralizes_every_cell_and_round_trips_through_csv():
    out = io.StringIO()
    writer = csvsafe.writer(out)
    writer.writerow(["email", "consent_text"])
    writer.writerows([["=cmd|' /C calc'!A0", "-1"], ["ada@example.com", "@ok"]])
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows == [
        ["email", "consent_text"],
        ["'=cmd|' /C calc'!A0", "'-1"],
        ["ada@example.com", "'@ok"],
    ]
