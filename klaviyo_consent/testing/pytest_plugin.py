"""pytest fixtures for projects that use django-klaviyo-consent (registered as a pytest11 plugin).

``klaviyo_fake`` gives each test a fresh in-process fake Klaviyo behind the real HTTP client::

    def test_signup_reaches_klaviyo(klaviyo_fake, client):
        client.post("/signup/", {...})
        assert klaviyo_fake.get_profile(email="a@example.com")["subscriptions"]...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def klaviyo_fake(settings: Any) -> Iterator[Any]:
    """A fresh FakeKlaviyo answering every request of this test, offline and key-free."""
    from klaviyo_consent.backends import reset_backend
    from klaviyo_consent.ratelimit import reset_limiters
    from klaviyo_consent.testing.fake import FakeKlaviyo, set_default_fake

    fake = FakeKlaviyo(enforce_rate_limits=False)
    previous = set_default_fake(fake)
    consent = dict(getattr(settings, "KLAVIYO_CONSENT", {}) or {})
    consent["BACKEND"] = "klaviyo_consent.backends.fake.FakeKlaviyoBackend"
    consent.setdefault("BACKEND_OPTIONS", {})
    consent["BACKEND_OPTIONS"] = {
        k: v for k, v in consent["BACKEND_OPTIONS"].items() if k != "fake"
    }
    settings.KLAVIYO_CONSENT = consent
    reset_backend()
    reset_limiters()
    yield fake
    reset_backend()
    reset_limiters()
    set_default_fake(previous)
