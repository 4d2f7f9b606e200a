"""What every admin page of the app shares: verdict badges, mirror cells, filters, read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from klaviyo_consent.choices import CHANNEL_PURPOSES, DeliveryStatus, Method
from klaviyo_consent.models import (
    ConsentEvent,
    Delivery,
    parse_row_id,
)

BADGE_COLOURS = {
    DeliveryStatus.PENDING: "#6c757d",
    DeliveryStatus.PUSHED: "#0d6efd",
    DeliveryStatus.APPLIED: "#198754",
    DeliveryStatus.PENDING_CONFIRMATION: "#b58105",
    DeliveryStatus.NOT_APPLIED: "#dc3545",
    DeliveryStatus.FAILED: "#842029",
    DeliveryStatus.HISTORY: "#495057",
}
MIRROR_COLUMNS = (
    "consent",
    "consent_timestamp",
    "method",
    "method_detail",
    "custom_method_detail",
    "double_optin",
    "suppression",
)


def badge(status: str | None, title: str = "") -> SafeString:
    if not status:
        return format_html("<span>{}</span>", "—")
    return format_html(
        '<span title="{}" style="background:{};color:#fff;padding:1px 6px;border-radius:8px;'
        'font-size:11px;white-space:nowrap">{}</span>',
        title,
        BADGE_COLOURS.get(status, "#6c757d"),
        status,
    )


def mirror_cell(name: str, leaf: dict[str, Any]) -> str:
    if name not in leaf:
        return "—"
    value = leaf[name]
    if name == "suppression":
        return (
            ", ".join(f"{s.get('reason')} ({s.get('timestamp') or '?'})" for s in value or [])
            or "none"
        )
    return "—" if value in (None, "") else str(value)


class ConsentFilter(admin.SimpleListFilter):
    """Filter by Klaviyo's mirrored consent on a channel."""

    title = "consent (Klaviyo)"
    parameter_name = "consent"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (f"{channel}.{purpose}.{consent}", f"{channel} {purpose}: {consent}")
            for channel, purposes in CHANNEL_PURPOSES.items()
            for purpose in purposes
            for consent in ("SUBSCRIBED", "UNSUBSCRIBED", "NEVER_SUBSCRIBED")
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        # Only a listed choice becomes a lookup: anything else would be a 500 or, worse, an
        # ORM lookup of the caller's making (``email.marketing__isnull.True``).
        if value not in dict(self.lookup_choices):
            return queryset
        channel, purpose, consent = value.split(".")
        return queryset.filter(**{f"subscriptions__{channel}__{purpose}__consent": consent})


class VerdictFilter(admin.SimpleListFilter):
    """Profiles with an event in a given verdict, or with drift recorded from Klaviyo."""

    title = "verdict"
    parameter_name = "verdict"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (DeliveryStatus.NOT_APPLIED, "not applied"),
            (DeliveryStatus.PENDING_CONFIRMATION, "pending confirmation"),
            (DeliveryStatus.FAILED, "failed"),
            (DeliveryStatus.PENDING, "pending"),
            ("drift", "drift (changed in Klaviyo)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value not in dict(self.lookup_choices):
            return queryset
        if value == "drift":
            inbound = ConsentEvent.objects.filter(profile=OuterRef("pk"), method=Method.KLAVIYO)
            return queryset.filter(Exists(inbound))
        rows = Delivery.objects.filter(profile=OuterRef("pk"), status=value)
        return queryset.filter(Exists(rows))


class SafeChangeList(ChangeList):
    """A changelist that refuses, as Django refuses other bad filter values (``?e=1``), what
    Django itself turns into a 500: a NUL in any filter or search value (PostgreSQL refuses it
    in a query) and a date drill-down year past datetime's range (OverflowError)."""

    def get_filters(self, request: HttpRequest) -> Any:
        if any("\x00" in value for values in request.GET.lists() for value in values[1]):
            raise IncorrectLookupParameters("A filter or search value holds a NUL character.")
        try:
            return super().get_filters(request)
        except OverflowError as exc:
            raise IncorrectLookupParameters(exc) from exc


class ReadOnlyMixin:
    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return SafeChangeList

    def response_action(self, request: HttpRequest, queryset: QuerySet, **kwargs: Any) -> Any:
        # Django filters ``pk__in`` with the posted ids as they are: "abc", "²" or 20 digits
        # there are a 500. Refuse them the way Django refuses an action with nothing selected.
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if any(parse_row_id(value) is None for value in selected):
            self.message_user(request, "Select items by their ids.", messages.WARNING)
            return None
        return super().response_action(request, queryset, **kwargs)  # Django 6: action_location

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Actions that record in the ledger or call Klaviyo (``permissions=["operate"]``) need
        ``klaviyo_consent.change_profile``, as the API's identity operations do: viewing the
        ledger is not operating on it (docs/security.md)."""
        return request.user.has_perm("klaviyo_consent.change_profile")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
