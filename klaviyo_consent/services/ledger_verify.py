"""Verify the Merkle ledger against its rows: every leaf, checkpoint, signature and proof.

What ``klaviyo_consent_verify`` and the admin's "verify the ledger" run; each run is kept as a
``VerificationRun``. Not to be confused with ``verify.py``, which reads consent back from
Klaviyo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import timezone

from klaviyo_consent import merkle
from klaviyo_consent.exceptions import ConfigurationError, LedgerMismatch
from klaviyo_consent.models import (
    Checkpoint,
    ConsentEvent,
    LedgerEntry,
    LedgerNode,
    LedgerState,
    VerificationRun,
)
from klaviyo_consent.receipts import ReceiptError, verify_checkpoint
from klaviyo_consent.services.checkpoints import commit_horizon
from klaviyo_consent.services.leaves import (
    digest,
    erasure_leaf,
    event_leaf,
    identifier_values,
    ledger_secret,
)
from klaviyo_consent.services.proofs import checkpoint_data, consistency
from klaviyo_consent.services.signing import trusted_keys


@dataclass
class Verification:
    events: int
    checkpoints: int


def verify_ledger(*, record_run: bool = True) -> Verification:
    """Recompute every leaf from the stored rows, every checkpoint's root and signature, and
    the consistency between consecutive checkpoints.

    Raises :class:`LedgerMismatch` naming the first event whose stored content no longer
    matches its leaf and the checkpoint it breaks (or the checkpoint that fails).
    """
    run = VerificationRun.objects.create() if record_run else None
    try:
        result = _verify()
    except (LedgerMismatch, ConfigurationError) as exc:
        # Whatever stops it, the run is closed with why: never left "running".
        if run:
            VerificationRun.objects.filter(pk=run.pk).update(
                finished_at=timezone.now(), ok=False, message=str(exc)
            )
        raise
    if run:
        VerificationRun.objects.filter(pk=run.pk).update(
            finished_at=timezone.now(),
            ok=True,
            events=result.events,
            checkpoints=result.checkpoints,
            message=f"OK: {result.events} events, {result.checkpoints} checkpoints",
        )
    return result


def _verify() -> Verification:
    checkpoints = list(Checkpoint.objects.order_by("tree_size"))
    keys = trusted_keys()
    for cp in checkpoints:
        public = keys.get(cp.key_id)
        if public is None:
            raise LedgerMismatch(
                f"Checkpoint {cp.tree_size} is signed by key {cp.key_id}, which is not a "
                "trusted ledger key (LEDGER_SIGNING_KEY or LEDGER_VERIFY_KEYS)."
            )
        try:
            verify_checkpoint(checkpoint_data(cp), public)
        except ReceiptError as exc:
            raise LedgerMismatch(f"Checkpoint {cp.tree_size}: {exc}") from None

    def breaks(index: int) -> str:
        hit = next((cp for cp in checkpoints if cp.tree_size > index), None)
        return f"checkpoint {hit.tree_size}" if hit else "no checkpoint yet"

    secret = ledger_secret()
    entries = (
        LedgerEntry.objects.select_related(
            "event", "event__consent_text_version", "event__personal_data", "erasure"
        )
        .order_by("leaf_index")
        .iterator(chunk_size=2000)
    )
    try:
        frontier = _verify_leaves(entries, checkpoints, breaks, secret)
    finally:
        entries.close()  # a server-side cursor closes now, in this transaction
    _verify_consistency(checkpoints)
    _verify_nothing_left_out()
    return Verification(events=frontier.size, checkpoints=len(checkpoints))


def _verify_nothing_left_out() -> None:
    """Every event at or below the checkpointer's horizon must have a leaf."""
    state = LedgerState.objects.filter(pk=1).first()
    horizon = 0
    if state and state.tips:
        # As of the checkpointer's last run (its clock), or now if later.
        latest = max(float(at) for at, _ in state.tips)
        moment = max(timezone.now().timestamp(), latest)
        horizon = commit_horizon(state.tips, datetime.fromtimestamp(moment, UTC), 0)[0]
    missing = (
        ConsentEvent.objects.filter(id__lte=horizon, ledger_entry__isnull=True)
        .order_by("id")
        .values_list("id", flat=True)
        .first()
    )
    if missing is not None:
        raise LedgerMismatch(
            f"Event {missing} is not in the ledger although every event up to {horizon} should "
            "be: its leaf was deleted, or it committed more than LEDGER_COMMIT_HORIZON after "
            "it was inserted."
        )


