"""Every payload the client builds validates with Klaviyo's official SDK models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from openapi_client.models.subscription_create_job_create_query import (
    SubscriptionCreateJobCreateQuery,
)
from openapi_client.models.subscription_delete_job_create_query import (
    SubscriptionDeleteJobCreateQuery,
)
from openapi_client.models.suppression_create_job_create_query import (
    SuppressionCreateJobCreateQuery,
)

from klaviyo_consent.services import payloads

PAST = datetime.now(UTC) - timedelta(days=3)


def entries(consent: str, n: int = 3, consented_at=None):
    return [
        payloads.profile_entry(
            email=f"p{i}@example.com",
            phone_number=f"+1202555{i:04d}",
            klaviyo_id="01GDDKASAP8TKDDA2GRZDSVP4H" if i == 0 else None,
            consents=[
                ("email", "marketing", consent, consented_at),
                ("sms", "marketing", consent, consented_at),
                ("sms", "transactional", consent, consented_at),
            ],
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("list_id", [None, "Y6nRLr"])
@pytest.mark.parametrize("custom_source", [None, "Checkout"])
def test_subscribe_jobs_validate_with_the_sdk(list_id, custom_source):
    payload = payloads.subscribe_job(
        entries("SUBSCRIBED"), list_id=list_id, custom_source=custom_source
    )
    model = SubscriptionCreateJobCreateQuery.from_dict(payload)
    assert (
        model.to_dict()["data"]["attributes"]["profiles"]["data"][0]["attributes"]["email"]
        == "p0@example.com"
    )


def test_historical_import_jobs_validate_with_the_sdk():
    payload = payloads.subscribe_job(
        entries("SUBSCRIBED", consented_at=PAST), historical_import=True, list_id="Y6nRLr"
    )
    model = SubscriptionCreateJobCreateQuery.from_dict(payload)
    assert model is not None and model.data.attributes.historical_import is True
    leaf = payload["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]
    assert leaf["email"]["marketing"]["consented_at"] == PAST.isoformat()


@pytest.mark.parametrize("list_id", [None, "Y6nRLr"])
def test_unsubscribe_jobs_validate_with_the_sdk(list_id):
    payload = payloads.unsubscribe_job(entries("UNSUBSCRIBED"), list_id=list_id)
    model = SubscriptionDeleteJobCreateQuery.from_dict(payload)
    assert model is not None
    parsed = model.to_dict()["data"]
    assert parsed["type"] == "profile-subscription-bulk-delete-job"
    first = parsed["attributes"]["profiles"]["data"][0]["attributes"]
    assert first["email"] == "p0@example.com"
    assert first["subscriptions"]["email"]["marketing"]["consent"] == "UNSUBSCRIBED"
    assert first["subscriptions"]["sms"]["transactional"]["consent"] == "UNSUBSCRIBED"
    listed = parsed.get("relationships", {}).get("list", {}).get("data", {}).get("id")
    assert listed == list_id


def test_suppression_jobs_validate_with_the_sdk():
    model = SuppressionCreateJobCreateQuery.from_dict(
        payloads.suppress_job(["a@example.com", "b@example.com"])
    )
    assert model is not None
    parsed = model.to_dict()["data"]
    assert parsed["type"] == "profile-suppression-bulk-create-job"
    emails = [item["attributes"]["email"] for item in parsed["attributes"]["profiles"]["data"]]
    assert emails == ["a@example.com", "b@example.com"]


def test_the_sdk_would_catch_a_wrong_consent_value():
    payload = payloads.subscribe_job(entries("UNSUBSCRIBED"))
    with pytest.raises(ValueError):
        SubscriptionCreateJobCreateQuery.from_dict(payload)


def test_job_size_limits_are_klaviyos():
    with pytest.raises(ValueError):
        payloads.subscribe_job(entries("SUBSCRIBED", n=1) * 1001)
    with pytest.raises(ValueError):
        payloads.unsubscribe_job(entries("UNSUBSCRIBED", n=1) * 101)


@pytest.mark.django_db
def test_every_job_the_sync_sends_validates_with_the_sdk(fake, api):
    """Through the real client: record a mix, push it, and validate what went over the wire."""
    from klaviyo_consent.services.outbox import claim
    from klaviyo_consent.services.push import Pusher, _send
    from klaviyo_consent.services.reports import SyncReport

    sent = []

    def capture(job, payload):
        sent.append(payload)
        _send(job, payload)

    from tests.helpers import SUBSCRIBE, UNSUBSCRIBE, body

    api.post(SUBSCRIBE, body(), format="json")
    api.post(
        SUBSCRIBE,
        body(
            profile={"email": "b@example.com"},
            subscriptions={"email": {"marketing": True}},
            list_id="",
            historical_import=True,
            consented_at=PAST.isoformat(),
        ),
        format="json",
    )
    api.post(
        UNSUBSCRIBE,
        body(profile={"email": "c@example.com"}, subscriptions={"email": {"marketing": True}}),
        format="json",
    )
    Pusher(SyncReport(), send=capture).push(claim("pending", limit=100))
    assert len(sent) == 3
    for payload in sent:
        model = {
            "profile-subscription-bulk-create-job": SubscriptionCreateJobCreateQuery,
            "profile-subscription-bulk-delete-job": SubscriptionDeleteJobCreateQuery,
        }[payload["data"]["type"]]
        model.from_dict(payload)
