"""klaviyo_consent.celery: plain Celery tasks over the same services as the Tasks path.

These run the tasks eagerly in this process (Celery's ``task_always_eager``); a real Celery
worker with a Redis broker is ``test_engines.py``'s job.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from django.utils import timezone

from klaviyo_consent import celery as consent_celery
from klaviyo_consent.models import Checkpoint, Delivery
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from tests.helpers import SUBSCRIBE, body

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager_celery() -> Iterator[Celery]:
    """A Celery app that runs every task in the caller, as a site's tests would configure it."""
    app = Celery("tests", set_as_current=True)
    app.conf.update(task_always_eager=True, task_eager_propagates=True, broker_url="memory://")
    app.loader.import_default_modules()
    yield app
    app.close()


def _subscribe(email: str = "a@example.com") -> Any:
    return record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email=email,
            list_id="Single",
        )
    )


def test_the_celery_task_pushes_and_verifies_a_recorded_consent(settings, fake, eager_celery):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    _subscribe()
    assert Delivery.objects.get().status == "pending"

    report = consent_celery.sync_outbox.delay().get()

    assert report["pushed"] == 1
    assert Delivery.objects.get().status == "applied"
    assert fake.applied[("a@example.com", "email", "marketing", "SUBSCRIBED")] == 1


def test_enqueue_push_sends_the_celery_task_once_the_recording_commits(
    settings, fake, eager_celery, api, on_commit
):
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "ENQUEUE_PUSH": "klaviyo_consent.celery.enqueue_push",
    }
    sent: list[str] = []
    eager_celery.conf.task_always_eager = False  # see the message, run nothing

    def capture(*args: Any, **kwargs: Any) -> None:
        sent.append(consent_celery.sync_outbox.name)

    consent_celery.sync_outbox.apply_async = capture  # type: ignore[method-assign]
    try:
        with on_commit():
            response = api.post(SUBSCRIBE, body(), format="json")
            assert sent == []  # nothing before the commit
    finally:
        del consent_celery.sync_outbox.apply_async
    assert response.status_code == 201
    assert sent == ["klaviyo_consent.sync_outbox"]
    # Nothing ran in the request: the worker pushes.
    assert set(Delivery.objects.values_list("status", flat=True)) == {"pending"}


def test_a_push_enqueues_its_read_back_for_when_it_falls_due(settings, fake, eager_celery):
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "PUSH_ON_COMMIT": False,
        "VERIFY_DELAY": 30,
    }
    _subscribe()
    scheduled: list[dict[str, Any]] = []
    consent_celery.sync_outbox.apply_async = (  # type: ignore[method-assign]
        lambda *args, **kwargs: scheduled.append(kwargs)
    )
    before = timezone.now()
    try:
        report = consent_celery.sync_outbox.apply().get()
    finally:
        del consent_celery.sync_outbox.apply_async
    assert report["pushed"] == 1
    delivery = Delivery.objects.get()
    assert delivery.status == "pushed"
    [follow_up] = scheduled
    assert follow_up["eta"] == delivery.next_attempt_at
    assert follow_up["eta"] >= before + timedelta(seconds=30)


def test_a_run_with_nothing_to_do_enqueues_nothing(settings, fake, eager_celery):
    scheduled: list[Any] = []
    consent_celery.sync_outbox.apply_async = (  # type: ignore[method-assign]
        lambda *args, **kwargs: scheduled.append(kwargs)
    )
    try:
        report = consent_celery.sync_outbox.apply().get()
    finally:
        del consent_celery.sync_outbox.apply_async
    assert report["pushed"] == 0
    assert scheduled == []


def test_the_checkpoint_task_signs_when_due_and_only_then(settings, fake, eager_celery):
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "PUSH_ON_COMMIT": False,
        "CHECKPOINT_INTERVAL": 0,
    }
    _subscribe()
    made = consent_celery.checkpoint.delay().get()
    assert made == {
        "tree_size": 1,
        "root_hash": Checkpoint.objects.get().root_hash,
    }
    assert consent_celery.checkpoint.delay().get() is None  # no event since: nothing due


def test_the_beat_schedule_names_the_modules_tasks(eager_celery):
    registered = set(eager_celery.tasks)
    for entry in consent_celery.BEAT_SCHEDULE.values():
        assert entry["task"] in registered
        assert entry["schedule"] > 0


def test_an_enqueue_push_that_cannot_be_imported_is_a_check_error_naming_it(settings):
    from django.core import checks

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "ENQUEUE_PUSH": "no.such.enqueue"}
    errors = [m for m in checks.run_checks(tags=["klaviyo_consent"]) if m.id.endswith("E040")]
    assert len(errors) == 1 and "no.such.enqueue" in errors[0].msg
    # The Tasks backend is not asked for: the site does not enqueue through it.
    assert not [m for m in checks.run_checks(tags=["klaviyo_consent"]) if m.id.endswith("E003")]
