"""Export the consent ledger: every event with its evidence, verdict and leaf, as CSV or JSON Lines.

One row per consent event, oldest id first: the event's proof fields, its consent text (words,
SHA-256, id, key, version, locale), Klaviyo's verdict (the ``Delivery``), and its place in the
Merkle ledger (``LedgerEntry``: leaf index, leaf hash, identifier digests), so each row can be
rebuilt into its leaf record (:func:`leaf_record`) and checked against a signed checkpoint with an
inclusion proof. An event the checkpointer has not sequenced yet has no leaf: its ``leaf_index``,
``leaf_hash`` and ``digests`` are empty (CSV) or null (JSON Lines) until the next checkpoint.

Constant memory whatever the ledger's size: rows are read ``chunk_size`` at a time by keyset
pagination on the event id (``WHERE id > last ORDER BY id LIMIT n``, the same on SQLite and
PostgreSQL, no transaction held open) from one ``values_list`` SELECT (:func:`select`), never
model instances, and each row comes back as its finished line of text, written by the database
around that SELECT (:mod:`klaviyo_consent.services.export_sql`): formatting a million rows cell
by cell in Python cost more than reading them. The export covers events up to the largest id
present when it began.

CSV text cells follow :mod:`klaviyo_consent.csvsafe`'s rule (no live spreadsheet formula: a
phone number ``+44…`` is written ``'+44…``); JSON Lines values are exact.
Column meanings: docs/api.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.db import connections
from django.db.models import Case, F, FilteredRelation, Max, Q, TextField, When
from django.db.models.functions import SHA256, Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from klaviyo_consent.choices import Channel
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import ConsentEvent, Profile, parse_row_id
from klaviyo_consent.receipts import SCHEMA_VERSION
from klaviyo_consent.services import export_sql

#: The formats an export is written in, and each one's media type.
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}

#: The erasable raw values of an event (email, phone, external id and evidence), output column
#: -> ORM path from ConsentEvent. The ONE place the export reads them: erasure keeps them apart
#: from the event rows, in the event's erasable row (``EventPersonalData``, docs/erasure.md).
RAW_VALUES: dict[str, str] = {
    "email": "personal_data__email",
    "phone_number": "personal_data__phone_number",
    "external_id": "personal_data__external_id",
    "ip_address": "personal_data__ip_address",
    "user_agent": "personal_data__user_agent",
    "page_url": "personal_data__page_url",
}


class _TextSHA256(SHA256):
    """Hex SHA-256 of a text's UTF-8 bytes (``receipts.text_sha256``) in SQL: Django's own
    SHA256 on SQLite; core ``sha256()`` on PostgreSQL (Django's needs the pgcrypto extension)."""

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler,
            connection,
            template="encode(sha256(convert_to(%(expressions)s, 'UTF8')), 'hex')",
            **extra,
        )


