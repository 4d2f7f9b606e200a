"""Engines: each documented way of running the push delivers a recorded consent end to end.

The snippets in docs/delivery.md are the ``TASKS`` blocks of ``tests.worker_settings``; these
tests run them for real. The immediate backend runs in the test process (SQLite or PostgreSQL);
the database worker, the Celery worker and ``klaviyo_consent_sync --loop`` are separate
processes sharing the test's PostgreSQL database, and each talks HTTP to one fake Klaviyo here.
A producer subprocess records the consent with the same settings, the way a web process would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from klaviyo_consent.compat import TASKS_MODULE
from klaviyo_consent.models import Delivery
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from klaviyo_consent.testing.fake import FakeKlaviyo, FakeKlaviyoServer
from tests.workers import (
    DB_WORKER,
    LIST_ID,
    REDIS_URL,
    SYNC_LOOP,
    Worker,
    celery_worker,
    list_fake,
    run,
    serving,
    wait_until,
    worker_env,
)

#: Seconds a worker process gets to start (Django + Celery imports) and push one event.
DELIVERY_TIMEOUT = 60.0


@pytest.fixture
def fake() -> FakeKlaviyo:
    return list_fake(enforce_rate_limits=False)


@pytest.fixture
def server(fake: FakeKlaviyo) -> Iterator[FakeKlaviyoServer]:
    with serving(fake) as server:
        yield server


def _applied_once(fake: FakeKlaviyo, email: str) -> bool:
    return dict(fake.applied) == {(email, "email", "marketing", "SUBSCRIBED"): 1}


def _json(value: Any) -> Any:
    return value if isinstance(value, (dict, list)) else json.loads(value)


def _produce(env: dict[str, str], email: str) -> int:
    """Record one subscription in a producer process; returns its event id."""
    [event_id] = json.loads(run(("-m", "tests.workers", "record", email), env))["event_ids"]
    return event_id


def _deliver(worker: Worker, event_id: int) -> Delivery:
    try:
        done = wait_until(
            lambda: Delivery.objects.filter(pk=event_id, status="applied").exists(),
            DELIVERY_TIMEOUT,
        )
    finally:
        worker.stop()
    delivery = Delivery.objects.get(pk=event_id)
    assert done, f"delivery is {delivery.status!r} ({delivery.reason})\n{worker.tail()}"
    return delivery


@pytest.mark.django_db
def test_the_immediate_backend_pushes_on_commit_and_verifies(
    fake: FakeKlaviyo,
    server: FakeKlaviyoServer,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.TASKS = {"default": {"BACKEND": f"{TASKS_MODULE}.backends.immediate.ImmediateBackend"}}
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "BACKEND": "klaviyo_consent.backends.http.KlaviyoBackend",
        "API_URL": server.url,
        "API_KEY": "pk_engine_tests",
        "PUSH_ON_COMMIT": True,
        "VERIFY_DELAY": 0,
    }
    with django_capture_on_commit_callbacks(execute=True):
        [event] = record_consent(
            ConsentRequest(
                consent="SUBSCRIBED",
                email="now@example.com",
                subscriptions={"email": {"marketing": True}},
                list_id=LIST_ID,
            )
        ).events
        # Nothing leaves before the transaction commits: the outbox row is the truth.
        assert fake.counts["bulk_subscribe_profiles"] == 0

    assert Delivery.objects.get(pk=event.pk).status == "applied"
    assert _applied_once(fake, "now@example.com")


@pytest.mark.postgres
@pytest.mark.slow
def test_the_database_backend_worker_delivers_a_recorded_consent(
    fake: FakeKlaviyo,
    server: FakeKlaviyoServer,
    db_url: str,
    workers: list[Worker],
    tmp_path: Path,
) -> None:
    env = worker_env(
        db_url=db_url, api_url=server.url, engine="database", consent={"VERIFY_DELAY": 0}
    )
    # django-tasks-db's table, created in the test database by its own migration.
    run(("-m", "django", "migrate", "django_tasks_database", "--noinput", "-v", "0"), env)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM django_tasks_database_dbtaskresult")
    worker = Worker(DB_WORKER, env, tmp_path / "db_worker.log").start()
    workers.append(worker)

    event_id = _produce(env, "db@example.com")
    _deliver(worker, event_id)

    assert _applied_once(fake, "db@example.com")
    # The push ran as a django-tasks-db task (it may have queued a follow-up read-back).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT task_path, status, return_value FROM django_tasks_database_dbtaskresult"
            " ORDER BY enqueued_at"
        )
        rows = cursor.fetchall()
    assert {path for path, _, _ in rows} == {"klaviyo_consent.tasks.sync_outbox"}
    results = [_json(value) for _, status, value in rows if status == "SUCCESSFUL"]
    assert results and results[0]["pushed"] == 1
    assert sum(result["pushed"] for result in results) == 1


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_a_celery_worker_with_a_redis_broker_delivers_a_recorded_consent(
    fake: FakeKlaviyo,
    server: FakeKlaviyoServer,
    db_url: str,
    redis: None,
    workers: list[Worker],
    tmp_path: Path,
) -> None:
    import redis as redis_client

    env = worker_env(
        db_url=db_url, api_url=server.url, engine="celery", consent={"VERIFY_DELAY": 0}
    )
    worker = Worker(celery_worker(f"kc-{uuid.uuid4().hex[:8]}"), env, tmp_path / "celery.log")
    workers.append(worker.start())

    event_id = _produce(env, "celery@example.com")
    _deliver(worker, event_id)

    assert _applied_once(fake, "celery@example.com")
    # The push ran as a Celery task: its result is in the Redis result backend.
    client = redis_client.Redis.from_url(REDIS_URL)
    metas = [json.loads(client.get(key)) for key in client.scan_iter("celery-task-meta-*")]
    client.close()
    assert metas
    assert {(meta["name"], meta["status"]) for meta in metas} == {
        ("klaviyo_consent.sync_outbox", "SUCCESS")
    }
    assert sum(meta["result"]["pushed"] for meta in metas) == 1


@pytest.mark.postgres
@pytest.mark.slow
def test_klaviyo_consent_sync_loop_runs_as_a_plain_worker(
    fake: FakeKlaviyo,
    server: FakeKlaviyoServer,
    db_url: str,
    workers: list[Worker],
    tmp_path: Path,
) -> None:
    env = worker_env(
        db_url=db_url,
        api_url=server.url,
        consent={"VERIFY_DELAY": 0, "PUSH_ON_COMMIT": False},
    )
    event_id = _produce(env, "loop@example.com")
    assert Delivery.objects.get(pk=event_id).status == "pending"
    worker = Worker(SYNC_LOOP, env, tmp_path / "loop.log").start()
    workers.append(worker)

    _deliver(worker, event_id)

    assert _applied_once(fake, "loop@example.com")
