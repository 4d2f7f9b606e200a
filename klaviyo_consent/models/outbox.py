"""The outbox: one row per event still to reach Klaviyo, and its verdict once it has.

Each row is written in the same transaction as its event, so a crash or a Klaviyo outage
loses nothing; ``services/outbox.py`` is the only writer of a row's status.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from klaviyo_consent.choices import Channel, DeliveryStatus, Purpose
from klaviyo_consent.models.profiles import Profile


class OutboxRow(models.Model):
    """The fields of the one delivery state machine (``services/outbox.py`` is their only
    writer), shared by every outbox row: a consent's :class:`Delivery`, a number change's
    :class:`IdentityDelivery`, a membership's and an erasure's deliveries.

    ``deferrals``: times Klaviyo made the row wait without judging it (429s, refusals of the
    request itself): they grow the backoff but never spend ``attempts``. ``dead_lettered_at``:
    set when retries ran out. The lease (``lease_token``, ``lease_expires_at``) is a worker's
    claim; an expired lease is free to claim again.
    """

    status = models.CharField(
        max_length=24, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    reason = models.TextField(blank=True)
    errors = models.JSONField(default=list, blank=True, help_text="Klaviyo's errors[] as sent.")
    attempts = models.PositiveIntegerField(default=0)
    deferrals = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    lease_token = models.CharField(max_length=36, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    pushed_at = models.DateTimeField(null=True, blank=True)
    dead_lettered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Delivery(OutboxRow):
    """The outbox row for one event and its verdict: the one state machine of its journey.

    Written in the same transaction as the event, so a crash or a Klaviyo outage loses nothing.
    Workers claim rows by setting a lease; an expired lease is free to claim again.
    """

    # By name: the ledger module imports this one (an event is appended with its row).
    event = models.OneToOneField(
        "ConsentEvent", on_delete=models.PROTECT, primary_key=True, related_name="delivery"
    )
    # Copied from the event so the claim query needs no join.
    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="+")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    deferrals = models.PositiveIntegerField(
        default=0,
        help_text="Times Klaviyo made this row wait without judging it (429s, refusals of the "
        "request itself): they grow the backoff but never spend attempts.",
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    verify_attempts = models.PositiveIntegerField(default=0)
    history = models.JSONField(
        default=list,
        blank=True,
        help_text="Every verdict this event was given, oldest first: "
        "{at, status, reason, source} (append-only in practice: services only add entries).",
    )
    dead_lettered_at = models.DateTimeField(
        null=True, blank=True, help_text="Set when retries ran out; retry from admin or command."
    )

    class Meta:
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="kc_delivery_due"),
            models.Index(
                fields=["profile", "channel", "purpose", "status"], name="kc_delivery_key"
            ),
            # The admin: profiles by verdict (a semi-join from the status), counts by verdict
            # and the outbox's oldest pending event (events are recorded in id order).
            models.Index(fields=["status", "profile"], name="kc_delivery_status_profile"),
            models.Index(fields=["status", "event"], name="kc_delivery_status_event"),
            models.Index(
                fields=["status"],
                condition=models.Q(dead_lettered_at__isnull=False),
                name="kc_delivery_dead",
            ),
            # Rows with a story (Klaviyo's error text, a verdict's why): what an erasure scans
            # for copies of the person's identifiers on other people's rows.
            models.Index(
                fields=["profile"], condition=~models.Q(reason=""), name="kc_delivery_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.status} (event #{self.event_id})"


class IdentityDelivery(OutboxRow):
    """The outbox row that tells Klaviyo a profile's new phone number (Create or Update Profile).

    Written in the same transaction as its :class:`IdentityEvent`; the same state machine as a
    consent's :class:`Delivery` (``pending`` → ``applied`` or ``failed``; 429s and refusals of
    the request itself wait without spending attempts, other retryable failures spend one, and
    retries that run out dead-letter the row), pushed by the same sync run. ``after_event_id``
    orders it: it waits until every SMS event of the profile up to that id (the old number's
    closing withdrawals) has left the outbox, and later SMS events of the profile wait for it.
    """

    identity_event = models.OneToOneField(
        "IdentityEvent", on_delete=models.PROTECT, primary_key=True, related_name="delivery"
    )
    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="+")
    #: The newest consent event of the profile when the number changed (0: none).
    after_event_id = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "identity deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="kc_identity_due")]

    def __str__(self) -> str:
        return f"{self.status} (identity event #{self.identity_event_id})"
