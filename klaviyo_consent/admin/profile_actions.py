"""The profile page's actions: each a confirmation page with a required reason around one
service call, recorded with ``recorded_by`` (the staff user) and the reason.

Where the reason goes: a consent event's ``method_detail`` (record, withdraw, suppress,
unsuppress), an identity event's ``reason`` (phone number, merge), and, for every action, a
LogEntry in the profile's admin history (re-verify records nothing else: it reads Klaviyo).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest

from klaviyo_consent.admin.confirm import ReasonForm, confirmed_action
from klaviyo_consent.admin.labels import subscription_label
from klaviyo_consent.choices import CHANNEL_PURPOSES, Consent, Method, Suppression
from klaviyo_consent.exceptions import ConsentValidationError, ErasureRefused
from klaviyo_consent.models import ConsentText, Profile
from klaviyo_consent.services.erasure import ErasureRequest, erase_profile
from klaviyo_consent.services.identity import merge_profiles, replace_phone_number
from klaviyo_consent.services.ledger import ConsentRequest, record_consent
from klaviyo_consent.services.suppressions import record_suppression
from klaviyo_consent.services.verify import pull_profiles

#: ``custom_source`` of consent recorded by staff (Klaviyo shows it as custom_method_detail).
ADMIN_SOURCE = "Django admin"

SUBSCRIPTION_CHOICES = [
    (f"{channel}.{purpose}", subscription_label(channel, purpose))
    for channel, purposes in CHANNEL_PURPOSES.items()
    for purpose in purposes
]


class SubscriptionsForm(ReasonForm):
    subscriptions = forms.MultipleChoiceField(
        label="Subscriptions",
        choices=SUBSCRIPTION_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text="Tick each subscription this applies to.",
    )


class RecordConsentForm(SubscriptionsForm):
    consent_text_version = forms.ModelChoiceField(
        label="Consent text shown",
        queryset=ConsentText.objects.none(),
        help_text="The exact words the person agreed to (Consent texts in this admin).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["consent_text_version"]
        field.queryset = ConsentText.objects.filter(retired_at__isnull=True)  # type: ignore[attr-defined]
        field.empty_label = "Choose the version the person was shown"  # type: ignore[attr-defined]


class PhoneNumberForm(ReasonForm):
    phone_number = forms.CharField(label="New phone number", max_length=32)
    country = forms.CharField(
        label="Country",
        max_length=2,
        required=False,
        help_text="Two letters (e.g. GB) when the number is written without +country code.",
    )


class MergeForm(ReasonForm):
    survivor = forms.ChoiceField(label="Keep", widget=forms.RadioSelect)

    def __init__(self, *args: Any, queryset: QuerySet | None = None, **kwargs: Any) -> None:
        super().__init__(*args, queryset=queryset, **kwargs)
        profiles = list(queryset.order_by("pk")[:2]) if queryset is not None else []
        self.fields["survivor"].choices = [(str(p.pk), f"#{p.pk} {p}") for p in profiles]  # type: ignore[attr-defined]


def _one(queryset: QuerySet) -> Profile:
    return queryset.get()


def _identifiers(profile: Profile) -> dict[str, Any]:
    if profile.merged_into_id:
        raise ConsentValidationError(
            f"This profile was merged into profile {profile.merged_into_id}; use that one.",
            field="profile",
        )
    return {
        "email": profile.email,
        "phone_number": profile.phone_number,
        "external_id": profile.external_id,
    }


def _user(request: HttpRequest) -> Any:
    return request.user if request.user.is_authenticated else None


class ProfileActionsMixin:
    """The confirmed actions of :class:`klaviyo_consent.admin.profiles.ProfileAdmin`."""

    @confirmed_action(
        description="Record consent",
        form_class=RecordConsentForm,
        single=True,
        explanation="Records that this person agreed, with the consent text they were shown, "
        "in the ledger (method “admin”, you as the recorder) and sends it to Klaviyo.",
    )
    def record_consent_action(
        self, request: HttpRequest, queryset: QuerySet, data: dict[str, Any]
    ) -> str:
        form_subscriptions = _subscriptions(data)
        result = record_consent(
            ConsentRequest(
                consent=Consent.SUBSCRIBED,
                subscriptions=form_subscriptions,
                method=Method.ADMIN,
                method_detail=data["reason"],
                custom_source=ADMIN_SOURCE,
                consent_text_id=data["consent_text_version"].pk,
                recorded_by=_user(request),
                **_identifiers(_one(queryset)),
            )
        )
        return f"Recorded consent for {_labels(result.events)}; it is on its way to Klaviyo."

    @confirmed_action(
        description="Withdraw consent",
        form_class=SubscriptionsForm,
        single=True,
        explanation="Records that this person withdrew consent (method “admin”, you as the "
        "recorder) and unsubscribes them in Klaviyo.",
    )
    def withdraw_action(
        self, request: HttpRequest, queryset: QuerySet, data: dict[str, Any]
    ) -> str:
        result = record_consent(
            ConsentRequest(
                consent=Consent.UNSUBSCRIBED,
                subscriptions=_subscriptions(data),
                method=Method.ADMIN,
                method_detail=data["reason"],
                custom_source=ADMIN_SOURCE,
                recorded_by=_user(request),
                **_identifiers(_one(queryset)),
            )
        )
        return f"Withdrew {_labels(result.events)}; Klaviyo is being told."

    def _suppression(
        self, request: HttpRequest, queryset: QuerySet, reason: str, action: str
    ) -> str:
        emails = [e for e in queryset.values_list("email", flat=True) if e]
        if not emails:
            raise ConsentValidationError("None of these profiles has an email.", field="emails")
        result = record_suppression(
            emails,
            action=action,
            method=Method.ADMIN,
            method_detail=reason,
            recorded_by=_user(request),
        )
        skipped = queryset.count() - len(result.events)
        return f"{len(result.events)} {action} request(s) recorded and queued for Klaviyo" + (
            f"; {skipped} profile(s) skipped (no email or unknown to Klaviyo)." if skipped else "."
        )

    @confirmed_action(
        description="Suppress email in Klaviyo",
        explanation="Klaviyo stops all marketing email to these addresses (suppression "
        "USER_SUPPRESSED) while their consent stays as it is. Recorded in the ledger.",
        danger=True,
    )
    def suppress_action(
        self, request: HttpRequest, queryset: QuerySet, data: dict[str, Any]
    ) -> str:
        return self._suppression(request, queryset, data["reason"], Suppression.SUPPRESS)

    @confirmed_action(
        description="Lift the email suppression in Klaviyo",
        explanation="Klaviyo lifts the USER_SUPPRESSED suppression (a hard bounce or an "
        "invalid address stays). Recorded in the ledger.",
    )
    def unsuppress_action(
        self, request: HttpRequest, queryset: QuerySet, data: dict[str, Any]
    ) -> str:
        return self._suppression(request, queryset, data["reason"], Suppression.UNSUPPRESS)

    @confirmed_action(
        description="Change the phone number",
        form_class=PhoneNumberForm,
        single=True,
        explanation="The old number's SMS consent ends (withdrawn in the ledger and in "
        "Klaviyo, “phone number replaced”); the new number starts never subscribed: its holder "
        "gives consent.",
    )
    def replace_phone_number_action(
        self, request: HttpRequest, queryset: QuerySet, data: dict[str, Any]
    ) -> str:
        result = replace_phone_number(
            _one(queryset),
            data["phone_number"],
            country=data["country"] or None,
            method=Method.ADMIN,
            recorded_by=_user(request),
            reason=data["reason"],
        )
        return (
            f"The phone number is now {result.profile.phone_number}; the old number's SMS "
            "consent ended."
        )

    @confirmed_action(
        description="Re-verify with Klaviyo",
        explanation="Reads these profiles back from Klaviyo now, updates the mirror, records "
        "any change made in Klaviyo and judges every open verdict again.",
    )
    def reverify_action(
        self, request: HttpRequest, queryset: QuerySet, data: dict[str, Any]
    ) -> str:
        report = pull_profiles(list(queryset))
        return (
            f"Read {report.profiles_mirrored} profile(s) back; {len(report.not_found)} unknown "
            f"to Klaviyo; {report.verdicts_changed} verdict(s) changed; {report.drifts} "
            "change(s) made in Klaviyo recorded."
        )

    @confirmed_action(
        description="Merge two profiles of one person",
        form_class=MergeForm,
        explanation="The other profile's identifiers move to the one you keep; every consent "
        "event keeps the identifiers it was given for, and the merge is recorded.",
    )
    def merge_action(self, request: HttpRequest, queryset: QuerySet, data: dict[str, Any]) -> str:
        profiles = list(queryset.order_by("pk")[:3])
        if len(profiles) != 2:
            raise ConsentValidationError("Select exactly two profiles to merge.", field="other")
        survivor = next(p for p in profiles if str(p.pk) == data["survivor"])
        other = next(p for p in profiles if p.pk != survivor.pk)
        merge_profiles(
            survivor, other, method=Method.ADMIN, recorded_by=_user(request), reason=data["reason"]
        )
        return f"Merged profile #{other.pk} into #{survivor.pk}."


class EraseForm(ReasonForm):
    """Erasure asks for a reason (no identifiers in it: it is kept) and a ticked box."""

    understood = forms.BooleanField(
        required=True, label="I understand that erasure cannot be undone."
    )


class EraseActionMixin:
    """The erase action: needs ``klaviyo_consent.erase_profile``, not just ``change_profile``."""

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("klaviyo_consent.erase_profile")

    @confirmed_action(
        description="Erase the person (keeps the proof)",
        form_class=EraseForm,
        permissions=("erase",),
        danger=True,
        explanation="Their email, phone number, external id, IP addresses, user agents, page "
        "URLs and Klaviyo's mirror are removed everywhere, and Klaviyo is asked to delete the "
        "profile. Each consent event keeps its channel, purpose, consent, times, text version "
        "and verdict, and its ledger leaf (keyed digests in place of the identifiers), so "
        "receipts still verify. This cannot be undone.",
    )
    def erase_action(self, request: HttpRequest, queryset: QuerySet, data: dict[str, Any]) -> str:
        erased, refused = 0, []
        for profile in queryset.order_by("pk"):
            try:
                erase_profile(
                    ErasureRequest(
                        profile_id=profile.pk,
                        source="admin",
                        requested_by=_user(request),
                        reason=data["reason"],
                    )
                )
            except ErasureRefused as error:
                refused.append(f"#{profile.pk}: {error.message}")
            else:
                erased += 1
        if not erased:
            raise ConsentValidationError("; ".join(refused), field="profile")
        return f"Erased {erased} person(s); Klaviyo's deletion job is queued." + (
            f" Not erased: {'; '.join(refused)}." if refused else ""
        )


def _subscriptions(data: dict[str, Any]) -> dict[str, dict[str, bool]]:
    chosen: dict[str, dict[str, bool]] = {}
    for key in data["subscriptions"]:
        channel, purpose = key.split(".")
        chosen.setdefault(channel, {})[purpose] = True
    return chosen


def _labels(events: Any) -> str:
    return ", ".join(subscription_label(e.channel, e.purpose) for e in events) or "nothing"
