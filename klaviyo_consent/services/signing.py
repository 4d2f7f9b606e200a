"""The Ed25519 keys that sign checkpoints: LEDGER_SIGNING_KEY, and the keys still trusted.

A rotated-out key stays in LEDGER_VERIFY_KEYS so the checkpoints it signed still verify.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import ConfigurationError
from klaviyo_consent.receipts import key_id


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
    """key id → base64 public key: the current signing key's and LEDGER_VERIFY_KEYS.

    Raises :class:`ConfigurationError` naming an entry of LEDGER_VERIFY_KEYS that is not the
    base64 of a 32-byte Ed25519 public key.
    """
    keys: dict[str, str] = {}
    for number, public in enumerate(consent_settings.LEDGER_VERIFY_KEYS or (), 1):
        try:
            raw = base64.b64decode(str(public), validate=True)
        except (ValueError, TypeError):
            raw = b""
        if len(raw) != 32:
            raise ConfigurationError(
                f'KLAVIYO_CONSENT["LEDGER_VERIFY_KEYS"] entry {number} is not the base64 of an '
                "Ed25519 public key (32 bytes)."
            )
        keys[key_id(public)] = public
    if consent_settings.LEDGER_SIGNING_KEY:
        current = signer()
        keys[current.key_id] = current.public_key
    return keys
