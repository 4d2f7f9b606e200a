"""Import consent from a CSV file, streamed in batches: bad rows to a rejects file (or, without
one, all rows or none), one push when it ends, a summary."""

from __future__ import annotations

import csv
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import tzinfo
from functools import partial
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from klaviyo_consent.choices import Consent, Method
from klaviyo_consent.csvrows import (  # noqa: F401 - request_from_row: the import's to_request
    COLUMNS,
    REJECT_COLUMNS,
    CsvFileError,
    member_from_row,
    parse_consented_at,
    read_rows,
    request_from_row,
)
from klaviyo_consent.csvsafe import neutralize
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.services.imports import (
    BATCH_SIZE,
    BatchFailed,
    ImportReport,
    Rejected,
    RowRejected,
    import_rows,
)
from klaviyo_consent.services.membership import MAX_PROFILES, record_membership
from klaviyo_consent.validators import KLAVIYO_ID

#: The rejects file's extra columns, after the file's own.


def _record_members(list_id: str, batch: list[tuple[int, dict[str, str]]]) -> None:
    """Record one batch of ``--members-only`` rows; an error names its row's line."""
    try:
        record_membership(list_id, [p for _, p in batch], action="add", method=Method.IMPORT)
    except ConsentValidationError as error:
        parts = (error.field or "").split(".")
        index = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        raise _MemberRowError(batch[index][0], error) from error


class _MemberRowError(Exception):
    def __init__(self, line: int, error: ConsentValidationError) -> None:
        super().__init__(error.message)
        self.line, self.error = line, error


def _zone(name: str | None) -> tzinfo:
    if not name:
        return timezone.get_default_timezone()
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise CommandError(
            f"--timezone {name!r} is not an IANA time zone, e.g. Europe/London."
        ) from exc


