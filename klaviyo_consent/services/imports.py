"""Importing consent in bulk: rows streamed in batches, each batch's people found or created at
once, its events appended together, one push for the whole import.

The rules are :func:`~klaviyo_consent.services.ledger.record_consent`'s, row by row and in file
order (a row sees the people and events of the rows before it), applied to a batch at a time:
one query finds every person a batch names, one INSERT creates the new ones, one
``ConsentEvent.objects.append`` writes the events with their outbox rows.

**The identity of an imported row** (what makes an import idempotent). A row's event is
"already recorded" when the ledger holds, for the same person (a profile, or one merged into
it), channel and purpose, an imported event with the same consent, ``consented_at``, list and
``custom_source``. A row without ``consented_at`` has no time of its own (it is timed when
recorded): it counts as already recorded while the person's latest event for that channel and
purpose is such an undated import with the same consent, list and source; after any later
event it is a new consent again. Consent text, ``method_detail`` and the file's name are
evidence, not identity: a row re-imported with other words is the same consent. So the same
file twice records nothing new, and a row repeated in one file is one event. The lookup goes
through the profile and the event's own columns (never the erasable identifiers).

**History is not the present.** A dated consent older than the ledger's latest event for its
person, channel and purpose is recorded as history: its delivery goes straight to
``history`` (``outbox.mark_history``) and it is never pushed, so an old opt-in never undoes a
later opt-out. Newer ones are pushed with ``historical_import: true`` and their
``consented_at`` (``jobs.build_jobs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from django.db import DatabaseError, IntegrityError, OperationalError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from klaviyo_consent.choices import DeliveryStatus, Method
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import (
    ConsentEvent,
    ConsentText,
    Delivery,
    IdentityChange,
    IdentityEvent,
    Profile,
)
from klaviyo_consent.models.bulk import insert, new
from klaviyo_consent.pushes import one_push
from klaviyo_consent.services.ledger import (
    IDENTIFIERS,
    RACE_ATTEMPTS,
    ConsentRequest,
    build_events,
    check_profile,
    clean_request,
    latest_events,
    match_profile,
)
from klaviyo_consent.services.outbox import mark_history
from klaviyo_consent.services.texts import resolve_text
from klaviyo_consent.signals import consent_recorded, identity_changed

#: Rows written per transaction (and per INSERT): big enough that a million rows are a
#: thousand transactions, small enough that a batch's people fit one query.
BATCH_SIZE = 1000

#: ``Delivery.reason`` of an event recorded as history.
HISTORY_REASON = (
    "recorded as history, not pushed: older than the ledger's latest event for this person, "
    "channel and purpose"
)


@dataclass(frozen=True)
class Rejected:
    """A row not imported: its line in the file, its values as read, and why (field: message)."""

    line: int
    row: Mapping[Any, Any]
    reason: str


class RowRejected(Exception):
    """An all-or-nothing import met a bad row: nothing is written."""

    def __init__(self, rejected: Rejected) -> None:
        super().__init__(f"line {rejected.line}: {rejected.reason}")
        self.rejected = rejected


@dataclass
class ImportReport:
    """What an import did: rows read, recorded, skipped as already recorded, rejected.

    ``events`` counts the events written (a row may give up to three); ``history`` those of
    them recorded as history, not pushed.
    """

    read: int = 0
    recorded: int = 0
    skipped: int = 0
    rejected: int = 0
    events: int = 0
    history: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class BatchFailed(Exception):
    """The database refused a batch for a reason no row rule foresaw; earlier batches stay
    recorded (unless all-or-nothing)."""

    def __init__(self, first_line: int, last_line: int, error: Exception) -> None:
        super().__init__(f"lines {first_line}-{last_line}: {type(error).__name__}: {error}")
        self.first_line, self.last_line, self.error = first_line, last_line, error


class _DryRun(Exception):
    """Raised at the end of a dry run to roll everything back."""


def import_rows(
    rows: Iterable[tuple[int, Mapping[Any, Any]]],
    to_request: Callable[[Mapping[Any, Any]], ConsentRequest],
    *,
    all_or_nothing: bool = False,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    on_reject: Callable[[Rejected], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Record consent from ``rows`` ((line number, row) pairs, streamed), batch by batch.

    ``to_request`` turns a row into a :class:`ConsentRequest` (e.g. ``csvrows.request_from_row``),
    raising :class:`ConsentValidationError` for a bad value. Each batch of ``batch_size`` rows
    is one transaction; a bad row goes to ``on_reject`` and the others are kept. With
    ``all_or_nothing`` the whole import is one transaction and the first bad row raises
    :class:`RowRejected` (nothing written). ``dry_run`` does all the work in one transaction and
    rolls it back: the report (and the rejects) say what an import would do. ``progress(n)`` is
    called with the rows of each batch done. One push is scheduled when the import ends
    (``pushes.one_push``), not one per row or batch.
    """
    report = ImportReport(dry_run=dry_run)
    importer = _Importer(report, all_or_nothing=all_or_nothing, on_reject=on_reject)
    batches = _batches(rows, batch_size)
    with one_push():
        if not (all_or_nothing or dry_run):
            for batch in batches:
                importer.run(batch, to_request, batch_size)
                if progress:
                    progress(len(batch))
            return report
        try:
            with transaction.atomic():
                for batch in batches:
                    importer.run(batch, to_request, batch_size)
                    if progress:
                        progress(len(batch))
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
    return report


