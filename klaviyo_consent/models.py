"""Data and invariants: the local profile, its append-only consent ledger, and the outbox.

No HTTP here; services move data between these rows and Klaviyo.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

import idna
from django.conf import settings
from django.db import connections, models
from django.db.models import Q
from django.utils import timezone

from klaviyo_consent.choices import (
    CHANNEL_PURPOSES,
    Channel,
    Consent,
    DeliveryStatus,
    Method,
    OptInProcess,
    Purpose,
    Suppression,
)
from klaviyo_consent.exceptions import ImmutableConsentEvent
from klaviyo_consent.receipts import text_sha256


def normalize_email(value: str) -> str:
    """The one stored form of an email: one mailbox, one string (docs/security.md).

    Unicode is normalised to NFKC (full-width ``ａｄａ@ｅｘａｍｐｌｅ.com`` is ``ada@example.com``),
    the address is trimmed and lower-cased, and the domain is stored in its IDNA A-label
    (punycode) form per UTS #46 non-transitional processing, i.e. IDNA 2008: ``bücher.example``
    and ``xn--bcher-kva.example`` are one domain, and ``ß`` stays ``ß`` (``straße.de`` is
    ``xn--strae-oqa.de``, a different domain from ``strasse.de``, as DENIC registers them). The
    local part is only lower-cased, never case-folded: ``ß`` and ``ss`` there are different
    mailboxes unless the receiving server says otherwise (RFC 6531). A domain IDNA cannot encode
    is kept lower-cased, for the validator to judge.
    """
    text = unicodedata.normalize("NFKC", value or "").strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not domain:
        return text
    try:
        domain = idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        pass
    return f"{local}@{domain}"


#: The largest id a row can have: a signed 64-bit integer (BigAutoField, PostgreSQL bigint).
MAX_ROW_ID = 2**63 - 1


def parse_row_id(value: str) -> int | None:
    """``value`` as a row id when it is ASCII digits within MAX_ROW_ID, else None.

    ``str.isdigit`` and ``int`` also take ``²`` and other scripts' digits, and a 20-digit id
    overflows the database's integer: both were 500s where ids come from a URL or a form.
    """
    if not (value.isascii() and value.isdigit() and len(value) <= 19):
        return None
    number = int(value)
    return number if number <= MAX_ROW_ID else None


class Profile(models.Model):
    """A person the site knows, and Klaviyo's ``subscriptions`` object for them, as last read."""

    email = models.EmailField(max_length=254, null=True, blank=True)
    phone_number = models.CharField(
        max_length=16, null=True, blank=True, help_text="E.164, e.g. +13239169023."
    )
    external_id = models.CharField(max_length=255, null=True, blank=True)
    #: Set when an explicit merge folded this profile into another: its identifiers moved
    #: there, its events stay here (they are append-only) and count in the survivor's ledger.
    merged_into = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="merged"
    )
    klaviyo_id = models.CharField("Klaviyo profile id", max_length=64, blank=True, db_index=True)
    subscriptions = models.JSONField(
        default=dict,
        blank=True,
        help_text="Klaviyo's subscriptions object, exactly as Klaviyo returned it.",
    )
    mirrored_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["email"], condition=Q(email__isnull=False), name="kc_profile_unique_email"
            ),
            models.UniqueConstraint(
                fields=["phone_number"],
                condition=Q(phone_number__isnull=False),
                name="kc_profile_unique_phone",
            ),
            models.UniqueConstraint(
                fields=["external_id"],
                condition=Q(external_id__isnull=False),
                name="kc_profile_unique_external_id",
            ),
            models.CheckConstraint(
                condition=Q(email__isnull=False)
                | Q(phone_number__isnull=False)
                | Q(merged_into__isnull=False),
                name="kc_profile_has_email_or_phone",
            ),
        ]

    def __str__(self) -> str:
        return self.email or self.phone_number or f"profile {self.pk}"

    def klaviyo_leaf(self, channel: str, purpose: str) -> dict[str, Any]:
        """The mirrored ``subscriptions.<channel>.<purpose>`` object, or ``{}``."""
        return ((self.subscriptions or {}).get(channel) or {}).get(purpose) or {}

    def update_from_klaviyo_data(
        self, data: dict[str, Any], *, now: datetime | None = None
    ) -> None:
        """Take Klaviyo's profile resource as the mirror; pure, the caller saves."""
        self.klaviyo_id = data.get("id") or self.klaviyo_id
        attributes = data.get("attributes") or {}
        self.subscriptions = attributes.get("subscriptions") or {}
        self.mirrored_at = now or timezone.now()


