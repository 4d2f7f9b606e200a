"""The append-only ledgers: consent events (given or withdrawn, with their proof) and
identity events (which identifiers make a person), and who recorded each.

A consent event is written together with its outbox row (``ConsentEvent.objects.append``);
neither kind of event is ever updated or deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from klaviyo_consent.choices import CHANNEL_PURPOSES, Channel, Consent, Method, Purpose, Suppression
from klaviyo_consent.exceptions import ImmutableConsentEvent
from klaviyo_consent.models.bulk import insert, new
from klaviyo_consent.models.erasable import (
    EVENT_ERASABLE,
    IDENTITY_ERASABLE,
    ErasableRowMixin,
    EventPersonalData,
    IdentityPersonalData,
    erasable,
    insert_with_rows,
)
from klaviyo_consent.models.outbox import Delivery
from klaviyo_consent.models.profiles import Profile


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
        caps the rows per INSERT (``models.bulk.insert``), for bulk loads. Call it inside the
        transaction that must hold both.
        """
        for event in events:
            event.label_recorded_by()
        insert_with_rows(self, events, batch_size=batch_size)
        deliveries = [
            new(
                Delivery,
                event=event,
                profile_id=event.profile_id,
                channel=event.channel,
                purpose=event.purpose,
                **delivery,
            )
            for event in events
        ]
        insert(Delivery, deliveries, using=self.db, batch_size=batch_size)
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
    "external_id",
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


#: What an identity change records, in the order the API and the admin show them.
IDENTITY_EVENT_FIELDS = (
    "change",
    "field",
    "old_value",
    "new_value",
    "other_profile",
    "moved",
    "method",
    "reason",
    "recorded_at",
    "recorded_by",
)


class ConsentEventManager(models.Manager.from_queryset(ConsentEventQuerySet)):  # type: ignore[misc]
    """Events with their erasable row joined, so ``event.email`` costs no query."""

    def get_queryset(self) -> ConsentEventQuerySet:
        return super().get_queryset().select_related("personal_data")


class ConsentEvent(ErasableRowMixin, RecordedBy):
    """One consent given or withdrawn, with its proof. Append-only: never updated or deleted.

    The raw identifiers and evidence (``email``, ``phone_number``, ``external_id``,
    ``ip_address``, ``user_agent``, ``page_url``) are attributes kept in the event's erasable
    row (:class:`~klaviyo_consent.models.EventPersonalData`, ``personal_data``): filter on
    ``personal_data__email``; erasure blanks that row, never this one.
    """

    erasable_model = EventPersonalData

    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="events")
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

    objects = ConsentEventManager()

    # The erasable attributes (the identifiers as they were when the person agreed: proof
    # outlives a later change), read from and written to ``personal_data``.
    email = erasable("email", EVENT_ERASABLE["email"])
    phone_number = erasable("phone_number", EVENT_ERASABLE["phone_number"])
    external_id = erasable("external_id", EVENT_ERASABLE["external_id"])
    ip_address = erasable("ip_address", EVENT_ERASABLE["ip_address"])
    user_agent = erasable("user_agent", EVENT_ERASABLE["user_agent"])
    page_url = erasable("page_url", EVENT_ERASABLE["page_url"])

    class Meta:
        ordering = ["-recorded_at", "-id"]
        indexes = [
            models.Index(fields=["profile", "channel", "purpose", "-id"], name="kc_event_key"),
            # The admin: drift (inbound events) by profile and over the last days, and the
            # event list's newest-first order.
            models.Index(
                fields=["profile"], condition=Q(method="klaviyo"), name="kc_event_inbound"
            ),
            models.Index(
                fields=["recorded_at"], condition=Q(method="klaviyo"), name="kc_event_inbound_at"
            ),
            models.Index(fields=["-recorded_at", "-id"], name="kc_event_recent"),
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
        # Human words, no query: "Email marketing: Subscribed (event 11)".
        what = (
            f"{self.get_suppression_display().lower()} request"
            if self.suppression
            else self.get_consent_display()
        )
        return (
            f"{self.get_channel_display()} {self.get_purpose_display().lower()}: {what} "
            f"(event {self.pk})"
        )

    def clean(self) -> None:
        if self.purpose not in CHANNEL_PURPOSES.get(self.channel, ()):
            raise ValueError(f"Klaviyo has no {self.channel}.{self.purpose} subscription.")

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableConsentEvent("Consent events are append-only; record a new event.")
        self.label_recorded_by()
        super().save(*args, **kwargs)
        self.save_erasable_row(using=kwargs.get("using"))

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
    def append(self, events: Iterable[IdentityEvent]) -> list[IdentityEvent]:
        """Insert new identity events, each with its erasable row."""
        events = list(events)
        for event in events:
            event.label_recorded_by()
        return insert_with_rows(self, events)

    def update(self, **kwargs: Any) -> int:
        raise ImmutableConsentEvent("Identity events are append-only; record a new event.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("Identity events are append-only and cannot be deleted.")


class IdentityEventManager(models.Manager.from_queryset(IdentityEventQuerySet)):  # type: ignore[misc]
    """Identity events with their erasable row joined."""

    def get_queryset(self) -> IdentityEventQuerySet:
        return super().get_queryset().select_related("personal_data")


class IdentityEvent(ErasableRowMixin, RecordedBy):
    """One change to which identifiers make a person: append-only, like the consent ledger.

    Consent events keep the identifiers they were given for; these rows say when and why a
    profile's identifiers changed since (a number replaced, an identifier added, a merge).
    ``old_value``, ``new_value``, ``moved`` and ``reason`` are kept in the erasable row
    (:class:`~klaviyo_consent.models.IdentityPersonalData`, ``personal_data``).
    """

    erasable_model = IdentityPersonalData

    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="identity_events")
    change = models.CharField(max_length=24, choices=IdentityChange.choices)
    field = models.CharField(max_length=20, blank=True, help_text="email, phone_number, ...")
    #: For a merge: the profile folded into ``profile``.
    other_profile = models.ForeignKey(
        Profile, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    method = models.CharField(max_length=20, choices=Method.choices, default=Method.API)
    recorded_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = IdentityEventManager()

    old_value = erasable("old_value", IDENTITY_ERASABLE["old_value"])
    new_value = erasable("new_value", IDENTITY_ERASABLE["new_value"])
    #: For a merge: the identifiers that moved, ``{"email": "...", ...}``.
    moved = erasable("moved", IDENTITY_ERASABLE["moved"])
    #: Why staff made the change (the admin asks for it), None where none was given.
    reason = erasable("reason", IDENTITY_ERASABLE["reason"])

    class Meta:
        ordering = ["-recorded_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_change_display()} (identity event {self.pk})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableConsentEvent("Identity events are append-only; record a new event.")
        self.label_recorded_by()
        super().save(*args, **kwargs)
        self.save_erasable_row(using=kwargs.get("using"))

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableConsentEvent("Identity events are append-only and cannot be deleted.")
