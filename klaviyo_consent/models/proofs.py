"""The proofs (issue 10): versioned consent texts, the Merkle ledger of events, its signed
checkpoints, and the runs that verified it.

Texts are never edited (a change is a new version); the ledger's rows are append-only and
written only by the checkpointer (services/checkpoints.py).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from klaviyo_consent.exceptions import ImmutableConsentEvent
from klaviyo_consent.models.ledger import ConsentEvent
from klaviyo_consent.receipts import text_sha256


class ConsentText(models.Model):
    """The exact words a person was shown, one version: never edited, a change is a new version."""

    key = models.SlugField(max_length=100, help_text="Stable name of the text, e.g. 'newsletter'.")
    version = models.PositiveIntegerField()
    locale = models.CharField(max_length=35, blank=True, help_text="BCP 47 tag, e.g. en-GB.")
    body = models.TextField(help_text="The exact words shown, byte for byte.")
    sha256 = models.CharField("SHA-256", max_length=64, db_index=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["key", "locale", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["key", "locale", "version"], name="kc_consent_text_version"
            ),
        ]

    def __str__(self) -> str:
        locale = f" [{self.locale}]" if self.locale else ""
        return f"{self.key} v{self.version}{locale}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        digest = text_sha256(self.body)
        if not self._state.adding and self.pk:
            stored = type(self).objects.filter(pk=self.pk).values_list("sha256", flat=True).first()
            if stored is not None and stored != digest:
                raise ImmutableConsentEvent(
                    "A consent text is never edited; save the new words as a new version."
                )
        self.sha256 = digest
        super().save(*args, **kwargs)


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise ImmutableConsentEvent("The ledger is append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("The ledger is append-only.")


class LedgerEntry(models.Model):
    """Leaf ``leaf_index`` of the Merkle ledger: one event (or one erasure record), appended
    in commit order.

    Written only by the checkpointer. ``digests`` keeps the HMAC digests of the event's
    identifiers as sequenced, so erasing the raw values later leaves the leaf valid.
    """

    leaf_index = models.BigIntegerField(primary_key=True)
    event = models.OneToOneField(
        ConsentEvent, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entry"
    )
    #: Set instead of ``event`` for an erasure record's leaf.
    erasure = models.OneToOneField(
        "Erasure", on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entry"
    )
    leaf_hash = models.CharField(max_length=64)
    digests = models.JSONField(default=dict, blank=True)
    sequenced_at = models.DateTimeField(default=timezone.now)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["leaf_index"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(event__isnull=True, erasure__isnull=False)
                | models.Q(event__isnull=False, erasure__isnull=True),
                name="kc_leaf_is_event_or_erasure",
            ),
        ]

    def __str__(self) -> str:
        if self.erasure_id is not None:
            return f"leaf {self.leaf_index} (erasure #{self.erasure_id})"
        return f"leaf {self.leaf_index} (event #{self.event_id})"


class LedgerNode(models.Model):
    """A perfect subtree's hash (level ≥ 8, i.e. ≥ 256 leaves), kept for fast proofs."""

    level = models.PositiveSmallIntegerField()
    index = models.BigIntegerField()
    hash = models.CharField(max_length=64)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["level", "index"], name="kc_ledger_node"),
        ]


class LedgerState(models.Model):
    """The single row the checkpointer locks: the tree's size and its compact range."""

    tree_size = models.BigIntegerField(default=0)
    #: Roots of the perfect subtrees covering [0, tree_size), largest first, as hex.
    frontier = models.JSONField(default=list, blank=True)
    #: ``[[ISO time, largest event id visible then], ...]`` of recent runs: events with an id
    #: at or below a tip older than LEDGER_COMMIT_HORIZON are all committed (or never will be),
    #: so the search for new events starts above it.
    tips = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)


class Checkpoint(models.Model):
    """A signed tree head: the Merkle root of the first ``tree_size`` events, Ed25519-signed."""

    tree_size = models.BigIntegerField(unique=True)
    root_hash = models.CharField(max_length=64)
    timestamp = models.CharField(max_length=32, help_text="UTC, RFC 3339, as signed.")
    key_id = models.CharField(max_length=16)
    signature = models.CharField(max_length=128, help_text="Base64 Ed25519 signature.")
    public_key = models.CharField(max_length=64, help_text="Base64 raw Ed25519 public key.")
    created_at = models.DateTimeField(default=timezone.now)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-tree_size"]
        get_latest_by = "tree_size"

    def __str__(self) -> str:
        return f"checkpoint {self.tree_size} ({self.root_hash[:12]}…)"


class VerificationRun(models.Model):
    """One run of klaviyo_consent_verify: when, and what it found."""

    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(null=True)
    events = models.BigIntegerField(default=0)
    checkpoints = models.IntegerField(default=0)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        outcome = "ok" if self.ok else self.message
        return f"verification {self.started_at:%Y-%m-%d %H:%M} ({outcome})"
