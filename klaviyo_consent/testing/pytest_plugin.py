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
    """A fresh FakeKlaviyo answering every request of this test, offline and key-free.

    ``unittest`` users: ``klaviyo_consent.testing.fixtures.klaviyo_fake()`` / ``KlaviyoFakeMixin``.
    """
    from klaviyo_consent.testing.fixtures import FakeKlaviyo, fake_consent_settings, installed

    settings.KLAVIYO_CONSENT = fake_consent_settings(getattr(settings, "KLAVIYO_CONSENT", None))
    with installed(FakeKlaviyo(enforce_rate_limits=False)) as fake:
        yield fake


_EVENTS = "klaviyo_consent_consentevent"
_DELETE_TRIGGER = "klaviyo_consent_append_only_delete"


@pytest.fixture(autouse=True, scope="session")
def _klaviyo_consent_sqlite_flush_allowed() -> Iterator[None]:
    """Let a test flush (``transaction=True`` tests) empty the ledger on SQLite.

    Migration 0004 makes SQLite refuse DELETE of a consent event, and Django flushes SQLite with
    DELETE (PostgreSQL flushes with TRUNCATE, which row triggers do not see). Only the flush of
    a test database lifts the trigger, for the length of that flush.
    """
    from django.db.backends.sqlite3.base import DatabaseWrapper

    DatabaseOperations = DatabaseWrapper.ops_class
    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self: Any, sql_list: Any) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS {_DELETE_TRIGGER}")
        try:
            original(self, sql_list)
        finally:
            with self.connection.cursor() as cursor:
                if cursor.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", [_EVENTS]
                ).fetchone():
                    cursor.execute(
                        f"CREATE TRIGGER IF NOT EXISTS {_DELETE_TRIGGER} "
                        f"BEFORE DELETE ON {_EVENTS} "
                        "BEGIN SELECT RAISE(ABORT, 'consent events are append-only: DELETE on "
                        f"{_EVENTS} refused'); END"
                    )

    DatabaseOperations.execute_sql_flush = execute_sql_flush  # type: ignore[method-assign]
    yield
    DatabaseOperations.execute_sql_flush = original  # type: ignore[method-assign]
