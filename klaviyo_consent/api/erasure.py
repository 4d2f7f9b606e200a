"""``POST profiles/{id}/erase/``: erase a person, keep the proof (docs/erasure.md)."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from klaviyo_consent.api import examples
from klaviyo_consent.api.parsers import StrictBodyMixin
from klaviyo_consent.api.renderers import ExampleBody
from klaviyo_consent.api.schema import (
    FIELD_ERRORS_SCHEMA,
    Documented,
    errors,
    request_example,
    response_examples,
)
from klaviyo_consent.api.serializers import StrictSerializer
from klaviyo_consent.exceptions import ConsentValidationError, ErasureRefused
from klaviyo_consent.models import Erasure, Profile
from klaviyo_consent.services.erasure import ErasureRequest, erase_profile


class CanEraseProfile(BasePermission):
    """An authenticated user holding ``klaviyo_consent.erase_profile``: erasure cannot be
    undone, so neither the view nor the change permission is enough."""

    message = "Erasing a person needs the klaviyo_consent erase_profile permission."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(
            user and user.is_authenticated and user.has_perm("klaviyo_consent.erase_profile")
        )


class ErasureRequestSerializer(StrictSerializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=1000, help_text="e.g. a ticket number"
    )


def erasure_data(erasure: Erasure) -> dict[str, Any]:
    """The erasure record and Klaviyo's deletion job state, as the API answers it."""
    entry = getattr(erasure, "ledger_entry", None)
    return {
        "erasure_id": erasure.pk,
        "profile_id": erasure.profile_id,
        "scope": erasure.scope,
        "requested_at": erasure.requested_at,
        "requested_by": erasure.recorded_by_name,
        "source": erasure.source,
        "reason": erasure.reason,
        "events": erasure.events,
        "digests": erasure.digests,
        "leaf_index": entry.leaf_index if entry else None,
        "klaviyo_deletion": [
            {
                "target": row.target_field,
                "status": row.status,
                "reason": row.reason,
                "attempts": row.attempts,
                "pushed_at": row.pushed_at,
            }
            for row in erasure.deliveries.order_by("pk")
        ],
    }


@extend_schema(
    summary="Erase a person, keep the proof",
    request=ErasureRequestSerializer,
    responses={
        202: OpenApiResponse(OpenApiTypes.OBJECT, description="The erasure record."),
        **errors(400, 401, 403, 404, 415),
        409: OpenApiResponse(
            FIELD_ERRORS_SCHEMA,
            description="It cannot run (already erased, merged into another): names profile.",
            examples=response_examples(("Refused", examples.ERASURE_REFUSED), status=409),
        ),
    },
    examples=[
        request_example("Request", examples.ERASE),
        *response_examples(("Erased", examples.ERASED), status=202),
    ],
)
class EraseProfileView(Documented, ExampleBody, StrictBodyMixin, APIView):
    """Erase the person: 202 with the erasure record (Klaviyo's deletion job is queued);
    409 naming ``profile`` when it cannot run (already erased, merged into another)."""

    permission_classes = [CanEraseProfile]
    example_body = examples.ERASE

    def post(self, request: Request, pk: int) -> Response:
        profile = get_object_or_404(Profile, pk=pk)
        serializer = ErasureRequestSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        try:
            erasure = erase_profile(
                ErasureRequest(
                    profile_id=profile.pk,
                    source="api",
                    requested_by=request.user,
                    reason=serializer.validated_data.get("reason", ""),
                )
            )
        except ErasureRefused as error:
            return Response({error.field: [error.message]}, status=status.HTTP_409_CONFLICT)
        except ConsentValidationError as error:
            return Response({error.field: [error.message]}, status=status.HTTP_400_BAD_REQUEST)
        erasure.refresh_from_db()
        return Response(erasure_data(erasure), status=status.HTTP_202_ACCEPTED)