def _verify_leaves(
    entries: Iterator[LedgerEntry],
    checkpoints: list[Checkpoint],
    breaks: Callable[[int], str],
    secret: bytes,
) -> merkle.Frontier:
    frontier = merkle.Frontier()
    next_cp = 0
    for entry in entries:
        if entry.leaf_index != frontier.size:
            raise LedgerMismatch(
                f"Leaf {frontier.size} is missing from the ledger; "
                f"it breaks {breaks(frontier.size)}."
            )
        if entry.erasure_id is not None:
            leaf = erasure_leaf(entry.erasure, entry.digests)
            if leaf.hex() != entry.leaf_hash:
                raise LedgerMismatch(
                    f"Erasure {entry.erasure_id} (leaf {entry.leaf_index}): its stored record "
                    f"no longer matches its leaf; it breaks {breaks(entry.leaf_index)}."
                )
            frontier.append(leaf)
            next_cp = _check_roots(frontier, checkpoints, next_cp)
            continue
        event = entry.event
        for field, value in identifier_values(event).items():
            if value and digest(field, value, secret) != entry.digests.get(field):
                raise LedgerMismatch(
                    f"Event {event.pk} (leaf {entry.leaf_index}): its {field} no longer matches "
                    f"its digest; it breaks {breaks(entry.leaf_index)}."
                )
        leaf = event_leaf(event, entry.digests)
        if leaf.hex() != entry.leaf_hash:
            raise LedgerMismatch(
                f"Event {event.pk} (leaf {entry.leaf_index}): its stored content no longer "
                f"matches its leaf; it breaks {breaks(entry.leaf_index)}."
            )
        frontier.append(leaf)
        next_cp = _check_roots(frontier, checkpoints, next_cp)
    if next_cp < len(checkpoints):
        raise LedgerMismatch(
            f"Checkpoint {checkpoints[next_cp].tree_size} covers more events than the ledger "
            f"holds ({frontier.size})."
        )
    return frontier


def _check_roots(frontier: merkle.Frontier, checkpoints: list[Checkpoint], next_cp: int) -> int:
    """Check the root of every checkpoint the tree reached; return the next one's index."""
    while next_cp < len(checkpoints) and checkpoints[next_cp].tree_size == frontier.size:
        if frontier.root().hex() != checkpoints[next_cp].root_hash:
            raise LedgerMismatch(
                f"Checkpoint {frontier.size}: the events it covers no longer hash to its "
                "root (a leaf hash was rewritten with its event)."
            )
        next_cp += 1
    return next_cp


def _verify_consistency(checkpoints: list[Checkpoint]) -> None:
    for older, newer in zip(checkpoints, checkpoints[1:], strict=False):
        try:
            merkle.verify_consistency(
                older.tree_size,
                newer.tree_size,
                bytes.fromhex(older.root_hash),
                bytes.fromhex(newer.root_hash),
                [bytes.fromhex(h) for h in consistency(older.tree_size, newer.tree_size)],
            )
        except (merkle.ProofError, LedgerEntry.DoesNotExist, LedgerNode.DoesNotExist) as exc:
            raise LedgerMismatch(
                f"Checkpoint {newer.tree_size} is not consistent with checkpoint "
                f"{older.tree_size}: {exc}"
            ) from None
