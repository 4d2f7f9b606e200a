"""The push task, and how it brings the verdict back without a separate loop."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.utils import timezone

from klaviyo_consent.compat import TASKS_MODULE
from klaviyo_consent.models import Delivery
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from klaviyo_consent.tasks import sync_outbox


def subscribe_a(list_id: str = "Single"):
    """a@example.com subscribes to email marketing: one event, pending in the outbox."""
    return record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email="a@example.com",
            list_id=list_id,
        )
    )


def task_backends():
    """The Tasks framework's backend handler: ``django.tasks`` on 6.x, the backport on 5.2."""
    return importlib.import_module(TASKS_MODULE).task_backends


pytestmark = pytest.mark.django_db


@pytest.fixture
def deferring_backend(settings):
    settings.TASKS = {
        "default": {"BACKEND": f"{TASKS_MODULE}.backends.immediate.ImmediateBackend"},
        "deferring": {"BACKEND": f"{TASKS_MODULE}.backends.dummy.DummyBackend"},
    }
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "TASK_BACKEND": "deferring",
        "VERIFY_DELAY": 30,
        "PUSH_ON_COMMIT": False,
    }
    return task_backends()["deferring"]


def test_a_push_schedules_its_own_read_back_when_the_backend_can_defer(fake, deferring_backend):
    subscribe_a()
    before = timezone.now()
    result = sync_outbox.call()
    assert result["pushed"] == 1
    assert Delivery.objects.get().status == "pushed"  # VERIFY_DELAY has not passed yet
    [scheduled] = deferring_backend.results
    assert scheduled.task.func is sync_outbox.func
    run_after = scheduled.task.run_after
    assert before + timedelta(seconds=29) < run_after < timezone.now() + timedelta(seconds=31)


def test_nothing_is_scheduled_when_nothing_was_pushed(fake, deferring_backend):
    sync_outbox.call()
    assert deferring_backend.results == []


def test_a_push_that_only_hit_a_429_schedules_the_retry(fake, deferring_backend):
    subscribe_a()
    fake.fail_next(429, retry_after=20)
    before = timezone.now()
    result = sync_outbox.call()
    assert (result["pushed"], result["retried"]) == (0, 1)
    [scheduled] = deferring_backend.results
    assert before + timedelta(seconds=19) < scheduled.task.run_after
    assert scheduled.task.run_after < timezone.now() + timedelta(seconds=21)


def test_the_push_is_enqueued_on_commit_and_only_then(
    fake, settings, django_capture_on_commit_callbacks
):
    settings.TASKS = {"default": {"BACKEND": f"{TASKS_MODULE}.backends.dummy.DummyBackend"}}

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        subscribe_a(list_id="")
    assert task_backends()["default"].results == []
    for callback in callbacks:
        callback()
    assert len(task_backends()["default"].results) == 1


def test_a_broken_queue_loses_nothing(fake, settings, django_capture_on_commit_callbacks, caplog):
    settings.TASKS = {"default": {"BACKEND": "no.such.Backend"}}
    with django_capture_on_commit_callbacks(execute=True):
        result = subscribe_a(list_id="")
    assert "klaviyo_consent_sync will send it" in caplog.text
    assert Delivery.objects.get(pk=result.events[0].pk).status == "pending"