class KlaviyoList(models.Model):
    """A Klaviyo list as last read; its opt-in process decides what a subscribe does."""

    list_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255, blank=True)
    opt_in_process = models.CharField(max_length=20, choices=OptInProcess.choices, blank=True)
    klaviyo_data = models.JSONField(default=dict, blank=True)
    mirrored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "list_id"]
        verbose_name = "Klaviyo list"

    def __str__(self) -> str:
        return f"{self.name} ({self.list_id})" if self.name else self.list_id

    def update_from_klaviyo_data(
        self, data: dict[str, Any], *, now: datetime | None = None
    ) -> None:
        attributes = data.get("attributes") or {}
        self.name = attributes.get("name") or ""
        self.opt_in_process = attributes.get("opt_in_process") or ""
        self.klaviyo_data = data
        self.mirrored_at = now or timezone.now()


class RecordedBy(models.Model):
    """Who recorded an append-only row, kept even after that user is deleted.

    The user is a reference, not a constraint: an append-only row cannot be SET_NULL when the
    user goes, so ``recorded_by`` has no database constraint and ``recorded_by_label`` keeps
    the username as it was.
    """

    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    recorded_by_label = models.CharField(
        "recorded by (username)",
        max_length=150,
        blank=True,
        help_text="The recording user's username when the event was recorded.",
    )

    class Meta:
        abstract = True

    def label_recorded_by(self) -> None:
        """Copy the recording user's username onto the event before it is written."""
        if self.recorded_by_id and not self.recorded_by_label:
            user = self.recorded_by
            self.recorded_by_label = user.get_username()[:150] if user else ""

    @property
    def recorded_by_name(self) -> str | None:
        """Who recorded the event (their username then), even after the user was deleted."""
        return self.recorded_by_label or None


