"""The real HTTP backend, over a real socket, against the fake Klaviyo server."""

from __future__ import annotations

import pytest
from django.core import checks

from klaviyo_consent.backends import get_backend, reset_backend
from klaviyo_consent.backends.http import KlaviyoBackend
from klaviyo_consent.conf import ConsentSettings
from klaviyo_consent.exceptions import (
    ConfigurationError,
    KlaviyoAuthenticationError,
    KlaviyoClientError,
    KlaviyoConnectionError,
    KlaviyoRateLimited,
)
from klaviyo_consent.services import payloads
from klaviyo_consent.testing.fake import FakeKlaviyo, serve

KEY = "pk_live_secret_123"


@pytest.fixture
def server():
    fake = FakeKlaviyo(api_key=KEY, enforce_rate_limits=False)
    fake.add_list("Single", "Newsletter", "single_opt_in")
    running = serve(fake, "127.0.0.1", 0, background=True, verbose=False)
    yield fake, f"http://127.0.0.1:{running.server_address[1]}"
    running.shutdown()


@pytest.fixture
def http_settings(settings, server):
    fake, url = server
    settings.KLAVIYO_CONSENT = {
        "BACKEND": "klaviyo_consent.backends.http.KlaviyoBackend",
        "API_KEY": KEY,
        "API_URL": url,
        "VERIFY_DELAY": 0,
        "VERIFY_ATTEMPTS": 1,
    }
    reset_backend()
    yield fake
    reset_backend()


def subscribe_payload(email="ada@example.com"):
    entry = payloads.profile_entry(
        email=email, phone_number=None, consents=[("email", "marketing", "SUBSCRIBED", None)]
    )
    return payloads.subscribe_job([entry], list_id="Single", custom_source="HTTP test")


def test_a_job_over_http_carries_the_key_the_pinned_revision_and_json_api(http_settings):
    fake = http_settings
    get_backend().bulk_subscribe_profiles(subscribe_payload())
    assert fake.counts["bulk_subscribe_profiles"] == 1
    profile = fake.get_profile(email="ada@example.com")
    assert profile["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    page = get_backend().get_profiles(payloads.profiles_query('equals(email,"ada@example.com")'))
    assert (
        page["data"][0]["attributes"]["subscriptions"]["email"]["marketing"]["consent"]
        == "SUBSCRIBED"
    )


@pytest.mark.django_db
def test_the_whole_path_runs_over_http(http_settings, django_capture_on_commit_callbacks):
    from klaviyo_consent.services.ledger import ConsentRequest, record_consent

    with django_capture_on_commit_callbacks(execute=True):
        result = record_consent(
            ConsentRequest(
                consent="SUBSCRIBED",
                subscriptions={"email": {"marketing": True}},
                email="ada@example.com",
                list_id="Single",
            )
        )
    result.events[0].delivery.refresh_from_db()
    assert result.events[0].delivery.status == "applied"


def test_a_wrong_key_is_an_authentication_error_that_never_quotes_the_key(http_settings, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "API_KEY": "pk_wrong_key_999"}
    reset_backend()
    with pytest.raises(KlaviyoAuthenticationError) as caught:
        get_backend().bulk_subscribe_profiles(subscribe_payload())
    assert caught.value.status == 401
    assert "pk_wrong_key_999" not in str(caught.value)
    assert KEY not in str(caught.value)


def test_a_refusal_quotes_klaviyos_detail_and_pointer(http_settings):
    fake = http_settings
    fake.rejected_emails.add("bad@example.com")
    with pytest.raises(KlaviyoClientError) as caught:
        get_backend().bulk_subscribe_profiles(subscribe_payload("bad@example.com"))
    message = str(caught.value)
    assert message.startswith("Klaviyo answered 400: Invalid email address")
    assert "/data/attributes/profiles/data/0/attributes/email" in message
    assert caught.value.errors[0]["code"]


def test_a_429_carries_retry_after(http_settings):
    fake = http_settings
    fake.fail_next(429, retry_after=12)
    with pytest.raises(KlaviyoRateLimited) as caught:
        get_backend().bulk_subscribe_profiles(subscribe_payload())
    assert caught.value.retry_after == 12 and caught.value.retryable


def test_reads_wait_out_a_429_and_succeed(http_settings, monkeypatch):
    fake = http_settings
    slept = []
    monkeypatch.setattr("klaviyo_consent.backends.base.time.sleep", slept.append)
    fake.fail_next(429, retry_after=3)
    page = get_backend().get_profiles(payloads.profiles_query())
    assert page["data"] == [] and slept == [3.0]


def test_a_dead_server_is_a_retryable_connection_error(settings):
    backend = KlaviyoBackend(api_key=KEY, api_url="http://127.0.0.1:9", timeout=1)
    with pytest.raises(KlaviyoConnectionError) as caught:
        backend.bulk_subscribe_profiles(subscribe_payload())
    assert caught.value.retryable


def test_a_dead_server_is_also_the_builtin_connection_error():
    backend = KlaviyoBackend(api_key=KEY, api_url="http://127.0.0.1:9", timeout=1)
    with pytest.raises(ConnectionError) as caught:
        backend.bulk_subscribe_profiles(subscribe_payload())
    assert isinstance(caught.value, KlaviyoConnectionError)
    assert KEY not in str(caught.value)


def test_the_http_backend_without_a_key_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="API_KEY"):
        KlaviyoBackend(api_key="", api_url="http://127.0.0.1:9").headers()


def test_unknown_settings_are_refused_by_name():
    with pytest.raises(ConfigurationError, match="APIKEY"):
        _ = ConsentSettings({"APIKEY": "pk_x"}).API_KEY


def test_a_bad_backend_path_names_the_setting():
    with pytest.raises(ConfigurationError, match="BACKEND"):
        _ = ConsentSettings({"BACKEND": "no.such.Backend"}).BACKEND


def test_system_check_flags_the_http_backend_without_a_key(settings):
    settings.KLAVIYO_CONSENT = {"BACKEND": "klaviyo_consent.backends.http.KlaviyoBackend"}
    # Only this app's checks (manage.py check --tag klaviyo_consent): Django 6.1's model
    # checks open a database connection, which this test has no use for.
    ids = [m.id for m in checks.run_checks(tags=["klaviyo_consent"])]
    assert "klaviyo_consent.E002" in ids
    settings.KLAVIYO_CONSENT = {"BACKEND": "klaviyo_consent.backends.fake.FakeKlaviyoBackend"}
    ids = [m.id for m in checks.run_checks(tags=["klaviyo_consent"])]
    assert "klaviyo_consent.E002" not in ids


def test_system_check_flags_a_task_backend_that_cannot_be_loaded(settings):
    settings.TASKS = {"default": {"BACKEND": "no.such.Backend"}}
    [error] = [m for m in checks.run_checks(tags=["klaviyo_consent"]) if m.id.endswith("E003")]
    assert "'default' is not a usable task backend" in error.msg
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    assert not [m for m in checks.run_checks(tags=["klaviyo_consent"]) if m.id.endswith("E003")]


def test_the_backend_is_rebuilt_from_the_new_settings_when_they_change(settings):
    from klaviyo_consent.backends import get_backend

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "API_URL": "https://one.example"}
    first = get_backend()
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "API_URL": "https://two.example"}
    second = get_backend()
    assert second is not first
    assert second.api_url == "https://two.example"


def test_the_fake_server_command_carries_the_app_prefix():
    from django.core.management import get_commands

    commands = get_commands()
    assert commands.get("klaviyo_consent_fake_server") == "klaviyo_consent"
    assert "klaviyo_fake_server" not in commands
