"""The Merkle ledger: sequence committed events, sign checkpoints, prove and verify (issue 10).

One checkpointer at a time appends the events committed since its last run, ordered by id,
to an RFC 9162 tree (``LedgerEntry`` rows, leaf index = commit order as the checkpointer saw
it), then signs the new tree head with Ed25519. It holds the lock on the single
``LedgerState`` row (``SELECT … FOR UPDATE NOWAIT`` on PostgreSQL): another worker that finds
it held skips. Recording a consent never touches these tables, so it never waits on them.

Events commit out of id order on PostgreSQL: one with a lower id may commit after the
checkpointer ran. It only ever takes what is committed when it runs, so such an event is
appended by a later run, with a later leaf index: every event once, none lost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from klaviyo_consent import merkle
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import ConfigurationError, LedgerMismatch, NotYetCheckpointed
from klaviyo_consent.models import (
    Checkpoint,
    ConsentEvent,
    LedgerEntry,
    LedgerNode,
    LedgerState,
    Profile,
    VerificationRun,
)
from klaviyo_consent.receipts import (
    SCHEMA_VERSION,
    ReceiptError,
    canonical,
    checkpoint_message,
    key_id,
    text_sha256,
    verify_checkpoint,
)

#: Perfect subtrees of 2**TILE_LEVEL leaves and more are stored as LedgerNode rows: a proof
#: then reads about log2(n) - 8 nodes and at most a few hundred leaf hashes.
TILE_LEVEL = 8
#: The event's identifiers, which enter a leaf only as HMAC-SHA256 digests.
IDENTIFIER_FIELDS = ("email", "phone_number", "ip_address", "user_agent", "page_url", "recorded_by")


# -- identifiers and the leaf record ---------------------------------------------------------


def ledger_secret() -> bytes:
    """The HMAC key for identifier digests: LEDGER_SECRET, else derived from SECRET_KEY."""
    secret = consent_settings.LEDGER_SECRET
    if secret:
        return secret.encode() if isinstance(secret, str) else bytes(secret)
    return hashlib.sha256(
        b"klaviyo-consent ledger secret\x00" + settings.SECRET_KEY.encode()
    ).digest()


def digest(field: str, value: str, secret: bytes | None = None) -> str:
    """Hex HMAC-SHA256(ledger secret, ``field`` NUL ``value``): one identifier in the ledger."""
    message = f"{field}\x00{value}".encode()
    return hmac.new(secret or ledger_secret(), message, hashlib.sha256).hexdigest()


def identifier_values(event: ConsentEvent) -> dict[str, str]:
    """The event's raw identifiers as the ledger digests them ('' when absent or erased)."""
    return {
        "email": event.email or "",
        "phone_number": event.phone_number or "",
        "ip_address": event.ip_address or "",
        "user_agent": event.user_agent or "",
        "page_url": event.page_url or "",
        "recorded_by": event.recorded_by_label or "",
    }


def event_digests(event: ConsentEvent, secret: bytes | None = None) -> dict[str, str]:
    secret = secret or ledger_secret()
    return {
        field: digest(field, value, secret)
        for field, value in identifier_values(event).items()
        if value
    }


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def consent_text_of(event: ConsentEvent) -> str:
    text = event.consent_text_version
    return text.body if text is not None else (event.consent_text or "")


def build_record(event: ConsentEvent, digests: dict[str, str]) -> dict[str, Any]:
    """The leaf content of ``event``: its proof fields, identifiers as digests.

    Field names and sources: docs/receipts.md.
    """
    text = event.consent_text_version
    body = consent_text_of(event)
    return {
        "schema_version": SCHEMA_VERSION,
        "record_id": event.pk,
        "pii_principal_id": {
            "profile_id": event.profile_id,
            "email": digests.get("email"),
            "phone_number": digests.get("phone_number"),
        },
        "purpose": {"channel": event.channel, "purpose": event.purpose, "list_id": event.list_id},
        "consent_state": event.consent,
        "suppression": event.suppression,
        "collection_method": {
            "method": event.method,
            "method_detail": event.method_detail,
            "custom_source": event.custom_source,
        },
        "notice": {
            "consent_text_sha256": text_sha256(body) if body else None,
            "key": text.key if text else None,
            "version": text.version if text else None,
            "locale": text.locale if text else None,
        },
        "timestamps": {
            "recorded_at": _time(event.recorded_at),
            "consented_at": _time(event.consented_at),
            "historical_import": event.historical_import,
        },
        "evidence": {
            "ip_address": digests.get("ip_address"),
            "user_agent": digests.get("user_agent"),
            "page_url": digests.get("page_url"),
            "recorded_by": digests.get("recorded_by"),
        },
        "klaviyo_data": event.klaviyo_data or {},
    }


def event_leaf(event: ConsentEvent, digests: dict[str, str]) -> bytes:
    return merkle.leaf_hash(canonical(build_record(event, digests)))


# -- signing keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey
    public_key: str  # base64 raw 32 bytes
    key_id: str

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private_key.sign(message)).decode()