class Command(BaseCommand):
    help = (
        "Record consent from a CSV with a header row: email, phone_number, external_id, "
        "country (ISO 3166-1 alpha-2, for national phone numbers), email_marketing, "
        "sms_marketing, sms_transactional (yes/no), consented_at, consent_text, method_detail. "
        "Streamed in batches; safe to run twice (rows already recorded are skipped)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--list-id", default="")
        parser.add_argument("--custom-source", default="")
        parser.add_argument(
            "--unsubscribe", action="store_true", help="Rows are withdrawals, not consents."
        )
        parser.add_argument(
            "--historical-import",
            action="store_true",
            help="Consent given earlier: every row needs consented_at (Klaviyo's rule).",
        )
        parser.add_argument(
            "--members-only",
            action="store_true",
            help="Rows are people to add to --list-id without consent (Klaviyo keeps them "
            "NEVER_SUBSCRIBED); only email, phone_number, external_id and country are read.",
        )
        parser.add_argument(
            "--encoding",
            default=None,
            help="The file's encoding, e.g. cp1252 or latin-1 (default: UTF-8, with or without "
            "BOM, or UTF-16 with BOM).",
        )
        parser.add_argument(
            "--timezone",
            default=None,
            help="IANA zone a consented_at without a zone is read in (default: TIME_ZONE).",
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--rejects",
            type=Path,
            default=None,
            metavar="FILE",
            help="Write bad rows to FILE (the row, its line number, the reason) and keep the "
            "good ones (default: <file>.rejects.csv beside the file, written only if a row is "
            "rejected).",
        )
        mode.add_argument(
            "--all-or-nothing",
            action="store_true",
            help="One transaction: the first bad row stops the import and nothing is recorded.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read, check and count everything, then roll back: nothing is recorded.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=BATCH_SIZE,
            help=f"Rows per transaction (default {BATCH_SIZE}).",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="No progress bar (e.g. in cron)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        if options["members_only"]:
            self._members_only(path, options)
            return
        to_request = partial(
            request_from_row,
            consent=Consent.UNSUBSCRIBED if options["unsubscribe"] else Consent.SUBSCRIBED,
            list_id=options["list_id"],
            custom_source=options["custom_source"],
            historical_import=options["historical_import"],
            zone=_zone(options["timezone"]),
            source=path.name,
        )
        keep_good = not options["all_or_nothing"]
        nothing = "" if keep_good and not options["dry_run"] else " Nothing was imported."
        rejects: Path | None = None
        if keep_good:
            rejects = options["rejects"] or path.with_name(f"{path.stem}.rejects.csv")
        try:
            rows = read_rows(path, options["encoding"])
            with ExitStack() as stack:
                on_reject = None
                if rejects is not None:
                    on_reject = stack.enter_context(_rejects_file(rejects, path))
                progress = stack.enter_context(self._progress(path, options["no_progress"]))
                report = import_rows(
                    rows,
                    to_request,
                    all_or_nothing=not keep_good,
                    dry_run=options["dry_run"],
                    batch_size=options["batch_size"],
                    on_reject=on_reject,
                    progress=progress,
                )
        except OSError as exc:
            raise CommandError(f"Cannot read {exc.filename or path}: {exc.strerror}") from exc
        except ValueError as exc:  # an unknown --encoding
            raise CommandError(str(exc)) from exc
        except CsvFileError as error:
            kept = (
                " The rows before it that were read were recorded; fix the file and run the "
                "import again (rows already recorded are skipped)."
                if not nothing and error.line > 1
                else ""
            )
            raise CommandError(
                f"{path}, line {error.line}: {error.message}{nothing or kept}"
            ) from None
        except BatchFailed as error:
            kept = "" if nothing else f" Rows before line {error.first_line} were recorded."
            raise CommandError(f"{path}, {error}.{nothing or kept}") from error
        except RowRejected as error:
            raise CommandError(
                f"{path}, line {error.rejected.line}: {error.rejected.reason}{nothing}"
            ) from error
        self.stdout.write(_summary(report, path))
        if report.rejected and rejects is not None:
            self.stderr.write(
                f"{report.rejected:,} row(s) rejected: each is in {rejects} with its line "
                "number and the reason; fix them there and import that file."
            )

    def _members_only(self, path: Path, options: dict[str, Any]) -> None:
        """``--members-only``: every row added to ``--list-id`` without consent, all or none
        (``services.membership.record_membership``, ``MAX_PROFILES`` a call)."""
        list_id = options["list_id"]
        if not list_id:
            raise CommandError("--members-only needs --list-id: the list to add the rows to.")
        if not KLAVIYO_ID.fullmatch(list_id):
            raise CommandError("--list-id is not a Klaviyo list id: letters and digits only.")
        if options["rejects"] is not None:
            raise CommandError(
                "--members-only imports all rows or none: --rejects is not available with it."
            )
        dry_run = options["dry_run"]
        members: list[tuple[int, dict[str, str]]] = []
        count, line = 0, 1
        try:
            with transaction.atomic():
                for line, row in read_rows(path, options["encoding"]):
                    members.append((line, member_from_row(row)))
                    count += 1
                    if len(members) == MAX_PROFILES:
                        _record_members(list_id, members)
                        members = []
                if members:
                    _record_members(list_id, members)
                if dry_run:
                    transaction.set_rollback(True)
        except OSError as exc:
            raise CommandError(f"Cannot read {exc.filename or path}: {exc.strerror}") from exc
        except ValueError as exc:
            if isinstance(exc, ConsentValidationError):
                raise CommandError(
                    f"{path}, line {line}: {exc.field or 'row'}: {exc.message} "
                    "Nothing was imported."
                ) from exc
            raise CommandError(str(exc)) from exc
        except CsvFileError as error:
            raise CommandError(
                f"{path}, line {error.line}: {error.message} Nothing was imported."
            ) from None
        except _MemberRowError as failure:
            raise CommandError(
                f"{path}, line {failure.line}: {failure.error.field or 'row'}: "
                f"{failure.error.message} Nothing was imported."
            ) from failure
        verb = "Would record" if dry_run else "Recorded"
        self.stdout.write(
            f"{verb} {count} row(s) of {path} as members of list {list_id} (no consent)."
            + (" Dry run: nothing was recorded." if dry_run else "")
        )

    @contextmanager
    def _progress(self, path: Path, hidden: bool) -> Iterator[Callable[[int], None] | None]:
        """A progress bar on stderr (rich, the optional "progress" extra), counting rows."""
        if hidden:
            yield None
            return
        try:
            from rich.progress import Progress
        except ImportError:  # without rich: a line per 100,000 rows
            seen = [0]

            def advance(n: int) -> None:
                seen[0] += n
                if seen[0] % 100_000 < n:
                    self.stderr.write(f"{seen[0]:,} rows read")

            yield advance
            return
        from rich.console import Console
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        console = Console(file=getattr(self.stderr, "_out", self.stderr))
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}: {task.completed:,} rows"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task(f"Importing {path.name}", total=None)
            yield lambda n: progress.advance(bar, n)


@contextmanager
def _rejects_file(target: Path, source: Path) -> Iterator[Callable[[Rejected], None]]:
    """Write each rejected row to ``target`` as CSV: the file's columns, then line and reason.

    The row's own cells are written exactly as read, so the fixed file imports again (a phone
    number's leading ``+`` must survive); they are the operator's own file's cells, not new
    ones. The ``reason`` cell, our words quoting a value, is neutralised (``csvsafe``).
    """
    file: Any = None  # opened at the first rejected row: a clean import leaves no file
    writer: Any = None

    def write(rejected: Rejected) -> None:
        nonlocal file, writer
        row = {k: v for k, v in rejected.row.items() if k is not None}
        if writer is None:
            file = target.open("w", encoding="utf-8", newline="")
            writer = csv.DictWriter(file, fieldnames=[*row, *REJECT_COLUMNS], extrasaction="ignore")
            writer.writeheader()
        extra = rejected.row.get(None)  # type: ignore[call-overload]
        reason = rejected.reason + (f" (extra values: {extra})" if extra else "")
        writer.writerow({**row, "line": rejected.line, "reason": neutralize(reason)})

    try:
        yield write
    finally:
        if file is not None:
            file.close()


def _summary(report: ImportReport, path: Path) -> str:
    verb = "Would record" if report.dry_run else "Recorded"
    history = f", {report.history:,} of them as history (not pushed)" if report.history else ""
    return (
        f"{path}: {report.read:,} row(s) read; {verb.lower()} {report.recorded:,} "
        f"({report.events:,} event(s){history}); skipped {report.skipped:,} already recorded; "
        f"rejected {report.rejected:,}."
        + (" Dry run: nothing was recorded." if report.dry_run else "")
    )
