"""The Merkle ledger's writer: sequence committed events, sign checkpoints (issue 10).

One checkpointer at a time appends the events committed since its last run, ordered by id,
to an RFC 9162 tree (``LedgerEntry`` rows, leaf index = commit order as the checkpointer saw
it), then signs the new tree head with Ed25519. It holds the lock on the single
``LedgerState`` row (``SELECT … FOR UPDATE NOWAIT`` on PostgreSQL): another worker that finds
it held skips. Recording a consent never touches these tables, so it never waits on them.

Events commit out of id order on PostgreSQL: one with a lower id may commit after the
checkpointer ran. It only ever takes what is committed when it runs, so such an event is
appended by a later run, with a later leaf index: every event once, none lost.

Leaves are built in ``leaves.py`` and signed with ``signing.py``; ``proofs.py`` reads the tree
back for receipts and consistency proofs, ``ledger_verify.py`` recomputes all of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from klaviyo_consent import merkle
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.models import (
    Checkpoint,
    ConsentEvent,
    Erasure,
    LedgerEntry,
    LedgerNode,
    LedgerState,
)
from klaviyo_consent.receipts import checkpoint_message
from klaviyo_consent.services.leaves import (
    erasure_digests,
    erasure_leaf,
    event_digests,
    event_leaf,
    ledger_secret,
    utc_timestamp,
)
from klaviyo_consent.services.signing import signer

#: Perfect subtrees of 2**TILE_LEVEL leaves and more are stored as LedgerNode rows: a proof
#: then reads about log2(n) - 8 nodes and at most a few hundred leaf hashes.
TILE_LEVEL = 8


@dataclass
class CheckpointResult:
    appended: int
    checkpoint: Checkpoint | None
    #: True when another process held the checkpointer's lock and this one skipped.
    busy: bool = False


class _Busy(Exception):
    pass


def checkpoint(*, now: datetime | None = None, batch_size: int = 5000) -> CheckpointResult:
    """Append every committed event not yet in the tree, and sign a checkpoint if it grew.

    Returns ``busy=True`` (nothing done) when another process is checkpointing. Raises
    :class:`ConfigurationError` without a LEDGER_SIGNING_KEY.
    """
    sign = signer()
    try:
        LedgerState.objects.get_or_create(pk=1)  # made by the migration; again after a flush
    except IntegrityError:  # another checkpointer made it this instant
        pass
    try:
        with transaction.atomic():
            try:
                state = LedgerState.objects.select_for_update(nowait=True).get(pk=1)
            except OperationalError as exc:
                if not _lock_refused(exc):
                    raise
                raise _Busy from None
            before = state.tree_size
            frontier = merkle.Frontier(state.tree_size, [bytes.fromhex(h) for h in state.frontier])
            moment = now or timezone.now()
            tip = ConsentEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
            horizon, tips = commit_horizon(state.tips, moment, tip)
            appended = _append_committed(frontier, batch_size, above=horizon)
            appended += _append_erasures(frontier)
            claimed = LedgerState.objects.filter(pk=1, tree_size=before).update(
                tree_size=frontier.size, frontier=[h.hex() for h in frontier.hashes], tips=tips
            )
            if not claimed:  # SQLite has no row locks: another run moved the tree first
                raise _Busy
            latest = Checkpoint.objects.order_by("-tree_size").first()
            if frontier.size == 0 or (latest is not None and latest.tree_size == frontier.size):
                return CheckpointResult(appended, None)
            stamp = utc_timestamp(moment)
            assert stamp is not None
            root = frontier.root().hex()
            made = Checkpoint.objects.create(
                tree_size=frontier.size,
                root_hash=root,
                timestamp=stamp,
                key_id=sign.key_id,
                signature=sign.sign(checkpoint_message(frontier.size, root, stamp)),
                public_key=sign.public_key,
            )
            return CheckpointResult(appended, made)
    except _Busy:
        return CheckpointResult(0, None, busy=True)
    except OperationalError as exc:
        if _lock_refused(exc):
            return CheckpointResult(0, None, busy=True)
        raise


def _lock_refused(exc: OperationalError) -> bool:
    """PostgreSQL's lock_not_available (NOWAIT) or SQLite's "database is locked"."""
    return getattr(exc.__cause__, "sqlstate", None) == "55P03" or "locked" in str(exc)


def commit_horizon(tips: list[Any], now: datetime, tip: int) -> tuple[int, list[list[Any]]]:
    """The id every older event is at or below (see ``LedgerState.tips``), and the new tips.

    An event with an id at or below the largest id visible at a run more than
    LEDGER_COMMIT_HORIZON ago was inserted before that run, so its transaction has committed
    or rolled back by now. Above it, events may still be committing out of id order, and the
    checkpointer looks for every one without a leaf.
    """
    limit = consent_settings.LEDGER_COMMIT_HORIZON
    cutoff = now.timestamp() - limit
    seen = [(float(at), int(top)) for at, top in tips or []]
    settled = [(at, top) for at, top in seen if at <= cutoff]
    horizon = max((top for _, top in settled), default=0)
    # Keep the newest settled tip (the horizon) and the unsettled ones, one per limit/16
    # seconds at most: a handful of pairs.
    kept = [max(settled, key=lambda pair: pair[1])] if settled else []
    kept += [(at, top) for at, top in seen if at > cutoff]
    if not kept or now.timestamp() - kept[-1][0] >= limit / 16:
        kept.append((now.timestamp(), tip))
    return horizon, [[at, top] for at, top in kept]


def _append_committed(frontier: merkle.Frontier, batch_size: int, *, above: int = 0) -> int:
    secret = ledger_secret()
    appended = 0
    pending = (
        ConsentEvent.objects.filter(id__gt=above, ledger_entry__isnull=True)
        .select_related("consent_text_version")
        .order_by("id")
    )
    while True:
        events = list(pending[:batch_size])
        if not events:
            return appended
        entries: list[LedgerEntry] = []
        nodes: list[LedgerNode] = []

        def keep(level: int, index: int, node: bytes, nodes: list[LedgerNode] = nodes) -> None:
            if level >= TILE_LEVEL:
                nodes.append(LedgerNode(level=level, index=index, hash=node.hex()))

        for event in events:
            digests = event_digests(event, secret)
            leaf = event_leaf(event, digests)
            entries.append(
                LedgerEntry(
                    leaf_index=frontier.size, event=event, leaf_hash=leaf.hex(), digests=digests
                )
            )
            frontier.append(leaf, keep)
        LedgerEntry.objects.bulk_create(entries)
        LedgerNode.objects.bulk_create(nodes)
        appended += len(entries)


def _keep_tiles(nodes: list[LedgerNode]) -> Any:
    def keep(level: int, index: int, node: bytes) -> None:
        if level >= TILE_LEVEL:
            nodes.append(LedgerNode(level=level, index=index, hash=node.hex()))

    return keep


def _append_erasures(frontier: merkle.Frontier) -> int:
    """Append every committed erasure record without a leaf, in id order (they are few)."""
    secret = ledger_secret()
    entries: list[LedgerEntry] = []
    nodes: list[LedgerNode] = []
    keep = _keep_tiles(nodes)
    for erasure in Erasure.objects.filter(ledger_entry__isnull=True).order_by("id"):
        digests = erasure_digests(erasure, secret)
        leaf = erasure_leaf(erasure, digests)
        entries.append(
            LedgerEntry(
                leaf_index=frontier.size, erasure=erasure, leaf_hash=leaf.hex(), digests=digests
            )
        )
        frontier.append(leaf, keep)
    LedgerEntry.objects.bulk_create(entries)
    LedgerNode.objects.bulk_create(nodes)
    return len(entries)


def checkpoint_due(now: datetime | None = None) -> bool:
    """True when CHECKPOINT_INTERVAL has passed since the last checkpoint and events were added."""
    interval = consent_settings.CHECKPOINT_INTERVAL
    if interval is None:
        return False
    latest = Checkpoint.objects.order_by("-tree_size").first()
    now = now or timezone.now()
    if latest is not None and (now - latest.created_at).total_seconds() < interval:
        return False
    covered = latest.tree_size if latest else 0
    return ConsentEvent.objects.count() + Erasure.objects.count() > covered
