"""Admin actions for list membership without consent, on the selected profiles.

Each is a few lines around :func:`klaviyo_consent.services.membership.record_membership`: a
confirmation page (admin/confirm.py) asks for the list and a reason, the service records one
membership event per profile (no consent event; the reason is its method_detail) and the
outbox sends it. The profile admin lists them in its ``actions``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from klaviyo_consent.admin.base import EventDeadLetterFilter, ReadOnlyMixin
from klaviyo_consent.admin.confirm import ReasonForm, confirmed_action
from klaviyo_consent.choices import Membership, Method
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import KlaviyoList, MembershipDelivery, MembershipEvent
from klaviyo_consent.services.membership import MAX_PROFILES, record_membership
from klaviyo_consent.services.outbox import requeue
from klaviyo_consent.validators import KLAVIYO_ID


class ListForm(ReasonForm):
    list_id = forms.CharField(
        label="Klaviyo list id",
        max_length=64,
        help_text="e.g. Y6nRLr. Membership only: nobody is subscribed or unsubscribed.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        known = ", ".join(str(item) for item in KlaviyoList.objects.all()[:20])
        if known:
            self.fields["list_id"].help_text += f" Lists known: {known}."

    def clean_list_id(self) -> str:
        value = self.cleaned_data["list_id"].strip()
        if not KLAVIYO_ID.fullmatch(value):
            raise forms.ValidationError("A Klaviyo list id is letters and digits, e.g. Y6nRLr.")
        return value


def _membership(request: HttpRequest, queryset: QuerySet, data: dict[str, Any], action: str) -> str:
    if queryset.count() > MAX_PROFILES:
        raise ConsentValidationError(
            f"Select at most {MAX_PROFILES} profiles at a time.", field="profiles"
        )
    people = queryset.values("email", "phone_number", "external_id")
    result = record_membership(
        data["list_id"],
        [{k: v for k, v in person.items() if v} for person in people],
        action=action,
        method=Method.ADMIN,
        method_detail=data["reason"],
        recorded_by=request.user if request.user.is_authenticated else None,
    )
    verb = "add to" if action == Membership.ADD else "removal from"
    return (
        f"{len(result.events)} {verb} list {result.list_id} recorded and queued for Klaviyo; "
        "consent is unchanged."
    )


_EXPLANATION = (
    "List membership without consent: Klaviyo keeps each person's consent as it is "
    "(NEVER_SUBSCRIBED stays so)."
)


@confirmed_action(
    description="Add to a Klaviyo list (no consent)", form_class=ListForm, explanation=_EXPLANATION
)
def add_to_list_action(
    modeladmin: Any, request: HttpRequest, queryset: QuerySet, data: dict[str, Any]
) -> str:
    return _membership(request, queryset, data, Membership.ADD)


@confirmed_action(
    description="Remove from a Klaviyo list (no consent)",
    form_class=ListForm,
    explanation=_EXPLANATION,
)
def remove_from_list_action(
    modeladmin: Any, request: HttpRequest, queryset: QuerySet, data: dict[str, Any]
) -> str:
    return _membership(request, queryset, data, Membership.REMOVE)


@admin.register(MembershipEvent)
class MembershipEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """List membership without consent, read-only, with each event's verdict; failed ones can
    be sent again."""

    list_display = ["id", "profile", "list_id", "action", "verdict", "method", "recorded_at"]
    list_filter = ["action", "delivery__status", EventDeadLetterFilter, "method"]
    search_fields = ["list_id", "profile__email", "profile__phone_number"]
    list_select_related = ["profile", "delivery"]
    actions = ["retry_action"]

    @admin.display(description="verdict")
    def verdict(self, event: MembershipEvent) -> str:
        delivery = event.delivery
        return f"{delivery.status}: {delivery.reason}" if delivery.reason else delivery.status

    @admin.action(permissions=["operate"], description="Retry failed membership pushes")
    def retry_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = requeue(MembershipDelivery.objects.filter(event__in=queryset))
        self.message_user(request, f"{count} membership push(es) queued again.")
