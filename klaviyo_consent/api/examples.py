"""Example bodies of the consent API: one source for the OpenAPI examples (``api/schema.py``)
and the browsable API's starting POST body (``api/renderers.py``).

Pure data. Every request example here is accepted by the demo (``make demo``): the phone
numbers are UK mobiles outside Ofcom's drama range, which the app refuses as fictional.
"""

from __future__ import annotations

from typing import Any

SUBSCRIBE: dict[str, Any] = {
    "profile": {"email": "ada@example.com", "phone_number": "+447400123456"},
    "subscriptions": {"email": {"marketing": True}, "sms": {"marketing": True}},
    "method": "form",
    "custom_source": "Checkout page",
    "consent_text": "Yes, send me offers by email and text. Reply STOP to opt out.",
}

UNSUBSCRIBE: dict[str, Any] = {
    "profile": {"email": "ada@example.com"},
    "subscriptions": {"email": {"marketing": True}},
    "method": "form",
    "method_detail": "Preference centre",
}

SUPPRESS: dict[str, Any] = {
    "emails": ["ada@example.com"],
    "method_detail": "Asked by phone to stop all email",
}

CHECK: dict[str, Any] = {
    "emails": ["ada@example.com"],
    "phone_numbers": ["07400 123456"],
    "country": "GB",
}

PHONE_NUMBER_CHANGE: dict[str, Any] = {"phone_number": "07400 654321", "country": "GB"}

MERGE: dict[str, Any] = {"other": 2}

_DELIVERY: dict[str, Any] = {
    "status": "applied",
    "reason": "",
    "errors": [],
    "attempts": 1,
    "pushed_at": "2026-11-30T07:40:17.423874Z",
    "verified_at": "2026-11-30T07:40:47.530931Z",
    "dead_lettered_at": None,
    "history": [
        {
            "at": "2026-11-30T07:40:47.530486+00:00",
            "from": "pushed",
            "status": "applied",
            "reason": "",
            "source": "verify",
        }
    ],
}

EVENT: dict[str, Any] = {
    "id": 8,
    "profile": 1,
    "email": "ada@example.com",
    "phone_number": "+447400123456",
    "external_id": None,
    "channel": "email",
    "purpose": "marketing",
    "consent": "SUBSCRIBED",
    "method": "form",
    "method_detail": "",
    "custom_source": "Checkout page",
    "consent_text": SUBSCRIBE["consent_text"],
    "consent_text_version": 3,
    "consented_at": None,
    "recorded_at": "2026-11-30T07:40:17.017728Z",
    "list_id": "Y6nRLr",
    "historical_import": False,
    "ip_address": "203.0.113.7",
    "user_agent": "Mozilla/5.0",
    "page_url": "https://shop.example.com/checkout",
    "recorded_by": None,
    "suppression": None,
    "klaviyo_data": {},
    "consent_text_sha256": "0ab5b88dbc09ff26a8a11ee51c33095a884bd909a02ac1012737d66086cb9eba",
    "delivery": _DELIVERY,
}

EVENT_SUMMARY: dict[str, Any] = {
    "id": 8,
    "channel": "email",
    "purpose": "marketing",
    "consent": "SUBSCRIBED",
    "suppression": None,
    "method": "form",
    "list_id": "Y6nRLr",
    "consent_text": SUBSCRIBE["consent_text"],
    "consent_text_sha256": EVENT["consent_text_sha256"],
    "recorded_at": EVENT["recorded_at"],
    "delivery": {"status": "pending", "reason": ""},
}

_LEAF: dict[str, Any] = {
    "consent": "SUBSCRIBED",
    "delivery": "applied",
    "reason": "",
    "event_id": 8,
    "consented_at": "2026-11-30T07:40:17.017728+00:00",
    "can_receive": True,
    "cannot_receive_reason": "",
}

