"""Who a consent is about: the local profile with Klaviyo's mirror, Klaviyo's lists, and the
one stored form of an email and of a row id.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

import idna
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from klaviyo_consent.choices import CHANNEL_PURPOSES, OptInProcess


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


def mirrored_consent(channel: str, purpose: str) -> Cast:
    """Klaviyo's mirrored ``subscriptions.<channel>.<purpose>.consent`` as text: the expression
    of the ``kc_profile_<channel>_<purpose>`` index, for filters that want the index.

    (A bare ``KT`` compares as JSON on SQLite, where ``= 'SUBSCRIBED'`` is malformed JSON.)
    """
    return Cast(KT(f"subscriptions__{channel}__{purpose}__consent"), models.TextField())


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
    #: Set when the person was erased (GDPR Art. 17): identifiers and mirror are gone, the
    #: row stays for its events' ledger (docs/erasure.md).
    erased_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        # The admin's consent filter: one expression index per Klaviyo subscription's consent
        # (``mirrored_consent``), the same expression the filter queries.
        indexes = [
            models.Index(mirrored_consent(channel, purpose), name=f"kc_profile_{channel}_{purpose}")
            for channel, purposes in CHANNEL_PURPOSES.items()
            for purpose in purposes
        ]
        permissions = [("erase_profile", "Can erase a person's personal data")]
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
                | Q(merged_into__isnull=False)
                | Q(erased_at__isnull=False),
                name="kc_profile_has_email_or_phone",
            ),
        ]

    def __str__(self) -> str:
        if self.erased_at is not None:
            return f"erased profile {self.pk}"
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
    #: Klaviyo's member count as last read (``additional-fields[list]=profile_count``, which
    #: Klaviyo limits to 1/s and 15/m); None: never read.
    profile_count = models.PositiveIntegerField(null=True, blank=True)
    profile_count_read_at = models.DateTimeField(null=True, blank=True)

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
        count = attributes.get("profile_count")
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            self.profile_count = count
            self.profile_count_read_at = self.mirrored_at
