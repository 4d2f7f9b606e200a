"""Build signed Klaviyo webhook deliveries, so a project's tests can post one to its endpoint::

    body, headers = signed_webhook(
        "event:klaviyo.unsubscribed_from_sms_marketing",
        phone_number="+447400123456",
        secret=settings.KLAVIYO_CONSENT["WEBHOOK_SECRET"],
    )
    client.post("/api/consent/webhooks/klaviyo/", body, content_type="application/json",
                headers=headers)

Klaviyo documents the envelope (``data[]`` of ``topic``/``payload``/``external_id``, and
``meta``) but not the payload of the consent topics; the payload built here is a guess shaped like
a profile resource, which the endpoint's extractor reads like any other shape it tolerates.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from klaviyo_consent.services.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_ID_HEADER,
    sign,
)


def signed_webhook(
    topic: str,
    *,
    email: str | None = None,
    phone_number: str | None = None,
    profile_id: str | None = None,
    secret: str,
    timestamp: str | int | float | datetime | None = None,
    webhook_id: str = "wh_test",
) -> tuple[bytes, dict[str, str]]:
    """One delivery with one item on ``topic`` about the profile given: (body, headers).

    ``timestamp`` defaults to now in Unix seconds; a datetime is sent as ISO 8601.
    """
    if timestamp is None:
        stamp = str(int(time.time()))
    elif isinstance(timestamp, datetime):
        stamp = timestamp.isoformat()
    else:
        stamp = str(timestamp)
    attributes = {
        key: value
        for key, value in (("email", email), ("phone_number", phone_number))
        if value is not None
    }
    profile: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if profile_id is not None:
        profile["id"] = profile_id
    document = {
        "data": [
            {
                "topic": topic,
                "external_id": str(uuid.uuid4()),
                "payload": {
                    "data": {
                        "type": "event",
                        "id": str(uuid.uuid4()),
                        "attributes": {
                            "datetime": datetime.now(UTC).isoformat(),
                            "profile": {"data": profile},
                        },
                    }
                },
            }
        ],
        "meta": {
            "klaviyo_account_id": "FakeAcct",
            "klaviyo_webhook_id": webhook_id,
            "timestamp": datetime.now(UTC).isoformat(),
        },
    }
    body = json.dumps(document).encode()
    headers = {
        "Content-Type": "application/json",
        WEBHOOK_ID_HEADER: webhook_id,
        SIGNATURE_HEADER: sign(body, stamp, secret),
        TIMESTAMP_HEADER: stamp,
    }
    return body, headers
