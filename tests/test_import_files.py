"""The CSV import reads hostile files as a CommandError naming the line, never a traceback."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from klaviyo_consent.models import ConsentEvent, Profile

pytestmark = pytest.mark.django_db

HEADER = "email,email_marketing,consent_text\n"


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "consent.csv"
    path.write_bytes(data)
    return path


def _run(path: Path, *args: str) -> None:
    call_command("klaviyo_consent_import", str(path), *args)


def _refused(path: Path, pattern: str, *args: str) -> None:
    with pytest.raises(CommandError, match=pattern):
        _run(path, "--all-or-nothing", *args)
    assert not ConsentEvent.objects.exists()


ROW = HEADER + "zoe@bücher.example,yes,Zoë sagt ja\n"


@pytest.mark.parametrize(
    "data",
    [
        ROW.encode("utf-8"),
        codecs.BOM_UTF8 + ROW.encode("utf-8"),
        ROW.encode("utf-16"),  # with its BOM
        codecs.BOM_UTF16_BE + ROW.encode("utf-16-be"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-le-bom", "utf-16-be-bom"],
)
def test_utf8_with_or_without_bom_and_utf16_with_bom_are_read_without_options(tmp_path, fake, data):
    _run(_write(tmp_path, data))
    assert Profile.objects.get().email == "zoe@xn--bcher-kva.example"
    assert ConsentEvent.objects.get().consent_text == "Zoë sagt ja"


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_latin1_and_windows_1252_are_read_with_encoding(tmp_path, fake, encoding):
    text = "Zoë: “Yes” please" if encoding == "cp1252" else "Zoë: yes please"
    path = _write(tmp_path, (HEADER + f"zoe@example.org,yes,{text}\n").encode(encoding))
    _run(path, "--encoding", encoding)
    assert ConsentEvent.objects.get().consent_text == text


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_latin1_or_windows_1252_without_encoding_names_the_line_of_the_byte(
    tmp_path, fake, encoding
):
    data = (HEADER + "a@example.org,yes,x\nzoe@example.org,yes,Zoë\n").encode(encoding)
    _refused(_write(tmp_path, data), r"line 3: byte 0xeb is not UTF-8.*--encoding cp1252")


def test_an_unknown_encoding_is_a_command_error(tmp_path, fake):
    _refused(_write(tmp_path, HEADER.encode()), r"--encoding 'klingon'", "--encoding", "klingon")


def test_binary_data_is_a_command_error_naming_the_line(tmp_path, fake):
    _refused(_write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), r"line 1: byte 0x89")


@pytest.mark.parametrize("where", ["a@exa\x00mple.org", "x\x00"])
def test_a_nul_byte_is_a_command_error_naming_its_line(tmp_path, fake, where):
    data = (HEADER + "a@example.org,yes,x\n" + f"b@example.org,yes,{where}\n").encode()
    _refused(_write(tmp_path, data), r"line 3: a NUL character")


def test_a_field_over_64_kib_is_a_command_error_naming_the_line(tmp_path, fake):
    data = HEADER + "a@example.org,yes,x\n" + 'b@example.org,yes,"' + "x" * 70_000 + '"\n'
    _refused(_write(tmp_path, data.encode()), r"line 3: a field is longer than 64 KiB")


def test_the_field_limit_is_restored_after_an_import(tmp_path, fake):
    import csv

    before = csv.field_size_limit()
    _run(_write(tmp_path, (HEADER + "a@example.org,yes,x\n").encode()))
    assert csv.field_size_limit() == before


def test_an_unclosed_quote_is_a_command_error_not_a_silent_merge(tmp_path, fake):
    data = HEADER + 'a@example.org,yes,"never closed\nb@example.org,yes,x\n'
    _refused(_write(tmp_path, data.encode()), r"not valid CSV")


def test_a_duplicated_column_is_refused_naming_it(tmp_path, fake):
    data = "email,email_marketing,email\na@example.org,yes,b@example.org\n"
    _refused(_write(tmp_path, data.encode()), r"line 1: column\(s\) named twice: email")


def test_stray_values_beyond_the_header_are_refused_naming_the_line(tmp_path, fake):
    data = HEADER + "a@example.org,yes,x\nb@example.org,yes,x,stray\n"
    _refused(_write(tmp_path, data.encode()), r"line 3: row: 1 value\(s\) more than the header")


def test_an_empty_file_is_refused(tmp_path, fake):
    _refused(_write(tmp_path, b""), r"line 1: no header row")


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01",
        "0001-01-01 00:00:00",
        "1989-12-31",
        "01/01/0001",
        "99999999999999",
        "2999-01-01",
    ],
)
def test_a_consented_at_outside_a_sane_range_is_refused_naming_the_line(tmp_path, fake, stamp):
    data = (
        "email,email_marketing,consented_at\n"
        f"a@example.org,yes,2020-01-01\nb@example.org,yes,{stamp}\n"
    )
    _refused(
        _write(tmp_path, data.encode()),
        r"line 3: consented_at",
        "--historical-import",
        "--timezone",
        "America/New_York",
    )


def test_the_api_refuses_a_consented_at_before_1990(api, fake):
    from tests.helpers import SUBSCRIBE, body

    response = api.post(
        SUBSCRIBE,
        body(
            profile={"email": "a@example.org"},
            subscriptions={"email": {"marketing": True}},
            historical_import=True,
            consented_at="0001-01-01T00:00:00Z",
        ),
        format="json",
    )
    assert response.status_code == 400
    assert "consented_at" in response.json()
