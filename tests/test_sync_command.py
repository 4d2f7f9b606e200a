"""``klaviyo_consent_sync`` says what it does: progress, an unreachable Klaviyo, what it waits for.

Time is driven by the test: the run's sleep moves the outbox's clock (each row's next try)
instead of waiting, so the waits are exact and instant.
"""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import F

from klaviyo_consent.management.output import waiting_line
from klaviyo_consent.models import Delivery
from klaviyo_consent.services import sync as sync_service
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from klaviyo_consent.services.reports import Waiting

pytestmark = pytest.mark.django_db


class OutboxClock:
    """``time`` for services.sync: sleeping moves every row's next try closer by as much."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        Delivery.objects.update(next_attempt_at=F("next_attempt_at") - timedelta(seconds=seconds))


@pytest.fixture
def outbox_clock(monkeypatch: Any) -> OutboxClock:
    clock = OutboxClock()
    monkeypatch.setattr(sync_service, "time", clock)
    return clock


@pytest.fixture
def no_push_on_commit(settings: Any) -> None:
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}


def record(email: str) -> None:
    record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email=email,
            list_id="Single",
        )
    )


def run_sync(*args: str) -> str:
    out = io.StringIO()
    call_command("klaviyo_consent_sync", *args, stdout=out)
    return out.getvalue()


def test_an_unreachable_klaviyo_is_said_at_once_with_what_the_run_waits_for(
    fake, no_push_on_commit, outbox_clock
):
    record("a@example.com")
    fake.fail_next(kind="connection", count=2)

    output = run_sync()

    lines = output.splitlines()
    waits = [line for line in lines if line.startswith("Klaviyo is unreachable")]
    assert len(waits) == 2, output
    assert "Klaviyo did not answer" in waits[0]
    assert "1 event wait; next try in" in waits[0] and "(try 2)" in waits[0]
    assert "(try 3)" in waits[1]
    # Said once per wait (not per 5 s nap), before its sleeps: the first nap is the one said.
    announced = float(waits[0].split("next try in ")[1].split(" s")[0])
    assert announced == round(outbox_clock.slept[0])
    assert lines[-1] == "pushed 1, retried 2, failed 0 in 1 jobs; verified 1 (applied 1)"
    assert lines.index(waits[0]) < lines.index(waits[1]) < len(lines) - 1
    assert Delivery.objects.get().status == "applied"


def test_a_run_that_cannot_reach_klaviyo_before_its_wait_ends_says_so_and_keeps_the_events(
    fake, no_push_on_commit, outbox_clock, settings
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    record("a@example.com")
    fake.fail_next(kind="connection", count=1)

    output = run_sync("--no-wait")

    assert output.splitlines() == [
        "pushed 0, retried 1, failed 0 in 0 jobs; verified 0",
        "Klaviyo could not be reached (1 request(s)); 1 event(s) stay in the outbox for the next "
        "run.",
    ]
    assert outbox_clock.slept == []
    assert Delivery.objects.get().status == "pending"


def test_the_summary_ends_without_a_stray_pair_of_braces(fake, no_push_on_commit):
    assert run_sync() == "pushed 0, retried 0, failed 0 in 0 jobs; verified 0\n"


def test_the_summary_names_each_verdict_and_its_count(fake, no_push_on_commit):
    record("a@example.com")
    record("b@example.com")
    assert run_sync().splitlines()[-1] == (
        "pushed 2, retried 0, failed 0 in 1 jobs; verified 2 (applied 2)"
    )


def test_without_rich_the_same_lines_are_written_plain(
    fake, no_push_on_commit, outbox_clock, monkeypatch
):
    monkeypatch.setitem(sys.modules, "rich.console", None)  # import rich.console fails
    record("a@example.com")
    fake.fail_next(kind="connection", count=1)
    lines = run_sync().splitlines()
    assert lines[0].startswith("Klaviyo is unreachable")
    assert lines[-1] == "pushed 1, retried 1, failed 0 in 1 jobs; verified 1 (applied 1)"


def test_pull_says_each_read_it_retries_and_ends_in_a_command_error_when_klaviyo_is_unreachable(
    fake, monkeypatch
):
    # Found beside the sync command's silence: pull waited through its read retries unsaid and
    # ended in a traceback.
    from django.core.management import CommandError

    from klaviyo_consent.backends import base

    slept: list[float] = []
    monkeypatch.setattr(base.time, "sleep", slept.append)
    fake.fail_next(kind="connection", count=100)
    out = io.StringIO()
    with pytest.raises(CommandError, match="Klaviyo could not be read: Klaviyo did not answer"):
        call_command("klaviyo_consent_pull", "--all", "--no-progress", stdout=out)
    retries = [line for line in out.getvalue().splitlines() if "retrying in" in line]
    assert len(retries) == len(slept) > 0
    assert "Klaviyo did not answer" in retries[0]


def test_the_waiting_line_counts_to_the_next_try_and_says_when_the_run_gives_up(settings):
    settings.TIME_ZONE = "UTC"
    now = datetime(2026, 11, 30, 9, 11, 15, tzinfo=UTC)
    line = waiting_line(
        Waiting(
            seconds=66,
            due_at=now + timedelta(seconds=66),
            gives_up_at=now + timedelta(seconds=300),
            pending=1,
            attempts=4,
            reason="Klaviyo did not answer",
            unreachable=True,
        )
    )
    assert "next try in 66 s at 09:12:21 UTC (try 5)" in line
    assert "Waiting until 09:16:15 UTC at most" in line and "--no-wait" in line
