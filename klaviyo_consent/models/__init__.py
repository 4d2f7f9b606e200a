"""Data and invariants: the local profile, its append-only ledgers, the outbox, and the proofs.

No HTTP here; services move data between these rows and Klaviyo. One module per responsibility:

* ``profiles``: Profile (Klaviyo's mirror beside it), KlaviyoList, normalize_email, parse_row_id
* ``erasure``: Erasure (a ledger leaf), ErasedIdentifier, ErasureDelivery (Klaviyo's job)
* ``erasable``: the ledgers' erasable raw values (EventPersonalData, IdentityPersonalData)
* ``ledger``: the append-only ConsentEvent and IdentityEvent, and who recorded them
* ``outbox``: Delivery and IdentityDelivery, each event's way to Klaviyo and its verdict
* ``membership``: MembershipEvent (list membership without consent) and its MembershipDelivery
* ``webhooks``: WebhookDelivery, verified Klaviyo webhooks
* ``health``: KlaviyoHealth, the last 401/403/429 Klaviyo answered
* ``proofs``: ConsentText versions, the Merkle ledger, its checkpoints, its verification runs

Import models from here: ``from klaviyo_consent.models import ConsentEvent``.
"""

from klaviyo_consent.models.erasable import (
    EVENT_ERASABLE,
    EVIDENCE_FIELDS,
    IDENTITY_ERASABLE,
    EventPersonalData,
    IdentityPersonalData,
)
from klaviyo_consent.models.erasure import (
    ErasedIdentifier,
    Erasure,
    ErasureDelivery,
    ErasureScope,
)
from klaviyo_consent.models.health import KlaviyoHealth
from klaviyo_consent.models.ledger import (
    EVENT_FIELDS,
    IDENTITY_EVENT_FIELDS,
    ConsentEvent,
    ConsentEventQuerySet,
    IdentityChange,
    IdentityEvent,
    IdentityEventQuerySet,
    RecordedBy,
)
from klaviyo_consent.models.membership import (
    MembershipDelivery,
    MembershipEvent,
    MembershipEventQuerySet,
)
from klaviyo_consent.models.outbox import Delivery, IdentityDelivery
from klaviyo_consent.models.profiles import (
    MAX_ROW_ID,
    KlaviyoList,
    Profile,
    normalize_email,
    parse_row_id,
)
from klaviyo_consent.models.proofs import (
    AppendOnlyQuerySet,
    Checkpoint,
    ConsentText,
    LedgerEntry,
    LedgerNode,
    LedgerState,
    VerificationRun,
)
from klaviyo_consent.models.webhooks import WebhookDelivery

__all__ = [
    "EVENT_ERASABLE",
    "EVIDENCE_FIELDS",
    "IDENTITY_ERASABLE",
    "EventPersonalData",
    "ErasedIdentifier",
    "Erasure",
    "ErasureDelivery",
    "ErasureScope",
    "IdentityPersonalData",
    "EVENT_FIELDS",
    "IDENTITY_EVENT_FIELDS",
    "MAX_ROW_ID",
    "AppendOnlyQuerySet",
    "Checkpoint",
    "ConsentEvent",
    "ConsentEventQuerySet",
    "ConsentText",
    "Delivery",
    "IdentityChange",
    "IdentityDelivery",
    "IdentityEvent",
    "IdentityEventQuerySet",
    "KlaviyoHealth",
    "KlaviyoList",
    "LedgerEntry",
    "LedgerNode",
    "LedgerState",
    "MembershipDelivery",
    "MembershipEvent",
    "MembershipEventQuerySet",
    "Profile",
    "RecordedBy",
    "VerificationRun",
    "WebhookDelivery",
    "normalize_email",
    "parse_row_id",
]
