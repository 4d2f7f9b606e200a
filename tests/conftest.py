from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection
from django.db.models import Q
from rest_framework.test import APIClient

from tests.workers import REDIS_URL, Worker, database_url, flush_redis, redis_answers


@pytest.fixture(autouse=True)
def _throttle_counts() -> Iterator[None]:
    """DRF throttles count in Django's default cache: every test starts and ends uncounted."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    """A user who may record consent, read the ledger and change a profile's identity."""
    user = django_user_model.objects.create_user("staff", password="pw")
    user.user_permissions.add(
        *Permission.objects.filter(
            Q(codename__startswith="view_") | Q(codename="change_profile"),
            content_type__app_label="klaviyo_consent",
        )
    )
    return user


@pytest.fixture
def api(staff: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.fixture
def fake(klaviyo_fake: Any) -> Any:
    """The fake with the lists the tests use: one single and one double opt-in list."""
    klaviyo_fake.add_list("Single", "Newsletter", "single_opt_in")
    klaviyo_fake.add_list("Double", "VIP", "double_opt_in")
    return klaviyo_fake


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks: Any) -> Any:
    """Run on-commit callbacks (the push) as the request's transaction commits."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def db_url(transactional_db: None) -> str:
    """The test database for worker subprocesses; only PostgreSQL is shared between processes."""
    if connection.vendor != "postgresql":
        pytest.skip("worker processes need PostgreSQL (set DATABASE_URL)")
    return database_url(connection.settings_dict)


@pytest.fixture
def redis() -> Iterator[None]:
    """The suite's Redis database, flushed before and after; skips when Redis does not answer."""
    if not redis_answers():
        pytest.skip(f"Redis at {REDIS_URL} does not answer")
    flush_redis()
    yield
    flush_redis()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Worker processes a test started; whatever happens, none outlives the test."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


class VirtualClock:
    """Time that only moves when someone sleeps (or a test moves it): exact and instant."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def virtual_time(monkeypatch: Any) -> VirtualClock:
    """The clock the local rate limiter (``limits``' memory storage and our waits) reads."""
    clock = VirtualClock()
    monkeypatch.setattr("limits.storage.memory.time", clock)
    monkeypatch.setattr("klaviyo_consent.ratelimit.time", clock)
    return clock