#: Every value read: output column -> (ORM path or expression, kind). None for a raw value,
#: read through :data:`RAW_VALUES`. Kinds (how each is written): services/export_sql.py.
_SOURCES: dict[str, tuple[Any, str]] = {
    "id": ("id", "int"),
    "profile_id": ("profile_id", "int"),
    "email": (None, "text"),
    "phone_number": (None, "text"),
    "external_id": (None, "text"),
    "channel": ("channel", "text"),
    "purpose": ("purpose", "text"),
    "consent": ("consent", "text"),
    "suppression": ("suppression", "text"),
    "list_id": ("list_id", "text"),
    "method": ("method", "text"),
    "method_detail": ("method_detail", "text"),
    "custom_source": ("custom_source", "text"),
    "consent_text": ("consent_text", "text"),
    # An event from before versioned texts maps to its words by their SHA-256 (as its leaf).
    "consent_text_sha256": (
        Coalesce(
            "consent_text_version__sha256",
            Case(When(~Q(consent_text=""), then=_TextSHA256("consent_text"))),
            output_field=TextField(),
        ),
        "text",
    ),
    "consent_text_id": ("consent_text_version_id", "int"),
    "consent_text_key": ("consent_text_version__key", "text"),
    "consent_text_version": ("consent_text_version__version", "int"),
    "consent_text_locale": ("consent_text_version__locale", "text"),
    "recorded_at": ("recorded_at", "time"),
    "consented_at": ("consented_at", "time"),
    "historical_import": ("historical_import", "bool"),
    "ip_address": (None, "ip"),
    "user_agent": (None, "text"),
    "page_url": (None, "text"),
    "recorded_by": ("recorded_by_label", "text"),
    "klaviyo_data": ("klaviyo_data", "json"),
    "verdict": ("page_delivery__status", "text"),
    "verdict_reason": ("page_delivery__reason", "text"),
    "verified_at": ("page_delivery__verified_at", "time"),
    "leaf_index": ("page_leaf__leaf_index", "int"),
    "leaf_hash": ("page_leaf__leaf_hash", "text"),
    "digests": ("page_leaf__digests", "json"),
}

#: The columns of an export, in order (the CSV header; the keys of each JSON line).
COLUMNS: tuple[str, ...] = tuple(_SOURCES)
_KINDS = tuple((column, kind) for column, (_, kind) in _SOURCES.items())


def _expression(column: str, source: Any) -> Any:
    source = RAW_VALUES[column] if source is None else source
    return F(source) if isinstance(source, str) else source


@dataclass(frozen=True)
class ExportFilters:
    """Which events an export holds: ``since`` ≤ recorded_at < ``until`` (aware datetimes),
    one ``channel``, one person (``profile``: that profile and those merged into it)."""

    since: datetime | None = None
    until: datetime | None = None
    channel: str | None = None
    profile: int | None = None


def _moment(value: str, field: str, *, end_of_day: bool) -> datetime:
    """An ISO 8601 date or date-time, in UTC; naive ones are read in the current time zone
    (TIME_ZONE). A date at the end of the calendar, or a time whose UTC falls outside it, is
    refused like any other unreadable value."""
    try:
        # A date first: parse_datetime also reads "2026-01-31", as midnight.
        day = parse_date(value)
        if day is not None:
            moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time())
        else:
            moment = parse_datetime(value)
        if moment is not None:
            if timezone.is_naive(moment):
                moment = timezone.make_aware(moment)
            return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    raise ConsentValidationError(
        "Give an ISO 8601 date (2026-01-31) or date-time (2026-01-31T12:00:00Z).", field=field
    )


def parse_format(value: str | None, *, field: str = "format") -> str:
    """``csv`` (the default for None or "") or ``jsonl``; anything else names ``field``."""
    value = value or "csv"
    if value not in CONTENT_TYPES:
        raise ConsentValidationError("Use csv or jsonl.", field=field)
    return value


def parse_filters(
    *,
    since: str | None = None,
    until: str | None = None,
    channel: str | None = None,
    profile: str | None = None,
    fields: Mapping[str, str] | None = None,
) -> ExportFilters:
    """The filters from their text form (a query string's or a command line's).

    ``since``/``until``: ISO 8601 date-times (``until`` exclusive) or dates (``until`` a date
    includes that whole day), naive ones in TIME_ZONE. ``channel``: ``email`` or ``sms``.
    ``profile``: a profile id; the export holds that person's events including those of
    profiles merged into it (as their receipts do).

    :raises ConsentValidationError: ``field`` names the bad one, as ``fields`` spells it
        (e.g. ``{"since": "--since"}`` for a command).
    """
    name = {key: key for key in ("since", "until", "channel", "profile")} | dict(fields or {})
    start = _moment(since, name["since"], end_of_day=False) if since else None
    end = _moment(until, name["until"], end_of_day=True) if until else None
    if start and end and end <= start:
        raise ConsentValidationError("Must be later than since.", field=name["until"])
    if channel and channel not in Channel.values:
        raise ConsentValidationError("Use email or sms.", field=name["channel"])
    profile_id = None
    if profile:
        profile_id = parse_row_id(profile)
        if profile_id is None:
            raise ConsentValidationError("A profile id is a whole number.", field=name["profile"])
        if not Profile.objects.filter(pk=profile_id).exists():
            raise ConsentValidationError("No profile has this id.", field=name["profile"])
    return ExportFilters(since=start, until=end, channel=channel or None, profile=profile_id)


