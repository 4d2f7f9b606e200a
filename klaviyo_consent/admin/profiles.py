"""The profile pages: the list, and each person's channel × purpose grid (Klaviyo's mirror
beside the ledger), event timeline and confirmed actions (admin/profile_actions.py)."""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from klaviyo_consent.admin.base import (
    ConsentFilter,
    ReadOnlyMixin,
    SafeChangeList,
    VerdictFilter,
    badge,
)
from klaviyo_consent.admin.confirm import ConfirmedActionsMixin
from klaviyo_consent.admin.grid import (
    identity_entries,
    klaviyo_profile_url,
    profile_grid,
    timeline,
)
from klaviyo_consent.admin.labels import (
    CONSENT_LABELS,
    humanize_reason,
    local_time,
    subscription_label,
)
from klaviyo_consent.admin.membership import add_to_list_action, remove_from_list_action
from klaviyo_consent.admin.profile_actions import EraseActionMixin, ProfileActionsMixin
from klaviyo_consent.admin.proofs import ProfileReceiptsMixin
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import (
    ConsentEvent,
    IdentityEvent,
    Profile,
    normalize_email,
)
from klaviyo_consent.phone import normalize_phone_number
from klaviyo_consent.services.ledger import latest_events
from klaviyo_consent.services.ledger_state import ledger_for
from klaviyo_consent.services.push import push_pending

#: Events the profile page's timeline shows (newest first); the rest are a link away.
TIMELINE_LENGTH = 50
#: Identity changes the profile page shows (newest first).
IDENTITY_LENGTH = 20

#: The actions the profile page offers as buttons, in this order.
PAGE_ACTIONS = (
    "record_consent_action",
    "withdraw_action",
    "suppress_action",
    "unsuppress_action",
    "replace_phone_number_action",
    "reverify_action",
)


def exact_identifier(term: str) -> Q | None:
    """The lookup for a term that is one whole identifier, or None for any other term."""
    term = term.strip()
    if "@" in term and " " not in term:
        email = normalize_email(term)
        return Q(email=email) if "." in email.rpartition("@")[2] else None
    if term.startswith("+"):
        try:
            return Q(phone_number=normalize_phone_number(term))
        except ConsentValidationError:
            return None
    if _KLAVIYO_ID.fullmatch(term):
        return Q(klaviyo_id=term) | Q(external_id=term)
    return None


#: Klaviyo's profile ids: a ULID, 26 characters of Crockford base32.
_KLAVIYO_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


