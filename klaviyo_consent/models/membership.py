"""List membership without consent: append-only membership events and their outbox rows.

Klaviyo's developer guide, step 3 ("implicit consent"): a customer who gave an email at
checkout but did not ask for marketing is added to a list without being subscribed and keeps
``NEVER_SUBSCRIBED``. Such a change is not a consent event: it never enters ``check/`` or a
consent verdict. It is recorded here, against the Profile (no raw identifier is copied onto the
row, so erasure of a profile's identifiers covers it), and reaches Klaviyo through a
:class:`MembershipDelivery` that follows the same state machine as a consent's ``Delivery``
(``services/outbox.py``).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from klaviyo_consent.choices import Membership, Method
from klaviyo_consent.exceptions import ImmutableConsentEvent
from klaviyo_consent.models.ledger import RecordedBy
from klaviyo_consent.models.outbox import OutboxRow
from klaviyo_consent.models.profiles import Profile


class MembershipEventQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise ImmutableConsentEvent("Membership events are append-only; record a new event.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("Membership events are append-only and cannot be deleted.")


class MembershipEvent(RecordedBy):
    """One request to add a person to a Klaviyo list, or remove them, without consent."""

    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="membership_events")
    list_id = models.CharField(max_length=64, db_index=True)
    action = models.CharField(max_length=10, choices=Membership.choices)
    method = models.CharField(max_length=20, choices=Method.choices, default=Method.API)
    method_detail = models.CharField(max_length=255, blank=True)
    recorded_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = MembershipEventQuerySet.as_manager()

    class Meta:
        ordering = ["-recorded_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.profile_id} to/from list {self.list_id} (#{self.pk})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableConsentEvent("Membership events are append-only; record a new event.")
        self.label_recorded_by()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("Membership events are append-only and cannot be deleted.")


class MembershipDelivery(OutboxRow):
    """The outbox row of one membership event, and its verdict from the list read-back.

    The fields the state machine writes are a consent ``Delivery``'s, so ``services/outbox``
    moves both: pending → pushed (import job / relationship call accepted) → applied (the
    list shows the person, or no longer does) or not_applied; failed on a refusal.
    """

    event = models.OneToOneField(
        MembershipEvent, on_delete=models.PROTECT, primary_key=True, related_name="delivery"
    )
    # Copied from the event so the claim query needs no join.
    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="+")
    list_id = models.CharField(max_length=64)
    action = models.CharField(max_length=10, choices=Membership.choices)
    verified_at = models.DateTimeField(null=True, blank=True)
    verify_attempts = models.PositiveIntegerField(default=0)
    history = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name_plural = "membership deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="kc_membership_due"),
            models.Index(fields=["profile", "list_id", "status"], name="kc_membership_key"),
        ]

    def __str__(self) -> str:
        return f"{self.status} (membership event #{self.event_id})"