def load_private_key(value: str | bytes) -> Ed25519PrivateKey:
    """An Ed25519 key from PEM (PKCS#8) or the base64 of its raw 32-byte seed."""
    data = value.encode() if isinstance(value, str) else bytes(value)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data, validate=True))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f'KLAVIYO_CONSENT["LEDGER_SIGNING_KEY"] is not an Ed25519 private key: {exc}'
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError('KLAVIYO_CONSENT["LEDGER_SIGNING_KEY"] must be an Ed25519 key.')
    return key


def public_key_of(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def generate_signing_key() -> str:
    """A new Ed25519 key as base64 of its raw seed, for LEDGER_SIGNING_KEY."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


def signer() -> Signer:
    """The current signing key; :class:`ConfigurationError` when LEDGER_SIGNING_KEY is unset."""
    value = consent_settings.LEDGER_SIGNING_KEY
    if not value:
        raise ConfigurationError(
            'KLAVIYO_CONSENT["LEDGER_SIGNING_KEY"] is not set: checkpoints cannot be signed.'
        )
    key = load_private_key(value)
    public = public_key_of(key)
    return Signer(key, public, key_id(public))


def trusted_keys() -> dict[str, str]:
    """key id → base64 public key: the current signing key's and LEDGER_VERIFY_KEYS."""
    keys = {key_id(public): public for public in consent_settings.LEDGER_VERIFY_KEYS or ()}
    if consent_settings.LEDGER_SIGNING_KEY:
        current = signer()
        keys[current.key_id] = current.public_key
    return keys


# -- the checkpointer ------------------------------------------------------------------------


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
            horizon, tips = _horizon(state.tips, moment, tip)
            appended = _append_committed(frontier, batch_size, above=horizon)
            claimed = LedgerState.objects.filter(pk=1, tree_size=before).update(
                tree_size=frontier.size, frontier=[h.hex() for h in frontier.hashes], tips=tips
            )
            if not claimed:  # SQLite has no row locks: another run moved the tree first
                raise _Busy
            latest = Checkpoint.objects.order_by("-tree_size").first()
            if frontier.size == 0 or (latest is not None and latest.tree_size == frontier.size):
                return CheckpointResult(appended, None)
            stamp = _time(moment)
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


def _horizon(tips: list[Any], now: datetime, tip: int) -> tuple[int, list[list[Any]]]:
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
    return ConsentEvent.objects.count() > covered


# -- proofs ----------------------------------------------------------------------------------


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


def checkpoints_since(since: int = 0) -> list[dict[str, Any]]:
    """Checkpoints with tree_size ≥ ``since``, oldest first, each with the consistency proof
    from the one before it (``consistency_from``: that one's tree_size)."""
    rows = list(Checkpoint.objects.order_by("tree_size"))
    listed = []
    previous: Checkpoint | None = None
    for row in rows:
        if row.tree_size >= since:
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
        raise NotYetCheckpointed(f"Event {event.pk} is not in the ledger yet.")
    cp = _covering(entry, checkpoint)
    path = merkle.inclusion_proof(entry.leaf_index, cp.tree_size, DatabaseTree().subtree)
    text = event.consent_text_version
    delivery = getattr(event, "delivery", None)
    return {
        "schema_version": SCHEMA_VERSION,
        "receipt_id": f"{cp.key_id}-{cp.tree_size}-{entry.leaf_index}",
        "controller": controller(),
        "subject": {
            "profile_id": event.profile_id,
            "email": event.email or None,
            "phone_number": event.phone_number or None,
            "external_id": event.profile.external_id,
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
            "verified_at": _time(delivery.verified_at) if delivery else None,
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
    events = (
        ConsentEvent.objects.filter(
            profile=profile, ledger_entry__leaf_index__lt=cp.tree_size if cp else 0
        )
        .select_related("consent_text_version", "delivery", "profile")
        .order_by("id")
    )
    pending = ConsentEvent.objects.filter(profile=profile).count() - events.count()
    return {
        "checkpoint": checkpoint_data(cp) if cp else None,
        "receipts": [receipt(event, cp) for event in events],
        "not_yet_checkpointed": pending,
    }


# -- verification ----------------------------------------------------------------------------


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
    except LedgerMismatch as exc:
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
        LedgerEntry.objects.select_related("event", "event__consent_text_version")
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
        horizon = _horizon(state.tips, datetime.fromtimestamp(moment, UTC), 0)[0]
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
        while next_cp < len(checkpoints) and checkpoints[next_cp].tree_size == frontier.size:
            if frontier.root().hex() != checkpoints[next_cp].root_hash:
                raise LedgerMismatch(
                    f"Checkpoint {frontier.size}: the events it covers no longer hash to its "
                    "root (a leaf hash was rewritten with its event)."
                )
            next_cp += 1
    if next_cp < len(checkpoints):
        raise LedgerMismatch(
            f"Checkpoint {checkpoints[next_cp].tree_size} covers more events than the ledger "
            f"holds ({frontier.size})."
        )
    return frontier


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