PROFILE: dict[str, Any] = {
    "id": 1,
    "email": "ada@example.com",
    "phone_number": "+447400123456",
    "external_id": None,
    "merged_into": None,
    "klaviyo_id": "01JD4V6ZQ8D1W3N5Y7A9C2E4G6",
    "subscriptions": {
        "email": {"marketing": {"can_receive_email_marketing": True, "consent": "SUBSCRIBED"}}
    },
    "mirrored_at": "2026-11-30T07:40:47.530931Z",
    "ledger": {"email": {"marketing": _LEAF}},
    "created_at": "2026-11-30T07:40:17.017728Z",
    "updated_at": "2026-11-30T07:40:47.530931Z",
}

RECORDED: dict[str, Any] = {"profile": PROFILE, "events": [EVENT]}

RECORDED_SUMMARY: dict[str, Any] = {
    "profile": {"id": 1, "email": "ada@example.com", "phone_number": "+447400123456"},
    "events": [EVENT_SUMMARY],
}

SUPPRESSED: dict[str, Any] = {"events": [{**EVENT, "suppression": "suppress"}], "skipped": []}

IDENTITY_CHANGED: dict[str, Any] = {
    "profile": {**PROFILE, "phone_number": "+447400654321"},
    "identity_event": {
        "id": 4,
        "profile": 1,
        "change": "phone_number_replaced",
        "field": "phone_number",
        "old_value": "+447400123456",
        "new_value": "+447400654321",
        "other_profile": None,
        "moved": {},
        "method": "api",
        "recorded_at": "2026-11-30T08:02:11.100000Z",
        "recorded_by": "support",
        "delivery": {
            "status": "pending",
            "reason": "",
            "errors": [],
            "attempts": 0,
            "pushed_at": None,
            "dead_lettered_at": None,
        },
    },
    "events": [{**EVENT, "channel": "sms", "consent": "UNSUBSCRIBED"}],
}

CHECKED: dict[str, Any] = {
    "results": [
        {
            "identifier": "ada@example.com",
            "type": "email",
            "normalized": "ada@example.com",
            "profile_id": 1,
            "error": None,
            "consent": {"email": {"marketing": _LEAF}},
        },
        {
            "identifier": "07400 12345",
            "type": "phone_number",
            "normalized": None,
            "profile_id": None,
            "error": "'07400 12345' is not a valid phone number.",
            "consent": None,
        },
    ]
}

CHECKPOINT: dict[str, Any] = {
    "tree_size": 8,
    "root_hash": "d09227ce24aeef7cefe7ab9695024814dd8c05cfec5ba0c4a89397aa0b1a0e8e",
    "timestamp": "2026-11-30T07:40:17.620153Z",
    "key_id": "946a089440c10178",
    "signature": (
        "6cVOT6BCelP7Tl19V57cl3dA1TWMkY4HVLGL+i1EtQHgfEE+Gmy2flUzIigNjjigxebyOPm7+dEINu2G4BgFAA=="
    ),
    "public_key": "/Zpr75kDdZy2irrjVT2s52LkiC0FdmPodLPl4ZUzRXk=",
}

CHECKPOINTS: dict[str, Any] = {
    "checkpoints": [{**CHECKPOINT, "consistency_from": None, "consistency_proof": []}]
}

RECEIPT: dict[str, Any] = {
    "schema_version": "klaviyo-consent-receipt/1",
    "receipt_id": "946a089440c10178-8-0",
    "record": {"record_id": 8, "consent_state": "SUBSCRIBED"},
    "proof": {
        "leaf_index": 0,
        "leaf_hash": "5dbf687c9ca4b20b92fa56285e9eb1f380494ff09db600beab276c251c6b1a63",
        "tree_size": 8,
        "inclusion_path": ["0295a3d6ff22bb68e7fbf89fbfcd3c5ffda22dceeb12dc1ac3271abbb719e9af"],
        "checkpoint": CHECKPOINT,
    },
}

RECEIPTS: dict[str, Any] = {
    "checkpoint": CHECKPOINT,
    "receipts": [RECEIPT],
    "not_yet_checkpointed": 0,
}

WEBHOOK_HANDLED: dict[str, Any] = {"received": 2, "profiles_refreshed": 1, "ignored": 1}

