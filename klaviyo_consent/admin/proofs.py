"""Admin for the proofs (issue 10): consent texts, checkpoints, verification, receipts.

Imported by ``admin.py``. The event and profile pages get their proof state and receipt
downloads from the mixins here; every view is a few lines around services.proofs and
services.ledger_verify.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from klaviyo_consent.admin.accessible import BlankNamedValuesFilter, LabelledSplitDateTime
from klaviyo_consent.exceptions import ConfigurationError, LedgerMismatch, NotYetCheckpointed
from klaviyo_consent.models import (
    Checkpoint,
    ConsentEvent,
    ConsentText,
    LedgerEntry,
    Profile,
    VerificationRun,
)
from klaviyo_consent.services import ledger_verify, proofs


def _download(data: Any, filename: str) -> HttpResponse:
    response = HttpResponse(
        json.dumps(data, indent=2, ensure_ascii=False), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _last_verification() -> str:
    run = VerificationRun.objects.filter(finished_at__isnull=False).first()
    if run is None:
        return "never verified"
    outcome = "verified OK" if run.ok else f"verification FAILED: {run.message}"
    return f"{outcome} at {run.finished_at:%Y-%m-%d %H:%M:%S}"


class EventProofMixin:
    """The event page: where the event is in the ledger, and its receipt as a download."""

    @admin.display(description="proof")
    def proof_state(self, event: ConsentEvent) -> SafeString:
        entry = LedgerEntry.objects.filter(event=event).first()
        if entry is None:
            return format_html("{}", "not yet in the ledger: the next checkpoint adds it")
        latest = Checkpoint.objects.order_by("-tree_size").first()
        if latest is None or latest.tree_size <= entry.leaf_index:
            return format_html("leaf {} — no checkpoint covers it yet", entry.leaf_index)
        first = Checkpoint.objects.filter(tree_size__gt=entry.leaf_index).order_by("tree_size")[0]
        url = reverse("admin:klaviyo_consent_consentevent_receipt", args=[event.pk])
        return format_html(
            'leaf {} in checkpoint {} (latest {}, key {}); {}. <a href="{}">Download receipt</a>',
            entry.leaf_index,
            first.tree_size,
            latest.tree_size,
            latest.key_id,
            _last_verification(),
            url,
        )

    def get_urls(self) -> list[Any]:
        extra = [
            path(
                "<int:pk>/receipt/",
                self.admin_site.admin_view(self.receipt_view),  # type: ignore[attr-defined]
                name="klaviyo_consent_consentevent_receipt",
            )
        ]
        return extra + super().get_urls()  # type: ignore[misc]

    def receipt_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        event = get_object_or_404(
            ConsentEvent.objects.select_related("consent_text_version", "delivery", "profile"),
            pk=pk,
        )
        try:
            return _download(proofs.receipt(event), f"consent-receipt-{event.pk}.json")
        except NotYetCheckpointed as exc:
            self.message_user(request, str(exc), messages.WARNING)  # type: ignore[attr-defined]
            return HttpResponseRedirect(
                reverse("admin:klaviyo_consent_consentevent_change", args=[pk])
            )


class ProfileReceiptsMixin:
    """The profile page: every receipt of the person in one download."""

    @admin.display(description="receipts")
    def receipts_download(self, profile: Profile) -> SafeString:
        url = reverse("admin:klaviyo_consent_profile_receipts", args=[profile.pk])
        return format_html('<a href="{}">Download all receipts</a> ({})', url, _last_verification())

    def get_urls(self) -> list[Any]:
        extra = [
            path(
                "<int:pk>/receipts/",
                self.admin_site.admin_view(self.receipts_view),  # type: ignore[attr-defined]
                name="klaviyo_consent_profile_receipts",
            )
        ]
        return extra + super().get_urls()  # type: ignore[misc]

    def receipts_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        profile = get_object_or_404(Profile, pk=pk)
        return _download(proofs.profile_receipts(profile), f"consent-receipts-{profile.pk}.json")


@admin.register(ConsentText)
class ConsentTextAdmin(admin.ModelAdmin):
    """Texts are added, retired, never edited: a change of words is a new version."""

    list_display = ["key", "version", "locale", "sha256", "created_at", "retired_at"]
    list_filter = ["key", ("locale", BlankNamedValuesFilter)]
    formfield_overrides = {models.DateTimeField: {"widget": LabelledSplitDateTime}}
    search_fields = ["key", "body", "sha256"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return ["sha256"]
        return ["key", "version", "locale", "body", "sha256", "created_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["tree_size", "root_hash", "timestamp", "key_id"]
    readonly_fields = ["tree_size", "root_hash", "timestamp", "key_id", "signature", "public_key"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(VerificationRun)
class VerificationRunAdmin(admin.ModelAdmin):
    """Past runs of klaviyo_consent_verify; "Verify the ledger now" starts one."""

    list_display = ["started_at", "finished_at", "ok", "events", "checkpoints", "message"]
    readonly_fields = list_display
    change_list_template = "admin/klaviyo_consent/verificationrun/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        extra = [
            path(
                "verify/",
                self.admin_site.admin_view(self.verify_view),
                name="klaviyo_consent_verificationrun_verify",
            )
        ]
        return extra + super().get_urls()

    def verify_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or not self.has_view_permission(request):
            raise PermissionDenied
        try:
            result = ledger_verify.verify_ledger()
        except (LedgerMismatch, ConfigurationError) as exc:
            self.message_user(request, f"Verification failed: {exc}", messages.ERROR)
        else:
            self.message_user(
                request, f"OK: {result.events} events, {result.checkpoints} checkpoints"
            )
        return HttpResponseRedirect(reverse("admin:klaviyo_consent_verificationrun_changelist"))