def _queryset(filters: ExportFilters) -> Any:
    events = ConsentEvent.objects.all()
    if filters.since is not None:
        events = events.filter(recorded_at__gte=filters.since)
    if filters.until is not None:
        events = events.filter(recorded_at__lt=filters.until)
    if filters.channel:
        events = events.filter(channel=filters.channel)
    if filters.profile is not None:
        merged = Profile.objects.filter(merged_into_id=filters.profile).values_list("pk", flat=True)
        events = events.filter(profile_id__in=[filters.profile, *merged])
    return events


#: The event's one-to-one rows, joined under these names with the page's id range in their ON
#: clause: without it PostgreSQL merge-joined every page against those tables from their first
#: row (the last page of a million-row export read 900,000 rows of each).
_JOINED = {"delivery": "page_delivery", "ledger_entry": "page_leaf"}


def select(filters: ExportFilters, *, after: int = 0, through: int | None = None) -> Any:
    """The one SELECT an export pages through: :data:`COLUMNS`' sources aliased ``c0``…``cN``,
    for the events with ``after`` < id ≤ ``through``, in id order, as a ``values_list``
    queryset (the benchmark's COPY baseline runs it too)."""
    events = _queryset(filters).filter(id__gt=after)
    window = {}
    for relation, alias in _JOINED.items():
        condition = Q(**{f"{relation}__event_id__gt": after})
        if through is not None:
            condition &= Q(**{f"{relation}__event_id__lte": through})
        window[alias] = FilteredRelation(relation, condition=condition)
    if through is not None:
        events = events.filter(id__lte=through)
    named = {
        f"c{i}": _expression(column, source)
        for i, (column, (source, _)) in enumerate(_SOURCES.items())
    }
    return events.annotate(**window).order_by("id").annotate(**named).values_list(*named)


def count(filters: ExportFilters) -> int:
    """How many events an export with ``filters`` holds now (for a progress bar's total)."""
    return _queryset(filters).count()


def lines(
    filters: ExportFilters, fmt: str = "csv", *, chunk_size: int = 5000
) -> Iterator[list[str]]:
    """The export's lines (no line ends, no header), ``chunk_size`` events per list.

    Keyset pages on the event id, each line written by the database (services/export_sql.py);
    memory is bounded by one page. Events up to the largest id present when it began.
    """
    ceiling = _queryset(filters).aggregate(top=Max("id"))["top"]
    if ceiling is None:
        return
    connection = connections[ConsentEvent.objects.db]
    last = 0
    while True:
        page = select(filters, after=last, through=ceiling)[:chunk_size]
        inner, params = page.query.sql_with_params()
        sql = export_sql.lines(connection.vendor, fmt, _KINDS, inner)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            chunk = cursor.fetchall()
        if not chunk:
            return
        yield [line for _, line in chunk]
        last = chunk[-1][0]
        if len(chunk) < chunk_size:
            return


