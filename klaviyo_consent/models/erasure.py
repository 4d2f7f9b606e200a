"""Erasure (GDPR Art. 17) that keeps the proof: the erasure record, the digests it answers
``check/`` by, and the outbox row of Klaviyo's data-privacy deletion job.

An :class:`Erasure` is append-only and is itself a leaf of the Merkle ledger (the
checkpointer appends it like an event), so who asked and when cannot be rewritten later. Its
Klaviyo side changes over time, so it lives beside it, in :class:`ErasureDelivery` rows that
follow the one delivery state machine (``services/outbox.py``), as ``IdentityDelivery`` does.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from klaviyo_consent.exceptions import ImmutableConsentEvent
from klaviyo_consent.models.ledger import RecordedBy
from klaviyo_consent.models.outbox import OutboxRow
from klaviyo_consent.models.profiles import Profile


class ErasureScope(models.TextChoices):
    """What an :class:`Erasure` removed."""

    #: A person asked to be forgotten: every raw identifier and all evidence, and Klaviyo's
    #: profile (data-privacy deletion job).
    PROFILE = "profile", "Person erased"
    #: EVIDENCE_RETENTION_DAYS ran out: IP address, user agent and page URL of older events.
    EVIDENCE_RETENTION = "evidence_retention", "Evidence past retention erased"


class ErasureQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise ImmutableConsentEvent("Erasure records are append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("Erasure records are append-only and cannot be deleted.")


class Erasure(RecordedBy):
    """One erasure: who asked (``recorded_by``), when, what (``scope``), for whom (``profile``,
    by id only), and the keyed digests of the identifiers erased. Append-only; a ledger leaf.

    ``digests`` maps ``email`` / ``phone_number`` / ``external_id`` to the sorted hex
    HMAC-SHA256 digests (``services.leaves.digest``) of every value erased: the proof names the
    person without holding their identifiers. Klaviyo's deletion job state is on
    ``deliveries`` (:class:`ErasureDelivery`).
    """

    scope = models.CharField(max_length=20, choices=ErasureScope.choices)
    profile = models.ForeignKey(
        Profile, on_delete=models.PROTECT, null=True, blank=True, related_name="erasures"
    )
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    #: How the request arrived: api, admin, command, retention.
    source = models.CharField(max_length=20)
    reason = models.TextField(
        blank=True, help_text="Why, e.g. a ticket number. Never the person's identifiers."
    )
    #: For evidence retention: events recorded before this had their evidence erased.
    evidence_before = models.DateTimeField(null=True, blank=True)
    #: How many events' raw values this erasure blanked.
    events = models.PositiveIntegerField(default=0)
    digests = models.JSONField(default=dict, blank=True)

    objects = ErasureQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_scope_display()} at {self.requested_at:%Y-%m-%d %H:%M} (#{self.pk})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableConsentEvent("Erasure records are append-only.")
        self.label_recorded_by()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("Erasure records are append-only and cannot be deleted.")


class ErasedIdentifier(models.Model):
    """One erased identifier's keyed digest: how ``check/`` answers "erased" without it."""

    erasure = models.ForeignKey(Erasure, on_delete=models.PROTECT, related_name="identifiers")
    field = models.CharField(max_length=20, help_text="email, phone_number or external_id")
    digest = models.CharField(max_length=64, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["erasure", "field", "digest"], name="kc_erased_identifier"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.field} {self.digest[:12]}… (erasure #{self.erasure_id})"


class ErasureDelivery(OutboxRow):
    """Klaviyo's data-privacy deletion job for one identifier of an erased person: the outbox
    row and its state (``pending`` → ``applied`` once Klaviyo answered 202, or ``failed``).

    ``target_value`` is the one raw identifier kept after the erasure, only until Klaviyo
    accepted the job (then blanked): the request must name the profile (spec
    ``request_profile_deletion``: exactly one of ``id``, ``email``, ``phone_number``).
    """

    erasure = models.ForeignKey(Erasure, on_delete=models.PROTECT, related_name="deliveries")
    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="+")
    target_field = models.CharField(max_length=20, help_text="id, email or phone_number")
    target_value = models.CharField(max_length=255, blank=True)

    class Meta:
        verbose_name_plural = "erasure deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="kc_erasure_due")]

    def __str__(self) -> str:
        return (
            f"{self.status} (Klaviyo deletion by {self.target_field}, erasure #{self.erasure_id})"
        )
