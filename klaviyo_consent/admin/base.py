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
from django.utils.safestring import SafeString, mark_safe

from klaviyo_consent.admin.labels import CONSENT_LABELS, VERDICT_LABELS, subscription_label
from klaviyo_consent.admin.pagination import EstimatedCountPaginator
from klaviyo_consent.choices import CHANNEL_PURPOSES, DeliveryStatus, Method
from klaviyo_consent.models import (
    ConsentEvent,
    Delivery,
    parse_row_id,
)
from klaviyo_consent.models.profiles import mirrored_consent


def badge(status: str | None, title: str = "", label: str = "") -> SafeString:
    """A verdict as a coloured badge (class ``kc-badge kc-<status>``, colours in
    ``klaviyo_consent/admin.css``); ``label`` names the subscription ("Email marketing:
    applied"), ``title`` carries the reason on hover."""
    if not status:
        return format_html("<span>{}</span>", "—")
    words = VERDICT_LABELS.get(status, status)
    return format_html(
        '<span class="kc-badge kc-{}" title="{}">{}{}</span>',
        status,
        title,
        f"{label}: " if label else "",
        words.lower() if label else words,
    )


class ConsentFilter(admin.SimpleListFilter):
    """Filter by Klaviyo's mirrored consent on a channel."""

    title = "consent (Klaviyo)"
    parameter_name = "consent"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (
                f"{channel}.{purpose}.{consent}",
                f"{subscription_label(channel, purpose)}: {CONSENT_LABELS[consent].lower()}",
            )
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
        # The expression of the kc_profile_<channel>_<purpose> index, so the index serves it.
        return queryset.alias(mirrored=mirrored_consent(channel, purpose)).filter(mirrored=consent)


class DeadLetterFilter(admin.SimpleListFilter):
    """Rows whose retries ran out (``failed`` with ``dead_lettered_at``): the dashboard's
    "Dead letters" links (``?dead_letter=yes``). ``field_path`` reaches the delivery row."""

    title = "dead letter"
    parameter_name = "dead_letter"
    #: The delivery's fields from the changelist's model (``"delivery__"`` for an event).
    prefix = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "retries ran out")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() != "yes":
            return queryset
        return queryset.filter(
            **{
                f"{self.prefix}status": DeliveryStatus.FAILED,
                f"{self.prefix}dead_lettered_at__isnull": False,
            }
        )


class EventDeadLetterFilter(DeadLetterFilter):
    """:class:`DeadLetterFilter` for an event changelist (its ``delivery``)."""

    prefix = "delivery__"


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

    def get_results(self, request: HttpRequest) -> None:
        # A lookup on a date part (``recorded_at__year=<20 digits>``) overflows only when the
        # query runs: refused like any other bad filter value.
        try:
            super().get_results(request)
        except OverflowError as exc:
            raise IncorrectLookupParameters(exc) from exc


class ReadOnlyMixin:
    """Read-only pages over big tables: never a full ``COUNT(*)`` (admin/pagination.py)."""

    show_full_result_count = False
    paginator = EstimatedCountPaginator

    class Media:
        # Verdict badges, the profile grid and timeline (lists, change pages).
        css = {"all": ["klaviyo_consent/admin.css"]}

    #: Rows a page renders: support staff search for a person; 50 rows render in half the time
    #: of Django's 100 (benchmarks/admin_pages.py).
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Django's changelist applies ``list_select_related`` only to a queryset that selects
        # no relation yet; the ledgers' default managers already join their erasable rows, so
        # add the list's relations here or every row would cost a query.
        queryset = super().get_queryset(request)  # type: ignore[misc]
        related = getattr(self, "list_select_related", False)
        if isinstance(related, list | tuple):
            queryset = queryset.select_related(*related)
        return queryset

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return SafeChangeList

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj: Any) -> SafeString:
        """Django's row checkbox, written directly: rendering a widget template per row was a
        third of a 100-row changelist's time (benchmarks/admin_pages.py)."""
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" '
            'aria-label="Select this object for an action - {}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            obj,
        )

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
