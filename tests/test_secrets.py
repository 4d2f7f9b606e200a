"""The private API key never leaves: not in exceptions, logs, API bodies, admin pages or the
DEBUG error page, even when it is misconfigured."""

from __future__ import annotations

import logging
import sys
import traceback

import pytest
from django.core import checks
from django.test import RequestFactory
from django.views.debug import technical_500_response

from klaviyo_consent.backends import get_backend, reset_backend
from klaviyo_consent.backends.http import KlaviyoBackend
from klaviyo_consent.exceptions import ConfigurationError, KlaviyoConsentError
from klaviyo_consent.models import Profile
from tests.helpers import SUBSCRIBE, body

pytestmark = pytest.mark.django_db

CANARY = "pk_canary0c0ffee0123456789abcdef"
WEBHOOK_CANARY = "whsec_canary0c0ffee0123456789"


def check_ids(settings, key):
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "BACKEND": "klaviyo_consent.backends.http.KlaviyoBackend",
        "API_KEY": key,
    }
    return [m.id for m in checks.run_checks(tags=["klaviyo_consent"])]


@pytest.mark.parametrize("key", [CANARY + "\n", " " + CANARY, CANARY[:8] + " " + CANARY[8:]])
def test_a_key_with_whitespace_fails_the_system_check_and_is_not_stripped(settings, key):
    assert "klaviyo_consent.E004" in check_ids(settings, key)
    reset_backend()
    assert get_backend().api_key == key  # never stripped silently
    reset_backend()


@pytest.mark.parametrize("key", ["sk_live_123", "pk_", "pk_abc-def", "Klaviyo-API-Key pk_abc"])
def test_a_key_without_the_private_key_shape_is_warned_about(settings, key):
    ids = check_ids(settings, key)
    assert "klaviyo_consent.W001" in ids or "klaviyo_consent.E004" in ids


def test_a_well_formed_key_passes_the_key_checks(settings):
    ids = check_ids(settings, CANARY)
    assert not {"klaviyo_consent.E004", "klaviyo_consent.W001"} & set(ids)


def test_the_backend_repr_never_shows_the_key():
    backend = KlaviyoBackend(api_key=CANARY, api_url="http://127.0.0.1:9")
    assert CANARY not in repr(backend) and "api_key=set" in repr(backend)
    assert CANARY not in repr(backend.session.headers)


def _everything_about(exc: BaseException) -> str:
    return "\n".join(
        [str(exc), repr(exc), "".join(traceback.format_exception(exc)), repr(exc.__dict__)]
    )


@pytest.fixture
def canary(settings, fake):
    """The HTTP backend with the canary key and a trailing newline, as from a secrets file."""
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "BACKEND": "klaviyo_consent.backends.http.KlaviyoBackend",
        "API_URL": "http://127.0.0.1:9",
        "API_KEY": CANARY + "\n",
        "PUSH_ON_COMMIT": False,
    }
    reset_backend()
    yield
    reset_backend()


def _debug_page(settings, exc_info) -> str:
    settings.DEBUG = True
    request = RequestFactory().post("/admin/klaviyo_consent/profile/")
    return technical_500_response(request, *exc_info).content.decode()


def test_requests_header_error_never_quotes_the_key(canary, settings, caplog):
    caplog.set_level(logging.DEBUG)
    backend = KlaviyoBackend(api_key=CANARY + "\n", api_url="http://127.0.0.1:9")
    with pytest.raises(ConfigurationError) as raised:
        backend.get_list("Single")
    assert "whitespace" in str(raised.value)
    assert CANARY not in _everything_about(raised.value)
    assert CANARY not in caplog.text
    assert CANARY not in _debug_page(settings, (raised.type, raised.value, raised.tb))


