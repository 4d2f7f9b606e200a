"""Admin: each profile's mirrored Klaviyo subscriptions beside its local ledger, all read-only.

Actions call the same services as the API and the commands.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from klaviyo_consent.admin_proofs import EventProofMixin, ProfileReceiptsMixin
from klaviyo_consent.choices import CHANNEL_PURPOSES, DeliveryStatus, Method, Suppression
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import (
    EVENT_FIELDS,
    ConsentEvent,
    Delivery,
    IdentityEvent,
    KlaviyoList,
    Profile,
    WebhookDelivery,
    parse_row_id,
)
from klaviyo_consent.services.identity import merge_profiles, replace_phone_number
from klaviyo_consent.services.ledger import ledger_for
from klaviyo_consent.services.lists import mirror_lists
from klaviyo_consent.services.mirror import pull_profiles
from klaviyo_consent.services.suppressions import record_suppression
from klaviyo_consent.services.sync import push_pending, retry_failed
from klaviyo_consent.services.webhooks import handle_webhook

BADGE_COLOURS = {
    DeliveryStatus.PENDING: "#6c757d",
    DeliveryStatus.PUSHED: "#0d6efd",
    DeliveryStatus.APPLIED: "#198754",
    DeliveryStatus.PENDING_CONFIRMATION: "#b58105",
    DeliveryStatus.NOT_APPLIED: "#dc3545",
    DeliveryStatus.FAILED: "#842029",
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


def _cell(name: str, leaf: dict[str, Any]) -> str:
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

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ConsentEventInline(ReadOnlyMixin, admin.TabularInline):
    model = ConsentEvent
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["-recorded_at", "-id"]
    fields = [
        "recorded_at",
        "channel",
        "purpose",
        "consent",
        "method",
        "method_detail",
        "custom_source",
        "list_id",
        "verdict",
    ]
    readonly_fields = fields

    @admin.display(description="verdict")
    def verdict(self, event: ConsentEvent) -> SafeString:
        delivery = getattr(event, "delivery", None)
        if delivery is None:
            return badge(None)
        return format_html("{} {}", badge(delivery.status), delivery.reason)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("delivery")


class IdentityEventInline(ReadOnlyMixin, admin.TabularInline):
    """Number changes, added identifiers and merges of this profile (docs/identity.md)."""

    model = IdentityEvent
    fk_name = "profile"
    extra = 0
    can_delete = False
    ordering = ["-recorded_at", "-id"]
    fields = [
        "recorded_at",
        "change",
        "field",
        "old_value",
        "new_value",
        "other_profile",
        "moved",
        "method",
        "recorded_by",
    ]
    readonly_fields = fields
    verbose_name_plural = "identity changes"


@admin.register(Profile)
class ProfileAdmin(ProfileReceiptsMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "phone_number",
        "email_marketing",
        "sms_marketing",
        "verdicts",
        "mirrored_at",
    ]
    search_fields = ["email", "phone_number", "external_id", "klaviyo_id"]
    list_filter = [ConsentFilter, VerdictFilter]
    readonly_fields = [
        "email",
        "phone_number",
        "external_id",
        "merged_into",
        "klaviyo_id",
        "mirrored_at",
        "created_at",
        "consent_side_by_side",
        "receipts_download",
    ]
    fieldsets = [
        (None, {"fields": ["email", "phone_number", "external_id", "merged_into", "klaviyo_id"]}),
        ("Proof", {"fields": ["receipts_download"]}),
        (
            "Consent: Klaviyo's mirror beside the local ledger",
            {"fields": ["mirrored_at", "consent_side_by_side"]},
        ),
    ]
    inlines = [ConsentEventInline, IdentityEventInline]
    actions = [
        "push_pending_action",
        "refresh_action",
        "suppress_action",
        "unsuppress_action",
        "replace_phone_number_action",
        "merge_action",
    ]

    def _mirror_consent(self, profile: Profile, channel: str) -> str:
        return profile.klaviyo_leaf(channel, "marketing").get("consent") or "—"

    @admin.display(description="email marketing (Klaviyo)")
    def email_marketing(self, profile: Profile) -> str:
        return self._mirror_consent(profile, "email")

    @admin.display(description="SMS marketing (Klaviyo)")
    def sms_marketing(self, profile: Profile) -> str:
        return self._mirror_consent(profile, "sms")

    @admin.display(description="verdicts")
    def verdicts(self, profile: Profile) -> SafeString:
        ledger = ledger_for(profile)
        return format_html_join(
            " ",
            "{}",
            (
                (badge(leaf["delivery"], f"{channel}.{purpose}: {leaf['reason']}"),)
                for channel, purposes in ledger.items()
                for purpose, leaf in purposes.items()
                if leaf["delivery"]
            ),
        )

    @admin.display(description="subscriptions")
    def consent_side_by_side(self, profile: Profile) -> SafeString:
        ledger = ledger_for(profile)
        head = format_html_join(
            "",
            "<th>{}</th>",
            ((c,) for c in ("channel / purpose", *MIRROR_COLUMNS, "ledger", "verdict", "reason")),
        )
        rows = []
        for channel, purposes in CHANNEL_PURPOSES.items():
            for purpose in purposes:
                leaf = profile.klaviyo_leaf(channel, purpose)
                local = ledger[channel][purpose]
                cells = format_html_join(
                    "", "<td>{}</td>", ((_cell(c, leaf),) for c in MIRROR_COLUMNS)
                )
                rows.append(
                    format_html(
                        "<tr><th>{}.{}</th>{}<td>{}</td><td>{}</td><td>{}</td></tr>",
                        channel,
                        purpose,
                        cells,
                        local["status"],
                        badge(local["delivery"]),
                        local["reason"],
                    )
                )
        note = "" if profile.mirrored_at else " (never read back from Klaviyo yet)"
        return format_html(
            '<table class="kc-subscriptions"><caption>Klaviyo subscriptions{}</caption>'
            "<thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
            note,
            head,
            format_html_join("", "{}", ((r,) for r in rows)),
        )

    @admin.action(description="Push pending consent to Klaviyo now")
    def push_pending_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        report = push_pending(
            profile_ids=list(queryset.values_list("pk", flat=True)), include_scheduled=True
        )
        self.message_user(
            request,
            f"Pushed {report.pushed}, retrying {report.retried}, failed {report.failed}.",
            messages.WARNING if report.failed else messages.SUCCESS,
        )

    def _suppression(self, request: HttpRequest, queryset: QuerySet, action: str) -> None:
        emails = [e for e in queryset.values_list("email", flat=True) if e]
        if not emails:
            self.message_user(request, "None of these profiles has an email.", messages.WARNING)
            return
        result = record_suppression(
            emails,
            action=action,
            method=Method.ADMIN,
            method_detail="admin action",
            recorded_by=request.user if request.user.is_authenticated else None,
        )
        skipped = len(queryset) - len(result.events)
        self.message_user(
            request,
            f"{len(result.events)} {action} request(s) recorded and queued for Klaviyo"
            + (f"; {skipped} profile(s) skipped (no email)." if skipped else "."),
        )

    @admin.action(description="Suppress email in Klaviyo (USER_SUPPRESSED)")
    def suppress_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._suppression(request, queryset, Suppression.SUPPRESS)

    @admin.action(description="Lift the USER_SUPPRESSED suppression in Klaviyo")
    def unsuppress_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._suppression(request, queryset, Suppression.UNSUPPRESS)

    @admin.action(description="Refresh from Klaviyo (read back and re-verify)")
    def refresh_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        report = pull_profiles(list(queryset))
        self.message_user(
            request,
            f"Mirrored {report.profiles_mirrored} profile(s); {len(report.not_found)} unknown to "
            f"Klaviyo; {report.verdicts_changed} verdict(s) changed; {report.drifts} drift(s).",
        )

    def _identity_form(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        form: forms.Form,
        action: str,
        title: str,
        explanation: str,
    ) -> TemplateResponse:
        return TemplateResponse(
            request,
            "admin/klaviyo_consent/profile/identity_action.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "explanation": explanation,
                "form": form,
                "queryset": queryset,
                "action": action,
                "opts": self.model._meta,
            },
        )

    def _apply(self, request: HttpRequest, operation: Any) -> bool:
        try:
            operation()
        except ConsentValidationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return False
        return True

    @admin.action(description="Replace the phone number (closes the old number's SMS consent)")
    def replace_phone_number_action(
        self, request: HttpRequest, queryset: QuerySet
    ) -> TemplateResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one profile.", messages.ERROR)
            return None
        profile = queryset.get()
        form = PhoneNumberForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            if self._apply(
                request,
                lambda: replace_phone_number(
                    profile,
                    data["phone_number"],
                    country=data["country"] or None,
                    method=Method.ADMIN,
                    recorded_by=request.user,
                ),
            ):
                self.message_user(
                    request,
                    f"Replaced {profile}'s phone number; its SMS consent ended with the old "
                    "number, the new one has never subscribed.",
                )
            return None
        return self._identity_form(
            request,
            queryset,
            form,
            "replace_phone_number_action",
            "Replace the phone number",
            f"{profile} now has {profile.phone_number or 'no number'}. The old number's SMS "
            'consent is withdrawn (in the ledger and in Klaviyo) with the reason "phone number '
            'replaced"; the new number starts never subscribed.',
        )

    @admin.action(description="Merge two profiles of one person")
    def merge_action(self, request: HttpRequest, queryset: QuerySet) -> TemplateResponse | None:
        profiles = list(queryset.order_by("pk"))
        if len(profiles) != 2:
            self.message_user(request, "Select exactly two profiles to merge.", messages.ERROR)
            return None
        form = MergeForm(
            request.POST if "apply" in request.POST else None,
            choices=[(str(p.pk), f"#{p.pk} {p}") for p in profiles],
        )
        if form.is_bound and form.is_valid():
            survivor = next(p for p in profiles if str(p.pk) == form.cleaned_data["survivor"])
            other = next(p for p in profiles if p.pk != survivor.pk)
            if self._apply(
                request,
                lambda: merge_profiles(
                    survivor, other, method=Method.ADMIN, recorded_by=request.user
                ),
            ):
                self.message_user(request, f"Merged profile #{other.pk} into #{survivor.pk}.")
            return None
        return self._identity_form(
            request,
            queryset,
            form,
            "merge_action",
            "Merge",
            "The other profile's identifiers move to the one you keep; every consent event "
            "keeps the identifiers it was given for, and the merge is recorded.",
        )


class PhoneNumberForm(forms.Form):
    phone_number = forms.CharField(max_length=32)
    country = forms.CharField(
        max_length=2, required=False, help_text="ISO 3166-1 alpha-2, for a national number."
    )


class MergeForm(forms.Form):
    survivor = forms.ChoiceField(label="Keep", widget=forms.RadioSelect)

    def __init__(self, *args: Any, choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["survivor"].choices = choices


@admin.register(ConsentEvent)
class ConsentEventAdmin(EventProofMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "recorded_at",
        "profile",
        "channel",
        "purpose",
        "consent",
        "method",
        "verdict",
    ]
    list_filter = [
        "channel",
        "purpose",
        "consent",
        "method",
        "delivery__status",
        "historical_import",
    ]
    search_fields = [
        "email",
        "phone_number",
        "profile__email",
        "profile__phone_number",
        "custom_source",
    ]
    list_select_related = ["profile", "delivery"]
    date_hierarchy = "recorded_at"
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

    @admin.display(description="verdict", ordering="delivery__status")
    def verdict(self, event: ConsentEvent) -> SafeString:
        return badge(event.delivery.status, event.delivery.reason)

    @admin.display(description="delivery")
    def delivery_state(self, event: ConsentEvent) -> SafeString:
        d = event.delivery
        return format_html(
            "{} {}<br>attempts {}, waits (429s, refused requests) {}, next try {}, pushed {}, "
            "verified {}, dead-lettered {}<br><code>{}</code>",
            badge(d.status),
            d.reason,
            d.attempts,
            d.deferrals,
            d.next_attempt_at or "—",
            d.pushed_at or "—",
            d.verified_at or "—",
            d.dead_lettered_at or "—",
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
                    h.get("at"),
                    h.get("from"),
                    badge(h.get("status")),
                    h.get("reason"),
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

    @admin.action(description="Retry failed / dead-letter events")
    def retry_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = retry_failed(event_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} event(s) queued again.")


@admin.register(KlaviyoList)
class KlaviyoListAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["list_id", "name", "opt_in_process", "mirrored_at"]
    search_fields = ["list_id", "name"]
    actions = ["refresh_lists"]
    readonly_fields = ["list_id", "name", "opt_in_process", "klaviyo_data", "mirrored_at"]

    @admin.action(description="Refresh all lists from Klaviyo")
    def refresh_lists(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.message_user(request, f"Mirrored {len(mirror_lists())} list(s).")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Verified Klaviyo webhook deliveries, for audit; unprocessed ones carry their error."""

    list_display = ["received_at", "webhook_id", "topics", "processed_at", "attempts", "error"]
    list_filter = [("processed_at", admin.EmptyFieldListFilter), "webhook_id"]
    actions = ["retry_action"]
    search_fields = ["webhook_id", "signature"]
    date_hierarchy = "received_at"
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

    @admin.action(description="Process again (deliveries not yet processed)")
    def retry_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        reports = [handle_webhook(d) for d in queryset.filter(processed_at__isnull=True)]
        failed = sum(1 for r in reports if r.error)
        self.message_user(
            request,
            f"Processed {len(reports) - failed} delivery(ies); {failed} still failing.",
            messages.WARNING if failed else messages.SUCCESS,
        )
