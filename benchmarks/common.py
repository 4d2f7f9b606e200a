"""Shared plumbing for the benchmark scripts: arguments, Django setup, machine facts, output.

Each script stays standalone (``.venv/bin/python benchmarks/<name>.py``): it calls
:func:`setup` before importing anything that needs Django.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def arguments(description: str, *, events: int, **extra: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--events", type=int, default=events, help=f"default {events:,}")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    return parser


def _ensure_postgres_database(name: str) -> None:
    import psycopg

    conninfo = (
        f"host={os.environ.get('BENCH_PG_HOST', '127.0.0.1')} "
        f"port={os.environ.get('BENCH_PG_PORT', '5432')} "
        f"user={os.environ.get('BENCH_PG_USER', 'postgres')} dbname=postgres"
    )
    if os.environ.get("BENCH_PG_PASSWORD"):
        conninfo += f" password={os.environ['BENCH_PG_PASSWORD']}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup(database: str = "sqlite", *, flush: bool = True) -> None:
    """Configure Django for ``database``, migrate, and start from empty tables."""
    os.environ["BENCH_DATABASE"] = database
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    if database == "postgres":
        _ensure_postgres_database(os.environ.get("BENCH_PG_NAME", "bench"))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    if database == "sqlite":
        # Child processes (workers) must open the same file.
        os.environ["BENCH_SQLITE_PATH"] = settings.DATABASES["default"]["NAME"]
    call_command("migrate", verbosity=0, interactive=False)
    if flush:
        call_command("flush", verbosity=0, interactive=False)


def machine() -> dict[str, Any]:
    """The facts a results row needs to be read fairly."""
    import django
    from django.db import connection

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "django": django.get_version(),
        "database": connection.vendor,
    }
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            info["postgresql"] = cursor.fetchone()[0].split()[0]
    else:
        info["sqlite"] = sqlite3.sqlite_version
    return info


def database_label(info: dict[str, Any]) -> str:
    if info["database"] == "postgresql":
        return f"PostgreSQL {info['postgresql']}"
    return f"SQLite {info['sqlite']}"


class Stopwatch:
    """Accumulates the time spent inside a wrapped callable (e.g. ``FakeKlaviyo.handle``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        return timed


def time_fake(fake: Any) -> Stopwatch:
    """Measure every request the fake answers (the adapter calls ``fake.handle``)."""
    watch = Stopwatch()
    fake.handle = watch.wrap(fake.handle)
    return watch


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    box: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - started


def use_fake(fake: Any, **consent_overrides: Any) -> Any:
    """Make ``fake`` answer the configured backend; returns the override context to enter."""
    from django.conf import settings
    from django.test.utils import override_settings

    from klaviyo_consent.backends import reset_backend
    from klaviyo_consent.testing.fake import set_default_fake

    set_default_fake(fake)
    consent = {**settings.KLAVIYO_CONSENT, **consent_overrides}
    consent["BACKEND_OPTIONS"] = {**consent.get("BACKEND_OPTIONS", {}), "fake": fake}
    reset_backend()
    return override_settings(KLAVIYO_CONSENT=consent)


def emit(name: str, row: str, data: dict[str, Any]) -> None:
    """Print the markdown row and the JSON the README table is built from."""
    print()
    print(row)
    print()
    print(json.dumps({"benchmark": name, **data}, indent=2, default=str))


def phone(i: int) -> str:
    """A valid US mobile-format number (E.164), distinct for each ``i`` < 8,000,000."""
    return f"+1212{2000000 + i:07d}"


def seed_pending(
    events: int, *, lists: list[str], sources: list[str], batch_size: int = 5000
) -> dict[str, int]:
    """Write ``events`` pending consent events with their outbox rows, by bulk_create.

    Mixed as a real site's forms produce them: 40 % of the events are email-only signups
    (email.marketing), 40 % email + SMS signups (email.marketing and sms.marketing), 20 %
    phone-only signups (sms.marketing and sms.transactional). Each signup is one form: its
    events share a list and a custom_source, spread round-robin over ``lists`` x ``sources``.
    """
    from django.db import transaction
    from django.utils import timezone

    from klaviyo_consent.models import ConsentEvent, Profile

    email_only = int(events * 0.4)
    email_sms = int(events * 0.4) // 2
    phone_only = (events - email_only - 2 * email_sms) // 2
    email_only = events - 2 * email_sms - 2 * phone_only  # absorb rounding
    groups = [(list_id, source) for list_id in lists for source in sources]
    now = timezone.now()
    plan: list[tuple[str | None, str | None, list[tuple[str, str]]]] = []
    for i in range(email_only):
        plan.append((f"e{i}@example.com", None, [("email", "marketing")]))
    for i in range(email_sms):
        plan.append((f"b{i}@example.com", phone(i), [("email", "marketing"), ("sms", "marketing")]))
    for i in range(phone_only):
        plan.append((None, phone(email_sms + i), [("sms", "marketing"), ("sms", "transactional")]))
    # Interleave the kinds as they would arrive.
    plan = [plan[i] for i in sorted(range(len(plan)), key=lambda i: (i * 7919) % len(plan))]
    created = 0
    for start in range(0, len(plan), batch_size):
        chunk = plan[start : start + batch_size]
        with transaction.atomic():
            profiles = Profile.objects.bulk_create(
                Profile(email=email, phone_number=phone_number) for email, phone_number, _ in chunk
            )
            rows = []
            for n, (profile, (_, _, consents)) in enumerate(zip(profiles, chunk, strict=True)):
                list_id, source = groups[(start + n) % len(groups)]
                for channel, purpose in consents:
                    rows.append(
                        ConsentEvent(
                            profile=profile,
                            email=profile.email or "",
                            phone_number=profile.phone_number or "",
                            channel=channel,
                            purpose=purpose,
                            consent="SUBSCRIBED",
                            method="api",
                            custom_source=source,
                            consent_text="Yes, send me news and offers.",
                            recorded_at=now,
                            list_id=list_id,
                            ip_address="203.0.113.7",
                            user_agent="Mozilla/5.0 (benchmark)",
                            page_url="https://shop.example.com/signup",
                        )
                    )
            created += len(ConsentEvent.objects.append(rows, next_attempt_at=now))
    return {"events": created, "profiles": len(plan), "groups": len(groups)}


def analyze() -> None:
    """Refresh the planner's statistics after a bulk load.

    PostgreSQL's autovacuum would do this within a minute of loading 100,000 rows; SQLite never
    does it by itself (``PRAGMA optimize`` is the documented habit). Without statistics both
    planners sort the whole backlog on every claim instead of walking the primary key.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
