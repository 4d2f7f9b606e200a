"""The erasable raw values of the append-only ledgers, kept apart from the event rows.

A consent event and an identity event never change, yet a person may ask to be forgotten
(GDPR Art. 17) and evidence may outlive its retention. So the raw identifiers and evidence
(email, phone number, external id, IP address, user agent, page URL; an identity change's old
and new values and its reason) live in one row per event here, which erasure blanks
(``erased_at``). The event keeps its proof: the ledger leaf holds keyed digests of those
values (docs/receipts.md).

The events keep attributes of the same names (``event.email``, ``ConsentEvent(email=...)``)
through :func:`erasable`; ORM lookups go through the relation: ``personal_data__email``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db import connections, models

from klaviyo_consent.models.bulk import insert, new

#: The events' ``related_name`` for their erasable row, also the name of its cache.
ROW = "personal_data"
_MISSING = object()


def erasable(name: str, default: Any) -> property:
    """An event attribute read from and written to its erasable row (``personal_data``).

    A property, so Django's ``Model.__init__`` accepts it as a keyword argument. Reading an
    event without a row (none stored, or not loaded) gives ``default``, as an erased value.
    """

    def get(self: Any) -> Any:
        row = self.erasable_row(create=False)
        if row is None:
            return dict(default) if isinstance(default, dict) else default
        return getattr(row, name)

    def set_(self: Any, value: Any) -> None:
        setattr(self.erasable_row(create=True), name, value)

    return property(get, set_, doc=f"The event's {name}, kept in its erasable row.")


class ErasableRowMixin:
    """For an append-only event with a ``personal_data`` row (one-to-one, ``related_name``)."""

    #: The model of the erasable row; set by the event class.
    erasable_model: type[models.Model]

    def erasable_row(self, *, create: bool) -> Any:
        """The event's erasable row (cached), a new unsaved one if ``create``, else None."""
        cached = self._state.fields_cache.get(ROW, _MISSING)  # type: ignore[attr-defined]
        if cached is not None and cached is not _MISSING:
            return cached
        if cached is _MISSING and self.pk is not None:  # type: ignore[attr-defined]
            try:  # a stored event: its row is read (and cached) once
                return self.personal_data  # type: ignore[attr-defined]
            except ObjectDoesNotExist:
                pass
        # No row: none stored, or an event not yet written (which the descriptor would
        # report by raising, at a cost a bulk load pays per value).
        if not create:
            return None
        row = new(self.erasable_model)
        self.personal_data = row  # caches both sides; ``event`` is set when it is saved
        return row

    def save_erasable_row(self, using: str | None = None) -> None:
        """Write the erasable row of an event just inserted (one row per event, always)."""
        row = self.erasable_row(create=True)
        row.event_id = self.pk  # type: ignore[attr-defined]
        row.save(using=using, force_insert=True)


def insert_with_rows(
    queryset: models.QuerySet, events: list[Any], *, batch_size: int | None = None
) -> list[Any]:
    """Insert new append-only ``events`` and their erasable rows: one statement per batch where
    the database returns the new ids, else one event at a time (``save`` writes its row).

    The batch statement is the cheaper one measured (benchmarks/import_rows.py): on PostgreSQL
    ``bulk_create`` (Django 5.2 sends each column as one array, ``UNNEST``), elsewhere
    ``models.bulk.insert`` (multi-row ``VALUES``, each field's conversion resolved once).
    """
    if connections[queryset.db].features.can_return_rows_from_bulk_insert:
        if not events:
            return events
        unnest = connections[queryset.db].vendor == "postgresql"
        if unnest:
            queryset.bulk_create(events, batch_size=batch_size)
        else:
            insert(queryset.model, events, using=queryset.db, batch_size=batch_size)
        rows = []
        for event in events:
            row = event.erasable_row(create=True)
            row.event_id = event.pk
            rows.append(row)
        if unnest:
            type(rows[0]).objects.using(queryset.db).bulk_create(rows, batch_size=batch_size)
        else:
            insert(type(rows[0]), rows, using=queryset.db, batch_size=batch_size)
    else:
        for event in events:
            event.save(using=queryset.db)
    return events


class EventPersonalData(models.Model):
    """A consent event's erasable raw values; erasure blanks them and stamps ``erased_at``."""

    event = models.OneToOneField(
        "ConsentEvent", on_delete=models.CASCADE, primary_key=True, related_name="personal_data"
    )
    # The identifiers as they were when the person agreed: proof outlives a later change.
    email = models.EmailField(max_length=254, blank=True)
    phone_number = models.CharField(max_length=16, blank=True)
    #: The external id the request named, if any. A keyed digest of it enters the leaf.
    external_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    page_url = models.TextField(blank=True)
    #: When erasure (of the person, or of evidence past EVIDENCE_RETENTION_DAYS) blanked values.
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "event personal data"
        verbose_name_plural = "event personal data"
        indexes = [
            # A number's own SMS history, whoever holds it now (check/ of a replaced number).
            models.Index(
                fields=["phone_number"],
                condition=~models.Q(phone_number=""),
                name="kc_event_phone_number",
            ),
        ]

    def __str__(self) -> str:
        return f"personal data of event #{self.event_id}"


class IdentityPersonalData(models.Model):
    """An identity event's erasable raw values (the identifiers it changed or moved)."""

    event = models.OneToOneField(
        "IdentityEvent", on_delete=models.CASCADE, primary_key=True, related_name="personal_data"
    )
    old_value = models.CharField(max_length=255, blank=True)
    new_value = models.CharField(max_length=255, blank=True)
    #: For a merge: the identifiers that moved, ``{"email": "...", ...}``.
    moved = models.JSONField(default=dict, blank=True)
    #: Why staff made the change (the admin asks for it), None where none was given: free
    #: text, so an erasure blanks it with the identifiers.
    reason = models.TextField(null=True, blank=True)  # noqa: DJ001
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "identity event personal data"
        verbose_name_plural = "identity event personal data"

    def __str__(self) -> str:
        return f"personal data of identity event #{self.event_id}"


#: A consent event's erasable attributes and their value when absent or erased.
EVENT_ERASABLE = {
    "email": "",
    "phone_number": "",
    "external_id": None,
    "ip_address": None,
    "user_agent": "",
    "page_url": "",
}
#: The evidence among them: what EVIDENCE_RETENTION_DAYS erases.
EVIDENCE_FIELDS = ("ip_address", "user_agent", "page_url")
#: An identity event's erasable attributes and their value when absent or erased.
IDENTITY_ERASABLE = {"old_value": "", "new_value": "", "moved": {}, "reason": None}
