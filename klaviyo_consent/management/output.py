"""What the app's management commands show while they work: lines through rich when it is
installed (the ``progress`` extra), and the HTTP backend's read retries, which would otherwise
wait in silence."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.utils import timezone

from klaviyo_consent.services.reports import Waiting


def waiting_line(waiting: Waiting) -> str:
    """What a run waits for, in words: whether Klaviyo answered, how many events, until when."""
    due = timezone.localtime(waiting.due_at).strftime("%H:%M:%S %Z")
    until = timezone.localtime(waiting.gives_up_at).strftime("%H:%M:%S %Z")
    events = f"{waiting.pending} event{'s' if waiting.pending != 1 else ''}"
    head = "Klaviyo is unreachable" if waiting.unreachable else "Waiting for Klaviyo"
    why = f" ({waiting.reason})" if waiting.reason else ""
    return (
        f"{head}{why}: {events} wait; next try in {waiting.seconds:.0f} s at {due} "
        f"(try {waiting.attempts + 1}). Waiting until {until} at most, then the rest stays "
        "in the outbox (--no-wait: do not wait)."
    )


class Output:
    """Lines on the command's stdout, through rich when it is installed (the ``progress``
    extra): then a terminal also shows a spinner while the run waits."""

    def __init__(self, stdout: Any) -> None:
        self.stdout = stdout
        self.status: Any = None
        try:
            from rich.console import Console
        except ImportError:  # plain lines
            self.console = None
        else:
            self.console = Console(file=stdout, highlight=False, soft_wrap=True)

    def line(self, text: str, style: str = "") -> None:
        self.stop_waiting()
        if self.console is None:
            self.stdout.write(text)
        else:
            self.console.print(text, style=style or None, markup=False)

    def waiting(self, waiting: Waiting) -> None:
        self.line(waiting_line(waiting), style="yellow" if waiting.unreachable else "")
        if self.console is not None and self.console.is_terminal:
            self.status = self.console.status("waiting for the next try…")
            self.status.start()

    def stop_waiting(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


class _Told(logging.Handler):
    """Hands the backend's "retrying in N s" records to an :class:`Output`."""

    def __init__(self, out: Output) -> None:
        super().__init__(logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.out.line(record.getMessage(), style="yellow")


@contextmanager
def klaviyo_retries_told(out: Output) -> Iterator[None]:
    """While the block runs, each read the backend retries (Klaviyo unreachable, a 429, a 5xx)
    is a line on ``out``: "Klaviyo get_profiles: Klaviyo did not answer: ...; retrying in 4.0s".
    """
    backend_logger = logging.getLogger("klaviyo_consent.backends")
    handler = _Told(out)
    level = backend_logger.level
    backend_logger.addHandler(handler)
    if not backend_logger.isEnabledFor(logging.INFO):
        backend_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        backend_logger.removeHandler(handler)
        backend_logger.setLevel(level)
