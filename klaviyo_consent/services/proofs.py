"""Read the Merkle ledger back: consistency proofs between checkpoints, and receipts.

A receipt carries an event's raw proof, its leaf record (identifiers as digests) and the
inclusion path to a signed checkpoint: anyone holding the public key can verify it offline
(``klaviyo_consent.receipts``). Shape and field sources: docs/receipts.md.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from klaviyo_consent import merkle
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import NotYetCheckpointed
from klaviyo_consent.models import Checkpoint, ConsentEvent, LedgerEntry, LedgerNode, Profile
from klaviyo_consent.receipts import SCHEMA_VERSION
from klaviyo_consent.services.checkpoints import TILE_LEVEL
from klaviyo_consent.services.leaves import build_record, consent_text_of, utc_timestamp


class DatabaseTree:
    """The stored tree, read through ``subtree(start, end)`` = MTH(D[start:end]) for proofs."""

    def subtree(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 1:
            return bytes.fromhex(
                LedgerEntry.objects.values_list("leaf_hash", flat=True).get(leaf_index=start)
            )
        level = n.bit_length() - 1
        if n == 1 << level and level >= TILE_LEVEL:
            stored = LedgerNode.objects.values_list("hash", flat=True).get(
                level=level, index=start >> level
            )
            return bytes.fromhex(stored)
        if n <= 1 << TILE_LEVEL:
            hashes = (
                LedgerEntry.objects.filter(leaf_index__gte=start, leaf_index__lt=end)
                .order_by("leaf_index")
                .values_list("leaf_hash", flat=True)
            )
            return merkle.root_from_leaf_hashes([bytes.fromhex(h) for h in hashes])
        k = merkle.split_point(n)
        return merkle.node_hash(self.subtree(start, start + k), self.subtree(start + k, end))


def consistency(first: int, second: int) -> list[str]:
    """Hex RFC 9162 consistency proof between two tree sizes of the stored ledger."""
    return [node.hex() for node in merkle.consistency_proof(first, second, DatabaseTree().subtree)]


def checkpoint_data(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint as the API and receipts give it."""
    return {
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root_hash,
        "timestamp": checkpoint.timestamp,
        "key_id": checkpoint.key_id,
        "signature": checkpoint.signature,
        "public_key": checkpoint.public_key,
    }


#: The most checkpoints one ``checkpoints_since`` answer lists (each costs a consistency proof).
MAX_CHECKPOINTS = 100


def checkpoints_since(since: int = 0, limit: int = MAX_CHECKPOINTS) -> list[dict[str, Any]]:
    """Up to ``limit`` checkpoints with tree_size ≥ ``since``, oldest first, each with the
    consistency proof from the one before it (``consistency_from``: that one's tree_size).

    A caller pages on by asking again ``since`` the last tree_size listed plus one.
    """
    limit = max(1, min(limit, MAX_CHECKPOINTS))
    previous = Checkpoint.objects.filter(tree_size__lt=since).order_by("-tree_size").first()
    listed = []
    for row in Checkpoint.objects.filter(tree_size__gte=since).order_by("tree_size")[:limit]:
        item = checkpoint_data(row)
        item["consistency_from"] = previous.tree_size if previous else None
        item["consistency_proof"] = (
            consistency(previous.tree_size, row.tree_size) if previous else []
        )
        listed.append(item)
        previous = row
    return listed


# -- receipts --------------------------------------------------------------------------------


def controller() -> dict[str, Any]:
    return dict(consent_settings.CONTROLLER or {})


def _covering(entry: LedgerEntry, checkpoint: Checkpoint | None) -> Checkpoint:
    cp = checkpoint or Checkpoint.objects.order_by("-tree_size").first()
    if cp is None or cp.tree_size <= entry.leaf_index:
        raise NotYetCheckpointed(
            f"Event {entry.event_id} is in the ledger but no checkpoint covers it yet."
        )
    return cp


def receipt(event: ConsentEvent, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
    """One consent receipt for ``event`` against ``checkpoint`` (default: the latest).

    Raises :class:`NotYetCheckpointed` when no checkpoint covers the event yet.
    Shape and field sources: docs/receipts.md.
    """
    entry = LedgerEntry.objects.filter(event=event).first()
    if entry is None:
        raise NotYetCheckpointed(
            f"Event {event.pk} is not in the ledger yet: no checkpoint covers it. The sync "
            "worker makes one every CHECKPOINT_INTERVAL seconds; run `manage.py "
            "klaviyo_consent_checkpoint` to make one now."
        )
    cp = _covering(entry, checkpoint)
    path = merkle.inclusion_proof(entry.leaf_index, cp.tree_size, DatabaseTree().subtree)
    text = event.consent_text_version
    delivery = getattr(event, "delivery", None)
    values = event.erasable_row(create=False)
    return {
        "schema_version": SCHEMA_VERSION,
        "receipt_id": f"{cp.key_id}-{cp.tree_size}-{entry.leaf_index}",
        "controller": controller(),
        "subject": {
            "profile_id": event.profile_id,
            "email": event.email or None,
            "phone_number": event.phone_number or None,
            "external_id": event.external_id or None,  # as named at the event, not today's
            # Set once erasure blanked the raw values: the record's digests stand for them.
            "erased_at": utc_timestamp(values.erased_at if values else None),
        },
        "notice": {
            "consent_text": consent_text_of(event),
            "consent_text_id": text.pk if text else None,
            "key": text.key if text else None,
            "version": text.version if text else None,
            "locale": text.locale if text else None,
        },
        "evidence": {
            "ip_address": event.ip_address,
            "user_agent": event.user_agent or None,
            "page_url": event.page_url or None,
            "recorded_by": event.recorded_by_label or None,
        },
        "klaviyo_verdict": {
            "status": delivery.status if delivery else None,
            "reason": delivery.reason if delivery else "",
            "verified_at": utc_timestamp(delivery.verified_at) if delivery else None,
        },
        "record": build_record(event, entry.digests),
        "proof": {
            "leaf_index": entry.leaf_index,
            "leaf_hash": entry.leaf_hash,
            "tree_size": cp.tree_size,
            "inclusion_path": [node.hex() for node in path],
            "checkpoint": checkpoint_data(cp),
        },
    }


def profile_receipts(profile: Profile) -> dict[str, Any]:
    """Every receipt of ``profile``'s events in a checkpoint, all against the latest one."""
    cp = Checkpoint.objects.order_by("-tree_size").first()
    # The person's events, including those of profiles merged into this one (as their ledger).
    persons = Q(profile=profile) | Q(profile__merged_into=profile)
    events = (
        ConsentEvent.objects.filter(persons, ledger_entry__leaf_index__lt=cp.tree_size if cp else 0)
        .select_related("consent_text_version", "delivery", "profile")
        .order_by("id")
    )
    pending = ConsentEvent.objects.filter(persons).count() - events.count()
    return {
        "checkpoint": checkpoint_data(cp) if cp else None,
        "receipts": [receipt(event, cp) for event in events],
        "not_yet_checkpointed": pending,
    }
