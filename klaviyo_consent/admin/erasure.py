"""Erasure records and Klaviyo's deletion jobs, read-only (docs/erasure.md)."""

from __future__ import annotations

from django.contrib import admin

from klaviyo_consent.admin.base import DeadLetterFilter, ReadOnlyMixin
from klaviyo_consent.models import Erasure, ErasureDelivery


class ErasureDeliveryInline(ReadOnlyMixin, admin.TabularInline):
    model = ErasureDelivery
    extra = 0
    can_delete = False
    fields = ["target_field", "status", "reason", "attempts", "pushed_at", "dead_lettered_at"]
    readonly_fields = fields


@admin.register(Erasure)
class ErasureAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "requested_at",
        "scope",
        "profile",
        "source",
        "recorded_by_label",
        "events",
    ]
    list_filter = ["scope", "source"]
    date_hierarchy = "requested_at"
    readonly_fields = [
        "scope",
        "profile",
        "requested_at",
        "source",
        "reason",
        "recorded_by_label",
        "evidence_before",
        "events",
        "digests",
    ]
    fields = readonly_fields
    inlines = [ErasureDeliveryInline]


@admin.register(ErasureDelivery)
class ErasureDeliveryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["erasure", "target_field", "status", "attempts", "pushed_at", "updated_at"]
    list_filter = ["status", DeadLetterFilter]
    # target_value (the identifier until Klaviyo's 202) is never shown.
    readonly_fields = [
        "erasure",
        "profile",
        "target_field",
        "status",
        "reason",
        "errors",
        "attempts",
        "deferrals",
        "next_attempt_at",
        "pushed_at",
        "dead_lettered_at",
        "updated_at",
    ]
    fields = readonly_fields