def _copied(filters: ExportFilters, fmt: str, chunk_size: int) -> Iterator[tuple[str, int]]:
    """PostgreSQL: the whole export as one ``COPY … TO STDOUT``, ``chunk_size`` rows a piece.

    One statement and one snapshot, written by the server's own COPY writer and streamed by
    psycopg a row at a time: a keyset page per query ran at a third of COPY's speed. The
    connection is busy until the last piece is read or the generator is closed.
    """
    import psycopg  # the postgres extra; only a PostgreSQL connection reaches here

    connection = connections[ConsentEvent.objects.db]
    inner, params = select(filters).query.sql_with_params()
    connection.ensure_connection()
    raw = connection.connection
    statement = export_sql.copy(fmt, _KINDS, psycopg.ClientCursor(raw).mogrify(inner, params))
    blocks: list[bytes] = []
    header = int(fmt == "csv")  # COPY's first block is the CSV header, not a row
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for block in copy:  # one row per block
            blocks.append(bytes(block))
            if len(blocks) == chunk_size:
                yield b"".join(blocks).decode("utf-8"), len(blocks) - header
                blocks, header = [], 0
    if blocks:
        yield b"".join(blocks).decode("utf-8"), len(blocks) - header


def _paged(filters: ExportFilters, fmt: str, chunk_size: int) -> Iterator[tuple[str, int]]:
    newline = export_sql.NEWLINE[fmt]
    if fmt == "csv":
        yield export_sql.header(_KINDS), 0
    for chunk in lines(filters, fmt, chunk_size=chunk_size):
        yield newline.join(chunk) + newline, len(chunk)


def export(
    filters: ExportFilters,
    fmt: str = "csv",
    *,
    chunk_size: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The export as text pieces of about ``chunk_size`` rows each (a CSV header first).

    ``fmt``: ``csv`` (RFC 4180 quoting, LF line ends, a header row, spreadsheet-safe text
    cells, JSON objects as JSON text, booleans ``true``/``false``, null as an empty cell) or
    ``jsonl`` (one JSON object per line, keys :data:`COLUMNS`). Times are UTC RFC 3339 with
    microseconds, as in the leaf. ``progress(n)`` is told each time ``n`` more rows were
    written. Lazy: nothing is read until the first piece is asked for. On PostgreSQL one
    ``COPY`` (one snapshot); elsewhere keyset pages (:func:`lines`).
    """
    fmt = parse_format(fmt)
    vendor = connections[ConsentEvent.objects.db].vendor
    pieces = _copied if vendor == "postgresql" else _paged
    for piece, rows in pieces(filters, fmt, chunk_size):
        yield piece
        if progress is not None and rows:
            progress(rows)


def leaf_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The leaf record (the receipt's ``record``) rebuilt from one exported JSON line.

    ``receipts.record_leaf_hash(leaf_record(row)) == row["leaf_hash"]`` for every row in the
    ledger; with an inclusion proof for ``row["leaf_index"]`` that checks the row against a
    signed checkpoint. Field sources: docs/receipts.md.
    """
    digests = row.get("digests") or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "record_id": row["id"],
        "pii_principal_id": {
            "profile_id": row["profile_id"],
            "email": digests.get("email"),
            "phone_number": digests.get("phone_number"),
            "external_id": digests.get("external_id"),
        },
        "purpose": {
            "channel": row["channel"],
            "purpose": row["purpose"],
            "list_id": row["list_id"],
        },
        "consent_state": row["consent"],
        "suppression": row["suppression"],
        "collection_method": {
            "method": row["method"],
            "method_detail": row["method_detail"],
            "custom_source": row["custom_source"],
        },
        "notice": {
            "consent_text_sha256": row["consent_text_sha256"],
            "key": row["consent_text_key"],
            "version": row["consent_text_version"],
            "locale": row["consent_text_locale"],
        },
        "timestamps": {
            "recorded_at": row["recorded_at"],
            "consented_at": row["consented_at"],
            "historical_import": row["historical_import"],
        },
        "evidence": {
            "ip_address": digests.get("ip_address"),
            "user_agent": digests.get("user_agent"),
            "page_url": digests.get("page_url"),
            "recorded_by": digests.get("recorded_by"),
        },
        "klaviyo_data": row["klaviyo_data"] or {},
    }