class ConsentEventQuerySet(models.QuerySet):
    def append(
        self, events: list[ConsentEvent], *, batch_size: int | None = None, **delivery: Any
    ) -> list[ConsentEvent]:
        """Insert new events and each one's ``Delivery`` row together: no event without one.

        ``delivery`` sets the rows' fields (status, reason, next_attempt_at...); ``batch_size``
        is bulk_create's, for bulk loads. Call it inside the transaction that must hold both.
        """
        for event in events:
            event.label_recorded_by()
        if connections[self.db].features.can_return_rows_from_bulk_insert:
            self.bulk_create(events, batch_size=batch_size)  # one INSERT; events get their ids
        else:
            for event in events:
                event.save(using=self.db)
        deliveries = [
            Delivery(
                event=event,
                profile_id=event.profile_id,
                channel=event.channel,
                purpose=event.purpose,
                **delivery,
            )
            for event in events
        ]
        Delivery.objects.using(self.db).bulk_create(deliveries, batch_size=batch_size)
        for event, row in zip(events, deliveries, strict=True):
            event.delivery = row  # so ``event.delivery`` costs no query
        return events

    def update(self, **kwargs: Any) -> int:
        raise ImmutableConsentEvent("Consent events are append-only; record a new event.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("Consent events are append-only and cannot be deleted.")


#: The fields of an event that make its proof, in the order the API and the admin show them.
EVENT_FIELDS = (
    "profile",
    "email",
    "phone_number",
    "channel",
    "purpose",
    "consent",
    "method",
    "method_detail",
    "custom_source",
    "consent_text",
    "consent_text_version",
    "consented_at",
    "recorded_at",
    "list_id",
    "historical_import",
    "ip_address",
    "user_agent",
    "page_url",
    "recorded_by",
    "suppression",
    "klaviyo_data",
)


class ConsentEvent(RecordedBy):
    """One consent given or withdrawn, with its proof. Append-only: never updated or deleted."""

    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="events")
    # The identifiers as they were when the person agreed: proof outlives a later change.
    email = models.EmailField(max_length=254, blank=True)
    phone_number = models.CharField(max_length=16, blank=True)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    consent = models.CharField(
        max_length=20,
        choices=[
            (Consent.SUBSCRIBED, "Subscribed"),
            (Consent.UNSUBSCRIBED, "Unsubscribed"),
            # Only inbound (``klaviyo``) events: Klaviyo shows no consent where the site had one.
            (Consent.NEVER_SUBSCRIBED, "Never subscribed"),
        ],
    )
    method = models.CharField(max_length=20, choices=Method.choices, default=Method.API)
    method_detail = models.CharField(max_length=255, blank=True)
    custom_source = models.CharField(max_length=255, blank=True)
    consent_text = models.TextField(blank=True, help_text="The exact text the person was shown.")
    #: The exact version of the words shown (issue 10). Null for events recorded before
    #: versioned texts: their ``consent_text`` copy maps to a ConsentText by its SHA-256.
    consent_text_version = models.ForeignKey(
        "ConsentText",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="events",
        help_text="The ConsentText version shown.",
    )
    consented_at = models.DateTimeField(
        null=True, blank=True, help_text="When the person agreed (historical imports only)."
    )
    recorded_at = models.DateTimeField(default=timezone.now, db_index=True)
    list_id = models.CharField(max_length=64, blank=True)
    historical_import = models.BooleanField(default=False)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    page_url = models.TextField(blank=True)
    # Null (no default: adding the column leaves SQLite's append-only trigger in place) for
    # consent; set for a site request to suppress or unsuppress the email in Klaviyo, whose
    # ``consent`` carries the key's consent over unchanged.
    suppression = models.CharField(  # noqa: DJ001
        max_length=12,
        choices=Suppression.choices,
        null=True,
        blank=True,
        help_text="Set when the site asked Klaviyo to suppress or unsuppress the email.",
    )
    #: For inbound events (method ``klaviyo``): Klaviyo's method, method_detail and timestamp.
    klaviyo_data = models.JSONField(default=dict, blank=True)

    objects = ConsentEventQuerySet.as_manager()

    class Meta:
        ordering = ["-recorded_at", "-id"]
        indexes = [
            models.Index(fields=["profile", "channel", "purpose", "-id"], name="kc_event_key"),
            # A number's own SMS history, whoever holds it now (check/ of a replaced number).
            models.Index(
                fields=["phone_number", "purpose"],
                condition=Q(channel="sms"),
                name="kc_event_sms_number",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(channel="sms") | Q(purpose="marketing"),
                name="kc_event_email_is_marketing_only",
            ),
            models.CheckConstraint(
                condition=Q(historical_import=False, consented_at__isnull=True)
                | Q(historical_import=True, consented_at__isnull=False),
                name="kc_event_consented_at_iff_historical_import",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.consent} {self.channel}.{self.purpose} for {self.profile_id} (#{self.pk})"

    def clean(self) -> None:
        if self.purpose not in CHANNEL_PURPOSES.get(self.channel, ()):
            raise ValueError(f"Klaviyo has no {self.channel}.{self.purpose} subscription.")

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableConsentEvent("Consent events are append-only; record a new event.")
        self.label_recorded_by()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("Consent events are append-only and cannot be deleted.")

    @property
    def effective_at(self) -> datetime:
        return self.consented_at or self.recorded_at


class IdentityChange(models.TextChoices):
    """What an :class:`IdentityEvent` records."""

    IDENTIFIER_ADDED = "identifier_added", "Identifier added"
    PHONE_NUMBER_REPLACED = "phone_number_replaced", "Phone number replaced"
    MERGED = "merged", "Profiles merged"


class IdentityEventQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise ImmutableConsentEvent("Identity events are append-only; record a new event.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("Identity events are append-only and cannot be deleted.")


class IdentityEvent(RecordedBy):
    """One change to which identifiers make a person: append-only, like the consent ledger.

    Consent events keep the identifiers they were given for; these rows say when and why a
    profile's identifiers changed since (a number replaced, an identifier added, a merge).
    """

    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="identity_events")
    change = models.CharField(max_length=24, choices=IdentityChange.choices)
    field = models.CharField(max_length=20, blank=True, help_text="email, phone_number, ...")
    old_value = models.CharField(max_length=255, blank=True)
    new_value = models.CharField(max_length=255, blank=True)
    #: For a merge: the profile folded into ``profile``.
    other_profile = models.ForeignKey(
        Profile, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    #: For a merge: the identifiers that moved, ``{"email": "...", ...}``.
    moved = models.JSONField(default=dict, blank=True)
    method = models.CharField(max_length=20, choices=Method.choices, default=Method.API)
    recorded_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = IdentityEventQuerySet.as_manager()

    class Meta:
        ordering = ["-recorded_at", "-id"]

    def __str__(self) -> str:
        return f"{self.change} for {self.profile_id} (#{self.pk})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableConsentEvent("Identity events are append-only; record a new event.")
        self.label_recorded_by()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("Identity events are append-only and cannot be deleted.")


class Delivery(models.Model):
    """The outbox row for one event and its verdict: the one state machine of its journey.

    Written in the same transaction as the event, so a crash or a Klaviyo outage loses nothing.
    Workers claim rows by setting a lease; an expired lease is free to claim again.
    """

    event = models.OneToOneField(
        ConsentEvent, on_delete=models.PROTECT, primary_key=True, related_name="delivery"
    )
    # Copied from the event so the claim query needs no join.
    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="+")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    status = models.CharField(
        max_length=24, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    reason = models.TextField(blank=True)
    errors = models.JSONField(default=list, blank=True, help_text="Klaviyo's errors[] as sent.")
    attempts = models.PositiveIntegerField(default=0)
    deferrals = models.PositiveIntegerField(
        default=0,
        help_text="Times Klaviyo made this row wait without judging it (429s, refusals of the "
        "request itself): they grow the backoff but never spend attempts.",
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    lease_token = models.CharField(max_length=36, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    pushed_at = models.DateTimeField(null=True, blank=True)
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
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="kc_delivery_due"),
            models.Index(
                fields=["profile", "channel", "purpose", "status"], name="kc_delivery_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.status} (event #{self.event_id})"


class IdentityDelivery(models.Model):
    """The outbox row that tells Klaviyo a profile's new phone number (Create or Update Profile).

    Written in the same transaction as its :class:`IdentityEvent`; the same state machine as a
    consent's :class:`Delivery` (``pending`` → ``applied`` or ``failed``; 429s and refusals of
    the request itself wait without spending attempts, other retryable failures spend one, and
    retries that run out dead-letter the row), pushed by the same sync run. ``after_event_id``
    orders it: it waits until every SMS event of the profile up to that id (the old number's
    closing withdrawals) has left the outbox, and later SMS events of the profile wait for it.
    """

    identity_event = models.OneToOneField(
        IdentityEvent, on_delete=models.PROTECT, primary_key=True, related_name="delivery"
    )
    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="+")
    #: The newest consent event of the profile when the number changed (0: none).
    after_event_id = models.PositiveBigIntegerField(default=0)
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
        verbose_name_plural = "identity deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="kc_identity_due")]

    def __str__(self) -> str:
        return f"{self.status} (identity event #{self.identity_event_id})"


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
    """Leaf ``leaf_index`` of the Merkle ledger: one event, appended in commit order.

    Written only by the checkpointer. ``digests`` keeps the HMAC digests of the event's
    identifiers as sequenced, so erasing the raw values later leaves the leaf valid.
    """

    leaf_index = models.BigIntegerField(primary_key=True)
    event = models.OneToOneField(
        ConsentEvent, on_delete=models.PROTECT, related_name="ledger_entry"
    )
    leaf_hash = models.CharField(max_length=64)
    digests = models.JSONField(default=dict, blank=True)
    sequenced_at = models.DateTimeField(default=timezone.now)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["leaf_index"]
        verbose_name_plural = "ledger entries"

    def __str__(self) -> str:
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
