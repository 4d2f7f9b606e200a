"""Verified Klaviyo webhook deliveries: the audit trail, and the memory that stops replays."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class WebhookDelivery(models.Model):
    """One verified Klaviyo webhook delivery: the audit trail, and the memory that stops replays.

    Only deliveries that passed verification are stored; ``signature`` is unique, so a copy of a
    delivery already processed is a replay, while a copy of one stored but not processed (its
    processing failed: ``error``, ``attempts``) is processed again: at least once, never lost.
    """

    webhook_id = models.CharField(max_length=255, help_text="The Klaviyo-Webhook-Id header.")
    signature = models.CharField(
        max_length=128, unique=True, help_text="Hex HMAC-SHA256 of the body and timestamp."
    )
    klaviyo_timestamp = models.CharField(
        max_length=64, help_text="The Klaviyo-Timestamp header, exactly as sent."
    )
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    topics = models.JSONField(default=list, blank=True)
    body = models.JSONField(default=dict, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why processing failed; empty when it did not.")
    attempts = models.PositiveIntegerField(
        default=0, help_text="How many times processing ran (each failure is recorded in error)."
    )
    failed_at = models.DateTimeField(
        null=True, blank=True, help_text="When processing last failed."
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.webhook_id} at {self.received_at:%Y-%m-%d %H:%M:%S} (#{self.pk})"
