"""What a run of the pipeline did (the reports commands print, tasks return and benchmarks
read), and what needs attention now (the admin dashboard)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Count, QuerySet
from django.utils import timezone

from klaviyo_consent.choices import DeliveryStatus, Method
from klaviyo_consent.models import (
    Checkpoint,
    ConsentEvent,
    Delivery,
    ErasureDelivery,
    IdentityDelivery,
    KlaviyoHealth,
    MembershipDelivery,
    VerificationRun,
)


@dataclass
class SyncReport:
    """What one run did; commands print it and benchmarks read it."""

    claimed: int = 0
    pushed: int = 0
    failed: int = 0
    retried: int = 0
    jobs: int = 0
    requests: int = 0
    verified: int = 0
    #: Rows a stopped worker had sent: found applied in Klaviyo and not sent again.
    recovered: int = 0
    #: Requests that never reached Klaviyo (refused connection, timeout, DNS): their rows wait.
    unreachable: int = 0
    #: List membership rows (no consent) sent to Klaviyo, and given a verdict by a read-back.
    memberships_pushed: int = 0
    memberships_verified: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def merge(self, other: SyncReport) -> None:
        for name in self._counters():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, value in other.verdicts.items():
            self.verdicts[key] += value

    def as_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in self._counters()},
            "verdicts": dict(self.verdicts),
        }

    @classmethod
    def _counters(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "verdicts"]


@dataclass
class PullReport:
    profiles_read: int = 0
    profiles_mirrored: int = 0
    requests: int = 0
    not_found: list[int] = field(default_factory=list)
    verdicts_changed: int = 0
    drifts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "profiles_read": self.profiles_read,
            "profiles_mirrored": self.profiles_mirrored,
            "requests": self.requests,
            "not_found": len(self.not_found),
            "verdicts_changed": self.verdicts_changed,
            "drifts": self.drifts,
        }


@dataclass(frozen=True)
class Waiting:
    """``sync(wait=True)`` is about to sleep until the next retry falls due: what it waits for.

    ``seconds`` until ``due_at``, the earliest pending row's next try (the run naps at most 5 s
    at a time and looks again); ``gives_up_at`` when the run stops waiting (``max_wait``) and
    exits, leaving the rest in the outbox; ``pending`` the rows left in the outbox; ``reason``
    that row's last error in the app's words; ``unreachable`` when the last pass could not
    reach Klaviyo at all.
    """

    seconds: float
    due_at: datetime
    gives_up_at: datetime
    pending: int
    attempts: int
    reason: str
    unreachable: bool


#: Above this many rows, a table's size is PostgreSQL's estimate rather than a COUNT.
ESTIMATE_ABOVE = 10_000


def estimated_rows(queryset: QuerySet) -> int | None:
    """PostgreSQL's estimate of the rows in ``queryset``'s table (``pg_class.reltuples``, kept
    by ANALYZE and autovacuum); None on other databases or before the first ANALYZE."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


#: How far back the dashboard counts drift (changes made in Klaviyo).
DRIFT_WINDOW = timedelta(days=7)
#: Every outbox, by the kind of push it holds (the dashboard's dead letters).
DELIVERY_KINDS = {
    "consent": Delivery,
    "identity": IdentityDelivery,
    "membership": MembershipDelivery,
    "erasure": ErasureDelivery,
}


@dataclass(frozen=True)
class Dashboard:
    """What needs attention, for the admin index (``admin/klaviyo_consent/app_index.html``).

    ``verdicts``: delivery status → events in it (every status, zeros included).
    ``drift_last_7_days``: inbound events (changes made in Klaviyo) recorded in DRIFT_WINDOW.
    ``dead_letters``: deliveries whose retries ran out (``failed`` with ``dead_lettered_at``),
    of every kind; ``dead_letters_by_kind``: ``{"consent"|"identity"|"membership"|"erasure": n}``.
    ``outbox_oldest_at``: when the oldest event still ``pending`` was recorded (None: empty);
    ``outbox_age``: how long it has waited, at ``now``.
    ``klaviyo_health``: status (401, 403, 429) → the last such answer, or None if never seen.
    """

    now: datetime
    verdicts: dict[str, int]
    drift_last_7_days: int
    dead_letters: int
    outbox_oldest_at: datetime | None
    outbox_age: timedelta | None
    last_checkpoint: Any
    last_verification: Any
    klaviyo_health: dict[int, Any]
    dead_letters_by_kind: dict[str, int] = field(default_factory=dict)
    #: Statuses whose count is an estimate (PostgreSQL's, on a large table): shown as "≈".
    estimated: frozenset[str] = frozenset()

    @property
    def verdict_rows(self) -> list[tuple[str, str, int, bool]]:
        """``(status, label, count, estimated)`` in the state machine's order."""
        labels = dict(DeliveryStatus.choices)
        return [
            (status, labels[status], n, status in self.estimated)
            for status, n in self.verdicts.items()
        ]


def dashboard(*, now: datetime | None = None) -> Dashboard:
    """The admin dashboard's figures in eight indexed queries, none a scan of the ledger's rows.

    Counts by verdict read the ``kc_delivery_status_event`` index (applied: the estimate, on
    a large PostgreSQL table); dead letters the partial ``kc_delivery_dead`` index; drift counts the
    ``kc_event_inbound`` partial index over the window; the outbox's oldest pending event is
    one probe of ``kc_delivery_status`` (events are recorded in id order).
    """
    now = now or timezone.now()
    # Every status but applied is counted exactly: a healthy ledger has few of them, and the
    # kc_delivery_status_event index serves each. Applied (nearly every row) is the table's
    # size less those, by PostgreSQL's estimate when the table is large (a COUNT there reads
    # every row).
    others = [status for status in DeliveryStatus.values if status != DeliveryStatus.APPLIED]
    counts = dict(
        Delivery.objects.filter(status__in=others)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    estimated: set[str] = set()
    total = estimated_rows(Delivery.objects.all())
    if total is not None and total > ESTIMATE_ABOVE:
        counts[DeliveryStatus.APPLIED] = max(total - sum(counts.values()), 0)
        estimated.add(DeliveryStatus.APPLIED)
    else:
        counts[DeliveryStatus.APPLIED] = Delivery.objects.filter(
            status=DeliveryStatus.APPLIED
        ).count()
    oldest = (
        Delivery.objects.filter(status=DeliveryStatus.PENDING)
        .order_by("event_id")
        .values_list("event__recorded_at", flat=True)
        .first()
    )
    dead = {
        kind: model.objects.filter(
            status=DeliveryStatus.FAILED, dead_lettered_at__isnull=False
        ).count()
        for kind, model in DELIVERY_KINDS.items()
    }
    return Dashboard(
        now=now,
        verdicts={status: counts.get(status, 0) for status in DeliveryStatus.values},
        estimated=frozenset(estimated),
        drift_last_7_days=ConsentEvent.objects.filter(
            method=Method.KLAVIYO, recorded_at__gte=now - DRIFT_WINDOW
        ).count(),
        dead_letters=sum(dead.values()),
        dead_letters_by_kind=dead,
        outbox_oldest_at=oldest,
        outbox_age=(now - oldest) if oldest else None,
        last_checkpoint=Checkpoint.objects.order_by("-tree_size").first(),
        last_verification=VerificationRun.objects.filter(finished_at__isnull=False)
        .order_by("-started_at", "-id")
        .first(),
        klaviyo_health={row.status: row for row in KlaviyoHealth.objects.all()},
    )
