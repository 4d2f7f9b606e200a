"""The profile page: Klaviyo's mirrored subscriptions beside the local ledger, its actions."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from klaviyo_consent.admin.base import (
    MIRROR_COLUMNS,
    ConsentFilter,
    ReadOnlyMixin,
    SafeChangeList,
    VerdictFilter,
    badge,
    mirror_cell,
)
from klaviyo_consent.admin.membership import add_to_list_action, remove_from_list_action
from klaviyo_consent.admin.proofs import ProfileReceiptsMixin
from klaviyo_consent.choices import CHANNEL_PURPOSES, Method, Suppression
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import (
    IDENTITY_EVENT_FIELDS,
    ConsentEvent,
    IdentityEvent,
    Profile,
)
from klaviyo_consent.services.identity import merge_profiles, replace_phone_number
from klaviyo_consent.services.ledger import latest_events, ledger_for
from klaviyo_consent.services.push import push_pending
from klaviyo_consent.services.suppressions import record_suppression
from klaviyo_consent.services.verify import pull_profiles


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
    fields = [*IDENTITY_EVENT_FIELDS, "klaviyo"]
    readonly_fields = fields
    verbose_name_plural = "identity changes"

    @admin.display(description="Klaviyo told")
    def klaviyo(self, event: IdentityEvent) -> SafeString | str:
        """The new number's push to Klaviyo (Create or Update Profile), when there is one."""
        delivery = getattr(event, "delivery", None)
        if delivery is None:
            return "—"
        return format_html("{} {}", badge(delivery.status), delivery.reason)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("delivery")


class ProfileChangeList(SafeChangeList):
    """Reads the ledgers of the whole page in one query, not one per row (the verdicts column)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        events = latest_events(profile.pk for profile in self.result_list)
        for profile in self.result_list:
            profile.latest_events = events.get(profile.pk, [])


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
        add_to_list_action,
        remove_from_list_action,
    ]

    def _mirror_consent(self, profile: Profile, channel: str) -> str:
        return profile.klaviyo_leaf(channel, "marketing").get("consent") or "—"

    @admin.display(description="email marketing (Klaviyo)")
    def email_marketing(self, profile: Profile) -> str:
        return self._mirror_consent(profile, "email")

    @admin.display(description="SMS marketing (Klaviyo)")
    def sms_marketing(self, profile: Profile) -> str:
        return self._mirror_consent(profile, "sms")

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ProfileChangeList

    @admin.display(description="verdicts")
    def verdicts(self, profile: Profile) -> SafeString:
        ledger = ledger_for(profile, events=getattr(profile, "latest_events", None))
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
                    "", "<td>{}</td>", ((mirror_cell(c, leaf),) for c in MIRROR_COLUMNS)
                )
                rows.append(
                    format_html(
                        "<tr><th>{}.{}</th>{}<td>{}</td><td>{}</td><td>{}</td></tr>",
                        channel,
                        purpose,
                        cells,
                        local["consent"],
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

    @admin.action(permissions=["operate"], description="Push pending consent to Klaviyo now")
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

    @admin.action(
        permissions=["operate"], description="Suppress email in Klaviyo (USER_SUPPRESSED)"
    )
    def suppress_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._suppression(request, queryset, Suppression.SUPPRESS)

    @admin.action(
        permissions=["operate"], description="Lift the USER_SUPPRESSED suppression in Klaviyo"
    )
    def unsuppress_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._suppression(request, queryset, Suppression.UNSUPPRESS)

    @admin.action(
        permissions=["operate"], description="Refresh from Klaviyo (read back and re-verify)"
    )
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

    @admin.action(
        permissions=["operate"],
        description="Replace the phone number (closes the old number's SMS consent)",
    )
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

    @admin.action(permissions=["operate"], description="Merge two profiles of one person")
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