class ProfileChangeList(SafeChangeList):
    """Reads the ledgers of the whole page in one query, not one per row (the verdicts column)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        events = latest_events(profile.pk for profile in self.result_list)
        for profile in self.result_list:
            profile.latest_events = events.get(profile.pk, [])


@admin.register(Profile)
class ProfileAdmin(
    ConfirmedActionsMixin,
    ProfileActionsMixin,
    EraseActionMixin,
    ProfileReceiptsMixin,
    ReadOnlyMixin,
    admin.ModelAdmin,
):
    change_form_template = "admin/klaviyo_consent/profile/change_form.html"
    # Four columns that fit 1280 px beside both sidebars: who, Klaviyo's word, the ledger's
    # verdicts, when Klaviyo was last read.
    list_display = ["who", "in_klaviyo", "verdicts", "read_back"]
    search_fields = ["email", "phone_number", "external_id", "klaviyo_id"]
    list_filter = [ConsentFilter, VerdictFilter]
    readonly_fields = [
        "email",
        "phone_number",
        "external_id",
        "merged_into",
        "klaviyo_id",
        "erased_at",
        "read_back",
        "created",
        "receipts_download",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "email",
                    "phone_number",
                    "external_id",
                    "merged_into",
                    "klaviyo_id",
                    "erased_at",
                ]
            },
        ),
        ("Klaviyo and proof", {"fields": ["read_back", "created", "receipts_download"]}),
    ]
    actions = [
        "push_pending_action",
        "reverify_action",
        "record_consent_action",
        "withdraw_action",
        "suppress_action",
        "unsuppress_action",
        "replace_phone_number_action",
        "merge_action",
        add_to_list_action,
        remove_from_list_action,
        "erase_action",
    ]

    def _mirror_consent(self, profile: Profile, channel: str) -> str:
        consent = profile.klaviyo_leaf(channel, "marketing").get("consent")
        return CONSENT_LABELS.get(consent, consent) if consent else "—"

    @admin.display(description="Profile", ordering="-id")
    def who(self, profile: Profile) -> SafeString:
        return format_html("{}<br><small>{}</small>", profile, profile.phone_number or "")

    @admin.display(description="In Klaviyo (marketing)")
    def in_klaviyo(self, profile: Profile) -> SafeString:
        return format_html(
            "Email: {}<br>SMS: {}",
            self._mirror_consent(profile, "email"),
            self._mirror_consent(profile, "sms"),
        )

    @admin.display(description="Read back from Klaviyo", ordering="mirrored_at")
    def read_back(self, profile: Profile) -> str:
        return local_time(profile.mirrored_at) if profile.mirrored_at else "never"

    @admin.display(description="Created")
    def created(self, profile: Profile) -> str:
        return local_time(profile.created_at)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ProfileChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """A whole email, phone number or Klaviyo id is looked up by its unique index (in its
        stored form: ``Ada@Example.com`` and ``+44 7400 123456`` find the person); any other
        term is a substring search, which reads every row."""
        exact = exact_identifier(search_term)
        if exact is not None:
            return queryset.filter(exact), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="Verdicts (ledger)")
    def verdicts(self, profile: Profile) -> SafeString:
        ledger = ledger_for(profile, events=getattr(profile, "latest_events", None))
        return format_html_join(
            " ",
            "{}",
            (
                (
                    badge(
                        leaf["delivery"],
                        humanize_reason(leaf["reason"]),
                        subscription_label(channel, purpose),
                    ),
                )
                for channel, purposes in ledger.items()
                for purpose, leaf in purposes.items()
                if leaf["delivery"]
            ),
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> Any:
        profile = self.get_object(request, object_id)
        if profile is not None:
            extra_context = {**(extra_context or {}), **self._page_context(request, profile)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _page_context(self, request: HttpRequest, profile: Profile) -> dict[str, Any]:
        """The grid, the timeline, the Klaviyo link and the actions this user may run."""
        # The profile's events and those of profiles merged into it, by profile id: an OR
        # across a join would walk the whole ledger newest-first.
        owners = [
            profile.pk,
            *Profile.objects.filter(merged_into=profile).values_list("pk", flat=True),
        ]
        events = list(
            ConsentEvent.objects.filter(profile_id__in=owners)
            .select_related("delivery", "consent_text_version")
            .order_by("-recorded_at", "-id")[: TIMELINE_LENGTH + 1]
        )
        identity = list(
            IdentityEvent.objects.filter(profile=profile)
            .select_related("delivery", "other_profile")
            .order_by("-recorded_at", "-id")[:IDENTITY_LENGTH]
        )
        allowed = self.get_actions(request)
        return {
            "kc_identity": identity_entries(identity),
            "kc_grid": profile_grid(profile, ledger_for(profile)),
            "kc_mirrored_at": local_time(profile.mirrored_at) if profile.mirrored_at else "",
            "kc_timeline": timeline(events[:TIMELINE_LENGTH]),
            "kc_timeline_more": len(events) > TIMELINE_LENGTH,
            "kc_events_url": reverse("admin:klaviyo_consent_consentevent_changelist")
            + f"?profile={profile.pk}",
            "kc_klaviyo_url": klaviyo_profile_url(profile.klaviyo_id),
            # An erased person has no identifiers left to record, withdraw or push with.
            "kc_actions": []
            if profile.erased_at
            else [(name, allowed[name][2]) for name in PAGE_ACTIONS if name in allowed],
            "kc_erased_at": local_time(profile.erased_at) if profile.erased_at else "",
            "kc_may_operate": self.has_operate_permission(request) or bool(profile.erased_at),
            "kc_changelist_url": reverse("admin:klaviyo_consent_profile_changelist"),
        }

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