# Error shapes (api/schema.py documents each once).
FIELD_ERRORS: dict[str, Any] = {
    "profile": {
        "phone_number": [
            "SMS is not available in Slovenia (SI): it is not a supported SMS country "
            "(SMS_COUNTRIES), so SMS consent cannot be recorded for +38640123456."
        ]
    }
}
PARSE_ERROR: dict[str, Any] = {"detail": "JSON parse error - Duplicate key 'profile'."}
IDENTITY_CONFLICT: dict[str, Any] = {
    "code": "identity_conflict",
    "fields": ["phone_number"],
    "detail": "This profile has another phone number; change it with "
    "profiles/{id}/phone-number/.",
}
FORBIDDEN: dict[str, Any] = {
    "detail": "Reading consent records needs the klaviyo_consent view permission."
}
UNAUTHENTICATED: dict[str, Any] = {"detail": "Authentication credentials were not provided."}
NOT_FOUND: dict[str, Any] = {"detail": "No Profile matches the given query."}
THROTTLED: dict[str, Any] = {"detail": "Request was throttled. Expected available in 42 seconds."}
UNSUPPORTED_MEDIA: dict[str, Any] = {
    "detail": 'Unsupported media type "application/x-www-form-urlencoded" in request.'
}
NOT_YET_CHECKPOINTED: dict[str, Any] = {
    "detail": "Event 9 is not in a checkpoint yet; run klaviyo_consent_checkpoint."
}
WEBHOOK_REJECTED: dict[str, Any] = {"detail": "The signature does not match.", "code": "signature"}

# Lists (issue 13) and the public signup endpoint (issue 12).
LIST: dict[str, Any] = {
    "list_id": "Y6nRLr",
    "name": "Newsletter",
    "opt_in_process": "single_opt_in",
    "profile_count": 1204,
    "profile_count_read_at": "2026-11-30T07:00:00Z",
    "mirrored_at": "2026-11-30T07:00:00Z",
}
MEMBERS: dict[str, Any] = {
    "profiles": [{"email": "ada@example.com"}, {"phone_number": "+447400123456"}]
}
MEMBERSHIP_RECORDED: dict[str, Any] = {
    "list_id": "Y6nRLr",
    "action": "add",
    "events": [
        {
            "id": 3,
            "profile": 1,
            "list_id": "Y6nRLr",
            "action": "add",
            "method": "api",
            "recorded_at": "2026-11-30T08:10:00Z",
            "status": "pending",
            "reason": "",
        }
    ],
}
MEMBER_STATUSES: dict[str, Any] = {
    "list_id": "Y6nRLr",
    "members": [
        {
            "email": "ada@example.com",
            "phone_number": None,
            "profile": 1,
            "on_list": True,
            "membership_status": "applied",
            "suppressed": False,
            "suppressions": [],
            "member": True,
        }
    ],
}
PUBLIC_SUBSCRIBE: dict[str, Any] = {
    "profile": {"email": "ada@example.com", "phone_number": "07400 123456", "country": "GB"},
    "subscriptions": {"email": {"marketing": True}, "sms": {"marketing": True}},
}
PUBLIC_SUBSCRIBED: dict[str, Any] = {
    "email": "subscribed",
    "sms": "subscribed",
    "message": "You're signed up for our marketing emails and texts.",
}
CSRF_FAILED: dict[str, Any] = {"detail": "CSRF Failed: CSRF token missing."}

ERASE: dict[str, Any] = {"reason": "Ticket 4711: the person asked to be forgotten"}
ERASED: dict[str, Any] = {
    "erasure_id": 1,
    "profile_id": 1,
    "scope": "profile",
    "requested_at": "2026-11-30T09:00:00Z",
    "requested_by": "support",
    "source": "api",
    "reason": ERASE["reason"],
    "events": 3,
    "digests": {},
    "leaf_index": None,
    "klaviyo_deletion": [
        {"target": "email", "status": "pending", "reason": "", "attempts": 0, "pushed_at": None}
    ],
}
ERASURE_REFUSED: dict[str, Any] = {"profile": ["This profile has already been erased."]}
