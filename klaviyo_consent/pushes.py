"""When the push to Klaviyo is scheduled: once per transaction, or once for a whole bulk load.

A transaction that records a thousand people (a suppression of 1,000 emails, an import batch)
schedules one push, not a thousand: the outbox holds every row, and one sync run sends them
all as bulk jobs. A bulk load that commits in several transactions (``klaviyo_consent_import``)
holds its pushes with :func:`one_push` and schedules a single one when it ends.

``receivers.push_on_commit`` is the only caller of :func:`on_commit_once` and :func:`held`;
services call :func:`one_push`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from django.db import transaction

from klaviyo_consent.signals import bulk_recorded


@dataclass
class _Hold:
    recorded: int = 0


_hold: ContextVar[_Hold | None] = ContextVar("klaviyo_consent_push_hold", default=None)


def on_commit_once(func: Callable[[], None], using: str | None = None) -> None:
    """``transaction.on_commit(func)`` unless this transaction already has ``func`` scheduled.

    Outside a transaction ``func`` runs now, as ``on_commit`` does. A callback scheduled inside
    a savepoint that was rolled back is gone from Django's list, so the next caller schedules
    it again.
    """
    connection = transaction.get_connection(using)
    if connection.in_atomic_block and any(entry[1] is func for entry in connection.run_on_commit):
        return
    transaction.on_commit(func, using=using, robust=True)


def held(recorded: int) -> bool:
    """True inside :func:`one_push` (which then counts ``recorded`` and pushes at its end)."""
    hold = _hold.get()
    if hold is None:
        return False
    hold.recorded += recorded
    return True


@contextmanager
def one_push() -> Iterator[None]:
    """Hold the on-commit push of every transaction inside the block; one push when it ends.

    When the block recorded anything, :data:`~klaviyo_consent.signals.bulk_recorded` is sent
    as it ends (even when it ends with an error: the batches it committed are pushed, and a
    push that finds nothing due does nothing); its receiver schedules the push on commit, so
    right away outside a transaction. A nested block belongs to the outermost one.
    """
    if _hold.get() is not None:
        yield
        return
    hold = _Hold()
    token = _hold.set(hold)
    try:
        yield
    finally:
        _hold.reset(token)
        if hold.recorded:
            bulk_recorded.send(sender=None, events=hold.recorded)
