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
from typing import Any

from django.db import transaction

from klaviyo_consent.signals import bulk_recorded


@dataclass
class _Hold:
    recorded: int = 0


_hold: ContextVar[_Hold | None] = ContextVar("klaviyo_consent_push_hold", default=None)


class _Once:
    """A callback scheduled once per transaction; it knows whether it has run.

    After a commit Django empties its list; a test harness that runs callbacks without
    committing (``captureOnCommitCallbacks(execute=True)``) leaves them in it, so one that ran
    must not stand for the next.
    """

    def __init__(self, func: Callable[[], None]) -> None:
        self.func = func
        self.ran = False
        self.__name__ = getattr(func, "__name__", "callback")

    def __call__(self) -> None:
        self.ran = True
        self.func()


def on_commit_once(func: Callable[[], None], using: str | None = None) -> None:
    """``transaction.on_commit(func)`` unless this transaction already has ``func`` scheduled.

    Outside a transaction ``func`` runs now, as ``on_commit`` does. A callback scheduled inside
    a savepoint that was rolled back is gone from Django's list, so the next caller schedules
    it again. Reads Django's own bookkeeping (``run_on_commit``: savepoint ids and callback per
    entry; ``atomic_blocks``; ``savepoint_ids``), as its ``durable`` check does.
    """
    connection = transaction.get_connection(using)
    if connection.in_atomic_block:
        scope = _transaction_savepoint(connection)
        for sids, callback, *_ in connection.run_on_commit:
            if (
                isinstance(callback, _Once)
                and callback.func is func
                and not callback.ran
                and (scope is None or scope in sids)
            ):
                return
    transaction.on_commit(_Once(func), using=using, robust=True)


def _transaction_savepoint(connection: Any) -> str | None:
    """The savepoint that stands for "this transaction": None when the outermost atomic block
    is the transaction itself; inside a test case's own atomic blocks (which never commit), the
    savepoint of the first block the code under test opened."""
    blocks = connection.atomic_blocks
    first = next(
        (i for i, block in enumerate(blocks) if not getattr(block, "_from_testcase", False)), 0
    )
    if first == 0:
        return None
    return connection.savepoint_ids[first - 1]


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
