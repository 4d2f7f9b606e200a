"""The ledger's events, the mirrored lists and the webhook trail, read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from klaviyo_consent.admin.accessible import BlankNamedValuesFilter
from klaviyo_consent.admin.base import (
    EventDeadLetterFilter,
    ReadOnlyMixin,
    badge,
)
from klaviyo_consent.admin.labels import (
    VERDICT_LABELS,
    humanize_reason,
    local_time,
    subscription_label,
)
from klaviyo_consent.admin.proofs import EventProofMixin
from klaviyo_consent.models import (
    EVENT_FIELDS,
    ConsentEvent,
    KlaviyoList,
    WebhookDelivery,
)
from klaviyo_consent.services.lists import mirror_lists
from klaviyo_consent.services.sync import retry_failed
from klaviyo_consent.services.webhooks import handle_webhook


class VerdictListFilter(admin.ChoicesFieldListFilter):
    """The delivery's status, under the name staff know it by."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.title = "verdict"


@admin.register(ConsentEvent)
class ConsentEventAdmin(EventProofMixin, ReadOnlyMixin, admin.ModelAdmin):
    # Five columns that fit 1280 px: the event in words, when, who, how, and the verdict.
    list_display = ["__str__", "when", "profile", "method", "verdict"]
    list_filter = [
        ("recorded_at", admin.DateFieldListFilter),  # no date_hierarchy: it scans for dates
        "channel",
        "purpose",
        "consent",
        "method",
        ("delivery__status", VerdictListFilter),
        EventDeadLetterFilter,
        "historical_import",
    ]
    search_fields = [
        "personal_data__email",
        "personal_data__phone_number",
        "profile__email",
        "profile__phone_number",
        "custom_source",
    ]
    list_select_related = ["profile", "delivery"]
    actions = ["retry_action"]
    readonly_fields = [
        *(name if name != "recorded_by" else "recorded_by_user" for name in EVENT_FIELDS),
        "delivery_state",
        "verdict_history",
        "proof_state",
    ]

    @admin.display(description="recorded by")
    def recorded_by_user(self, event: ConsentEvent) -> str:
        # The username kept on the event: the user may have been deleted since.
        return event.recorded_by_name or "—"

    @admin.display(description="recorded", ordering="recorded_at")
    def when(self, event: ConsentEvent) -> str:
        return local_time(event.recorded_at)

    @admin.display(description="verdict", ordering="delivery__status")
    def verdict(self, event: ConsentEvent) -> SafeString:
        label = subscription_label(event.channel, event.purpose)
        return format_html(
            "{}<br><small>{}</small>",
            badge(event.delivery.status, event.delivery.reason, label),
            humanize_reason(event.delivery.reason),
        )

    @admin.display(description="delivery")
    def delivery_state(self, event: ConsentEvent) -> SafeString:
        d = event.delivery
        return format_html(
            "{} {}<br>attempts {}, waits (429s, refused requests) {}, next try {}, pushed {}, "
            "verified {}, dead-lettered {}<br><code>{}</code>",
            badge(d.status),
            humanize_reason(d.reason),
            d.attempts,
            d.deferrals,
            local_time(d.next_attempt_at),
            local_time(d.pushed_at),
            local_time(d.verified_at),
            local_time(d.dead_lettered_at),
            d.errors or "",
        )

    @admin.display(description="verdict history")
    def verdict_history(self, event: ConsentEvent) -> SafeString:
        """Every verdict the event was given, oldest first, and the read-back that gave it."""
        history = event.delivery.history or []
        if not history:
            return format_html("{}", "—")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    local_time(h.get("at")),
                    VERDICT_LABELS.get(h.get("from"), h.get("from") or "—"),
                    badge(h.get("status")),
                    humanize_reason(h.get("reason") or ""),
                    h.get("source"),
                )
                for h in history
            ),
        )
        return format_html(
            "<table><tr><th>at</th><th>from</th><th>verdict</th><th>why</th><th>seen by</th>"
            "</tr>{}</table>",
            rows,
        )

    @admin.action(permissions=["operate"], description="Retry failed / dead-letter events")
    def retry_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = retry_failed(event_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} event(s) queued again.")


@admin.register(KlaviyoList)
class KlaviyoListAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["list_id", "name", "opt_in_process", "profile_count", "mirrored_at"]
    search_fields = ["list_id", "name"]
    actions = ["refresh_lists"]
    readonly_fields = [
        "list_id",
        "name",
        "opt_in_process",
        "profile_count",
        "profile_count_read_at",
        "klaviyo_data",
        "mirrored_at",
    ]

    @admin.action(permissions=["operate"], description="Refresh all lists from Klaviyo")
    def refresh_lists(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.message_user(request, f"Mirrored {len(mirror_lists())} list(s).")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Verified Klaviyo webhook deliveries, for audit; unprocessed ones carry their error."""

    list_display = ["received_at", "webhook_id", "topics", "processed_at", "attempts", "error"]
    list_filter = [
        ("processed_at", admin.EmptyFieldListFilter),
        ("received_at", admin.DateFieldListFilter),
        ("webhook_id", BlankNamedValuesFilter),
    ]
    actions = ["retry_action"]
    search_fields = ["webhook_id", "signature"]
    readonly_fields = [
        "webhook_id",
        "signature",
        "klaviyo_timestamp",
        "received_at",
        "topics",
        "body",
        "processed_at",
        "attempts",
        "failed_at",
        "error",
    ]

    @admin.action(
        permissions=["operate"], description="Process again (deliveries not yet processed)"
    )
    def retry_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        reports = [handle_webhook(d) for d in queryset.filter(processed_at__isnull=True)]
        failed = sum(1 for r in reports if r.error)
        self.message_user(
            request,
            f"Processed {len(reports) - failed} delivery(ies); {failed} still failing.",
            messages.WARNING if failed else messages.SUCCESS,
        )