def test_a_connection_error_with_a_good_key_leaks_nothing(settings, caplog):
    caplog.set_level(logging.DEBUG)
    backend = KlaviyoBackend(api_key=CANARY, api_url="http://127.0.0.1:9")
    backend.read_retries = 0
    with pytest.raises(KlaviyoConsentError) as raised:
        backend.get_list("Single")
    assert CANARY not in _everything_about(raised.value)
    assert CANARY not in caplog.text
    page = _debug_page(settings, (raised.type, raised.value, raised.tb))
    assert "Klaviyo" in page and CANARY not in page


def test_the_debug_page_of_a_failing_admin_action_never_shows_the_key(
    canary, admin_client, settings, caplog
):
    caplog.set_level(logging.DEBUG)
    profile = Profile.objects.create(email="ada@example.com")
    from klaviyo_consent.services.ledger import ConsentRequest, record_consent

    record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            email="ada@example.com",
            subscriptions={"email": {"marketing": True}},
            list_id="Single",
        )
    )
    admin_client.raise_request_exception = True
    try:
        admin_client.post(
            "/admin/klaviyo_consent/profile/",
            {"action": "push_pending_action", "_selected_action": [profile.pk]},
        )
    except Exception:  # noqa: BLE001 - the page of whatever escapes is what is checked
        exc_info = sys.exc_info()
        assert CANARY not in _everything_about(exc_info[1])
        page = _debug_page(settings, exc_info)
        assert "Traceback" in page
        assert CANARY not in page
    else:
        pytest.fail("a key with a newline must not reach Klaviyo")
    assert CANARY not in caplog.text


def test_api_bodies_and_admin_pages_never_hold_the_key(canary, api, admin_client, caplog):
    caplog.set_level(logging.DEBUG)
    response = api.post(SUBSCRIBE, body(), format="json")
    assert response.status_code == 201
    outputs = [response.content.decode()]
    outputs.append(api.get("/api/consent/events/").content.decode())
    outputs.append(api.get("/api/consent/profiles/").content.decode())
    for path in ["profile", "consentevent", "delivery", "klaviyolist", "webhookdelivery"]:
        outputs.append(admin_client.get(f"/admin/klaviyo_consent/{path}/").content.decode())
    profile = Profile.objects.get()
    outputs.append(
        admin_client.get(f"/admin/klaviyo_consent/profile/{profile.pk}/change/").content.decode()
    )
    assert all(CANARY not in text for text in outputs)
    assert CANARY not in caplog.text


def test_the_debug_page_of_a_failing_webhook_never_shows_the_webhook_secret(
    fake, settings, monkeypatch
):
    from klaviyo_consent.models import WebhookDelivery
    from klaviyo_consent.testing.webhooks import signed_webhook

    # No local holds the secret here either: the test's own frame is on the page too.
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "WEBHOOK_SECRET": WEBHOOK_CANARY}

    def refuse(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(WebhookDelivery.objects, "create", refuse)
    payload, headers = signed_webhook(
        "event:klaviyo.subscribed_to_email_marketing",
        email="ada@example.com",
        secret=WEBHOOK_CANARY,
    )
    from rest_framework.test import APIClient

    with pytest.raises(RuntimeError) as raised:
        APIClient().post(
            "/api/consent/webhooks/klaviyo/",
            payload,
            content_type="application/json",
            headers=headers,
        )
    page = _debug_page(settings, (raised.type, raised.value, raised.tb))
    assert "the database went away" in page and WEBHOOK_CANARY not in page


def test_the_debug_page_of_a_misconfigured_setting_never_shows_the_key(settings):
    from klaviyo_consent.conf import ConsentSettings

    settings.KLAVIYO_CONSENT = {"API_KEY": CANARY, "NO_SUCH_SETTING": 1}
    with pytest.raises(ConfigurationError) as raised:
        _ = ConsentSettings().API_KEY
    assert "NO_SUCH_SETTING" in str(raised.value)
    assert CANARY not in _debug_page(settings, (raised.type, raised.value, raised.tb))
