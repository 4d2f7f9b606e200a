"""``manage.py klaviyo_consent_export``: the consent ledger as CSV or JSON Lines, streamed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.services import export


class Command(BaseCommand):
    help = (
        "Export every consent event with its evidence, consent text hash and version, "
        "Klaviyo's verdict and its Merkle leaf hash, in constant memory (docs/api.md lists "
        "the columns)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--format", choices=sorted(export.CONTENT_TYPES), default="csv")
        parser.add_argument("--since", help="ISO 8601 date or date-time: recorded at or after")
        parser.add_argument(
            "--until", help="ISO 8601 date-time (exclusive) or date (that whole day included)"
        )
        parser.add_argument("--channel", help="email or sms")
        parser.add_argument("--profile", help="a profile id: that person's events")
        parser.add_argument("--output", help="write to FILE (default: standard output)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            filters = export.parse_filters(
                since=options["since"],
                until=options["until"],
                channel=options["channel"],
                profile=options["profile"],
                fields={name: f"--{name}" for name in ("since", "until", "channel", "profile")},
            )
        except ConsentValidationError as error:
            raise CommandError(f"{error.field}: {error.message}") from None
        output = options["output"]
        show = not options["no_progress"]
        counter = _Counter()
        with self._progress(counter, export.count(filters) if show else 0, show) as advance:
            self._write(export.export(filters, options["format"], progress=advance), output)
        where = output or "standard output"
        # The summary never goes where the export does.
        (self.stdout if output else self.stderr).write(
            f"Exported {counter.rows} events to {where}."
        )

    def _write(self, pieces: Iterator[str], output: str | None) -> None:
        if not output:
            for piece in pieces:
                self.stdout.write(piece, ending="")
            return
        if os.path.exists(output) and not os.path.isfile(output):
            # /dev/stdout, /dev/null, a pipe: written in place, never replaced by a file.
            self._write_to(pieces, output, output)
            return
        # Written beside the target and moved into place at the end: a run that stops half
        # way never leaves a file that looks like a whole export.
        partial = f"{output}.partial"
        self._write_to(pieces, partial, output)
        os.replace(partial, output)

    def _write_to(self, pieces: Iterator[str], path: str, output: str) -> None:
        try:
            with open(path, "w", encoding="utf-8", newline="") as file:
                for piece in pieces:
                    file.write(piece)
        except OSError as error:
            raise CommandError(f"--output: cannot write {output}: {error.strerror}") from None

    @contextmanager
    def _progress(
        self, counter: _Counter, total: int, show: bool
    ) -> Iterator[Callable[[int], None]]:
        """A rich progress bar on standard error (standard output may be the export), or
        plain lines every 100,000 rows when the optional ``progress`` extra is missing."""
        if not show:
            yield counter.add
            return
        try:
            from rich.console import Console
            from rich.progress import Progress
        except ImportError:
            yield counter.plain(self.stderr.write)
            return
        with Progress(console=Console(file=self.stderr._out), transient=False) as progress:
            bar = progress.add_task("Exporting consent events", total=total)

            def advance(n: int) -> None:
                counter.add(n)
                progress.advance(bar, n)

            yield advance


class _Counter:
    """Rows written so far."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, n: int) -> None:
        self.rows += n

    def plain(self, write: Callable[[str], Any]) -> Callable[[int], None]:
        def advance(n: int) -> None:
            before = self.rows
            self.add(n)
            if self.rows // 100_000 > before // 100_000:
                write(f"{self.rows} events exported")

        return advance
