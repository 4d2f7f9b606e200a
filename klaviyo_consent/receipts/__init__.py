"""Consent receipts and their offline verification: no Django, no settings, no database.

A receipt carries the event's ``record`` (the leaf content), a ``proof`` (its leaf index and
hash, the RFC 9162 inclusion path and the signed checkpoint it leads to) and human-readable
copies (the consent text, raw identifiers while they exist, Klaviyo's verdict) that are not
part of the leaf. :func:`verify_receipt` checks, in order:

1. the consent text's SHA-256 against the record's ``notice.consent_text_sha256``;
2. the record against the leaf: ``SHA-256(0x00 || JCS(record))`` (RFC 8785, RFC 9162 §2.1.1);
3. the inclusion path against the checkpoint's root (RFC 9162 §2.1.3.2);
4. the checkpoint's Ed25519 signature against the public key (given, or the receipt's own).

Run ``python -m klaviyo_consent.receipts verify RECEIPT.json [--public-key KEY]``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from klaviyo_consent import merkle

#: The ``schema_version`` of receipts and leaf records this module reads.
SCHEMA_VERSION = "klaviyo-consent-receipt/1"
#: The first line of every signed checkpoint message.
CHECKPOINT_HEADER = "klaviyo-consent checkpoint v1"


class ReceiptError(ValueError):
    """A receipt does not verify; ``part`` names what failed: content, path, root, signature."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"{part}: {message}")
        self.part = part


def text_sha256(body: str) -> str:
    """Hex SHA-256 of a consent text's UTF-8 bytes."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


#: The largest integer JCS writes exactly (IEEE 754 double precision, RFC 8785 §3.2.2.3).
_SAFE_INTEGER = 2**53 - 1


def canonical(record: Mapping[str, Any]) -> bytes:
    r"""The record's RFC 8785 (JCS) canonical bytes: what the leaf hashes.

    A ledger record holds objects with ASCII keys, lists, strings, booleans, null and integers
    within ±(2⁵³ − 1). For exactly those values JCS writes what the standard library's C
    encoder writes with sorted keys, no whitespace and no ASCII escaping: keys sort the same
    (ASCII code points are UTF-16 code units), strings escape the same (``\"``, ``\\``,
    ``\b\f\n\r\t``, other controls as lower-case ``\u00xx``), integers print the same. That path
    is several times faster (a full ledger verify hashes every record); anything else — a
    float, a non-ASCII key, a larger integer, a lone surrogate — goes to the ``rfc8785``
    package. ``tests/test_merkle.py`` checks that both agree on generated records.
    """
    if _plain(record):
        try:
            return json.dumps(
                record, ensure_ascii=False, sort_keys=True, separators=(",", ":")
            ).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: rfc8785 refuses it, as JCS does
            pass
    return rfc8785.dumps(record)


def _plain(value: Any) -> bool:
    """Whether ``value`` holds only the types for which JCS and ``json.dumps`` agree."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_SAFE_INTEGER <= item <= _SAFE_INTEGER:
                continue
            return False
        if kind is dict:
            for key, child in item.items():
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(child)
            continue
        if kind is list:
            stack.extend(item)
            continue
        return False
    return True


def record_leaf_hash(record: Mapping[str, Any]) -> str:
    """Hex ``SHA-256(0x00 || JCS(record))``: the record's RFC 9162 leaf hash."""
    return merkle.leaf_hash(canonical(record)).hex()


def checkpoint_message(tree_size: int, root_hash: str, timestamp: str) -> bytes:
    """The exact bytes a checkpoint's Ed25519 signature covers (one field a line)."""
    return f"{CHECKPOINT_HEADER}\n{int(tree_size)}\n{root_hash}\n{timestamp}\n".encode("ascii")


def key_id(public_key_b64: str) -> str:
    """First 8 bytes, hex, of SHA-256 of the raw 32-byte public key: a short name for it."""
    return hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()[:16]


def verify_checkpoint(checkpoint: Mapping[str, Any], public_key_b64: str) -> None:
    """Check a checkpoint's signature with ``public_key_b64``; raise :class:`ReceiptError`."""
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptError("signature", f"the public key is not a base64 Ed25519 key ({exc})")
    if checkpoint.get("key_id") != key_id(public_key_b64):
        raise ReceiptError(
            "signature",
            f"the checkpoint names key {checkpoint.get('key_id')!r}, not this public key's "
            f"{key_id(public_key_b64)!r}",
        )
    try:
        signature = base64.b64decode(str(checkpoint.get("signature", "")), validate=True)
        message = checkpoint_message(
            int(checkpoint["tree_size"]), str(checkpoint["root_hash"]), str(checkpoint["timestamp"])
        )
        key.verify(signature, message)
    except (binascii.Error, KeyError, TypeError, ValueError, InvalidSignature) as exc:
        raise ReceiptError("signature", "the checkpoint's signature does not verify") from exc


def _hex(value: Any, part: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ReceiptError(part, f"{what} is not a 64-digit hex SHA-256")
    return raw


def verify_receipt(receipt: Mapping[str, Any], public_key_b64: str | None = None) -> None:
    """Verify one receipt offline; raise :class:`ReceiptError` naming the first failure.

    ``public_key_b64`` is the ledger's key obtained independently (docs/receipts.md); without
    it the receipt's own ``checkpoint.public_key`` is used, which proves integrity but not
    who signed.
    """
    record = receipt.get("record")
    proof = receipt.get("proof")
    if not isinstance(record, Mapping) or not isinstance(proof, Mapping):
        raise ReceiptError("content", "the receipt has no record or no proof")
    notice = receipt.get("notice") or {}
    if not isinstance(notice, Mapping):
        raise ReceiptError("content", "the receipt's notice is not an object")
    if notice.get("consent_text"):
        wanted = (record.get("notice") or {}).get("consent_text_sha256")
        if text_sha256(str(notice["consent_text"])) != wanted:
            raise ReceiptError("content", "the consent text does not match its SHA-256")
    elif "consent_text" in notice and (record.get("notice") or {}).get("consent_text_sha256"):
        # No words shown, yet the record names a text's hash: the words were taken away.
        raise ReceiptError("content", "the consent text is missing but its SHA-256 is recorded")
    leaf = record_leaf_hash(record)
    if leaf != proof.get("leaf_hash"):
        raise ReceiptError("content", "the record does not match the leaf hash")
    checkpoint = proof.get("checkpoint")
    if not isinstance(checkpoint, Mapping):
        raise ReceiptError("root", "the proof has no checkpoint")
    root = _hex(checkpoint.get("root_hash"), "root", "the checkpoint's root_hash")
    path = [
        _hex(node, "path", "an inclusion_path entry") for node in proof.get("inclusion_path") or []
    ]
    try:
        size, index = int(proof["tree_size"]), int(proof["leaf_index"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReceiptError("path", "leaf_index and tree_size must be integers") from exc
    if size != checkpoint.get("tree_size"):
        raise ReceiptError("root", "the proof's tree_size is not the checkpoint's")
    try:
        merkle.verify_inclusion(index, size, bytes.fromhex(leaf), path, root)
    except merkle.ProofError as exc:
        raise ReceiptError("path", f"the inclusion path does not lead to the root ({exc})")
    verify_checkpoint(checkpoint, public_key_b64 or str(checkpoint.get("public_key", "")))