def _batches(
    rows: Iterable[tuple[int, Mapping[Any, Any]]], size: int
) -> Iterator[list[tuple[int, Mapping[Any, Any]]]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass
class _Row:
    """A row that passed the rules needing no profile, on its way to the ledger."""

    line: int
    row: Mapping[Any, Any]
    request: ConsentRequest
    email: str | None
    phone: str | None
    changes: list[tuple[str, str]]
    profile: Profile | None = None
    events: list[ConsentEvent] = field(default_factory=list)


@dataclass
class _Latest:
    """The present for one person, channel and purpose: when, and the undated import it is
    (consent, list, source), if it is one."""

    effective_at: datetime
    undated_import: tuple[str, str, str] | None = None


def _reason(error: Exception) -> str:
    """A rejection's reason: the field and the message, as a CommandError names them."""
    if isinstance(error, ConsentValidationError):
        return f"{error.field or 'row'}: {error.message}"
    return f"row: {type(error).__name__}: {error}"


class _Importer:
    def __init__(
        self,
        report: ImportReport,
        *,
        all_or_nothing: bool,
        on_reject: Callable[[Rejected], None] | None,
    ) -> None:
        self.report = report
        self.all_or_nothing = all_or_nothing
        self.on_reject = on_reject
        self.texts: dict[tuple[str, int | None], ConsentText | None] = {}

    def run(
        self,
        batch: list[tuple[int, Mapping[Any, Any]]],
        to_request: Callable[[Mapping[Any, Any]], ConsentRequest],
        batch_size: int,
    ) -> None:
        self.report.read += len(batch)
        rejected: list[Rejected] = []
        cleaned: list[_Row] = []
        for line, row in batch:
            try:
                request = to_request(row)
                email, phone, changes = clean_request(request)
            except (ConsentValidationError, ValueError) as error:
                rejected.append(Rejected(line, row, _reason(error)))
                continue
            cleaned.append(_Row(line, row, request, email, phone, changes))
        for attempt in range(RACE_ATTEMPTS):
            late: list[Rejected] = []
            try:
                with transaction.atomic():
                    written = self._write(cleaned, rejected, late, batch_size)
                break
            except (IntegrityError, OperationalError) as error:
                # Another writer created or changed one of these people meanwhile: the batch
                # is rolled back whole and read again (record_consent does the same).
                self.texts.clear()
                if attempt == RACE_ATTEMPTS - 1:
                    raise BatchFailed(batch[0][0], batch[-1][0], error) from error
            except DatabaseError as error:  # e.g. a value the column cannot hold
                raise BatchFailed(batch[0][0], batch[-1][0], error) from error
        rejected.extend(late)
        rejected.sort(key=lambda r: r.line)
        for item in rejected:
            self.report.rejected += 1
            if self.on_reject:
                self.on_reject(item)
        self.report.recorded += written.recorded
        self.report.skipped += written.skipped
        self.report.events += written.events
        self.report.history += written.history

    def _write(
        self,
        rows: list[_Row],
        early: list[Rejected],
        rejected: list[Rejected],
        batch_size: int,
    ) -> ImportReport:
        """Write one batch (inside its transaction); ``early``: rows the batch already refused,
        ``rejected`` gets those refused here (who the person is)."""
        done = ImportReport()
        people = _People.lookup(rows)
        kept: list[_Row] = []
        for row in rows:
            try:
                row.profile = people.resolve(row)
            except (ConsentValidationError, ValueError) as error:  # IdentityConflict included
                rejected.append(Rejected(row.line, row.row, _reason(error)))
                continue
            kept.append(row)
        if self.all_or_nothing and (early or rejected):
            # The file's first bad row, whichever rule refused it.
            raise RowRejected(min(early + rejected, key=lambda r: r.line))
        people.save(batch_size)
        state = _Ledger.read(people)
        now = timezone.now()
        events: list[ConsentEvent] = []
        history: list[ConsentEvent] = []
        for row in kept:
            assert row.profile is not None
            text = self._text(row.request)
            for event in build_events(
                row.request, row.profile, row.email, row.phone, row.changes, text, now
            ):
                verdict = state.place(row.profile, event, now)
                if verdict is None:
                    continue
                row.events.append(event)
                events.append(event)
                if verdict == "history":
                    history.append(event)
            if row.events:
                done.recorded += 1
            else:
                done.skipped += 1
        ConsentEvent.objects.append(events, batch_size=batch_size, next_attempt_at=now)
        if history:
            mark_history(Delivery.objects.filter(pk__in=[e.pk for e in history]), HISTORY_REASON)
            for event in history:
                event.delivery.status = DeliveryStatus.HISTORY
                event.delivery.reason = HISTORY_REASON
        by_profile: dict[int, list[ConsentEvent]] = {}
        for event in events:
            by_profile.setdefault(event.profile_id, []).append(event)
        profiles = {row.profile.pk: row.profile for row in kept if row.profile is not None}
        for pk, mine in by_profile.items():
            consent_recorded.send(sender=ConsentEvent, events=mine, profile=profiles[pk])
        done.events, done.history = len(events), len(history)
        return done

    def _text(self, request: ConsentRequest) -> ConsentText | None:
        key = (request.consent_text, request.consent_text_id)
        if key not in self.texts:
            if len(self.texts) >= 1000:  # a file of ever-new texts: memory stays bounded
                self.texts.clear()
            self.texts[key] = resolve_text(request.consent_text, request.consent_text_id)
        return self.texts[key]


class _People:
    """The people one batch names: found in one query, created or completed in memory in file
    order (the rules of ``ledger.match_profile`` and ``check_profile``), then saved at once."""

    def __init__(self, found: list[Profile]) -> None:
        self.index: dict[str, dict[str, Profile]] = {name: {} for name in IDENTIFIERS}
        for profile in found:
            self._register(profile)
        self.new: list[Profile] = []
        self.completed: dict[int, Profile] = {}
        self.added: list[tuple[Profile, str, str]] = []

    @classmethod
    def lookup(cls, rows: list[_Row]) -> _People:
        wanted: dict[str, set[str]] = {name: set() for name in IDENTIFIERS}
        for row in rows:
            for name, value in zip(
                IDENTIFIERS, (row.email, row.phone, row.request.external_id), strict=True
            ):
                if value:
                    wanted[name].add(value)
        condition = Q()
        for name, values in wanted.items():
            if values:
                condition |= Q(**{f"{name}__in": sorted(values)})
        found: list[Profile] = []
        if condition:
            # Locked in id order, as record_consent locks, so no two writers lock in a cycle.
            found = list(Profile.objects.select_for_update().filter(condition).order_by("pk"))
        return cls(found)

    def _register(self, profile: Profile) -> None:
        for name in IDENTIFIERS:
            value = getattr(profile, name)
            if value:
                self.index[name][value] = profile

    def resolve(self, row: _Row) -> Profile:
        """The row's person (found, or new and unsaved), its missing identifiers added; raises
        naming the field, changing nothing, when the row cannot be recorded for them."""
        external_id = row.request.external_id
        given = [
            (name, value)
            for name, value in zip(IDENTIFIERS, (row.email, row.phone, external_id), strict=True)
            if value
        ]
        profile = match_profile(given, lambda name, value: self.index[name].get(value))
        if profile is None:
            if not (row.email or row.phone):
                raise ConsentValidationError(
                    "No profile has this external_id; give an email or a phone_number.",
                    field="profile.external_id",
                )
            check_profile(row.request, row.phone, row.changes, row.email, row.phone)
            profile = new(Profile, email=row.email, phone_number=row.phone, external_id=external_id)
            self.new.append(profile)
            self._register(profile)
            return profile
        check_profile(
            row.request,
            row.phone,
            row.changes,
            profile.email or row.email,
            profile.phone_number or row.phone,
        )
        for name, value in given:
            if getattr(profile, name) is None:
                setattr(profile, name, value)
                self.index[name][value] = profile
                self.added.append((profile, name, value))
                if profile.pk is not None:
                    self.completed[profile.pk] = profile
        return profile

    def save(self, batch_size: int) -> None:
        """Create the new people, store the identifiers added to known ones (each an
        ``identifier_added`` identity event, as ``record_consent`` records it)."""
        insert(Profile, self.new, batch_size=batch_size)
        if self.completed:
            now = timezone.now()
            for profile in self.completed.values():
                profile.updated_at = now
            Profile.objects.bulk_update(
                list(self.completed.values()), [*IDENTIFIERS, "updated_at"], batch_size=batch_size
            )
        if not self.added:
            return
        records = IdentityEvent.objects.bulk_create(
            IdentityEvent(
                profile=profile,
                change=IdentityChange.IDENTIFIER_ADDED,
                field=name,
                new_value=value,
                method=Method.IMPORT,
            )
            for profile, name, value in self.added
        )
        mine: dict[int, list[IdentityEvent]] = {}
        for record in records:
            mine.setdefault(record.profile_id, []).append(record)
        for profile, _, _ in self.added:
            if profile.pk in mine:
                identity_changed.send(
                    sender=IdentityEvent, profile=profile, identity_events=mine.pop(profile.pk)
                )

    def known(self) -> list[int]:
        """The ids of the batch's people who existed before it."""
        new = {id(profile) for profile in self.new}
        return sorted(
            {
                profile.pk
                for values in self.index.values()
                for profile in values.values()
                if id(profile) not in new
            }
        )


class _Ledger:
    """What the ledger holds for a batch's people: the imported events that give a row its
    identity, and the present (latest event) of each channel and purpose; updated in memory
    as the batch places its own events, in file order."""

    def __init__(
        self,
        imported: set[tuple[Any, ...]],
        latest: dict[tuple[int, str, str], _Latest],
    ) -> None:
        self.imported = imported
        self.latest = latest

    @classmethod
    def read(cls, people: _People) -> _Ledger:
        known = people.known()
        if not known:
            return cls(set(), {})
        owner = Coalesce(F("profile__merged_into_id"), F("profile_id"))
        imported = {
            tuple(values)
            for values in ConsentEvent.objects.filter(
                profile_id__in=Profile.objects.filter(
                    Q(pk__in=known) | Q(merged_into_id__in=known)
                ).values("pk"),
                method=Method.IMPORT,
                consented_at__isnull=False,
            )
            .order_by()
            .annotate(owner=owner)
            .values_list(
                "owner", "channel", "purpose", "consent", "consented_at", "list_id", "custom_source"
            )
        }
        latest: dict[tuple[int, str, str], _Latest] = {}
        for pk, events in latest_events(known).items():
            for event in events:
                undated = (
                    (event.consent, event.list_id, event.custom_source)
                    if event.method == Method.IMPORT
                    and event.consented_at is None
                    and not event.suppression
                    else None
                )
                latest[(pk, event.channel, event.purpose)] = _Latest(event.effective_at, undated)
        return cls(imported, latest)

    def place(self, profile: Profile, event: ConsentEvent, now: datetime) -> str | None:
        """Where ``event`` goes: "present" (pushed), "history" (older than the present), or
        None (already recorded: skipped)."""
        assert profile.pk is not None
        key = (profile.pk, event.channel, event.purpose)
        current = self.latest.get(key)
        if event.consented_at is None:
            undated = (event.consent, event.list_id, event.custom_source)
            if current is not None and current.undated_import == undated:
                return None
            self.latest[key] = _Latest(now, undated)
            return "present"
        identity = (
            *key,
            event.consent,
            event.consented_at,
            event.list_id,
            event.custom_source,
        )
        if identity in self.imported:
            return None
        self.imported.add(identity)
        if current is not None and event.consented_at < current.effective_at:
            return "history"
        self.latest[key] = _Latest(event.consented_at)
        return "present"
