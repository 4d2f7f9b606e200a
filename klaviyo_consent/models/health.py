"""What Klaviyo last answered that needs an operator's eye: one row per HTTP status."""

from __future__ import annotations

from django.db import models


class KlaviyoHealth(models.Model):
    """The last time Klaviyo refused a request with ``status`` (401, 403, 429), and why.

    Written by ``services/health.py`` when the push or a read-back meets such an answer; read
    by the admin dashboard. One row per status, updated in place: it holds no identifier.
    """

    status = models.PositiveSmallIntegerField(unique=True)
    last_seen_at = models.DateTimeField()
    operation = models.CharField(max_length=64, blank=True)
    detail = models.TextField(blank=True, help_text="Klaviyo's errors[].detail, never the key.")
    seen = models.PositiveIntegerField(default=0, help_text="How many such answers so far.")

    class Meta:
        ordering = ["status"]
        verbose_name = "Klaviyo health"
        verbose_name_plural = "Klaviyo health"

    def __str__(self) -> str:
        return f"{self.status} last seen {self.last_seen_at:%Y-%m-%d %H:%M}"
