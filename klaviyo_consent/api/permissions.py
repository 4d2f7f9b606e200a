"""Who may read the ledger (personal data) and who may write consent."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission

from klaviyo_consent.conf import consent_settings


class CanViewConsent(BasePermission):
    """An authenticated user holding the app's view permission for the model read."""

    message = "Reading consent records needs the klaviyo_consent view permission."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        model = view.get_queryset().model if hasattr(view, "get_queryset") else None
        name = model._meta.model_name if model is not None else "profile"
        return bool(user.has_perm(f"klaviyo_consent.view_{name}"))


def write_permissions() -> list[BasePermission]:
    """Instances of ``KLAVIYO_CONSENT["WRITE_PERMISSION_CLASSES"]``."""
    return [permission() for permission in consent_settings.WRITE_PERMISSION_CLASSES]


def can_read_profiles(request: Any) -> bool:
    """Whether the caller holds ``klaviyo_consent.view_profile``: only then does a write answer
    with the profile's other identifiers, Klaviyo's ``subscriptions`` and the ledger, and
    find a profile by ``external_id`` alone (docs/security.md)."""
    user = getattr(request, "user", None)
    return bool(user and user.is_authenticated and user.has_perm("klaviyo_consent.view_profile"))


class CanChangeProfile(BasePermission):
    """An authenticated user holding ``klaviyo_consent.change_profile``: replacing a number,
    merging two profiles or suppressing an email acts on someone else's record, which the write
    permission (often ``AllowAny`` for a public form) must not allow."""

    message = (
        "Changing a profile's identity or suppressions needs the klaviyo_consent "
        "change_profile permission."
    )

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(
            user and user.is_authenticated and user.has_perm("klaviyo_consent.change_profile")
        )
